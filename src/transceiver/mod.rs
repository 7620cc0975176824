//! The handler runtime: one loop over every Mongrel2 server, doing what Mongrel2 leaves to
//! handlers (WebSocket handshakes, pings, closes, RFC 6455 checks, batched delivery, runtime
//! connections, clean shutdown) and handing the rest to the caller as [`Event`]s.

mod builder;
mod connection;
mod control;
mod error;
mod event;
pub(crate) mod handle;
mod outbound;
mod session;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::{
    Builder, DEFAULT_CONTROL, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PING_INTERVAL, DEFAULT_PUBLISH,
    DEFAULT_PULL,
};
pub use error::Error;
pub use event::{CloseReason, ConnId, Event, Message, Token};
pub use handle::Handle;

use builder::HandshakeFn;
use connection::Connection;
use handle::{Command, Control, Inbox, StreamPart};
use session::Sessions;

use crate::http::Response;
use crate::reply;
use crate::request::{HeaderProtocol, Request, RequestKind};
use crate::websocket::{self, CloseCode, Flags, Opcode};

/// How many requests one readable PULL may deliver before timers and other sockets get a
/// turn: keeps pings on time under load.
const PULL_BATCH: usize = 256;
/// The same for commands queued by handles: a producer faster than the loop must not
/// starve it.
const COMMAND_BATCH: usize = 1024;
/// How long shutdown lets the goodbye close frames drain. Keeps Drop well under a second.
const SHUTDOWN_LINGER_MS: i32 = 250;

/// The answer to a WebSocket handshake, from [`Builder::on_handshake`].
#[derive(Debug, Clone)]
pub enum Handshake {
    /// Accept (`101 Switching Protocols`), without a subprotocol.
    Accept,
    /// Accept with this subprotocol (it should be one the client offered).
    AcceptProtocol(String),
    /// Refuse with this HTTP response; the connection is closed after it.
    Reject(Response),
}

impl Handshake {
    /// Accepts with the first of `supported` (the handler's order of preference) that the
    /// client offered in `Sec-WebSocket-Protocol`, or plainly when it offered none of them.
    pub fn choose_protocol(request: &Request<'_>, supported: &[&str]) -> Handshake {
        let offered: Vec<&str> = request
            .header_all("sec-websocket-protocol")
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let chosen = supported.iter().find(|protocol| offered.contains(protocol));
        match chosen {
            Some(protocol) => Handshake::AcceptProtocol((*protocol).to_owned()),
            None => Handshake::Accept,
        }
    }
}

/// A Mongrel2 handler's event loop. See the [crate docs](crate) for an example.
///
/// Not `Sync`: ZeroMQ sockets belong to one thread. Other threads send through a
/// [`Handle`] from [`Transceiver::handle`].
pub struct Transceiver {
    /// Declared first so it drops first: the sockets below hold the context alive.
    connections: Vec<Connection>,
    control: Option<zmq::Socket>,
    watched: Vec<Option<zmq::Socket>>,
    context: zmq::Context,
    sessions: Sessions,
    streams: HashSet<ConnId>,
    pending: VecDeque<Event>,
    inbox: Inbox,
    handle: Handle,
    handshake: Option<HandshakeFn>,
    ping_interval: Duration,
    next_ping: Instant,
    max_message_size: usize,
    handler_targets: usize,
    header_protocol: HeaderProtocol,
    readable: Vec<bool>,
    interrupted: bool,
    shut_down: bool,
}

impl std::fmt::Debug for Transceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transceiver")
            .field("senders", &self.senders().collect::<Vec<_>>())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Transceiver {
    /// Starts configuring a Transceiver for the Mongrel2 Handler whose `send_ident` is
    /// `sender`; defaults connect to 127.0.0.1 ports 9999 (PULL) and 9998 (PUB) and bind the
    /// control socket on 127.0.0.1:9997.
    pub fn builder(sender: &str) -> Builder {
        Builder::new(sender)
    }

    fn from_builder(builder: Builder) -> Result<Transceiver, Error> {
        let context = builder.context.unwrap_or_default();
        let control = match &builder.control {
            Some(endpoint) => {
                let socket = context.socket(zmq::REP)?;
                socket.set_linger(0)?;
                socket.bind(endpoint)?;
                Some(socket)
            }
            None => None,
        };
        let (handle, inbox) = handle::channel(builder.queue_capacity, builder.send_timeout)?;
        let mut transceiver = Transceiver {
            connections: Vec::new(),
            control,
            watched: Vec::new(),
            context,
            sessions: Sessions::default(),
            streams: HashSet::new(),
            pending: VecDeque::new(),
            inbox,
            handle,
            handshake: builder.handshake,
            ping_interval: builder.ping_interval,
            next_ping: Instant::now() + builder.ping_interval,
            max_message_size: builder.max_message_size,
            handler_targets: builder.handler_targets,
            header_protocol: builder.header_protocol,
            readable: Vec::new(),
            interrupted: false,
            shut_down: false,
        };
        transceiver.add_connection(&builder.sender, &builder.pull, &builder.publish)?;
        Ok(transceiver)
    }

    /// The ZeroMQ context, for sockets the handler wants polled with [`Transceiver::watch`].
    pub fn context(&self) -> &zmq::Context {
        &self.context
    }

    /// Where the control socket is bound (with the real port when bound to `:*` or `:0`).
    pub fn control_endpoint(&self) -> Option<String> {
        let socket = self.control.as_ref()?;
        socket.get_last_endpoint().ok()?.ok()
    }

    /// The header protocol configured for requests this Transceiver encodes.
    pub fn header_protocol(&self) -> HeaderProtocol {
        self.header_protocol
    }

    /// A clonable, `Send + Sync` handle for sending from other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The sender ids of every connected Mongrel2 server.
    pub fn senders(&self) -> impl Iterator<Item = &str> {
        self.connections.iter().map(|c| &*c.sender)
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

    /// Connects to one more Mongrel2 server while running. Replies to its requests go out
    /// through its own PUB.
    pub fn add_connection(&mut self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        if self.connection(sender).is_some() {
            return Err(Error::DuplicateSender(sender.to_owned()));
        }
        reply::validate_uuid(sender)?;
        let connection = Connection::open(&self.context, sender.into(), pull, publish)?;
        log::info!("connected to Mongrel2 {sender}: pull {pull}, publish {publish}");
        self.connections.push(connection);
        Ok(())
    }

    /// Disconnects from a Mongrel2 server; its sessions are reported closed
    /// ([`CloseReason::Disconnected`]).
    pub fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        let index = self
            .connections
            .iter()
            .position(|c| &*c.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        let connection = self.connections.remove(index);
        for id in self.sessions.remove_sender(sender) {
            self.pending.push_back(Event::Closed {
                conn: ConnId::new(connection.sender.clone(), id),
                reason: CloseReason::Disconnected,
            });
        }
        self.streams.retain(|conn| &*conn.sender != sender);
        log::info!(
            "disconnected from Mongrel2 {sender} ({}, {})",
            connection.pull_endpoint,
            connection.publish_endpoint
        );
        Ok(())
    }

    /// Whether Mongrel2's SUB has subscribed to this connection's PUB, i.e. whether replies
    /// sent now will be heard. `None` for an unknown sender.
    pub fn is_ready(&mut self, sender: &str) -> Option<bool> {
        let connection = self.connections.iter_mut().find(|c| &*c.sender == sender)?;
        connection.drain_subscriptions();
        Some(connection.subscribed)
    }

    /// Waits until every Mongrel2 server's SUB has subscribed (PUB drops what it sends
    /// before that). Requests that arrive meanwhile stay queued. Returns false on timeout.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for connection in &mut self.connections {
                connection.drain_subscriptions();
                all &= connection.subscribed;
            }
            let now = Instant::now();
            if all {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(false);
            }
            let mut items: Vec<_> = self
                .connections
                .iter()
                .filter(|c| !c.subscribed)
                .map(|c| c.publish.as_poll_item(zmq::POLLIN))
                .collect();
            poll(&mut items, deadline - now)?;
        }
    }

    /// Registers a socket (made from [`Transceiver::context`]) to be polled with the loop's
    /// own; when it is readable the loop returns [`Event::Readable`] with this token, and
    /// keeps doing so while it stays readable.
    pub fn watch(&mut self, socket: zmq::Socket) -> Token {
        if let Some(free) = self.watched.iter().position(Option::is_none) {
            self.watched[free] = Some(socket);
            return Token(free);
        }
        self.watched.push(Some(socket));
        Token(self.watched.len() - 1)
    }

    /// A watched socket.
    pub fn socket(&self, token: Token) -> Result<&zmq::Socket, Error> {
        self.watched
            .get(token.0)
            .and_then(Option::as_ref)
            .ok_or(Error::UnknownToken)
    }

    /// Stops watching a socket and gives it back.
    pub fn unwatch(&mut self, token: Token) -> Result<zmq::Socket, Error> {
        self.watched
            .get_mut(token.0)
            .and_then(Option::take)
            .ok_or(Error::UnknownToken)
    }

    /// Waits for the next event.
    pub fn recv(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.next_event(None)? {
                return Ok(event);
            }
            if std::mem::take(&mut self.interrupted) {
                return Err(Error::Interrupted);
            }
        }
    }

    /// Waits at most `timeout` for the next event; `Ok(None)` when none came (or a
    /// [`Handle::interrupt`] arrived).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let event = self.next_event(Instant::now().checked_add(timeout))?;
        if event.is_none() {
            // The interrupt (if any) was reported by this `None`; one that arrived while an
            // event was returned stays set for the next call.
            self.interrupted = false;
        }
        Ok(event)
    }

    /// The events, one by one, for as long as the loop works.
    pub fn events(&mut self) -> Events<'_> {
        Events { transceiver: self }
    }

    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Option<Event>, Error> {
        let mut polled = false;
        loop {
            let now = Instant::now();
            if now >= self.next_ping {
                self.ping_round(now);
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.interrupted {
                return Ok(None);
            }
            let until = match deadline {
                Some(deadline) if deadline <= now => {
                    if polled {
                        return Ok(None);
                    }
                    now
                }
                Some(deadline) => deadline.min(self.next_ping),
                None => self.next_ping,
            };
            self.poll_once(until.saturating_duration_since(now))?;
            polled = true;
        }
    }

    /// One `zmq_poll` over every socket, then everything it found readable.
    fn poll_once(&mut self, wait: Duration) -> Result<(), Error> {
        let mut items = Vec::with_capacity(2 + 2 * self.connections.len() + self.watched.len());
        items.push(zmq::PollItem::from_fd(
            self.inbox.wake.as_raw_fd(),
            zmq::POLLIN,
        ));
        if let Some(control) = &self.control {
            items.push(control.as_poll_item(zmq::POLLIN));
        }
        for connection in &self.connections {
            items.push(connection.pull.as_poll_item(zmq::POLLIN));
            items.push(connection.publish.as_poll_item(zmq::POLLIN));
        }
        for socket in self.watched.iter().flatten() {
            items.push(socket.as_poll_item(zmq::POLLIN));
        }
        // Commands left over from a full batch have no wake-up byte any more: do not sleep.
        let wait = if self.inbox.commands.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        poll(&mut items, wait)?;
        self.readable.clear();
        self.readable
            .extend(items.iter().map(zmq::PollItem::is_readable));
        drop(items);

        let mut ready = std::mem::take(&mut self.readable).into_iter();
        if ready.next() == Some(true) {
            self.inbox.clear_wakeups();
        }
        // Commands are cheap to check and may have been queued without a wake-up reaching us yet.
        self.run_commands();
        if self.control.is_some() && ready.next() == Some(true) {
            self.serve_control();
        }
        let senders: Vec<Arc<str>> = self.connections.iter().map(|c| c.sender.clone()).collect();
        for sender in senders {
            let pull_ready = ready.next() == Some(true);
            let publish_ready = ready.next() == Some(true);
            if publish_ready {
                if let Some(connection) = self.connection_mut(&sender) {
                    connection.drain_subscriptions();
                }
            }
            if pull_ready {
                self.drain_requests(&sender);
            }
        }
        let tokens: Vec<Token> = self
            .watched
            .iter()
            .enumerate()
            .filter(|(_, socket)| socket.is_some())
            .map(|(index, _)| Token(index))
            .collect();
        for token in tokens {
            if ready.next() == Some(true) {
                self.pending.push_back(Event::Readable(token));
            }
        }
        Ok(())
    }

    fn drain_requests(&mut self, sender: &Arc<str>) {
        for _ in 0..PULL_BATCH {
            let Some(connection) = self.connection(sender) else {
                return;
            };
            match connection.pull.recv_msg(zmq::DONTWAIT) {
                Ok(message) => self.on_request(sender, &message),
                Err(zmq::Error::EAGAIN) => return,
                Err(err) => {
                    log::warn!("receiving from Mongrel2 {sender}: {err}");
                    return;
                }
            }
        }
    }

    fn on_request(&mut self, via: &Arc<str>, message: &[u8]) {
        let request = match Request::parse(message) {
            Ok(request) => request,
            Err(err) => {
                log::warn!("skipping malformed request from {via}: {err}");
                return;
            }
        };
        // Reuse the connection's Arc when the request names it (it always should).
        let sender = if request.sender() == &**via {
            via.clone()
        } else {
            Arc::from(request.sender())
        };
        let conn = ConnId::new(sender, request.conn_id());
        let kind = match request.kind() {
            Ok(kind) => kind,
            Err(err) => {
                log::warn!("skipping request from {conn}: {err}");
                return;
            }
        };
        match kind {
            RequestKind::Http => self.pending.push_back(Event::Http(request.into_owned())),
            RequestKind::WebSocketHandshake { accept } => {
                let accept = accept.to_owned();
                self.on_handshake(conn, request, &accept);
            }
            RequestKind::WebSocketFrame { flags } => self.on_frame(conn, request, flags),
            RequestKind::Json => self.pending.push_back(Event::Json(request.into_owned())),
            RequestKind::Xml => self.pending.push_back(Event::Xml(request.into_owned())),
            RequestKind::Disconnect => self.on_disconnect(conn),
            RequestKind::Credits { credits } => {
                self.pending.push_back(Event::Credits { conn, credits })
            }
            RequestKind::UploadStart { .. } => self
                .pending
                .push_back(Event::UploadStarted(request.into_owned())),
            RequestKind::UploadDone { .. } => self
                .pending
                .push_back(Event::UploadDone(request.into_owned())),
            // A streamed upload's first message carries the full headers (METHOD among
            // them); its chunks carry only UPLOAD_STREAM.
            RequestKind::UploadChunk { .. } if request.method().is_some() => self
                .pending
                .push_back(Event::UploadStarted(request.into_owned())),
            RequestKind::UploadChunk { .. } => self
                .pending
                .push_back(Event::UploadChunk(request.into_owned())),
        }
    }

    fn on_handshake(&mut self, conn: ConnId, request: Request<'_>, accept: &str) {
        let decision = match &mut self.handshake {
            Some(decide) => decide(&request),
            None => Handshake::Accept,
        };
        let protocol = match decision {
            Handshake::Accept => None,
            Handshake::AcceptProtocol(protocol) => Some(protocol),
            Handshake::Reject(response) => {
                match response.for_request(&request).close(true).encode() {
                    Ok(body) => self.send_logged(&conn, &body),
                    // The handler's rejection is unsendable; closing still refuses the client.
                    Err(err) => log::error!("handshake rejection of {conn:?} not sent: {err}"),
                }
                self.send_logged(&conn, b"");
                return;
            }
        };
        let response = match websocket::handshake_response(accept, protocol.as_deref()) {
            Ok(response) => response,
            Err(err) => {
                log::warn!("cannot answer the handshake of {conn}: {err}");
                self.send_logged(&conn, b"");
                return;
            }
        };
        self.send_logged(&conn, &response);
        if !self.sessions.open(&conn) {
            // A handshake on a conn id we think is open: Mongrel2 restarted (it reuses ids)
            // without telling us; the old session is gone.
            self.pending.push_back(Event::Closed {
                conn: conn.clone(),
                reason: CloseReason::Disconnected,
            });
        }
        log::debug!("WebSocket session {conn} opened");
        self.pending.push_back(Event::Opened {
            conn,
            request: request.into_owned(),
        });
    }

    fn on_frame(&mut self, conn: ConnId, request: Request<'_>, flags: Flags) {
        if !self.sessions.heard(&conn) {
            // Mongrel2 kept this client while the handler restarted: adopt the session.
            // Every frame carries the handshake's headers, so the request is a fair stand-in.
            log::info!("adopting WebSocket session {conn} opened before this handler");
            self.sessions.open(&conn);
            self.pending.push_back(Event::Opened {
                conn: conn.clone(),
                request: request.clone().into_owned(),
            });
        }
        let payload = request.body();
        if let Err(violation) = websocket::validate(flags, payload, self.max_message_size) {
            self.violation(conn, violation.close_code(), violation.to_string());
            return;
        }
        match flags.opcode() {
            Opcode::Text => match std::str::from_utf8(payload) {
                Ok(text) => self.pending.push_back(Event::Message {
                    conn,
                    message: Message::Text(text.to_owned()),
                }),
                Err(_) => self.violation(conn, CloseCode::INVALID_PAYLOAD, "invalid UTF-8".into()),
            },
            Opcode::Binary => self.pending.push_back(Event::Message {
                conn,
                message: Message::Binary(payload.to_vec()),
            }),
            Opcode::Ping => {
                let mut pong = Vec::with_capacity(payload.len() + 2);
                websocket::encode_frame(Opcode::Pong, payload, &mut pong);
                self.send_logged(&conn, &pong);
            }
            Opcode::Pong => {}
            Opcode::Close => self.on_close_frame(conn, payload),
            // Mongrel2 reassembles fragments, so a lone continuation is a broken client.
            Opcode::Continuation | Opcode::Reserved(_) => {
                self.violation(conn, CloseCode::PROTOCOL_ERROR, "unexpected opcode".into())
            }
        }
    }

    fn on_close_frame(&mut self, conn: ConnId, payload: &[u8]) {
        let (code, reason) = match websocket::decode_close(payload) {
            Ok(Some(close)) => (Some(close.code.0), close.reason.into_owned()),
            Ok(None) => (None, String::new()),
            Err(err) => {
                self.violation(conn, err.close_code(), err.to_string());
                return;
            }
        };
        let mut echo = Vec::with_capacity(4);
        match code {
            Some(code) => websocket::encode_frame(Opcode::Close, &code.to_be_bytes(), &mut echo),
            None => websocket::encode_frame(Opcode::Close, b"", &mut echo),
        }
        self.send_logged(&conn, &echo);
        self.send_logged(&conn, b"");
        self.sessions.close(&conn);
        log::debug!("WebSocket session {conn} closed by the client ({code:?})");
        self.pending.push_back(Event::Closed {
            conn,
            reason: CloseReason::Client { code, reason },
        });
    }

    fn violation(&mut self, conn: ConnId, code: CloseCode, violation: String) {
        log::info!("closing {conn} with {}: {violation}", code.0);
        let frame = close_frame(code.0, &violation);
        self.send_logged(&conn, &frame);
        self.send_logged(&conn, b"");
        self.sessions.close(&conn);
        self.pending.push_back(Event::Closed {
            conn,
            reason: CloseReason::ProtocolViolation {
                code: code.0,
                violation,
            },
        });
    }

    fn on_disconnect(&mut self, conn: ConnId) {
        self.streams.remove(&conn);
        if self.sessions.close(&conn) {
            log::debug!("WebSocket session {conn} disconnected");
            self.pending.push_back(Event::Closed {
                conn,
                reason: CloseReason::Disconnected,
            });
        } else {
            self.pending.push_back(Event::Disconnected(conn));
        }
    }

    fn ping_round(&mut self, now: Instant) {
        // Advance from the schedule, not from now, so rounds do not drift; skip rounds
        // missed while the caller was busy rather than firing them back to back.
        while self.next_ping <= now {
            self.next_ping += self.ping_interval;
        }
        let mut ping = Vec::with_capacity(2);
        websocket::encode_frame(Opcode::Ping, b"", &mut ping);
        let goodbye = close_frame(CloseCode::GOING_AWAY.0, "ping timeout");
        for round in self.sessions.ping_round() {
            if !round.ping.is_empty() {
                self.deliver_logged(&round.sender, &round.ping, &ping);
            }
            if !round.expired.is_empty() {
                self.deliver_logged(&round.sender, &round.expired, &goodbye);
                self.deliver_logged(&round.sender, &round.expired, b"");
                for id in round.expired {
                    let conn = ConnId::new(round.sender.clone(), id);
                    log::info!("WebSocket session {conn} did not answer the ping");
                    self.pending.push_back(Event::Closed {
                        conn,
                        reason: CloseReason::PingTimeout,
                    });
                }
            }
        }
    }

    fn serve_control(&mut self) {
        let Some(socket) = &self.control else {
            return;
        };
        let message = match socket.recv_msg(zmq::DONTWAIT) {
            Ok(message) => message,
            Err(zmq::Error::EAGAIN) => return,
            Err(err) => {
                log::warn!("control socket: {err}");
                return;
            }
        };
        let (answer, action) = control::interpret(&message);
        if let Err(err) = socket.send(answer, 0) {
            log::warn!("control socket reply: {err}");
        }
        let result = match action {
            Ok(None) => Ok(()),
            Ok(Some(control::Action::Add {
                sender,
                pull,
                publish,
            })) => self.add_connection(&sender, &pull, &publish),
            Ok(Some(control::Action::Remove { sender })) => self.remove_connection(&sender),
            Ok(Some(control::Action::Ping {
                sender,
                conn_id,
                text,
            })) => self.send_to(&ConnId::new(sender, conn_id), text.as_bytes()),
            Err(err) => {
                log::warn!("control request ignored: {err}");
                Ok(())
            }
        };
        if let Err(err) = result {
            log::warn!("control request failed: {err}");
        }
    }

    fn run_commands(&mut self) {
        for _ in 0..COMMAND_BATCH {
            let Some(command) = self.inbox.try_next() else {
                return;
            };
            if let Err(err) = self.apply(command) {
                log::warn!("queued send failed: {err}");
            }
        }
    }

    pub(crate) fn submit(&mut self, command: Command) -> Result<(), Error> {
        self.apply(command)
    }

    fn apply(&mut self, command: Command) -> Result<(), Error> {
        match command {
            Command::Send {
                conn,
                body,
                then_close,
            } => {
                self.send_to(&conn, &body)?;
                if then_close || body.is_empty() {
                    if then_close {
                        self.send_to(&conn, b"")?;
                    }
                    self.forget(&conn, CloseCode::ABNORMAL.0);
                }
                Ok(())
            }
            Command::Deliver { sender, ids, body } => self.deliver_now(&sender, &ids, &body),
            Command::DeliverTo { conns, body } => {
                let mut by_sender: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
                for conn in &conns {
                    by_sender.entry(&conn.sender).or_default().push(conn.id);
                }
                for (sender, ids) in by_sender {
                    self.deliver_now(sender, &ids, &body)?;
                }
                Ok(())
            }
            Command::Broadcast { frame } => {
                let groups: Vec<(Arc<str>, Vec<u64>)> = self
                    .sessions
                    .by_sender()
                    .map(|(sender, ids)| (sender.clone(), ids))
                    .collect();
                for (sender, ids) in groups {
                    self.deliver_now(&sender, &ids, &frame)?;
                }
                Ok(())
            }
            Command::CloseSession { conn, code, frame } => {
                self.send_to(&conn, &frame)?;
                self.send_to(&conn, b"")?;
                self.forget(&conn, code);
                Ok(())
            }
            Command::Stream { conn, part, body } => match part {
                StreamPart::Start => {
                    self.send_to(&conn, &body)?;
                    self.streams.insert(conn);
                    Ok(())
                }
                StreamPart::Chunk if self.streams.contains(&conn) => self.send_to(&conn, &body),
                StreamPart::Chunk => Err(Error::NotStreaming(conn)),
                StreamPart::End { then_close } => {
                    if !self.streams.remove(&conn) {
                        return Err(Error::NotStreaming(conn));
                    }
                    self.send_to(&conn, &body)?;
                    if then_close {
                        self.send_to(&conn, b"")?;
                    }
                    Ok(())
                }
            },
            Command::Control { conn, control } => {
                let connection = self
                    .connection(&conn.sender)
                    .ok_or_else(|| Error::UnknownSender(conn.sender.to_string()))?;
                let message = match control {
                    Control::KeepAlive => reply::ctl_keep_alive(&conn.sender, &[conn.id])?,
                    Control::Credits(credits) => {
                        reply::ctl_credits(&conn.sender, &[conn.id], credits)?
                    }
                    Control::Cancel => reply::ctl_cancel(&conn.sender, &[conn.id])?,
                };
                connection.send(message)
            }
            Command::AddConnection {
                sender,
                pull,
                publish,
            } => self.add_connection(&sender, &pull, &publish),
            Command::RemoveConnection { sender } => self.remove_connection(&sender),
            Command::Interrupt => {
                self.interrupted = true;
                Ok(())
            }
        }
    }

    /// The connection was closed from our side: forget whatever we kept for it.
    fn forget(&mut self, conn: &ConnId, code: u16) {
        self.streams.remove(conn);
        if self.sessions.close(conn) {
            self.pending.push_back(Event::Closed {
                conn: conn.clone(),
                reason: CloseReason::Handler { code },
            });
        }
    }

    fn connection(&self, sender: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| &*c.sender == sender)
    }

    fn connection_mut(&mut self, sender: &str) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| &*c.sender == sender)
    }

    fn send_to(&self, conn: &ConnId, body: &[u8]) -> Result<(), Error> {
        let connection = self
            .connection(&conn.sender)
            .ok_or_else(|| Error::UnknownSender(conn.sender.to_string()))?;
        let mut message = Vec::with_capacity(conn.sender.len() + body.len() + 24);
        reply::encode_reply(&conn.sender, &[conn.id], body, &mut message)?;
        connection.send(message)
    }

    fn send_logged(&self, conn: &ConnId, body: &[u8]) {
        if let Err(err) = self.send_to(conn, body) {
            log::warn!("reply to {conn} failed: {err}");
        }
    }

    fn deliver_now(&self, sender: &str, ids: &[u64], body: &[u8]) -> Result<(), Error> {
        let connection = self
            .connection(sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        for message in reply::batched(sender, ids, body, self.handler_targets)? {
            connection.send(message)?;
        }
        Ok(())
    }

    fn deliver_logged(&self, sender: &str, ids: &[u64], body: &[u8]) {
        if let Err(err) = self.deliver_now(sender, ids, body) {
            log::warn!(
                "delivery to {} sessions of {sender} failed: {err}",
                ids.len()
            );
        }
    }

    /// Sends close 1001 to every session, gives the sockets a bounded linger and closes them.
    /// Never hangs, whatever state Mongrel2 is in. Drop does the same.
    pub fn shutdown(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if std::mem::replace(&mut self.shut_down, true) {
            return;
        }
        self.run_commands();
        let goodbye = close_frame(CloseCode::GOING_AWAY.0, "shutting down");
        for (sender, ids) in self.sessions.drain() {
            self.deliver_logged(&sender, &ids, &goodbye);
            self.deliver_logged(&sender, &ids, b"");
        }
        for connection in &self.connections {
            connection.set_linger(SHUTDOWN_LINGER_MS);
        }
        for socket in self.watched.iter().flatten() {
            let _ = socket.set_linger(0);
        }
        self.connections.clear();
        self.control = None;
        self.watched.clear();
        // The context itself goes with the struct: dropping the last handle on an owned
        // context terminates it, and with every socket closed and its linger bounded that
        // returns promptly.
        log::debug!("Transceiver shut down");
    }
}

impl Drop for Transceiver {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

impl Transceiver {
    outbound::outbound_methods!(mut);
}

/// Iterator over a Transceiver's events, from [`Transceiver::events`].
#[derive(Debug)]
pub struct Events<'t> {
    transceiver: &'t mut Transceiver,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.transceiver.recv())
    }
}

/// A close frame carrying `code` and `reason` (cut to the 123 bytes a control frame allows).
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(reason.len().min(123) + 4);
    websocket::CloseFrame::new(CloseCode(code), reason).encode_frame(&mut frame);
    frame
}

/// `zmq::poll` with a Duration; EINTR counts as a quiet wake-up.
fn poll(items: &mut [zmq::PollItem<'_>], wait: Duration) -> Result<(), Error> {
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    // Round up so a sub-millisecond wait does not spin.
    let millis = if wait.is_zero() || wait.subsec_nanos().is_multiple_of(1_000_000) {
        millis
    } else {
        millis + 1
    };
    match zmq::poll(items, millis) {
        Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
