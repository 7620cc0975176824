//! The Server: a fake Mongrel2 with a PUSH for requests and a SUB for replies.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::Client;
use super::connector::{host_port, Connector};
use super::router::{millis, RawReply, ReaderSockets, Rejected, Shared};
use super::{HarnessError, Protocol};
use crate::request::{HeaderProtocol, Request};

/// Where the Server binds by default: loopback on a free port, so tests run in parallel.
pub const DEFAULT_BIND: &str = "tcp://127.0.0.1:*";
/// Default bound on connecting and verifying one handler.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on waiting for a handler to take a request.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on waiting for a reply.
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a Server waits, in all, for handlers to acknowledge the removal.
const TEARDOWN_BUDGET: Duration = Duration::from_secs(1);

/// Configures a [`Server`]; start with [`Server::builder`].
#[derive(Clone)]
pub struct ServerBuilder {
    sender: Option<String>,
    push: String,
    sub: String,
    advertise: Option<String>,
    handlers: Vec<String>,
    connect_timeout: Duration,
    send_timeout: Duration,
    recv_timeout: Duration,
    header_protocol: HeaderProtocol,
    context: Option<zmq::Context>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("sender", &self.sender)
            .field("push", &self.push)
            .field("sub", &self.sub)
            .field("advertise", &self.advertise)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The Mongrel2 sender id (the Handler's `send_ident`) to use; default: a fresh UUID.
    /// Must be unique among the Servers a handler talks to.
    pub fn sender_id(mut self, sender: impl Into<String>) -> ServerBuilder {
        self.sender = Some(sender.into());
        self
    }

    /// Where to bind the PUSH that sends requests (default `tcp://127.0.0.1:*`).
    pub fn bind_push(mut self, endpoint: impl Into<String>) -> ServerBuilder {
        self.push = endpoint.into();
        self
    }

    /// Where to bind the SUB that receives replies (default `tcp://127.0.0.1:*`).
    pub fn bind_sub(mut self, endpoint: impl Into<String>) -> ServerBuilder {
        self.sub = endpoint.into();
        self
    }

    /// The host handlers should connect to, when it differs from the bound one (a
    /// wildcard bind is advertised as 127.0.0.1 otherwise).
    pub fn advertise(mut self, host: impl Into<String>) -> ServerBuilder {
        self.advertise = Some(host.into());
        self
    }

    /// A handler to connect on the first [`Server::client`]: the control endpoint of a
    /// running Transceiver.
    pub fn handler(mut self, control_endpoint: impl Into<String>) -> ServerBuilder {
        self.handlers.push(control_endpoint.into());
        self
    }

    /// Several handlers, as [`ServerBuilder::handler`].
    pub fn handlers<I, S>(mut self, control_endpoints: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.handlers
            .extend(control_endpoints.into_iter().map(Into::into));
        self
    }

    /// Bound on connecting and verifying one handler (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on waiting for a handler to take a request (default 5 s).
    pub fn send_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.send_timeout = timeout;
        self
    }

    /// Bound on waiting for a reply, for the Server and its new Clients (default 5 s).
    pub fn recv_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.recv_timeout = timeout;
        self
    }

    /// The header encoding of new Clients' requests (Mongrel2's handler `protocol`
    /// setting; default tnetstring).
    pub fn header_protocol(mut self, protocol: HeaderProtocol) -> ServerBuilder {
        self.header_protocol = protocol;
        self
    }

    /// Uses this ZeroMQ context instead of a new one.
    pub fn context(mut self, context: zmq::Context) -> ServerBuilder {
        self.context = Some(context);
        self
    }

    /// Binds the sockets and starts routing replies. Handlers are connected on the first
    /// [`Server::client`] (or by [`Server::connect`]).
    pub fn build(self) -> Result<Server, HarnessError> {
        for (index, handler) in self.handlers.iter().enumerate() {
            if self.handlers[..index].contains(handler) {
                return Err(HarnessError::AlreadyConnected(handler.clone()));
            }
        }
        let sender = self
            .sender
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // Mongrel2 drops replies whose sender is not letters, digits and '-'.
        if sender.is_empty()
            || !sender
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(HarnessError::Endpoint {
                endpoint: sender,
                reason: "a sender id must be ASCII letters, digits and '-'".into(),
            });
        }
        let context = self.context.unwrap_or_default();
        let tag = uuid::Uuid::new_v4();
        let events = i32::from(zmq::SocketEvent::ACCEPTED.to_raw())
            | i32::from(zmq::SocketEvent::DISCONNECTED.to_raw());

        let push = context.socket(zmq::PUSH)?;
        push.set_linger(0)?;
        let push_monitor = monitor(
            &context,
            &push,
            &format!("inproc://harness-{tag}-push"),
            events,
        )?;
        let push_endpoint = bind(&push, &self.push)?;

        let sub = context.socket(zmq::SUB)?;
        sub.set_linger(0)?;
        // "SENDER " rather than Mongrel2's bare prefix: a sender id that starts with ours
        // must not leak in.
        sub.set_subscribe(format!("{sender} ").as_bytes())?;
        let sub_monitor = monitor(
            &context,
            &sub,
            &format!("inproc://harness-{tag}-sub"),
            events,
        )?;
        let sub_endpoint = bind(&sub, &self.sub)?;

        // Handlers are told host and port; make sure both endpoints can be expressed so.
        let advertise = self.advertise.as_deref();
        let push_endpoint = advertised(&push_endpoint, advertise)?;
        let sub_endpoint = advertised(&sub_endpoint, advertise)?;

        let stop_endpoint = format!("inproc://harness-{tag}-stop");
        let stop = context.socket(zmq::PAIR)?;
        stop.set_linger(0)?;
        stop.bind(&stop_endpoint)?;
        let stop_reader = context.socket(zmq::PAIR)?;
        stop_reader.set_linger(0)?;
        stop_reader.connect(&stop_endpoint)?;

        let shared = Arc::new(Shared::new(
            sender,
            push_endpoint,
            sub_endpoint,
            context,
            push,
        ));
        let sockets = ReaderSockets {
            sub,
            push_monitor,
            sub_monitor,
            stop: stop_reader,
        };
        let reader = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("harness-reader".into())
                .spawn(move || shared.run_reader(sockets))
                .map_err(|err| HarnessError::Endpoint {
                    endpoint: "reader thread".into(),
                    reason: err.to_string(),
                })?
        };
        log::debug!(
            "harness server {} on push {} / sub {}",
            shared.sender,
            shared.push_endpoint,
            shared.sub_endpoint
        );
        Ok(Server {
            shared,
            connected: Vec::new(),
            pending: self.handlers,
            reader: Some(reader),
            stop: Some(stop),
            connect_timeout: self.connect_timeout,
            send_timeout: self.send_timeout,
            recv_timeout: self.recv_timeout,
            header_protocol: self.header_protocol,
        })
    }
}

/// A fake Mongrel2 server for testing handlers. See the [module docs](super) for an
/// example.
///
/// It binds a PUSH (requests out) and a SUB (replies in, subscribed to its sender id),
/// connects handlers to itself through their control sockets, proves each path works
/// before handing out [`Client`]s, and routes every reply to the client it is addressed
/// to. Dropping it disconnects it from every handler (best effort, bounded) and closes its
/// sockets without lingering.
pub struct Server {
    shared: Arc<Shared>,
    connected: Vec<Connector>,
    pending: Vec<String>,
    reader: Option<JoinHandle<()>>,
    stop: Option<zmq::Socket>,
    connect_timeout: Duration,
    send_timeout: Duration,
    recv_timeout: Duration,
    header_protocol: HeaderProtocol,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("sender", &self.shared.sender)
            .field("push", &self.shared.push_endpoint)
            .field("sub", &self.shared.sub_endpoint)
            .field("connected", &self.handlers().collect::<Vec<_>>())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts configuring a Server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            sender: None,
            push: DEFAULT_BIND.to_owned(),
            sub: DEFAULT_BIND.to_owned(),
            advertise: None,
            handlers: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            recv_timeout: DEFAULT_RECV_TIMEOUT,
            header_protocol: HeaderProtocol::default(),
            context: None,
        }
    }

    /// A Server with default settings that will connect to these handlers' control
    /// endpoints on the first [`Server::client`].
    pub fn new<I, S>(handlers: I) -> Result<Server, HarnessError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Server::builder().handlers(handlers).build()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The Mongrel2 sender id this Server puts in requests and subscribes to.
    pub fn sender_id(&self) -> &str {
        &self.shared.sender
    }

    /// The PUSH endpoint as handlers are told to connect to it (the real port).
    pub fn push_endpoint(&self) -> &str {
        &self.shared.push_endpoint
    }

    /// The SUB endpoint as handlers are told to connect to it (the real port).
    pub fn sub_endpoint(&self) -> &str {
        &self.shared.sub_endpoint
    }

    /// The ZeroMQ context the Server's sockets live in.
    pub fn context(&self) -> &zmq::Context {
        &self.shared.context
    }

    /// The control endpoints of the handlers connected and verified so far.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        self.connected.iter().map(Connector::endpoint)
    }

    /// A new client connection. The first call connects and verifies every handler the
    /// Server was built with (later calls retry any that failed): when it returns, every
    /// handler provably receives requests and its replies provably arrive. An error names
    /// the handler that could not be verified.
    pub fn client(&mut self, protocol: Protocol) -> Result<Client, HarnessError> {
        self.connect_pending()?;
        Ok(Client::new(
            self.shared.clone(),
            protocol,
            self.header_protocol,
            self.send_timeout,
            self.recv_timeout,
        ))
    }

    /// Connects and verifies the handlers the Server was built with that are not connected
    /// yet ([`Server::client`] and [`Server::send`] do this first).
    pub fn connect_pending(&mut self) -> Result<(), HarnessError> {
        while let Some(endpoint) = self.pending.first().cloned() {
            self.connect(&endpoint)?;
        }
        Ok(())
    }

    /// Connects one more handler (its control endpoint) and verifies the path both ways
    /// (see [`Connector`]). Connecting one that is already connected is an error.
    pub fn connect(&mut self, control_endpoint: &str) -> Result<(), HarnessError> {
        if self
            .connected
            .iter()
            .any(|c| c.endpoint() == control_endpoint)
        {
            return Err(HarnessError::AlreadyConnected(control_endpoint.to_owned()));
        }
        let named = |err: HarnessError| match err {
            HarnessError::Handler { .. } => err,
            other => HarnessError::handler(control_endpoint, other.to_string()),
        };
        let mut connector = Connector::new(&self.shared.context, control_endpoint)
            .map_err(named)?
            .with_timeout(self.connect_timeout);
        connector.connect_to(&self.shared).map_err(named)?;
        self.pending.retain(|endpoint| endpoint != control_endpoint);
        self.connected.push(connector);
        log::info!(
            "harness {}: handler at {control_endpoint} connected",
            self.shared.sender
        );
        Ok(())
    }

    /// Disconnects one handler and verifies that the path is gone (see [`Connector`]).
    /// Disconnecting one that is not connected is an error; a failed verification keeps
    /// it listed (Drop will try again).
    pub fn disconnect(&mut self, control_endpoint: &str) -> Result<(), HarnessError> {
        let index = self
            .connected
            .iter()
            .position(|c| c.endpoint() == control_endpoint)
            .ok_or_else(|| HarnessError::NotConnected(control_endpoint.to_owned()))?;
        let mut connector = self.connected.remove(index);
        match connector.disconnect_from(&self.shared) {
            Ok(()) => {
                log::info!(
                    "harness {}: handler at {control_endpoint} disconnected",
                    self.shared.sender
                );
                Ok(())
            }
            Err(err) => {
                self.connected.insert(index, connector);
                Err(err)
            }
        }
    }

    /// Sends a request as Mongrel2 would, to whichever handler's turn it is. Fails with
    /// [`HarnessError::SendTimeout`] when no handler takes it in time, and at once with
    /// [`HarnessError::HandlersPending`] while handlers the Server was built with are not
    /// connected yet: the first [`Server::client`] or [`Server::connect_pending`] does that.
    pub fn send(&self, request: &Request<'_>) -> Result<(), HarnessError> {
        self.send_raw(&request.encode())
    }

    /// Sends raw bytes through the PUSH (for malformed-request tests); fails as
    /// [`Server::send`] does.
    pub fn send_raw(&self, message: &[u8]) -> Result<(), HarnessError> {
        if !self.pending.is_empty() {
            return Err(HarnessError::HandlersPending(self.pending.clone()));
        }
        self.shared.send(message, self.send_timeout)
    }

    /// Reserves a connection id no Client will use, for hand-made requests sent with
    /// [`Server::send`]; replies to it arrive through [`Server::recv`].
    pub fn reserve_conn_id(&self) -> u64 {
        let id = self.shared.register();
        self.shared.unregister(id);
        id
    }

    /// The next reply addressed to no live Client, waiting at most the receive timeout.
    pub fn recv(&self) -> Result<RawReply, HarnessError> {
        self.recv_timeout(self.recv_timeout)?.ok_or_else(|| {
            HarnessError::timeout("a reply to the Server (no Client)", self.recv_timeout)
        })
    }

    /// Like [`Server::recv`] with an explicit timeout; `Ok(None)` when nothing came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<RawReply>, HarnessError> {
        self.shared.next_unclaimed(Instant::now() + timeout)
    }

    /// Every malformed message the handlers published so far (Mongrel2 would have dropped
    /// them silently); takes them out.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        self.shared.take_rejected()
    }

    /// Best effort: tells every handler to drop this Server, waiting at most
    /// [`TEARDOWN_BUDGET`] in all for the acknowledgements.
    fn teardown_handlers(&mut self) {
        let sender = self.shared.sender.clone();
        let mut sockets = Vec::new();
        for connector in &mut self.connected {
            if let Some(socket) = connector.start_remove(&sender) {
                sockets.push(socket);
            }
        }
        let deadline = Instant::now() + TEARDOWN_BUDGET;
        let mut waiting: Vec<&zmq::Socket> = sockets;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "harness {sender}: {} handler(s) did not acknowledge the teardown",
                    waiting.len()
                );
                break;
            }
            let mut items: Vec<_> = waiting
                .iter()
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            if zmq::poll(&mut items, millis(left)).is_err() {
                break;
            }
            let readable: Vec<bool> = items.iter().map(zmq::PollItem::is_readable).collect();
            drop(items);
            let mut index = 0;
            waiting.retain(|socket| {
                let done = readable[index] && socket.recv_bytes(zmq::DONTWAIT).is_ok();
                index += 1;
                !done
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.teardown_handlers();
        self.connected.clear();
        if let Some(stop) = self.stop.take() {
            if let Err(err) = stop.send("stop", zmq::DONTWAIT) {
                log::warn!("cannot stop the harness reader: {err}");
            }
        }
        if let Some(reader) = self.reader.take() {
            if reader.join().is_err() {
                log::warn!("the harness reader panicked");
            }
        }
        // Every socket has linger 0; the context goes when the last Client lets go of it.
        self.shared.mark_stopped("the Server was dropped".into());
    }
}

fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, HarnessError> {
    let failed = |reason: String| HarnessError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    socket
        .bind(endpoint)
        .map_err(|err| failed(err.to_string()))?;
    socket
        .get_last_endpoint()?
        .map_err(|_| failed("the bound endpoint is not UTF-8".into()))
}

fn advertised(bound: &str, advertise: Option<&str>) -> Result<String, HarnessError> {
    let (host, port) = host_port(bound, advertise)?;
    Ok(format!("tcp://{host}:{port}"))
}

/// Starts a socket monitor and returns the PAIR that receives its events. Connected
/// before the socket binds, so no event is missed.
fn monitor(
    context: &zmq::Context,
    socket: &zmq::Socket,
    endpoint: &str,
    events: i32,
) -> Result<zmq::Socket, HarnessError> {
    socket.monitor(endpoint, events)?;
    let pair = context.socket(zmq::PAIR)?;
    pair.set_linger(0)?;
    pair.connect(endpoint)?;
    Ok(pair)
}
