//! The seed's Python Server drives our Transceiver: the exact bytes its Connector and
//! Client send (mongrel2-transceiver 0.3.0, tnetstring headers, connection id `-1`,
//! sender `python_server`), through a raw REQ to the control socket, a bound PUSH and a SUB
//! subscribed to the sender, as the Python Server has them.

use std::time::{Duration, Instant};

use mongrel2_transceiver::harness::spawn_handler;
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::{Error, Event};

const GUID: &str = "9b2f6c1e-3d4a-4f5b-8c7d-1e2f3a4b5c6d";
const SENDER: &str = "python_server";

/// The Python Server's sockets, and a REQ to the handler's control socket.
struct SeedServer {
    push: zmq::Socket,
    sub: zmq::Socket,
    control: zmq::Socket,
}

impl SeedServer {
    fn new(control_endpoint: &str) -> SeedServer {
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.bind("tcp://127.0.0.1:*").unwrap();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_linger(0).unwrap();
        sub.set_subscribe(SENDER.as_bytes()).unwrap();
        sub.bind("tcp://127.0.0.1:*").unwrap();
        let control = context.socket(zmq::REQ).unwrap();
        control.set_linger(0).unwrap();
        control.set_rcvtimeo(5000).unwrap();
        control.connect(control_endpoint).unwrap();
        SeedServer { push, sub, control }
    }

    fn port(socket: &zmq::Socket) -> u16 {
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// One control exchange; the answer.
    fn call(&self, message: &[u8]) -> Vec<u8> {
        self.control.send(message, 0).unwrap();
        self.control
            .recv_bytes(0)
            .expect("the control socket answers")
    }

    /// The next message on the SUB within `wait`.
    fn next_reply(&self, wait: Duration) -> Option<Vec<u8>> {
        if self.sub.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        Some(self.sub.recv_bytes(0).unwrap())
    }
}

fn ping_bytes(method: &str) -> Vec<u8> {
    let headers = format!("6:METHOD,{}:{method},5:QUERY,41:text={GUID},", method.len());
    format!("{SENDER} -1 /__ping__ {}:{headers}}}0:,", headers.len()).into_bytes()
}

#[test]
fn the_seeds_server_drives_our_transceiver() {
    let _ = env_logger::builder().is_test(true).try_init();
    let handler = spawn_handler(
        "unused-own-connection",
        |builder| builder,
        |t| loop {
            match t.recv() {
                Ok(Event::Http(request)) => t.reply_http(
                    &request,
                    &Response::ok().body(format!("hi {}", request.path())),
                )?,
                Ok(_) => {}
                Err(Error::Interrupted) => return Ok(()),
                Err(err) => return Err(err),
            }
        },
    )
    .unwrap();
    let seed = SeedServer::new(handler.control());
    assert_eq!(seed.call(b"PING"), b"PONG");

    // Connector.connect(): __add_connection__ from -1 with METHOD JSON.
    let body = format!(
        r#"{{"push": ["127.0.0.1", {}], "sub": ["127.0.0.1", {}]}}"#,
        SeedServer::port(&seed.push),
        SeedServer::port(&seed.sub)
    );
    let add = format!(
        "{SENDER} -1 /__add_connection__ 16:6:METHOD,4:JSON,}}{}:{body},",
        body.len()
    );
    assert_eq!(seed.call(add.as_bytes()), b"RECEIVED");

    // Connector.verify_connect(): __ping__ (exactly the bytes in issue 9) until the bare
    // GUID comes back to connection id -1.
    let ping = ping_bytes("MONGREL2");
    assert_eq!(
        ping,
        format!("python_server -1 /__ping__ 73:6:METHOD,8:MONGREL2,5:QUERY,41:text={GUID},}}0:,")
            .into_bytes()
    );
    let expected = format!("python_server 2:-1, {GUID}").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no __ping__ answer on the SUB");
        assert_eq!(seed.call(&ping), b"RECEIVED");
        if let Some(reply) = seed.next_reply(Duration::from_millis(100)) {
            assert_eq!(reply, expected);
            break;
        }
    }
    // Earlier pings may have been heard too; take their answers.
    while let Some(reply) = seed.next_reply(Duration::from_millis(50)) {
        assert_eq!(reply, expected);
    }

    // Client.send(): an ordinary request, answered through the PUB to sender python_server.
    let request = b"python_server 7 /hello 36:6:METHOD,3:GET,7:VERSION,8:HTTP/1.1,}0:,";
    seed.push.send(&request[..], 0).unwrap();
    let reply = seed
        .next_reply(Duration::from_secs(5))
        .expect("an HTTP reply");
    assert!(
        reply.starts_with(b"python_server 1:7, HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(reply.ends_with(b"hi /hello"));

    // __disconnect_ping__ publishes nothing: the next thing on the SUB answers the ping
    // after it (control requests are served in order).
    let disconnect_ping = b"python_server -1 /__disconnect_ping__ 20:6:METHOD,8:MONGREL2,}0:,";
    assert_eq!(seed.call(disconnect_ping), b"RECEIVED");
    // Any other METHOD gets its answer as an HTTP response, as the seed does.
    assert_eq!(seed.call(&ping_bytes("GET")), b"RECEIVED");
    let reply = seed
        .next_reply(Duration::from_secs(5))
        .expect("the GET ping's answer");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("python_server 2:-1, HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(text.ends_with(&format!("\r\n\r\n{GUID}")), "{text}");

    // Connector.disconnect(): __remove_connection__ from -1, METHOD JSON, body {}.
    let remove = b"python_server -1 /__remove_connection__ 16:6:METHOD,4:JSON,}2:{},";
    assert_eq!(seed.call(remove), b"RECEIVED");
    assert_eq!(seed.call(&ping), b"RECEIVED");
    assert_eq!(seed.call(b"PING"), b"PONG");
    assert_eq!(
        seed.next_reply(Duration::from_millis(300)),
        None,
        "removed, yet it answered"
    );
    handler.stop().unwrap();
}
