//! One ZeroMQ connection spoken by the loop's own thread ([`Transport::Direct`]): a
//! non-blocking socket, the ZMTP handshake, buffered reads and writes, reconnection.
//!
//! libzmq moves every message through its I/O thread: a request is read there and handed to
//! the loop's thread, a reply handed back and written there, and each hand-off can cost a
//! wake-up of the other thread. Reading and writing the socket here instead costs a third of
//! the CPU per request.
//!
//! [`Transport::Direct`]: super::Transport::Direct

use std::io::{self, Read};
use std::net::ToSocketAddrs;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::waiting::{self, Watch};
use crate::zmtp::{self, Decoder, Item};

/// How long to wait before connecting again after a failure (libzmq's own default is 100 ms).
const RECONNECT_AFTER: Duration = Duration::from_millis(100);
/// Bytes asked of the kernel per read...
const READ_CHUNK: usize = 64 * 1024;
/// ...and at most, when a large frame is being read.
const MAX_READ: usize = 4 << 20;
/// Replies buffered while Mongrel2 is not reading, beyond which new ones are dropped (as a
/// PUB drops at its high-water mark).
const MAX_PENDING_WRITE: usize = 64 << 20;
/// Past this many bytes already written, the write buffer is compacted.
const COMPACT_AFTER: usize = 256 * 1024;

/// Which end of Mongrel2's sockets this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Our PULL to Mongrel2's PUSH: requests come in.
    Pull,
    /// Our PUB to Mongrel2's SUB: replies go out, subscriptions come in.
    Publish,
}

impl Role {
    fn ours(self) -> &'static str {
        match self {
            Role::Pull => "PULL",
            Role::Publish => "PUB",
        }
    }

    fn accepts(self, peer: &[u8]) -> bool {
        match self {
            Role::Pull => peer == b"PUSH",
            Role::Publish => peer == b"SUB" || peer == b"XSUB",
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
enum Address {
    Tcp(String),
    Ipc(std::path::PathBuf),
}

impl Address {
    /// `tcp://host:port` or `ipc://path`; anything else (inproc, a source address, ...) is
    /// libzmq's to handle.
    fn parse(endpoint: &str) -> Option<Address> {
        if let Some(rest) = endpoint.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':')?;
            let plain = !host.is_empty() && host != "*" && !host.contains(';');
            return (plain && port.parse::<u16>().is_ok()).then(|| Address::Tcp(rest.to_owned()));
        }
        let path = endpoint.strip_prefix("ipc://")?;
        (!path.is_empty() && !path.starts_with('@')).then(|| Address::Ipc(path.into()))
    }

    fn resolve(&self) -> io::Result<(SockAddr, Domain)> {
        match self {
            Address::Tcp(host_port) => {
                let addresses: Vec<_> = host_port.to_socket_addrs()?.collect();
                let address = preferred(&addresses).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
                })?;
                Ok((address.into(), Domain::for_address(address)))
            }
            Address::Ipc(path) => Ok((SockAddr::unix(path)?, Domain::UNIX)),
        }
    }
}

/// The address to connect to: IPv4 first, as libzmq (without ZMQ_IPV6) resolves, since
/// `localhost` may list ::1 first while Mongrel2 listens on 127.0.0.1.
fn preferred(addresses: &[std::net::SocketAddr]) -> Option<std::net::SocketAddr> {
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

/// Whether `endpoint` can be spoken directly (else libzmq connects it).
pub(crate) fn supports(endpoint: &str) -> bool {
    Address::parse(endpoint).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; try again at this time.
    Waiting(Instant),
    /// A non-blocking connect is under way.
    Connecting,
    /// Connected; the peer's greeting and READY are not all in yet.
    Handshaking,
    /// Messages flow.
    Open,
}

/// One ZeroMQ connection read and written by the caller's thread.
pub(crate) struct DirectLink {
    role: Role,
    endpoint: String,
    /// Resolved once, when the link is made: a name lookup must not block the loop later.
    address: (SockAddr, Domain),
    socket: Option<Socket>,
    state: State,
    decoder: Decoder,
    /// Read buffer: kept zeroed to its length once grown, so reads need no unsafe code;
    /// `input[..filled]` holds what was read and not yet decoded.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
    /// The prefixes Mongrel2's SUB subscribed to (it sends one: its `recv_ident`).
    subscriptions: Vec<Vec<u8>>,
    max_frame: usize,
    dropped: u64,
    /// The last protocol failure warned about, so a peer failing the same way every 100 ms
    /// is logged once (until a connection opens again).
    last_warned: Option<String>,
}

impl DirectLink {
    /// A link to `endpoint` (see [`supports`]); the first connect is started at once.
    pub(crate) fn open(endpoint: &str, role: Role, max_frame: usize) -> io::Result<DirectLink> {
        let address = Address::parse(endpoint).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a tcp://host:port or ipc:// endpoint",
            )
        })?;
        let mut link = DirectLink {
            role,
            endpoint: endpoint.to_owned(),
            address: address.resolve()?,
            socket: None,
            state: State::Waiting(Instant::now()),
            decoder: Decoder::new(max_frame),
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            written: 0,
            subscriptions: Vec::new(),
            max_frame,
            dropped: 0,
            last_warned: None,
        };
        link.connect();
        Ok(link)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether Mongrel2's SUB subscribed to anything (a publish link's readiness).
    pub(crate) fn subscribed(&self) -> bool {
        self.is_open() && !self.subscriptions.is_empty()
    }

    /// The descriptor and events to wait for; nothing while waiting to reconnect.
    pub(crate) fn watch(&self) -> Watch<'static> {
        let fd: RawFd = self.socket.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let events = match self.state {
            State::Waiting(_) => 0,
            State::Connecting => libc::POLLOUT,
            State::Handshaking | State::Open if self.written < self.output.len() => {
                libc::POLLIN | libc::POLLOUT
            }
            State::Handshaking | State::Open => libc::POLLIN,
        };
        Watch::Fd { fd, events }
    }

    /// When to try connecting again, if waiting to.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting(at) => Some(at),
            _ => None,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Waiting(at) if at <= now) {
            self.connect();
        }
    }

    fn connect(&mut self) {
        match self.start_connect() {
            Ok(socket) => {
                self.socket = Some(socket);
                self.state = State::Connecting;
                // A loopback connect has usually completed already.
                self.finish_connect();
            }
            Err(err) => self.fail(&err),
        }
    }

    fn start_connect(&self) -> io::Result<Socket> {
        let (address, domain) = &self.address;
        let domain = *domain;
        let socket = Socket::new(domain, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        if domain != Domain::UNIX {
            // Replies are written in batches already; Nagle would only hold the last one back.
            socket.set_tcp_nodelay(true)?;
        }
        match socket.connect(address) {
            Ok(()) => Ok(socket),
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
            Err(err) => Err(err),
        }
    }

    /// Completes a pending connect (the socket turned writable): sends our greeting and READY
    /// together, which ZMTP allows.
    fn finish_connect(&mut self) {
        let Some(socket) = &self.socket else {
            return;
        };
        let result = match socket.take_error() {
            Ok(None) => socket.peer_addr().map(|_| ()),
            Ok(Some(err)) | Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                self.state = State::Handshaking;
                self.output.clear();
                self.written = 0;
                self.output.extend_from_slice(&zmtp::greeting());
                zmtp::write_ready(&mut self.output, self.role.ours());
                self.flush();
            }
            // Not connected yet: wait for writability.
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {}
            Err(err) => self.fail(&err),
        }
    }

    /// Gives up on the current connection and schedules the next attempt.
    fn fail(&mut self, err: &dyn std::fmt::Display) {
        if self.state == State::Open {
            log::warn!(
                "{} connection to {} lost: {err}",
                self.role.ours(),
                self.endpoint
            );
        } else {
            log::debug!(
                "{} connection to {}: {err}",
                self.role.ours(),
                self.endpoint
            );
        }
        self.socket = None;
        self.state = State::Waiting(Instant::now() + RECONNECT_AFTER);
        self.decoder = Decoder::new(self.max_frame);
        self.filled = 0;
        // A PUB drops what it cannot deliver; replies queued for a lost Mongrel2 go with it.
        self.output.clear();
        self.written = 0;
        self.subscriptions.clear();
    }

    /// Serves the socket after poll reported it (or whenever convenient; it never blocks):
    /// completes a connect, reads what is there, handing each message to `on_message`, and
    /// writes what is pending.
    /// Returns whether the handshake completed in this call.
    pub(crate) fn service(&mut self, on_message: &mut dyn FnMut(&[u8])) -> bool {
        let was_open = self.is_open();
        if self.state == State::Connecting {
            self.finish_connect();
        }
        if matches!(self.state, State::Handshaking | State::Open) {
            if let Err(err) = self.read(on_message) {
                if matches!(err, ReadError::Zmtp(_) | ReadError::Peer(_)) {
                    let reason = err.to_string();
                    if self.last_warned.as_ref() != Some(&reason) {
                        log::warn!(
                            "{} connection to {}: {reason}; hanging up and trying again",
                            self.role.ours(),
                            self.endpoint
                        );
                        self.last_warned = Some(reason);
                    }
                }
                self.fail(&err);
            }
        }
        if self.written < self.output.len() {
            self.flush();
        }
        !was_open && self.is_open()
    }

    /// One read, then every complete item in the buffer. One read per poll keeps a busy
    /// Mongrel2 from starving the loop's timers; what is left is reported readable again.
    fn read(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<(), ReadError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        // A large frame part way in is read in growing steps rather than 64 KiB at a time.
        let want = READ_CHUNK.max(self.filled).min(MAX_READ);
        if self.input.len() - self.filled < want {
            self.input.resize(self.filled + want, 0);
        }
        let got = match (&*socket).read(&mut self.input[self.filled..]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(got) => got,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(ReadError::Io(err)),
        };
        self.filled += got;

        let mut at = 0;
        let input = std::mem::take(&mut self.input);
        let result = loop {
            match self.decoder.decode(&input[at..self.filled]) {
                Ok(Some((item, used))) => {
                    at += used;
                    if let Err(err) = self.on_item(item, on_message) {
                        break Err(err);
                    }
                }
                Ok(None) => break Ok(()),
                Err(err) => break Err(ReadError::Zmtp(err)),
            }
        };
        self.input = input;
        if at > 0 {
            self.input.copy_within(at..self.filled, 0);
            self.filled -= at;
        }
        result
    }

    fn on_item(
        &mut self,
        item: Item<'_>,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        if self.state == State::Handshaking {
            return match item {
                Item::Greeting => Ok(()),
                Item::Command { name, body } if name == b"READY" => {
                    match zmtp::socket_type(body).map_err(ReadError::Zmtp)? {
                        Some(peer) if self.role.accepts(peer) => {
                            self.state = State::Open;
                            self.last_warned = None;
                            log::debug!("{} connected to {}", self.role.ours(), self.endpoint);
                            Ok(())
                        }
                        peer => Err(ReadError::Peer(format!(
                            "the peer is a {} socket, not what a {} pairs with",
                            String::from_utf8_lossy(peer.unwrap_or(b"(untyped)")),
                            self.role.ours()
                        ))),
                    }
                }
                _ => Err(ReadError::Peer("no READY after the greeting".to_owned())),
            };
        }
        match (self.role, item) {
            (Role::Pull, Item::Message { body, more: false }) => on_message(body),
            (Role::Pull, Item::Message { more: true, .. }) => {
                // Mongrel2 sends one frame per request; a multi-part message is not its.
                log::warn!("ignoring a multi-part message from {}", self.endpoint);
            }
            (Role::Publish, item) => match zmtp::subscription(&item) {
                Some((true, prefix)) => {
                    if !self.subscriptions.iter().any(|known| known == prefix) {
                        if self.subscriptions.len() >= 64 {
                            return Err(ReadError::Peer("over 64 subscriptions".to_owned()));
                        }
                        self.subscriptions.push(prefix.to_vec());
                    }
                }
                Some((false, prefix)) => self.subscriptions.retain(|known| known != prefix),
                None => log::debug!("ignoring a frame from {}'s SUB", self.endpoint),
            },
            (Role::Pull, Item::Command { name, .. }) => {
                log::debug!(
                    "ignoring command {:?} from {}",
                    String::from_utf8_lossy(name),
                    self.endpoint
                );
            }
            (Role::Pull, Item::Greeting) => {}
        }
        Ok(())
    }

    /// Queues one message if Mongrel2 subscribed to its prefix (a PUB's filtering); false if
    /// it was dropped for that, for a lost connection, or for a full buffer.
    pub(crate) fn queue(&mut self, message: &[u8]) -> bool {
        let heard = self.is_open()
            && self
                .subscriptions
                .iter()
                .any(|prefix| message.starts_with(prefix));
        if !heard {
            return false;
        }
        if self.output.len() - self.written + message.len() > MAX_PENDING_WRITE {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                log::warn!(
                    "{} replies dropped: Mongrel2 at {} reads slower than replies are made",
                    self.dropped,
                    self.endpoint
                );
            }
            return false;
        }
        zmtp::write_message(&mut self.output, message);
        true
    }

    /// Writes as much of the pending output as the socket takes now.
    pub(crate) fn flush(&mut self) {
        let Some(socket) = &self.socket else {
            return;
        };
        while self.written < self.output.len() {
            match socket.send_with_flags(&self.output[self.written..], libc::MSG_NOSIGNAL) {
                Ok(sent) => self.written += sent,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.fail(&err),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written > COMPACT_AFTER {
            self.output.drain(..self.written);
            self.written = 0;
        }
    }

    /// Whether output waits for the socket.
    pub(crate) fn has_pending(&self) -> bool {
        self.written < self.output.len()
    }

    /// At shutdown: blocks for at most `linger` writing what is still pending.
    pub(crate) fn drain(&mut self, linger: Duration) {
        let deadline = Instant::now() + linger;
        while self.has_pending() && self.socket.is_some() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if waiting::wait(&[self.watch()], Some(deadline - now), &mut Vec::new()).is_err() {
                break;
            }
            self.flush();
        }
    }
}

/// Why a link's read gave up on the connection.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Zmtp(#[from] zmtp::ZmtpError),
    #[error("{0}")]
    Peer(String),
}

#[cfg(test)]
mod tests {
    use std::net::{AddrParseError, SocketAddr};

    use super::{preferred, supports};

    #[test]
    fn ipv4_addresses_are_preferred_as_libzmq_prefers_them() -> Result<(), AddrParseError> {
        let v6: SocketAddr = "[::1]:9999".parse()?;
        let v4: SocketAddr = "127.0.0.1:9999".parse()?;
        assert_eq!(preferred(&[v6, v4]), Some(v4));
        assert_eq!(preferred(&[v6]), Some(v6));
        assert_eq!(preferred(&[]), None);
        Ok(())
    }

    #[test]
    fn direct_links_take_plain_tcp_and_ipc_endpoints() {
        for endpoint in [
            "tcp://127.0.0.1:9999",
            "tcp://localhost:9999",
            "tcp://[::1]:9999",
            "ipc:///run/mongrel2/requests",
            "ipc://relative/path",
        ] {
            assert!(supports(endpoint), "{endpoint}");
        }
        // libzmq's: other transports, wildcards, source addresses, abstract sockets.
        for endpoint in [
            "inproc://requests",
            "tcp://*:9999",
            "tcp://eth0;10.0.0.1:9999",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:http",
            "ipc://@abstract",
            "ipc://",
            "pgm://eth0;239.192.1.1:5555",
        ] {
            assert!(!supports(endpoint), "{endpoint}");
        }
    }
}
