//! The [`Transceiver`]: a ZeroMQ poll loop that moves bytes between Mongrel2's sockets and
//! the sans-IO [`Core`], and runs the commands queued by [`Handle`]s.

use std::collections::VecDeque;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use super::builder::Builder;
use super::command::Outbound;
use super::connection::Connection;
use super::core::Core;
use super::group_link::GroupLink;
use super::handle::{self, Command, Handle, Inbox};
use super::signals::Signals;
use super::waiting::{self, Watch};
use super::{Error, Event, Token, Transport};

mod connections;
mod control_requests;

/// How many requests one readable PULL may deliver before timers and other sockets get a
/// turn: keeps pings on time under load.
const PULL_BATCH: usize = 256;
/// The same for commands queued by handles: a producer faster than the loop must not
/// starve it.
const COMMAND_BATCH: usize = 1024;
/// The longest ZeroMQ frame a direct link accepts from Mongrel2 (at least this; more when
/// [`Builder::max_message_size`] asks for more): a request's body is bounded by Mongrel2's
/// `limits.content_length`, which users raise.
const MIN_MAX_FRAME: usize = 256 << 20;
/// How long shutdown lets the goodbye close frames drain. Keeps Drop well under a second.
const SHUTDOWN_LINGER_MS: i32 = 250;
/// Replies held back while more received events wait for the handler: at most this many...
const HOLD_REPLIES: usize = 64;
/// ...and at most this long (checked when the handler next asks for an event).
const HOLD_FOR: Duration = Duration::from_micros(500);

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
    pub(super) core: Core,
    /// The handler group this process is a member of, if any.
    pub(super) group: Option<GroupLink>,
    /// Events of the loop itself ([`Event::Readable`]), and the core's in a group.
    pending: VecDeque<Event>,
    inbox: Inbox,
    handle: Handle,
    signals: Option<Signals>,
    readable: Vec<bool>,
    /// Since when replies have been held back (see [`Transceiver::flush_unless_busy`]).
    holding_since: Option<Instant>,
    subscription_timeout: Option<Duration>,
    /// How new Mongrel2 connections are spoken, and the longest frame they accept.
    transport: Transport,
    max_frame: usize,
    interrupted: bool,
    shut_down: bool,
}

impl std::fmt::Debug for Transceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transceiver")
            .field("senders", &self.senders().collect::<Vec<_>>())
            .field("sessions", &self.core.session_count())
            .finish_non_exhaustive()
    }
}

impl Transceiver {
    /// Starts configuring a Transceiver for the Mongrel2 Handler whose `send_ident` is
    /// `sender`; defaults connect to 127.0.0.1 ports 9999 (PULL) and 9998 (PUB), and no
    /// control socket is bound unless [`Builder::control`] asks for one.
    pub fn builder(sender: &str) -> Builder {
        Builder::new(sender)
    }

    pub(super) fn from_builder(builder: Builder) -> Result<Transceiver, Error> {
        let context = builder.context.unwrap_or_default();
        let control = match &builder.control {
            Some(endpoint) => {
                let socket = context.socket(zmq::REP)?;
                socket.set_linger(0)?;
                socket.bind(endpoint).map_err(|source| Error::Endpoint {
                    role: "control",
                    action: "bind",
                    endpoint: endpoint.clone(),
                    source,
                })?;
                Some(socket)
            }
            None => None,
        };
        let now = Instant::now();
        let mut core = Core::new(now);
        core.set_ping_interval(builder.ping_interval, now)?;
        core.set_max_message_size(builder.max_message_size);
        core.set_handler_targets(builder.handler_targets)?;
        core.set_handshake_boxed(builder.handshake);
        core.set_upload_temp_store(builder.upload_temp_store.as_deref())?;
        let (handle, inbox) = handle::channel(builder.queue_capacity, builder.send_timeout)?;
        let group = match &builder.group {
            Some((bind, peers)) => {
                let timing = builder.group_timing.unwrap_or_else(|| {
                    super::GroupTiming::for_ping_interval(builder.ping_interval)
                });
                // A pong may be lost with a member that dies: allow one silent round.
                core.sessions.set_grace(1);
                Some(GroupLink::open(&context, bind, peers, timing, now)?)
            }
            None => None,
        };
        let mut transceiver = Transceiver {
            connections: Vec::new(),
            control,
            watched: Vec::new(),
            context,
            core,
            group,
            pending: VecDeque::new(),
            inbox,
            handle,
            signals: None,
            readable: Vec::new(),
            holding_since: None,
            subscription_timeout: builder.subscription_timeout,
            transport: builder.transport,
            max_frame: builder
                .max_message_size
                .saturating_add(1 << 20)
                .max(MIN_MAX_FRAME),
            interrupted: false,
            shut_down: false,
        };
        transceiver.add_connection(&builder.sender, &builder.pull, &builder.publish)?;
        if !crate::reply::is_mongrel2_uuid(&builder.sender) {
            log::warn!(
                "sender {:?} has characters other than ASCII letters, digits and '-': a real \
                 Mongrel2 silently drops every reply from it (fine for other peers)",
                builder.sender
            );
        }
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

    /// A clonable, `Send + Sync` handle for sending from other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Makes SIGINT and SIGTERM stop the loop: [`recv`](Self::recv) and
    /// [`recv_timeout`](Self::recv_timeout) return [`Error::Interrupted`] and
    /// [`events`](Self::events) ends, so the handler returns and the Transceiver drops,
    /// saying goodbye (close 1001) to every session. A second signal, or one after the
    /// Transceiver is gone, exits the process at once (status 1), so a stuck program can
    /// still be stopped.
    pub fn stop_on_signals(&mut self) -> Result<(), Error> {
        if self.signals.is_none() {
            self.signals = Some(Signals::register()?);
        }
        Ok(())
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

    /// Waits for the next event. [`Error::Interrupted`] when the loop was interrupted
    /// ([`Handle::interrupt`], or a signal after [`Transceiver::stop_on_signals`]).
    pub fn recv(&mut self) -> Result<Event, Error> {
        match self.next_event(None)? {
            Some(event) => Ok(event),
            None => Err(self.take_interrupt()),
        }
    }

    /// Waits at most `timeout` for the next event: `Ok(None)` when none came,
    /// [`Error::Interrupted`] when the loop was interrupted (as [`recv`](Self::recv)).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let event = self.next_event(Instant::now().checked_add(timeout))?;
        if event.is_none() && self.interrupted {
            return Err(self.take_interrupt());
        }
        Ok(event)
    }

    /// The events, one by one, until the loop is interrupted (then the iterator ends; errors
    /// are yielded as they come).
    ///
    /// The iterator borrows the Transceiver, so a handler that answers events loops over
    /// [`recv`](Self::recv) instead (ending on [`Error::Interrupted`], as the
    /// [crate example](crate) does); `events()` suits consumers that only read, or that send
    /// through a [`Handle`] on other threads.
    pub fn events(&mut self) -> Events<'_> {
        Events { transceiver: self }
    }

    fn take_interrupt(&mut self) -> Error {
        self.interrupted = false;
        Error::Interrupted
    }

    /// The next event; `None` on interrupt or when `deadline` passed.
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Option<Event>, Error> {
        let mut polled = false;
        loop {
            let now = Instant::now();
            self.core.handle_timeout(now);
            for connection in &mut self.connections {
                connection.handle_timeout(now);
            }
            if let Some(link) = &mut self.group {
                link.group.handle_timeout(now);
                link.pump(&mut self.core, &mut self.pending);
            }
            let watchdog = self.check_subscriptions(now);
            let event = self.pending.pop_front().or_else(|| self.core.poll_event());
            // Asking for an event may release held pongs and closes; replies to earlier
            // events may be waiting too. Handing out the last waiting event keeps them held:
            // the reply to it usually follows at once, and goes out with them in one write.
            if event.is_none()
                || self
                    .holding_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= HOLD_FOR)
            {
                let _ = self.flush();
            }
            if let Some(event) = event {
                return Ok(Some(event));
            }
            if self.interrupted {
                return Ok(None);
            }
            let timer = match (self.core.next_timeout(), watchdog) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let until = match (deadline, timer) {
                (Some(deadline), _) if deadline <= now => {
                    if polled {
                        return Ok(None);
                    }
                    Some(now)
                }
                (Some(deadline), Some(timer)) => Some(deadline.min(timer)),
                (deadline, timer) => deadline.or(timer),
            };
            let group_timer = self.group.as_ref().map(|link| link.group.next_timeout());
            let reconnect = self
                .connections
                .iter()
                .filter_map(Connection::next_timeout)
                .min();
            let until = [until, group_timer, reconnect].into_iter().flatten().min();
            self.poll_once(until.map(|until| until.saturating_duration_since(now)))?;
            polled = true;
        }
    }

    /// One `zmq_poll` over every socket (`wait` `None`: until one is readable), then
    /// everything it found readable.
    fn poll_once(&mut self, wait: Option<Duration>) -> Result<(), Error> {
        let mut watches = Vec::with_capacity(3 + 2 * self.connections.len() + self.watched.len());
        watches.push(Watch::readable(self.inbox.wake.as_raw_fd()));
        if let Some(signals) = &self.signals {
            watches.push(Watch::readable(signals.fd()));
        }
        if let Some(control) = &self.control {
            watches.push(Watch::Socket(control));
        }
        for connection in &self.connections {
            connection.push_watches(&mut watches);
        }
        if let Some(link) = &self.group {
            watches.push(Watch::Socket(&link.pull));
        }
        for socket in self.watched.iter().flatten() {
            watches.push(Watch::Socket(socket));
        }
        // Commands left over from a full batch have no wake-up byte any more: do not sleep.
        let wait = if self.inbox.commands.is_empty() {
            wait
        } else {
            Some(Duration::ZERO)
        };
        waiting::wait(&watches, wait, &mut self.readable)?;
        drop(watches);

        let mut ready = std::mem::take(&mut self.readable).into_iter();
        if ready.next() == Some(true) {
            self.inbox.clear_wakeups();
        }
        if let Some(signals) = &mut self.signals {
            if ready.next() == Some(true) && signals.take() {
                log::info!("stopping on a signal");
                self.interrupted = true;
            }
        }
        // Commands are cheap to check and may have been queued without a wake-up reaching us yet.
        self.run_commands();
        // Served after the other sockets: adding or removing a connection would shift the
        // readiness flags of the ones after it.
        let control_ready = self.control.is_some() && ready.next() == Some(true);
        for index in 0..self.connections.len() {
            let pull_ready = ready.next() == Some(true);
            let publish_ready = ready.next() == Some(true);
            if publish_ready {
                self.connections[index].drain_subscriptions();
            }
            if pull_ready {
                self.drain_requests(index);
            }
        }
        if self.group.is_some() && ready.next() == Some(true) {
            if let Some(link) = &mut self.group {
                link.drain_peers(Instant::now());
            }
        }
        if let Some(link) = &mut self.group {
            link.pump(&mut self.core, &mut self.pending);
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
        if control_ready {
            self.serve_control();
        }
        let _ = self.flush();
        Ok(())
    }

    fn drain_requests(&mut self, index: usize) {
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        let sender = connection.sender.clone();
        let core = &mut self.core;
        let group = &mut self.group;
        connection.receive(PULL_BATCH, &mut |message| match group {
            Some(link) => link.group.on_mongrel2(message.to_vec()),
            None => core.handle_message(&sender, message),
        });
    }

    /// Whether events already received wait to be handed to the handler.
    fn more_events_waiting(&self) -> bool {
        !self.pending.is_empty() || self.core.has_events()
    }

    /// Writes the replies now, unless more received events wait for the handler: then they
    /// are held (up to [`HOLD_REPLIES`], [`HOLD_FOR`]) and written with the replies to those.
    /// One write of a batch wakes ZeroMQ's I/O thread once, where a write per reply woke it
    /// for nearly every one; the handler is busy with the batch meanwhile, so its replies
    /// wait for nothing but its own work.
    fn flush_unless_busy(&mut self) -> Result<(), Error> {
        if self.more_events_waiting() && self.core.outgoing_len() < HOLD_REPLIES {
            self.holding_since.get_or_insert_with(Instant::now);
            return Ok(());
        }
        self.flush()
    }

    /// Writes every reply made so far to Mongrel2 now.
    ///
    /// Replies are normally written at once. While events already received wait to be handed
    /// out, though, the replies to the ones before are held (at most 64, for at most 0.5 ms
    /// counted at the next [`recv`](Self::recv)) and written together with the next ones, or
    /// at the latest when the handler asks for an event and none is waiting: one write per
    /// batch costs ZeroMQ far less than one per reply. A handler that stops asking for
    /// events while some still wait, and must have its replies out meanwhile, calls this.
    /// The first failure is returned, the others logged.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.holding_since = None;
        let mut first_error = None;
        while let Some(out) = self.core.poll_outgoing() {
            let result = match self.connections.iter_mut().find(|c| c.sender == out.sender) {
                Some(connection) => connection.send(out.message).map(|spent| {
                    if let Some(buffer) = spent {
                        self.core.recycle(buffer);
                    }
                }),
                None => Err(Error::UnknownSender(out.sender.to_string())),
            };
            if let Err(err) = result {
                log::warn!("reply to Mongrel2 {} failed: {err}", out.sender);
                first_error.get_or_insert(err);
            }
        }
        for connection in &mut self.connections {
            connection.write_queued();
        }
        first_error.map_or(Ok(()), Err)
    }

    fn run_commands(&mut self) {
        for _ in 0..COMMAND_BATCH {
            let Some(command) = self.inbox.try_next() else {
                break;
            };
            let result = match command {
                Command::Outbound(outbound) => {
                    let outbound = self.group_wide(outbound);
                    self.core.submit(outbound)
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
            };
            if let Err(err) = result {
                log::warn!("queued command failed: {err}");
            }
        }
        let _ = self.flush();
    }

    /// The outbound methods' entry: the core frames, the loop writes at once.
    pub(crate) fn submit(&mut self, command: Outbound) -> Result<(), Error> {
        let command = self.group_wide(command);
        let applied = self.core.submit(command);
        let flushed = self.flush_unless_busy();
        applied.and(flushed)
    }

    fn submit_http(
        &mut self,
        request: &crate::request::Request<'_>,
        response: &crate::http::Response,
    ) -> Result<(), Error> {
        let applied = self.core.submit_http(request, response);
        let flushed = self.flush_unless_busy();
        applied.and(flushed)
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
        // A group member leaving hands its sessions to the others (they adopt them once it
        // is silent), so it says no goodbye to the clients.
        if self.group.is_none() {
            self.core.shutdown();
        }
        let _ = self.flush();
        for connection in &mut self.connections {
            connection.set_linger(SHUTDOWN_LINGER_MS);
        }
        for socket in self.watched.iter().flatten() {
            let _ = socket.set_linger(0);
        }
        self.connections.clear();
        self.control = None;
        self.group = None;
        self.watched.clear();
        self.signals = None;
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
    super::outbound::outbound_methods!(mut);
}

/// Iterator over a Transceiver's events, from [`Transceiver::events`]; it ends when the loop
/// is interrupted.
#[derive(Debug)]
pub struct Events<'t> {
    transceiver: &'t mut Transceiver,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.transceiver.recv() {
            Err(Error::Interrupted) => None,
            other => Some(other),
        }
    }
}
