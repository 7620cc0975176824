//! A client for Mongrel2's control port: status, connection kills, reload and shutdown.
//!
//! Mongrel2 answers on a ZeroMQ REP socket at the Server's `control_port` (by default
//! `ipc://run/control`, relative to the directory Mongrel2 runs in; `m2sh`'s `control_port`
//! column or setting may name a tcp endpoint). A request is the tnetstring
//! `[command, {args}]`; the answer is a table `{"headers": [...], "rows": [[...]]}`, or a
//! dict with `error` (and usually `code`) when Mongrel2 refuses.
//!
//! [`ControlPort`] sends one command at a time and waits at most its timeout for the answer.
//! A REQ socket that timed out is stuck waiting for that answer, so the client throws it away
//! and connects a fresh one for the next call. Answers are parsed with depth and size bounds
//! and never panic: anything that is not the expected table is a [`ControlError::BadReply`].
//!
//! ```no_run
//! use mongrel2_transceiver::control_port::ControlPort;
//!
//! # fn main() -> Result<(), mongrel2_transceiver::control_port::ControlError> {
//! let mut m2 = ControlPort::new("ipc://run/control")?;
//! for conn in m2.connections()? {
//!     println!("{:?} read {} bytes", conn.id, conn.bytes_read);
//! }
//! if let Some(id) = m2.connections()?.first().and_then(|c| c.id) {
//!     m2.kill(id)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Facts about Mongrel2 1.12.2 (checked against the real server by `tests/control_port.rs`):
//! - `kill` closes the client's socket but does NOT push a disconnect notice to the handler.
//!   The handler hears about it only when it next writes to that connection: Mongrel2
//!   answers a write to a gone id with the disconnect notice. A [`Transceiver`] pings every
//!   WebSocket session, so it reports [`Event::Closed`] with
//!   [`CloseReason::Disconnected`] at the latest one ping interval after a kill; to learn
//!   at once, write to the killed session (e.g. `handle.send_text(&conn, "")`) right after
//!   [`ControlPort::kill`] returns `Ok`, or forget the session yourself.
//! - `kill` of an id that is not connected is refused with `INVALID_ARGUMENT` (no such id)
//!   or `NOT_CONNECTED`.
//! - `reload` (SIGHUP) answers, and requests keep being answered through it.
//! - `stop` (SIGINT) closes every client connection and exits; the handler's disconnect
//!   notices are pushed on the way out, but not reliably (some runs lose them).
//!   `terminate` (SIGTERM) exits at once. Both race the signal against the answer: often
//!   the process is gone before the answer is sent, so [`ControlPort::stop`] and
//!   [`ControlPort::terminate`] may end in [`ControlError::Timeout`] although they worked.
//!   Give them a short timeout and watch the process.
//! - After `control_stop` nothing answers on the endpoint any more (calls time out); the
//!   server keeps serving HTTP.
//!
//! [`Transceiver`]: crate::Transceiver
//! [`Event::Closed`]: crate::Event::Closed
//! [`CloseReason::Disconnected`]: crate::CloseReason::Disconnected

use std::time::{Duration, Instant};

use crate::tnetstring::{self, Dict, Value};

mod error;
mod table;
#[cfg(test)]
mod tests;

pub use error::ControlError;
pub use table::{cell_text, CommandHelp, Connection, ServerInfo, Table, Task};

/// The endpoint Mongrel2 binds when the Server sets no `control_port`, relative to the
/// directory Mongrel2 runs in (its chroot).
pub const DEFAULT_ENDPOINT: &str = "ipc://run/control";
/// How long a call waits for an answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer accepted; a `status net` row is under 100 bytes, so this is room for
/// tens of thousands of connections.
pub const MAX_REPLY_BYTES: i64 = 16 * 1024 * 1024;
/// Nesting deeper than a table needs is garbage.
const MAX_REPLY_DEPTH: usize = 8;

/// Which `status` table to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWhat {
    /// `what=net`: the open client connections.
    Net,
    /// `what=tasks`: Mongrel2's tasks.
    Tasks,
}

impl StatusWhat {
    /// The argument's wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusWhat::Net => "net",
            StatusWhat::Tasks => "tasks",
        }
    }
}

/// A client for one Mongrel2 control port. See the [module docs](self).
pub struct ControlPort {
    context: zmq::Context,
    endpoint: String,
    timeout: Duration,
    // None after a timeout (a REQ that missed its answer cannot send again) until the next call.
    socket: Option<zmq::Socket>,
}

impl std::fmt::Debug for ControlPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPort")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ControlPort {
    /// A client for `endpoint` (`ipc://...` or `tcp://...`) with its own ZeroMQ context and
    /// [`DEFAULT_TIMEOUT`]. Connecting is lazy: a wrong endpoint shows as a timeout on the
    /// first call.
    pub fn new(endpoint: impl Into<String>) -> Result<ControlPort, ControlError> {
        ControlPort::with_context(&zmq::Context::new(), endpoint)
    }

    /// Like [`new`](Self::new), sharing `context` (e.g. a Transceiver's).
    pub fn with_context(
        context: &zmq::Context,
        endpoint: impl Into<String>,
    ) -> Result<ControlPort, ControlError> {
        let mut port = ControlPort {
            context: context.clone(),
            endpoint: endpoint.into(),
            timeout: DEFAULT_TIMEOUT,
            socket: None,
        };
        port.socket = Some(port.connect()?);
        Ok(port)
    }

    /// Sets how long each call waits for its answer.
    pub fn timeout(mut self, timeout: Duration) -> ControlPort {
        self.timeout = timeout;
        self
    }

    /// Changes how long each call waits for its answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `command` with `args` and returns the answer's table. Use the typed methods for
    /// the commands Mongrel2 has; this is for anything else.
    pub fn call(&mut self, command: &str, args: Dict<'_>) -> Result<Table, ControlError> {
        let request = Value::List(vec![Value::from(command), Value::Dict(args)])
            .to_bytes()
            .map_err(|e| self.bad_reply(command, format!("cannot encode the request: {e}")))?;
        let answer = self.exchange(command, &request)?;
        let value = tnetstring::parse_with_max_depth(&answer, MAX_REPLY_DEPTH)
            .map_err(|e| self.bad_reply(command, format!("not a tnetstring: {e}")))
            .and_then(|(value, rest)| match rest.is_empty() {
                true => Ok(value),
                false => Err(self.bad_reply(command, "bytes after the tnetstring".into())),
            })?;
        if let Some(message) = value.as_dict().and_then(|d| d.get("error")) {
            let code = value.as_dict().and_then(|d| d.get("code")).map(cell_text);
            return Err(ControlError::Refused {
                endpoint: self.endpoint.clone(),
                command: command.to_owned(),
                code,
                message: cell_text(message),
            });
        }
        Table::from_value(&value).map_err(|reason| self.bad_reply(command, reason))
    }

    /// `status what=net|tasks` as a table.
    pub fn status(&mut self, what: StatusWhat) -> Result<Table, ControlError> {
        self.call("status", [("what", what.as_str())].into_iter().collect())
    }

    /// The open client connections (`status what=net`).
    pub fn connections(&mut self) -> Result<Vec<Connection>, ControlError> {
        let table = self.status(StatusWhat::Net)?;
        Connection::from_table(&table).map_err(|reason| self.bad_reply("status", reason))
    }

    /// Mongrel2's tasks (`status what=tasks`).
    pub fn tasks(&mut self) -> Result<Vec<Task>, ControlError> {
        let table = self.status(StatusWhat::Tasks)?;
        Task::from_table(&table).map_err(|reason| self.bad_reply("status", reason))
    }

    /// The server's clock, in seconds since the Unix epoch (`time`).
    pub fn time(&mut self) -> Result<i64, ControlError> {
        let text = self.single("time", "time")?;
        text.trim()
            .parse()
            .map_err(|_| self.bad_reply("time", format!("{text:?} is not a number")))
    }

    /// The server's uuid (`uuid`).
    pub fn uuid(&mut self) -> Result<String, ControlError> {
        self.single("uuid", "uuid")
    }

    /// The server's settings as it runs (`info`).
    pub fn info(&mut self) -> Result<ServerInfo, ControlError> {
        let table = self.call("info", Dict::new())?;
        ServerInfo::from_table(&table).map_err(|reason| self.bad_reply("info", reason))
    }

    /// Closes client connection `id` (the id handlers see). Mongrel2 sends the handler no
    /// disconnect notice for it; see the [module docs](self).
    pub fn kill(&mut self, id: u64) -> Result<(), ControlError> {
        let id = i64::try_from(id).map_err(|_| ControlError::Refused {
            endpoint: self.endpoint.clone(),
            command: "kill".to_owned(),
            code: Some("INVALID_ARGUMENT".to_owned()),
            message: format!("connection id {id} is out of range"),
        })?;
        let status = self.single_with("kill", [("id", id)].into_iter().collect(), "status")?;
        match status.as_str() {
            "OK" => Ok(()),
            other => Err(self.bad_reply("kill", format!("status {other:?}"))),
        }
    }

    /// Reloads the configuration (SIGHUP); returns Mongrel2's message.
    pub fn reload(&mut self) -> Result<String, ControlError> {
        self.single("reload", "msg")
    }

    /// Stops the server gracefully (SIGINT); returns Mongrel2's message. Mongrel2 may exit
    /// before answering: a [`ControlError::Timeout`] here does not mean it failed.
    pub fn stop(&mut self) -> Result<String, ControlError> {
        self.single("stop", "msg")
    }

    /// Terminates the server (SIGTERM); returns Mongrel2's message. Mongrel2 often exits
    /// before answering: a [`ControlError::Timeout`] here does not mean it failed.
    pub fn terminate(&mut self) -> Result<String, ControlError> {
        self.single("terminate", "msg")
    }

    /// Stops the control port itself; later calls time out. Returns Mongrel2's message.
    pub fn control_stop(&mut self) -> Result<String, ControlError> {
        self.single("control_stop", "msg")
    }

    /// The commands the control port knows (`help`).
    pub fn help(&mut self) -> Result<Vec<CommandHelp>, ControlError> {
        let table = self.call("help", Dict::new())?;
        CommandHelp::from_table(&table).map_err(|reason| self.bad_reply("help", reason))
    }

    fn single(&mut self, command: &str, column: &str) -> Result<String, ControlError> {
        self.single_with(command, Dict::new(), column)
    }

    /// The one cell of a one-row answer.
    fn single_with(
        &mut self,
        command: &str,
        args: Dict<'_>,
        column: &str,
    ) -> Result<String, ControlError> {
        let table = self.call(command, args)?;
        match (table.rows().len(), table.cell(0, column)) {
            (1, Some(cell)) => Ok(cell_text(cell)),
            _ => Err(self.bad_reply(command, format!("expected one row with {column:?}"))),
        }
    }

    fn exchange(&mut self, command: &str, request: &[u8]) -> Result<Vec<u8>, ControlError> {
        let deadline = Instant::now() + self.timeout;
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => self.connect()?,
        };
        // Sending never blocks for long (REQ queues to a connecting peer), but poll anyway so
        // that a full queue counts against the same timeout.
        if !self.wait(&socket, zmq::POLLOUT, deadline)? {
            return Err(self.timed_out(command));
        }
        socket
            .send(request, zmq::DONTWAIT)
            .map_err(|e| self.socket_error(e))?;
        if !self.wait(&socket, zmq::POLLIN, deadline)? {
            // Dropped: this REQ would refuse to send until the lost answer arrived.
            return Err(self.timed_out(command));
        }
        let answer = socket
            .recv_bytes(zmq::DONTWAIT)
            .map_err(|e| self.socket_error(e))?;
        if socket.get_rcvmore().unwrap_or(false) {
            return Err(self.bad_reply(command, "a multipart answer".into()));
        }
        self.socket = Some(socket);
        Ok(answer)
    }

    fn wait(
        &self,
        socket: &zmq::Socket,
        events: zmq::PollEvents,
        deadline: Instant,
    ) -> Result<bool, ControlError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so a sub-millisecond remainder still waits instead of spinning.
            let millis = i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
            match socket.poll(events, millis) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) if left.is_zero() => return Ok(false),
                Ok(_) | Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(self.socket_error(e)),
            }
        }
    }

    fn connect(&self) -> Result<zmq::Socket, ControlError> {
        let socket = self
            .context
            .socket(zmq::REQ)
            .map_err(|e| self.socket_error(e))?;
        // Never hang the process on exit for an answer nobody waits for.
        socket.set_linger(0).map_err(|e| self.socket_error(e))?;
        socket
            .set_maxmsgsize(MAX_REPLY_BYTES)
            .map_err(|e| self.socket_error(e))?;
        socket
            .connect(&self.endpoint)
            .map_err(|e| self.socket_error(e))?;
        Ok(socket)
    }

    fn socket_error(&self, source: zmq::Error) -> ControlError {
        ControlError::Socket {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn timed_out(&self, command: &str) -> ControlError {
        ControlError::Timeout {
            endpoint: self.endpoint.clone(),
            command: command.to_owned(),
            timeout: self.timeout,
        }
    }

    fn bad_reply(&self, command: &str, reason: String) -> ControlError {
        ControlError::BadReply {
            endpoint: self.endpoint.clone(),
            command: command.to_owned(),
            reason,
        }
    }
}

/// Mongrel2's open client connections, asked once at `endpoint` within `timeout`: the one
/// call a status page needs.
pub fn open_connections(
    context: &zmq::Context,
    endpoint: &str,
    timeout: Duration,
) -> Result<Vec<Connection>, ControlError> {
    ControlPort::with_context(context, endpoint)?
        .timeout(timeout)
        .connections()
}
