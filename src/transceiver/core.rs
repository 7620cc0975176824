//! The handler's protocol state machine, without sockets: [`Core`].
//!
//! Everything the runtime decides — answering handshakes, pinging sessions and closing the
//! silent ones, echoing closes, enforcing RFC 6455, batching deliveries, saying goodbye on
//! shutdown — happens here, on plain values: Mongrel2 messages and the current time go in,
//! [`Event`]s for the handler and [`Outgoing`] replies for Mongrel2 come out. The
//! [`Transceiver`](super::Transceiver) is one driver (a ZeroMQ poll loop); anything else
//! that can move bytes (another thread's loop, an async runtime, a group of processes
//! sharing sessions) can drive the same machine.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::{HandshakeFn, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PING_INTERVAL};
use super::command::Outbound;
use super::session::Sessions;
use super::uploads::{TempStore, UploadNotices};
use super::{ConnId, Error, Event, Handshake};
use crate::reply::{self, DEFAULT_HANDLER_TARGETS};
use crate::request::Request;

#[cfg(test)]
mod ordering_tests;
#[cfg(test)]
mod reply_tests;
#[cfg(test)]
mod tests;

/// At most this many reply buffers are kept for reuse ([`Core::recycle`]): as many replies
/// as the blocking loop holds back before it writes them ...
const SPARE_BUFFERS: usize = 64;
/// ... none larger than this (so at most 1 MiB is kept): copying a big reply costs more
/// than allocating its buffer.
const SPARE_CAPACITY: usize = 16 * 1024;

/// One framed reply for one Mongrel2 server, ready for that server's PUB socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The sender id (the Handler's `send_ident`) of the Mongrel2 server it goes to.
    pub sender: Arc<str>,
    /// The whole ZeroMQ message: `SENDER LEN:IDS, BODY`.
    pub message: Vec<u8>,
}

/// Replies the Core wrote itself while the handler had not yet seen an earlier event of the
/// same connection: a close frame sent at once would overtake the handler's answer to a
/// message read before it (Mongrel2 then drops that answer, the connection being closed).
#[derive(Debug)]
pub(super) struct Held {
    /// Released once this many events have been handed out.
    pub(super) after: u64,
    pub(super) conn: ConnId,
    pub(super) replies: Vec<Outgoing>,
}

/// The sans-IO handler runtime: feed it Mongrel2 messages, commands and the time; take
/// [`Event`]s and [`Outgoing`] replies out.
///
/// ```
/// use std::time::Instant;
/// use mongrel2_transceiver::transceiver::Core;
///
/// let sender = "75226238-c5fe-4cb0-ac5b-877fd841e97e";
/// let mut core = Core::new(Instant::now());
/// core.add_server(sender)?;
/// // A request as Mongrel2 sends it (tnetstring headers): an HTTP GET on connection 7.
/// let headers = r#"{"METHOD":"GET","PATH":"/","VERSION":"HTTP/1.1","URI":"/"}"#;
/// let message = format!("{sender} 7 / {}:{headers},0:,", headers.len());
/// core.handle_message(sender, message.as_bytes());
/// let Some(mongrel2_transceiver::Event::Http(request)) = core.poll_event() else {
///     panic!("an HTTP event");
/// };
/// core.reply(&mongrel2_transceiver::ConnId::of(&request), "HTTP/1.1 204 No Content\r\n\r\n")?;
/// let out = core.poll_outgoing().expect("the reply");
/// assert_eq!(&*out.sender, sender);
/// assert!(out.message.ends_with(b"204 No Content\r\n\r\n"));
/// # Ok::<(), mongrel2_transceiver::Error>(())
/// ```
pub struct Core {
    pub(super) servers: HashSet<Arc<str>>,
    pub(super) sessions: Sessions,
    /// Streamed responses in progress: whether each is close-delimited.
    pub(super) streams: HashMap<ConnId, bool>,
    pub(super) events: VecDeque<Event>,
    /// How many events [`Core::poll_event`] has handed out: the clock of `held`.
    pub(super) handed_out: u64,
    /// Control replies (pongs, close frames) waiting for earlier events of their connection.
    pub(super) held: VecDeque<Held>,
    pub(super) outgoing: VecDeque<Outgoing>,
    pub(super) handshake: Option<HandshakeFn>,
    pub(super) ping_interval: Option<Duration>,
    pub(super) next_ping: Option<Instant>,
    pub(super) max_message_size: usize,
    pub(super) handler_targets: usize,
    pub(super) uploads: UploadNotices,
    /// Buffers of written replies, given back with [`Core::recycle`] for the next ones.
    pub(super) spare: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("servers", &self.servers)
            .field("sessions", &self.sessions.len())
            .field("events", &self.events.len())
            .field("outgoing", &self.outgoing.len())
            .field("ping_interval", &self.ping_interval)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A state machine with the defaults of [`Builder`](super::Builder): pings every
    /// [`DEFAULT_PING_INTERVAL`] from `now`, accepts every handshake, knows no server yet.
    pub fn new(now: Instant) -> Core {
        Core {
            servers: HashSet::new(),
            sessions: Sessions::default(),
            streams: HashMap::new(),
            events: VecDeque::new(),
            handed_out: 0,
            held: VecDeque::new(),
            outgoing: VecDeque::new(),
            handshake: None,
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            next_ping: now.checked_add(DEFAULT_PING_INTERVAL),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handler_targets: DEFAULT_HANDLER_TARGETS,
            uploads: UploadNotices::default(),
            spare: Vec::new(),
        }
    }

    /// How often sessions are pinged, counted from `now`; `None` turns pings (and the
    /// closing of silent sessions) off. A zero interval is an error.
    pub fn set_ping_interval(
        &mut self,
        interval: Option<Duration>,
        now: Instant,
    ) -> Result<(), Error> {
        if interval.is_some_and(|interval| interval.is_zero()) {
            return Err(Error::Config(
                "ping interval must be positive (None turns pings off)".into(),
            ));
        }
        self.ping_interval = interval;
        self.next_ping = interval.and_then(|interval| now.checked_add(interval));
        Ok(())
    }

    /// The largest WebSocket message accepted; larger ones close the session with 1009.
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message_size = bytes;
    }

    /// Mongrel2's `limits.handler_targets`: the most connection ids one reply may carry.
    pub fn set_handler_targets(&mut self, targets: usize) -> Result<(), Error> {
        if targets == 0 {
            return Err(Error::Config("handler_targets must be at least 1".into()));
        }
        self.handler_targets = targets;
        Ok(())
    }

    /// Mongrel2's `upload.temp_store` (a path template ending in `XXXXXX`), so temp-file
    /// upload notices can be told from forged ones; `None` (the default) makes every
    /// `x-mongrel2-upload-*` notice an ordinary HTTP request. See
    /// [`Builder::upload_temp_store`](super::Builder::upload_temp_store).
    pub fn set_upload_temp_store(&mut self, template: Option<&str>) -> Result<(), Error> {
        let store = template.map(TempStore::new).transpose()?;
        self.uploads.set_store(store);
        Ok(())
    }

    /// Decides each WebSocket handshake (see [`Builder::on_handshake`](super::Builder::on_handshake)).
    pub fn set_handshake(
        &mut self,
        decide: impl FnMut(&Request<'_>) -> Handshake + Send + 'static,
    ) {
        self.handshake = Some(Box::new(decide));
    }

    pub(crate) fn set_handshake_boxed(&mut self, decide: Option<HandshakeFn>) {
        self.handshake = decide;
    }

    /// Starts serving the Mongrel2 server whose Handler's `send_ident` is `sender`.
    pub fn add_server(&mut self, sender: &str) -> Result<(), Error> {
        if self.servers.contains(sender) {
            return Err(Error::DuplicateSender(sender.to_owned()));
        }
        reply::validate_uuid(sender)?;
        self.servers.insert(Arc::from(sender));
        Ok(())
    }

    /// Stops serving a Mongrel2 server; its sessions are reported closed
    /// ([`CloseReason::Disconnected`](super::CloseReason::Disconnected)).
    pub fn remove_server(&mut self, sender: &str) -> Result<(), Error> {
        let Some(sender) = self.servers.take(sender) else {
            return Err(Error::UnknownSender(sender.to_owned()));
        };
        for id in self.sessions.remove_sender(&sender) {
            self.events.push_back(Event::Closed {
                conn: ConnId::new(sender.clone(), id),
                reason: super::CloseReason::Disconnected,
            });
        }
        self.streams.retain(|conn, _| conn.sender != sender);
        self.held.retain(|held| held.conn.sender != sender);
        self.uploads.forget_sender(&sender);
        Ok(())
    }

    /// The sender ids of every served Mongrel2 server.
    pub fn servers(&self) -> impl Iterator<Item = &Arc<str>> {
        self.servers.iter()
    }

    /// The shared sender id for `sender`, when it is served (saves an allocation per request).
    pub fn server(&self, sender: &str) -> Option<&Arc<str>> {
        self.servers.get(sender)
    }

    /// Every open WebSocket session.
    pub fn sessions(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sessions.iter()
    }

    /// How many WebSocket sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether `conn` is an open WebSocket session.
    pub fn is_session(&self, conn: &ConnId) -> bool {
        self.sessions.contains(conn)
    }

    /// One raw message from the Mongrel2 server `via` (its PULL socket): parsed, then
    /// handled like [`Core::handle_request`]. A malformed message is logged and skipped.
    pub fn handle_message(&mut self, via: &str, message: &[u8]) {
        match Request::parse(message) {
            Ok(request) => self.handle_request(via, request),
            Err(err) => log::warn!("skipping malformed request from {via}: {err}"),
        }
    }

    /// The next event for the handler, oldest first.
    ///
    /// Asking for the next event tells the Core the handler is done with the previous ones:
    /// the pongs and close frames it held back until then (so they follow the handler's
    /// answers to the messages read before them) move to [`Core::poll_outgoing`]. Drivers
    /// call this until it returns `None`, and flush the replies after each call.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.release_held();
        let event = self.events.pop_front()?;
        self.handed_out += 1;
        Some(event)
    }

    fn release_held(&mut self) {
        // An empty queue also releases everything: nothing earlier is left to wait for.
        while self
            .held
            .front()
            .is_some_and(|held| held.after <= self.handed_out || self.events.is_empty())
        {
            if let Some(held) = self.held.pop_front() {
                self.outgoing.extend(held.replies);
            }
        }
    }

    /// Control replies the Core sends on its own for `conn` (a pong; a close frame and the
    /// empty reply): written now, or held until the handler has been handed every event
    /// queued before them for `conn`, so each connection's bytes keep the order of its frames.
    pub(super) fn send_in_order(&mut self, conn: &ConnId, bodies: &[&[u8]]) {
        let mut replies = Vec::with_capacity(bodies.len());
        for body in bodies {
            match self.encode_to(conn, body) {
                Ok(out) => replies.push(out),
                Err(err) => log::warn!("reply to {conn} failed: {err}"),
            }
        }
        let waits = self.held.iter().any(|held| held.conn == *conn)
            || self.events.iter().any(|event| event.concerns(conn));
        if waits {
            self.held.push_back(Held {
                after: self.handed_out + self.events.len() as u64,
                conn: conn.clone(),
                replies,
            });
        } else {
            self.outgoing.extend(replies);
        }
    }

    /// Whether events are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next reply to write, oldest first. Write them in this order: Mongrel2 relies on
    /// it (a close frame before the empty reply that closes the connection). A driver that
    /// copies the message into its socket's buffer hands it back with [`Core::recycle`].
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }

    /// Gives back the buffer of a reply once it is written (copied into a socket's
    /// buffer), for the Core to build a later reply in: steady traffic then allocates none.
    pub fn recycle(&mut self, mut message: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && message.capacity() <= SPARE_CAPACITY {
            message.clear();
            self.spare.push(message);
        }
    }

    /// An empty buffer for a reply: a recycled one when there is one.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Whether replies are waiting.
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// How many replies are waiting.
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.len()
    }

    /// When [`Core::handle_timeout`] should next run (`None`: no timer, pings are off).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Runs what is due at `now`: a ping round, closing (1001 "ping timeout") the sessions
    /// that stayed silent since the previous one.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_ping.is_some_and(|at| at <= now) {
            self.ping_round(now);
        }
    }

    /// Says goodbye: close 1001 "shutting down" to every session, each reported closed
    /// ([`CloseReason::Shutdown`](super::CloseReason::Shutdown)); streams are forgotten.
    pub fn shutdown(&mut self) {
        let goodbye = super::close_frame(crate::websocket::CloseCode::GOING_AWAY, "shutting down");
        // Held pongs and closes go first: after the goodbye's empty reply they would be lost.
        for held in self.held.drain(..) {
            self.outgoing.extend(held.replies);
        }
        for (sender, ids) in self.sessions.drain() {
            self.deliver_logged(&sender, &ids, &goodbye);
            self.deliver_logged(&sender, &ids, b"");
            for id in ids {
                self.events.push_back(Event::Closed {
                    conn: ConnId::new(sender.clone(), id),
                    reason: super::CloseReason::Shutdown,
                });
            }
        }
        self.streams.clear();
    }

    /// Applies one sending method (the same ones [`Transceiver`](super::Transceiver) and
    /// [`Handle`](super::Handle) offer); the replies land in [`Core::poll_outgoing`].
    pub(crate) fn submit(&mut self, command: Outbound) -> Result<(), Error> {
        self.apply(command)
    }

    pub(super) fn server_of(&self, sender: &str) -> Result<Arc<str>, Error> {
        self.servers
            .get(sender)
            .cloned()
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))
    }

    /// One reply to one connection.
    pub(super) fn send_to(&mut self, conn: &ConnId, body: &[u8]) -> Result<(), Error> {
        let out = self.encode_to(conn, body)?;
        self.outgoing.push_back(out);
        Ok(())
    }

    fn encode_to(&mut self, conn: &ConnId, body: &[u8]) -> Result<Outgoing, Error> {
        let sender = self.server_of(&conn.sender)?;
        let mut message = self.buffer();
        if let Err(err) = reply::encode_reply(&conn.sender, &[conn.id], body, &mut message) {
            self.recycle(message);
            return Err(err.into());
        }
        Ok(Outgoing { sender, message })
    }

    /// [`reply_http`](Core::reply_http) without an intermediate body: the response is
    /// encoded straight into the reply.
    pub(super) fn submit_http(
        &mut self,
        request: &Request<'_>,
        response: &crate::http::Response,
    ) -> Result<(), Error> {
        let conn = ConnId::of(request);
        // The reply's head with an empty body, which the response then follows.
        let mut out = self.encode_to(&conn, b"")?;
        let then_close = match response.encode_closing(request, &mut out.message) {
            Ok(then_close) => then_close,
            Err(err) => {
                self.recycle(out.message);
                return Err(err.into());
            }
        };
        self.outgoing.push_back(out);
        if then_close {
            self.send_to(&conn, b"")?;
            self.forget(&conn, crate::websocket::CloseCode::ABNORMAL);
        }
        Ok(())
    }

    pub(super) fn send_logged(&mut self, conn: &ConnId, body: &[u8]) {
        if let Err(err) = self.send_to(conn, body) {
            log::warn!("reply to {conn} failed: {err}");
        }
    }

    /// One body to many connections of one server, `handler_targets` ids per message.
    pub(super) fn deliver_now(
        &mut self,
        sender: &str,
        ids: &[u64],
        body: &[u8],
    ) -> Result<(), Error> {
        let sender = self.server_of(sender)?;
        for message in reply::batched(&sender, ids, body, self.handler_targets)? {
            self.outgoing.push_back(Outgoing {
                sender: sender.clone(),
                message,
            });
        }
        Ok(())
    }

    /// One body to connections of any servers: grouped by server, then batched.
    pub(super) fn deliver_grouped(&mut self, conns: &[ConnId], body: &[u8]) -> Result<(), Error> {
        let mut by_sender: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for conn in conns {
            by_sender.entry(&conn.sender).or_default().push(conn.id);
        }
        let mut first_error = None;
        for (sender, ids) in by_sender {
            if let Err(err) = self.deliver_now(sender, &ids, body) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(super) fn deliver_logged(&mut self, sender: &str, ids: &[u64], body: &[u8]) {
        if let Err(err) = self.deliver_now(sender, ids, body) {
            log::warn!(
                "delivery to {} sessions of {sender} failed: {err}",
                ids.len()
            );
        }
    }
}

impl Core {
    super::outbound::outbound_methods!(mut);
}
