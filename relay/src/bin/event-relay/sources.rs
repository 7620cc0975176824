//! ZeroMQ event sources: the injector REP socket (one ack per request) and the PULL socket
//! (fire and forget). Both carry the event-input JSON of [`super::protocol`].
//!
//! The loop polls them through the Transceiver (`watch`) and calls [`serve_inject`] /
//! [`drain_pull`] when they are readable. Each call handles a bounded batch, so Mongrel2
//! traffic and flushes get their turn under a flood.
//!
//! Bounds: each socket refuses messages over [`transport_limit`] (ZeroMQ drops the
//! sender's connection: such a request gets no reply, which is the price of not buffering
//! arbitrary amounts). Requests between `limits.message_size` and that bound are read and
//! answered `InvalidPayload`. A multipart request is answered once, `InvalidPayload`: the
//! REP state machine always gets exactly one reply per request.

use mongrel2_transceiver::{ConnId, Error, Token, Transceiver};

use super::protocol::{Ack, ErrorName, Source};
use super::relay::Relay;

/// Requests answered per readable injector socket before the loop moves on.
pub const INJECT_BATCH: usize = 256;
/// Messages taken per readable PULL socket before the loop moves on.
pub const PULL_BATCH: usize = 1024;

/// The most bytes one message may have at the transport level, for a relay whose
/// `limits.message_size` is `message_size`: four times it, at least 1 MiB. Bigger client
/// messages are closed with 1009 by the Transceiver and bigger ZeroMQ messages are
/// dropped by ZeroMQ; smaller ones that are still too big get `InvalidPayload`.
pub fn transport_limit(message_size: usize) -> usize {
    message_size.saturating_mul(4).max(1 << 20)
}

/// Which kind of source socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// REP: every request gets an ack.
    Inject,
    /// PULL: no replies.
    Pull,
}

impl Kind {
    fn socket_type(self) -> zmq::SocketType {
        match self {
            Kind::Inject => zmq::REP,
            Kind::Pull => zmq::PULL,
        }
    }

    /// The relay's name for the source.
    pub fn source(self) -> Source {
        match self {
            Kind::Inject => Source::Inject,
            Kind::Pull => Source::Pull,
        }
    }
}

/// Creates and binds a source socket in `context`.
pub fn bind(
    context: &zmq::Context,
    kind: Kind,
    endpoint: &str,
    max_message: usize,
    router: bool,
) -> Result<zmq::Socket, zmq::Error> {
    // A ROUTER instead of the REP answers requests in any order (REQ peers cannot tell).
    let socket_type = if router {
        zmq::ROUTER
    } else {
        kind.socket_type()
    };
    let socket = context.socket(socket_type)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(i64::try_from(max_message).unwrap_or(i64::MAX))?;
    socket.bind(endpoint)?;
    Ok(socket)
}

/// One message read from a source socket.
#[derive(Debug)]
pub enum Incoming {
    /// A single-part message.
    Single(zmq::Message),
    /// A message of this many parts (the parts were read and dropped).
    Multipart(usize),
}

/// Reads the next whole message without waiting; `None` when there is none.
pub fn recv(socket: &zmq::Socket) -> Result<Option<Incoming>, zmq::Error> {
    let first = match retry_interrupted(|| socket.recv_msg(zmq::DONTWAIT)) {
        Ok(message) => message,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut parts = 1usize;
    // ZeroMQ delivers the parts of a message together, so the rest are already here.
    // Reading them cannot fail in a way that leaves a REP unanswered: once the first part
    // is in, the caller replies whatever happens here.
    while retry_interrupted(|| socket.get_rcvmore()).unwrap_or(false) {
        if retry_interrupted(|| socket.recv_msg(zmq::DONTWAIT)).is_err() {
            break;
        }
        parts += 1;
    }
    Ok(Some(if parts == 1 {
        Incoming::Single(first)
    } else {
        Incoming::Multipart(parts)
    }))
}

/// Runs a ZeroMQ call again when a signal interrupted it (SIGTERM arrives at any time).
fn retry_interrupted<T>(mut call: impl FnMut() -> Result<T, zmq::Error>) -> Result<T, zmq::Error> {
    loop {
        match call() {
            Err(zmq::Error::EINTR) => continue,
            other => return other,
        }
    }
}

/// Publishes one event body from a source: into the relay itself, or (`--amqp`) into
/// RabbitMQ.
pub type Publisher<'a> = dyn FnMut(&mut Relay<ConnId>, Source, &[u8]) -> Ack + 'a;

/// Publishes straight into the relay.
pub fn direct(relay: &mut Relay<ConnId>, source: Source, body: &[u8]) -> Ack {
    relay.publish_json(source, body)
}

/// What a message amounts to for the relay.
pub fn publish(
    relay: &mut Relay<ConnId>,
    kind: Kind,
    incoming: &Incoming,
    via: &mut Publisher<'_>,
) -> Ack {
    match incoming {
        Incoming::Single(message) => via(relay, kind.source(), message),
        Incoming::Multipart(parts) => {
            log::debug!("{parts}-part message on the {kind:?} socket refused");
            relay.reject(kind.source(), ErrorName::InvalidPayload)
        }
    }
}

/// Answers up to [`INJECT_BATCH`] injector requests. Returns how many were handled.
/// Socket errors are logged, not returned: a broken injector must not stop the relay.
pub fn serve_inject(
    transceiver: &Transceiver,
    token: Token,
    relay: &mut Relay<ConnId>,
    via: &mut Publisher<'_>,
) -> Result<usize, Error> {
    let socket = transceiver.socket(token)?;
    for handled in 0..INJECT_BATCH {
        let incoming = match recv(socket) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return Ok(handled),
            Err(e) => {
                log::warn!("injector socket: {e}");
                return Ok(handled);
            }
        };
        let ack = publish(relay, Kind::Inject, &incoming, via);
        log_ack(Kind::Inject, &ack);
        // A REP routes the reply to the requester and drops it if that peer is gone or
        // full, so this neither blocks nor leaves the socket waiting for a reply.
        if let Err(e) = retry_interrupted(|| socket.send(ack.to_json(), zmq::DONTWAIT)) {
            log::warn!("injector reply: {e}");
        }
    }
    Ok(INJECT_BATCH)
}

/// Takes up to [`PULL_BATCH`] messages from the PULL socket. Returns how many. Socket
/// errors are logged, not returned.
pub fn drain_pull(
    transceiver: &Transceiver,
    token: Token,
    relay: &mut Relay<ConnId>,
    via: &mut Publisher<'_>,
) -> Result<usize, Error> {
    let socket = transceiver.socket(token)?;
    for handled in 0..PULL_BATCH {
        let incoming = match recv(socket) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return Ok(handled),
            Err(e) => {
                log::warn!("event PULL socket: {e}");
                return Ok(handled);
            }
        };
        let ack = publish(relay, Kind::Pull, &incoming, via);
        log_ack(Kind::Pull, &ack);
    }
    Ok(PULL_BATCH)
}

/// Accepted events are logged by the relay itself (with exchange, key and seq).
fn log_ack(kind: Kind, ack: &Ack) {
    match ack {
        Ack::Rejected(e) => log::debug!("{} event refused: {e}", kind.source().as_str()),
        Ack::Duplicate => log::debug!("{} event was a duplicate", kind.source().as_str()),
        Ack::Published { .. } | Ack::Confirmed | Ack::Forwarded => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_limit_is_above_the_relay_limit_and_bounded() {
        assert_eq!(transport_limit(64 * 1024), 1 << 20);
        assert_eq!(transport_limit(1 << 20), 4 << 20);
        assert!(transport_limit(usize::MAX) == usize::MAX);
    }

    #[test]
    fn rep_answers_single_and_multipart_requests_once_each() {
        let ctx = zmq::Context::new();
        let rep = bind(&ctx, Kind::Inject, "inproc://rep", 1 << 20, false).unwrap();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.connect("inproc://rep").unwrap();
        req.send_multipart([&b"a"[..], b"b", b"c"], 0).unwrap();
        rep.poll(zmq::POLLIN, 1000).unwrap();
        match recv(&rep).unwrap() {
            Some(Incoming::Multipart(3)) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            recv(&rep).is_err(),
            "a REP must answer before reading again"
        );
        rep.send("x", 0).unwrap();
        assert_eq!(req.recv_bytes(0).unwrap(), b"x");
        req.send("one", 0).unwrap();
        rep.poll(zmq::POLLIN, 1000).unwrap();
        match recv(&rep).unwrap() {
            Some(Incoming::Single(m)) => assert_eq!(&*m, b"one"),
            other => panic!("{other:?}"),
        }
        rep.send("y", 0).unwrap();
        assert!(recv(&rep).unwrap().is_none());
    }
}
