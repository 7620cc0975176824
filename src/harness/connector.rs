//! The Connector: one handler's control socket, seen from the fake Mongrel2.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::router::{millis, Peers, Shared};
use super::{HarnessError, Server};

/// The default bound on each control call and on each verification.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Connector::verify_disconnect`] waits for a probe when it cannot watch the
/// handler's transport connections close.
pub const QUIET_WINDOW: Duration = Duration::from_millis(250);
/// The first pause between `__ping__` probes; it doubles up to [`MAX_PROBE_INTERVAL`].
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// The longest pause between `__ping__` probes.
const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(250);

const PONG: &[u8] = b"PONG";
const RECEIVED: &[u8] = b"RECEIVED";

/// The transport connections one handler opened to the Server.
#[derive(Debug, Clone, Default)]
struct Links {
    push: BTreeSet<u64>,
    sub: BTreeSet<u64>,
}

/// A client of one Transceiver's control socket.
///
/// It speaks the seed's control protocol over a REQ socket, byte for byte as the Python
/// transceiver's Connector does, so it drives any handler that speaks it: `PING`
/// (answered `PONG`) and Mongrel2 requests (tnetstring headers, connection id `-1`) whose
/// PATH is a command (answered `RECEIVED`): `__add_connection__` and
/// `__remove_connection__` with METHOD `JSON`, `__ping__` (QUERY `text=GUID`) and
/// `__disconnect_ping__` with METHOD `MONGREL2`. A handler answers `__ping__` by
/// publishing the bare text to connection id `-1` (`SENDER 2:-1, GUID`).
///
/// Every call is bounded by a timeout. A REQ socket whose answer did not come is stuck
/// in "waiting for the answer" forever, so after a timeout the socket is thrown away
/// and the next call opens a new one: the Connector never wedges.
///
/// # How connecting is verified
///
/// [`Connector::connect`] notes which transport connections the Server's PUSH and SUB
/// have, sends `__add_connection__`, then sends `__ping__` (QUERY `text=GUID`, a fresh
/// GUID) again and again until that GUID comes back on the Server's SUB as a reply to
/// connection id `-1`. The Transceiver publishes it through the
/// PUB it connected for this Server, so its arrival proves that the handler's replies
/// reach the Server: the subscription has propagated (PUB/SUB's slow-joiner window is
/// over). Then it waits until the PUSH and the SUB each have a transport connection that
/// was not there before: the handler's PULL and PUB. Requests sent from then on reach the
/// handler, and nothing it replies is lost.
///
/// # How disconnecting is verified
///
/// [`Connector::disconnect`] sends `__remove_connection__`, then a `__ping__` probe with a
/// fresh GUID, then `PING`. The Transceiver serves control requests one at a time and
/// acts on each before it reads the next, so its `PONG` proves the probe was handled
/// after the removal. Had the removal failed, the probe would have been published
/// through the PUB that [`Connector::connect`] proved reaches the Server. Then the
/// Connector waits until the transport connections recorded at connect time have closed
/// (the socket monitors report each one as gone), lets the Server's reader drain its SUB
/// once more (everything that connection delivered is read before its closing is
/// reported), and checks that the probe never arrived. So when it returns, the handler
/// has dropped this Server, its sockets to it are closed, and nothing it sent after the
/// removal got through. Without a recorded connection (a Connector used without
/// `connect`), it falls back to waiting a quiet window for the probe.
pub struct Connector {
    context: zmq::Context,
    endpoint: String,
    socket: Option<zmq::Socket>,
    timeout: Duration,
    /// The Server's transport connections just before `__add_connection__`.
    baseline: Option<Peers>,
    /// This handler's transport connections, once verified.
    links: Option<Links>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A Connector for the control socket at `endpoint` (e.g. what
    /// `Transceiver::control_endpoint()` reports). Connecting is lazy and asynchronous;
    /// nothing is checked until the first call.
    pub fn new(context: &zmq::Context, endpoint: &str) -> Result<Connector, HarnessError> {
        let mut connector = Connector {
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            socket: None,
            timeout: DEFAULT_CONTROL_TIMEOUT,
            baseline: None,
            links: None,
        };
        connector.socket()?;
        Ok(connector)
    }

    /// Sets the bound on each call and verification (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Connector {
        self.timeout = timeout;
        self
    }

    /// The bound on each call and verification.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The control endpoint this Connector talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `PING`: succeeds when the handler's loop answers `PONG`.
    pub fn ping(&mut self) -> Result<(), HarnessError> {
        self.call(b"PING", "PING", PONG, self.timeout)
    }

    /// `__add_connection__`: asks the handler to connect a PULL to `push` and a PUB to
    /// `sub` (both `tcp://HOST:PORT`) for Mongrel2 sender id `sender`. Only says the
    /// handler received the command; see [`Connector::connect`] for a verified connect.
    pub fn add_connection(
        &mut self,
        sender: &str,
        push: &str,
        sub: &str,
    ) -> Result<(), HarnessError> {
        let (push_host, push_port) = host_port(push, None)?;
        let (sub_host, sub_port) = host_port(sub, None)?;
        let body = serde_json::json!({
            "push": [push_host, push_port],
            "sub": [sub_host, sub_port],
        })
        .to_string();
        let message = control_request(sender, "__add_connection__", "JSON", None, body.as_bytes());
        self.call(&message, "__add_connection__", RECEIVED, self.timeout)
    }

    /// `__remove_connection__`: asks the handler to drop sender id `sender`. Only says the
    /// handler received the command; see [`Connector::disconnect`] for a verified one.
    pub fn remove_connection(&mut self, sender: &str) -> Result<(), HarnessError> {
        let message = remove_request(sender);
        self.call(&message, "__remove_connection__", RECEIVED, self.timeout)
    }

    /// `__ping__`: asks the handler to publish `text` to connection id `-1` through the
    /// PUB of sender id `sender`.
    pub fn ping_connection(&mut self, sender: &str, text: &str) -> Result<(), HarnessError> {
        self.ping_within(sender, text, self.timeout)
    }

    /// `__disconnect_ping__`: the seed's Connector sends it after removing a connection;
    /// a handler acknowledges it and publishes nothing.
    pub fn disconnect_ping(&mut self, sender: &str) -> Result<(), HarnessError> {
        let message = control_request(sender, "__disconnect_ping__", "MONGREL2", None, b"");
        self.call(&message, "__disconnect_ping__", RECEIVED, self.timeout)
    }

    /// Connects the handler to `server` and verifies both directions (see [`Connector`]).
    pub fn connect(&mut self, server: &Server) -> Result<(), HarnessError> {
        self.connect_to(server.shared())
    }

    /// Verifies that the handler's replies reach `server` (a `__ping__` GUID round trip)
    /// and, after [`Connector::connect`], that its PULL and PUB connected to the Server.
    pub fn verify_connect(&mut self, server: &Server) -> Result<(), HarnessError> {
        self.verify_connect_to(server.shared())
    }

    /// Disconnects the handler from `server` and verifies that the path is gone (see [`Connector`]).
    pub fn disconnect(&mut self, server: &Server) -> Result<(), HarnessError> {
        self.disconnect_from(server.shared())
    }

    /// Verifies that the handler no longer talks to `server` (see [`Connector`]).
    pub fn verify_disconnect(&mut self, server: &Server) -> Result<(), HarnessError> {
        self.verify_disconnect_from(server.shared())
    }

    pub(crate) fn connect_to(&mut self, shared: &Shared) -> Result<(), HarnessError> {
        self.baseline = Some(shared.peers());
        self.links = None;
        self.add_connection(&shared.sender, &shared.push_endpoint, &shared.sub_endpoint)?;
        self.verify_connect_to(shared)
    }

    pub(crate) fn verify_connect_to(&mut self, shared: &Shared) -> Result<(), HarnessError> {
        let deadline = Instant::now() + self.timeout;
        let probe = Probe::new();
        let mut interval = FIRST_PROBE_INTERVAL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.failed(format!(
                    "no __ping__ came back through its PUB within {:?}: it is not running its \
                     loop, cannot reach {}, or rejected __add_connection__",
                    self.timeout, shared.sub_endpoint
                )));
            }
            match self.ping_within(&shared.sender, &probe.text, left) {
                Ok(()) => {}
                // The socket has been replaced; try again while time is left.
                Err(HarnessError::Timeout { .. }) => continue,
                Err(err) => return Err(err),
            }
            let until = deadline.min(Instant::now() + interval);
            if probe.arrived(shared, until)? {
                break;
            }
            interval = (interval * 2).min(MAX_PROBE_INTERVAL);
        }
        let Some(baseline) = self.baseline.take() else {
            return Ok(());
        };
        let fresh = |now: &Peers| {
            now.push.difference(&baseline.push).next().is_some()
                && now.sub.difference(&baseline.sub).next().is_some()
        };
        match shared.wait_peers(deadline, fresh)? {
            Some(now) => {
                self.links = Some(Links {
                    push: now.push.difference(&baseline.push).copied().collect(),
                    sub: now.sub.difference(&baseline.sub).copied().collect(),
                });
                log::debug!("handler at {} verified: {:?}", self.endpoint, self.links);
                Ok(())
            }
            None => Err(self.failed(format!(
                "its replies arrive, but no new connection to the Server's PUSH ({}) and SUB \
                 appeared within {:?} (was it already connected some other way?)",
                shared.push_endpoint, self.timeout
            ))),
        }
    }

    pub(crate) fn disconnect_from(&mut self, shared: &Shared) -> Result<(), HarnessError> {
        self.remove_connection(&shared.sender)?;
        self.verify_disconnect_from(shared)
    }

    pub(crate) fn verify_disconnect_from(&mut self, shared: &Shared) -> Result<(), HarnessError> {
        let deadline = Instant::now() + self.timeout;
        let probe = Probe::new();
        self.ping_connection(&shared.sender, &probe.text)?;
        // Control requests are served in order: PONG means the probe has been acted on.
        self.ping()?;
        match self.links.take() {
            Some(links) => {
                let gone = |now: &Peers| {
                    links.push.is_disjoint(&now.push) && links.sub.is_disjoint(&now.sub)
                };
                if shared.wait_peers(deadline, gone)?.is_none() {
                    self.links = Some(links);
                    return Err(self.failed(format!(
                        "its connections to the Server were still open {:?} after \
                         __remove_connection__",
                        self.timeout
                    )));
                }
                if !shared.sync(deadline)? {
                    return Err(HarnessError::timeout("the Server's reader", self.timeout));
                }
                if probe.arrived(shared, Instant::now())? {
                    return Err(self.failed("it still replied after __remove_connection__"));
                }
            }
            None => {
                if probe.arrived(shared, Instant::now() + QUIET_WINDOW)? {
                    return Err(self.failed("it still replied after __remove_connection__"));
                }
            }
        }
        Ok(())
    }

    /// Sends `__remove_connection__` without waiting for the answer; for the Server's
    /// best-effort teardown. Returns the socket to poll for the answer.
    pub(crate) fn start_remove(&mut self, sender: &str) -> Option<&zmq::Socket> {
        let message = remove_request(sender);
        let socket = self.socket().ok()?;
        socket.send(message, zmq::DONTWAIT).ok()?;
        Some(socket)
    }

    fn ping_within(
        &mut self,
        sender: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let query = format!("text={text}");
        let message = control_request(sender, "__ping__", "MONGREL2", Some(&query), b"");
        self.call(&message, "__ping__", RECEIVED, timeout.min(self.timeout))
    }

    fn failed(&self, reason: impl Into<String>) -> HarnessError {
        HarnessError::handler(&self.endpoint, reason)
    }

    fn socket(&mut self) -> Result<&zmq::Socket, HarnessError> {
        if self.socket.is_none() {
            let socket = self.context.socket(zmq::REQ)?;
            socket.set_linger(0)?;
            socket
                .connect(&self.endpoint)
                .map_err(|err| HarnessError::Endpoint {
                    endpoint: self.endpoint.clone(),
                    reason: err.to_string(),
                })?;
            self.socket = Some(socket);
        }
        // Just filled in above when it was empty.
        self.socket.as_ref().ok_or(HarnessError::ServerGone)
    }

    /// One request/answer exchange, bounded by `timeout`.
    fn call(
        &mut self,
        message: &[u8],
        command: &str,
        expected: &[u8],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let endpoint = self.endpoint.clone();
        let socket = self.socket()?;
        let answer = match exchange(socket, message, timeout) {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                // A REQ socket without its answer is stuck: start over with a new one.
                self.socket = None;
                return Err(HarnessError::timeout(
                    format!("the control socket at {endpoint} to answer {command}"),
                    timeout,
                ));
            }
            Err(err) => {
                self.socket = None;
                return Err(err.into());
            }
        };
        if answer.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(HarnessError::handler(
                &endpoint,
                format!(
                    "answered {command} with {:?}, expected {:?}",
                    String::from_utf8_lossy(&answer),
                    String::from_utf8_lossy(expected)
                ),
            ))
        }
    }
}

/// Sends `message` and waits at most `timeout` for the answer.
fn exchange(
    socket: &zmq::Socket,
    message: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, zmq::Error> {
    let deadline = Instant::now() + timeout;
    // A REQ socket queues the request on its (possibly still connecting) pipe, so this
    // only fails when the socket is unusable.
    socket.send(message, zmq::DONTWAIT)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket.poll(zmq::POLLIN, millis(left)) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(err) => return Err(err),
        }
        match socket.recv_bytes(zmq::DONTWAIT) {
            Ok(answer) => return Ok(Some(answer)),
            Err(zmq::Error::EAGAIN) if Instant::now() < deadline => continue,
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(err) => return Err(err),
        }
    }
}

/// A control command as the seed's Connector encodes it: `SENDER -1 /COMMAND HEADERS BODY`
/// with the headers a tnetstring dict (METHOD, then QUERY when given) and the body a
/// netstring.
fn control_request(
    sender: &str,
    command: &str,
    method: &str,
    query: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut headers = Vec::new();
    put_netstring(&mut headers, b"METHOD");
    put_netstring(&mut headers, method.as_bytes());
    if let Some(query) = query {
        put_netstring(&mut headers, b"QUERY");
        put_netstring(&mut headers, query.as_bytes());
    }
    let mut message = format!("{sender} -1 /{command} {}:", headers.len()).into_bytes();
    message.extend_from_slice(&headers);
    message.push(b'}');
    put_netstring(&mut message, body);
    message
}

fn remove_request(sender: &str) -> Vec<u8> {
    control_request(sender, "__remove_connection__", "JSON", None, b"{}")
}

/// `LEN:bytes,` (a tnetstring string).
fn put_netstring(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b',');
}

/// A `__ping__` probe: a fresh GUID, answered to connection id `-1`.
struct Probe {
    text: String,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            text: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Whether the GUID arrives by `until` (other probes' GUIDs stay for them).
    fn arrived(&self, shared: &Shared, until: Instant) -> Result<bool, HarnessError> {
        shared.wait_control_reply(self.text.as_bytes(), until)
    }
}

/// Splits `tcp://HOST:PORT` into what `__add_connection__` carries. A wildcard host is
/// replaced by `advertise`, or by loopback.
pub(crate) fn host_port(
    endpoint: &str,
    advertise: Option<&str>,
) -> Result<(String, u16), HarnessError> {
    let bad = |reason: &str| HarnessError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("handlers can only be told about tcp:// endpoints"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("no port in the endpoint"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| bad("the port is not a bound port number"))?;
    let host = match (advertise, host) {
        (Some(advertise), _) => advertise.to_owned(),
        (None, "*" | "0.0.0.0") => "127.0.0.1".to_owned(),
        (None, "[::]" | "[*]") => "[::1]".to_owned(),
        (None, host) => host.to_owned(),
    };
    if host.is_empty() {
        return Err(bad("no host in the endpoint"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_host_and_port() {
        assert_eq!(
            host_port("tcp://127.0.0.1:5555", None).unwrap(),
            ("127.0.0.1".to_owned(), 5555)
        );
        assert_eq!(
            host_port("tcp://0.0.0.0:5555", None).unwrap(),
            ("127.0.0.1".to_owned(), 5555)
        );
        assert_eq!(
            host_port("tcp://0.0.0.0:5555", Some("10.0.0.2")).unwrap(),
            ("10.0.0.2".to_owned(), 5555)
        );
        assert_eq!(
            host_port("tcp://[::1]:7", None).unwrap(),
            ("[::1]".to_owned(), 7)
        );
        assert!(host_port("ipc:///tmp/x", None).is_err());
        assert!(host_port("tcp://127.0.0.1:*", None).is_err());
    }

    #[test]
    fn a_silent_handler_times_out_and_the_connector_recovers() {
        let context = zmq::Context::new();
        // A ROUTER stands in for the control socket so the test decides when to answer.
        let control = context.socket(zmq::ROUTER).unwrap();
        control.set_linger(0).unwrap();
        control.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = control.get_last_endpoint().unwrap().unwrap();
        let mut connector = Connector::new(&context, &endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let err = connector.ping().unwrap_err();
        assert!(err.is_timeout(), "{err}");

        let answerer = std::thread::spawn(move || {
            // Answer every PING; the first one's answer goes to the discarded socket.
            loop {
                let parts = control.recv_multipart(0).unwrap();
                assert_eq!(parts.last().map(Vec::as_slice), Some(&b"PING"[..]));
                let mut answer = parts;
                if let Some(last) = answer.last_mut() {
                    *last = b"PONG".to_vec();
                }
                control.send_multipart(answer, 0).unwrap();
                if control.poll(zmq::POLLIN, 200).unwrap() == 0 {
                    return;
                }
            }
        });
        // A stuck REQ would fail here with EFSM; the replaced one just works.
        connector = connector.with_timeout(Duration::from_secs(5));
        connector.ping().unwrap();
        answerer.join().unwrap();
    }
}
