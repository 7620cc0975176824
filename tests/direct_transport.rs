//! `Transport::Direct` against hand-driven ZMTP peers: what a misbehaving or vanishing
//! Mongrel2 does to the loop (nothing lasting), and that it reconnects and serves again.
//! The real Mongrel2 suites (tests/transceiver.rs and others) run over it by default.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mongrel2_transceiver::harness::{spawn_handler, HandlerThread};
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::request::Request;
use mongrel2_transceiver::zmtp::{self, Decoder, Item};
use mongrel2_transceiver::{Error, Event, Transport};

const WAIT: Duration = Duration::from_secs(10);
const SENDER: &str = "direct-test";

/// A handler answering every HTTP request with its path, reporting each one it saw.
fn answering(
    configure: impl FnOnce(mongrel2_transceiver::Builder) -> mongrel2_transceiver::Builder
        + Send
        + 'static,
) -> (HandlerThread, mpsc::Receiver<String>) {
    let (seen, paths) = mpsc::channel();
    let handler = spawn_handler(SENDER, configure, move |t| loop {
        match t.recv() {
            Ok(Event::Http(request)) => {
                let _ = seen.send(request.path().to_owned());
                let body = format!("answer to {}", request.path());
                t.reply_http(&request, &Response::ok().body(body))?;
            }
            Ok(_) => {}
            Err(Error::Interrupted) => return Ok(()),
            Err(err) => return Err(err),
        }
    })
    .expect("handler thread");
    (handler, paths)
}

/// One side of a ZMTP connection driven by hand.
struct Peer {
    stream: TcpStream,
    decoder: Decoder,
    buffer: Vec<u8>,
}

impl Peer {
    /// Accepts the handler's connection and answers its greeting as a `socket_type` socket.
    fn accept(listener: &TcpListener, socket_type: &str) -> Peer {
        let handler_side: &[u8] = if listener_is_for_requests(socket_type) {
            b"PULL"
        } else {
            b"PUB"
        };
        Peer::accept_from(listener, socket_type, handler_side)
    }

    /// The same, for a handler socket of type `handler_side`.
    fn accept_from(listener: &TcpListener, socket_type: &str, handler_side: &[u8]) -> Peer {
        let (stream, _) = listener.accept().expect("the handler connects");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut peer = Peer {
            stream,
            decoder: Decoder::new(1 << 20),
            buffer: Vec::new(),
        };
        let mut hello = zmtp::greeting().to_vec();
        zmtp::write_ready(&mut hello, socket_type);
        peer.stream.write_all(&hello).expect("greet");
        assert_eq!(peer.next(), Some(Owned::Greeting));
        match peer.next() {
            Some(Owned::Command(name, body)) => {
                assert_eq!(name, b"READY");
                let ours = zmtp::socket_type(&body).expect("properties");
                assert_eq!(ours, Some(handler_side));
            }
            other => panic!("expected READY, got {other:?}"),
        }
        peer
    }

    /// The next item the handler sent; `None` once it closed the connection.
    fn next(&mut self) -> Option<Owned> {
        loop {
            match self.decoder.decode(&self.buffer) {
                Ok(Some((item, used))) => {
                    let owned = Owned::from(item);
                    self.buffer.drain(..used);
                    return Some(owned);
                }
                Ok(None) => {}
                Err(err) => panic!("the handler sent bad ZMTP: {err}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(got) => self.buffer.extend_from_slice(&chunk[..got]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(err) => panic!("reading from the handler: {err}"),
            }
        }
    }

    fn send_message(&mut self, body: &[u8]) {
        let mut out = Vec::new();
        zmtp::write_message(&mut out, body);
        self.stream.write_all(&out).expect("send");
    }
}

fn listener_is_for_requests(peer_type: &str) -> bool {
    peer_type == "PUSH"
}

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Greeting,
    Command(Vec<u8>, Vec<u8>),
    Message(Vec<u8>),
}

impl From<Item<'_>> for Owned {
    fn from(item: Item<'_>) -> Owned {
        match item {
            Item::Greeting => Owned::Greeting,
            Item::Command { name, body } => Owned::Command(name.to_vec(), body.to_vec()),
            Item::Message { body, .. } => Owned::Message(body.to_vec()),
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    Request::new(SENDER, 7, path)
        .with_header("METHOD", "GET")
        .with_header("VERSION", "HTTP/1.1")
        .encode()
}

fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("tcp://{}", listener.local_addr().expect("address"));
    (listener, endpoint)
}

/// A direct handler whose Mongrel2 is ours to play: listeners for its PULL and its PUB.
fn direct_handler() -> (
    TcpListener,
    TcpListener,
    HandlerThread,
    mpsc::Receiver<String>,
) {
    let (requests, pull) = listener();
    let (replies, publish) = listener();
    let (handler, paths) = answering(move |b| {
        b.pull(&pull)
            .publish(&publish)
            .transport(Transport::Direct)
            .ping_interval(None)
    });
    (requests, replies, handler, paths)
}

#[test]
fn a_bad_peer_is_dropped_and_the_next_connection_is_served() {
    let (requests, replies, _handler, paths) = direct_handler();

    // Mongrel2's SUB, subscribed to everything (Mongrel2's own `recv_ident = ''`).
    let mut sub = Peer::accept(&replies, "SUB");
    sub.send_message(&[1]);

    // A frame claiming 2^62 bytes: refused at its header, nothing allocated.
    let mut push = Peer::accept(&requests, "PUSH");
    let mut huge = vec![0x02];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    push.stream.write_all(&huge).expect("send");
    assert_eq!(
        push.next(),
        None,
        "the handler hangs up on an oversized frame"
    );

    // Something that is not ZeroMQ at all.
    let (mut stranger, _) = requests.accept().expect("the handler reconnects");
    stranger.set_read_timeout(Some(WAIT)).expect("timeout");
    stranger
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut rest = Vec::new();
    // The handler's greeting may be there first; then it must hang up.
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.len() <= 64 + 32, "only a greeting and READY came back");

    // A peer of the wrong kind (a PUB where Mongrel2's PUSH should be).
    let mut wrong = Peer::accept_from(&requests, "PUB", b"PULL");
    assert_eq!(wrong.next(), None, "the handler hangs up on a PUB peer");

    // And then a good Mongrel2: served as if nothing happened.
    let mut push = Peer::accept(&requests, "PUSH");
    push.send_message(&get("/after"));
    assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/after");
    match sub.next() {
        Some(Owned::Message(reply)) => {
            let reply = String::from_utf8_lossy(&reply).into_owned();
            assert!(
                reply.starts_with(&format!("{SENDER} 1:7, HTTP/1.1 200 OK")),
                "{reply}"
            );
            assert!(reply.ends_with("answer to /after"), "{reply}");
        }
        other => panic!("expected the reply, got {other:?}"),
    }
}

#[test]
fn replies_wait_for_the_subscription_and_follow_mongrel2_back() {
    let (requests, replies, _handler, paths) = direct_handler();
    let mut push = Peer::accept(&requests, "PUSH");
    let mut sub = Peer::accept(&replies, "SUB");

    // Before Mongrel2 subscribes, a PUB drops replies: so does the direct link.
    push.send_message(&get("/unheard"));
    assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/unheard");
    // Subscribed to a prefix that is not ours: still not heard.
    sub.send_message(b"\x01someone-else");
    push.send_message(&get("/filtered"));
    assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/filtered");
    sub.send_message(b"\x01direct");
    push.send_message(&get("/heard"));
    assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/heard");
    match sub.next() {
        Some(Owned::Message(reply)) => {
            assert!(String::from_utf8_lossy(&reply).ends_with("answer to /heard"));
        }
        other => panic!("expected the reply to /heard first, got {other:?}"),
    }

    // Mongrel2 goes away and comes back on the same ports: both links reconnect.
    drop(push);
    drop(sub);
    let started = Instant::now();
    let mut push = Peer::accept(&requests, "PUSH");
    let mut sub = Peer::accept(&replies, "SUB");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reconnected quickly"
    );
    sub.send_message(&[1]);
    // The subscription and the request travel on different connections: retry until the
    // subscription has been read.
    let deadline = Instant::now() + WAIT;
    sub.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    loop {
        push.send_message(&get("/back"));
        assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/back");
        let mut chunk = [0u8; 4096];
        match sub.stream.read(&mut chunk) {
            Ok(got) if got > 0 => {
                sub.buffer.extend_from_slice(&chunk[..got]);
                break;
            }
            _ => assert!(Instant::now() < deadline, "no reply after the reconnect"),
        }
    }
    match sub.next() {
        Some(Owned::Message(reply)) => {
            assert!(String::from_utf8_lossy(&reply).ends_with("answer to /back"));
        }
        other => panic!("expected the reply to /back, got {other:?}"),
    }
}

#[test]
fn a_large_request_arrives_whole_among_small_ones() {
    let (requests, replies, _handler, paths) = direct_handler();
    let mut sub = Peer::accept(&replies, "SUB");
    sub.send_message(&[1]);
    let mut push = Peer::accept(&requests, "PUSH");
    // 6 MiB: many reads' worth, sent in one go with small requests either side.
    let body = vec![b'x'; 6 << 20];
    let large = Request::new(SENDER, 8, "/large")
        .with_header("METHOD", "POST")
        .with_header("VERSION", "HTTP/1.1")
        .with_body(body)
        .encode();
    let mut wire = Vec::new();
    for message in [get("/before"), large, get("/after")] {
        zmtp::write_message(&mut wire, &message);
    }
    push.stream.write_all(&wire).expect("send");
    for expected in ["/before", "/large", "/after"] {
        assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), expected);
    }
    for expected in ["/before", "/large", "/after"] {
        match sub.next() {
            Some(Owned::Message(reply)) => {
                let reply = String::from_utf8_lossy(&reply).into_owned();
                assert!(reply.ends_with(&format!("answer to {expected}")), "{reply}");
            }
            other => panic!("expected the reply to {expected}, got {other:?}"),
        }
    }
}

#[test]
fn a_host_name_endpoint_is_resolved_and_served() {
    let (requests, _) = listener();
    let (replies, _) = listener();
    let name = |listener: &TcpListener| {
        let port = listener.local_addr().expect("address").port();
        format!("tcp://localhost:{port}")
    };
    let (pull, publish) = (name(&requests), name(&replies));
    let (_handler, paths) =
        answering(move |b| b.pull(&pull).publish(&publish).transport(Transport::Direct));
    let mut push = Peer::accept(&requests, "PUSH");
    push.send_message(&get("/by-name"));
    assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/by-name");
    let _sub = Peer::accept(&replies, "SUB");
}

#[test]
fn ipc_endpoints_reach_a_libzmq_peer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let requests = format!("ipc://{}/requests", dir.path().display());
    let replies = format!("ipc://{}/replies", dir.path().display());
    // libzmq sockets bound as Mongrel2 binds them.
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("push");
    push.bind(&requests).expect("bind push");
    let sub = context.socket(zmq::SUB).expect("sub");
    sub.set_subscribe(b"").expect("subscribe");
    sub.set_rcvtimeo(200).expect("timeout");
    sub.bind(&replies).expect("bind sub");
    let (_handler, paths) = answering(move |b| {
        b.pull(&requests)
            .publish(&replies)
            .transport(Transport::Direct)
    });
    // The subscription reaches the handler on its own connection: ask until a reply comes.
    let deadline = Instant::now() + WAIT;
    let reply = loop {
        push.send(get("/over-ipc"), 0).expect("send");
        assert_eq!(paths.recv_timeout(WAIT).expect("request seen"), "/over-ipc");
        if let Ok(reply) = sub.recv_bytes(0) {
            break reply;
        }
        assert!(Instant::now() < deadline, "no reply over ipc://");
    };
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        reply.starts_with(&format!("{SENDER} 1:7, HTTP/1.1 200 OK")),
        "{reply}"
    );
    assert!(reply.ends_with("answer to /over-ipc"), "{reply}");
    drop(sub);
    drop(push);
}
