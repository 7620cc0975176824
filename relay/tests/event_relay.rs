//! The event relay against a real Mongrel2, with real WebSocket clients, ZeroMQ injectors
//! and HTTP publishers.
//!
//! How the relay runs: each test starts its own Mongrel2 (fresh ports and send_ident) and
//! the `event-relay` binary as a child process, so signals and exit codes are real. Cargo
//! builds the crate's binaries before its integration tests, so the relay under test is
//! always the current one.
//!
//! Readiness is detected, not slept on: a test starts once `GET /events/status` through
//! Mongrel2 is answered by the relay. Every process is stopped by a Drop guard.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use mongrel2_test_fixture::support::{self, ws_connect, HttpClient, HttpResponse};
use mongrel2_test_fixture::{free_endpoint, HandlerConf, Mongrel2};

/// Generous bound for anything that should happen "soon" (loaded CI machines).
const WAIT: Duration = Duration::from_secs(20);

const ADMIN_TOKEN: &str = "admin-secret";
const OPS_TOKEN: &str = "ops-secret";
const PUBLISH_TOKEN: &str = "publish-secret";

/// The configuration most tests use.
fn test_config() -> Value {
    json!({
        "exchanges": {
            "calls": {"public": true},
            "agents": {"public": true},
            "queues": {"public": true, "prefixes": ["queue."]},
            "admin": {"tokens": ["admin"]}
        },
        "tokens": {"admin": ADMIN_TOKEN, "ops": OPS_TOKEN},
        "publish_token": PUBLISH_TOKEN,
        "limits": {"subscriptions_per_session": 5, "history_per_key": 10}
    })
}

// ----- fixture ---------------------------------------------------------------------------

/// How a relay child is set up: which Mongrel2 handler it serves, its config, and its links.
struct Setup<'a> {
    handler: usize,
    config: &'a Value,
    /// `--link-bind` (None: off).
    link_bind: Option<String>,
    /// `--link`s.
    links: Vec<String>,
}

impl<'a> Setup<'a> {
    fn new(config: &'a Value) -> Setup<'a> {
        Setup {
            handler: 0,
            config,
            link_bind: None,
            links: Vec::new(),
        }
    }
}

/// The relay child process; killed (after a SIGTERM) and reaped on drop.
struct RelayProcess {
    child: Option<Child>,
    /// The child's command line, one argument per line (kept for restarts).
    args: String,
    /// Mongrel2 route, e.g. `/events`.
    route: String,
    inject: String,
    pull_events: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    fn spawn(m2: &Mongrel2, config: &Value) -> RelayProcess {
        RelayProcess::start(m2, Setup::new(config))
    }

    fn start(m2: &Mongrel2, setup: Setup<'_>) -> RelayProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("relay.json");
        fs::write(&config_path, setup.config.to_string()).expect("write config");
        let log = dir.path().join("relay.log");
        let h = m2.handler(setup.handler);
        let (inject, pull_events) = (free_endpoint(), free_endpoint());
        let mut args: Vec<String> = [
            "--sender-id",
            &h.send_ident,
            "--pull",
            &h.send_spec,
            "--pub",
            &h.recv_spec,
            "--control",
            &free_endpoint(),
            "--inject",
            &inject,
            "--pull-events",
            &pull_events,
            "--config",
            &config_path.to_string_lossy(),
            "--ping-interval",
            "30",
            "--link-bind",
            setup.link_bind.as_deref().unwrap_or("off"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for link in &setup.links {
            args.extend(["--link".to_owned(), link.clone()]);
        }
        let mut relay = RelayProcess {
            child: None,
            args: args.join("\n"),
            route: h.route.clone(),
            inject,
            pull_events,
            log,
            _dir: dir,
        };
        relay.launch();
        relay
    }

    /// Starts the child (again), appending to the same log.
    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("relay log file");
        let mut command = support::child::program(env!("CARGO_BIN_EXE_event-relay"));
        command.args(self.args.split('\n'));
        command
            .env(
                "RUST_LOG",
                std::env::var("RELAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Only the flags above configure the child, whatever the caller's environment holds.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RELAY_") {
                command.env_remove(name);
            }
        }
        self.child = Some(command.spawn().expect("spawn the relay"));
    }

    /// Stops the child with SIGTERM (it must exit 0) and starts it again with the same
    /// command line.
    fn restart(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(WAIT).expect("the relay stops on SIGTERM");
        assert!(status.success(), "{status}\n{}", self.log_tail());
        self.launch();
    }

    fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("relay running");
        libc::pid_t::try_from(child.id()).expect("pid fits")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
        // child, so it cannot have been recycled.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for the child to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the relay answers `GET ROUTE/status` through Mongrel2 (each attempt
    /// waits up to 300 ms for the answer).
    fn wait_ready(&mut self, m2: &Mongrel2) {
        let deadline = Instant::now() + WAIT;
        let path = format!("{}/status", self.route);
        loop {
            if let Some(response) = try_get(m2, &path) {
                assert_eq!(response.status, 200);
                return;
            }
            assert!(
                self.is_running(),
                "the relay exited early:\n{}",
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "the relay did not answer in time:\n{}\n{}",
                self.log_tail(),
                m2.log_tail(20)
            );
        }
    }

    fn status(&self, m2: &Mongrel2) -> Value {
        let response = get(m2, &format!("{}/status", self.route));
        assert_eq!(response.status, 200);
        response.json()
    }

    /// Polls the status until `check` accepts it.
    fn status_eventually(&self, m2: &Mongrel2, mut check: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status(m2);
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never matched: {status}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ws(&self, m2: &Mongrel2) -> Client {
        Client::connect_at(m2, &self.route)
    }

    fn injector(&self) -> Injector {
        Injector::connect(&self.inject)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(2)).is_none() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Mongrel2 routing `/events` to a relay child. The relay is declared first so it stops
/// first.
struct Fixture {
    relay: RelayProcess,
    m2: Mongrel2,
}

impl Fixture {
    fn start() -> Fixture {
        Fixture::with(&test_config(), &[])
    }

    fn with(config: &Value, settings: &[(&str, i64)]) -> Fixture {
        let mut builder = Mongrel2::builder().handler(HandlerConf::new("/events"));
        for (key, value) in settings {
            builder = builder.setting(key, *value);
        }
        let m2 = builder.start();
        let mut relay = RelayProcess::spawn(&m2, config);
        relay.wait_ready(&m2);
        Fixture { relay, m2 }
    }

    fn http(&self) -> HttpClient {
        HttpClient::connect(self.m2.http_addr())
    }

    fn get(&self, path: &str) -> HttpResponse {
        get(&self.m2, path)
    }

    fn status(&self) -> Value {
        self.relay.status(&self.m2)
    }

    fn ws(&self) -> Client {
        self.relay.ws(&self.m2)
    }

    fn injector(&self) -> Injector {
        self.relay.injector()
    }
}

fn get(m2: &Mongrel2, path: &str) -> HttpResponse {
    HttpClient::connect(m2.http_addr())
        .request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .expect("answered")
}

/// One GET on a fresh connection with a short timeout (the relay may not be there yet).
fn try_get(m2: &Mongrel2, path: &str) -> Option<HttpResponse> {
    let mut client = HttpClient::connect(m2.http_addr());
    client.set_timeout(Duration::from_millis(300));
    client
        .request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .ok()
}

/// A WebSocket subscriber.
struct Client {
    ws: tungstenite::WebSocket<TcpStream>,
    id: String,
}

impl Client {
    fn connect_at(m2: &Mongrel2, route: &str) -> Client {
        let mut ws = ws_connect(m2.http_addr(), route);
        let welcome = read_json(&mut ws);
        assert_eq!(welcome["event"], "Welcome", "{welcome}");
        let id = welcome["payload"]["id"]
            .as_str()
            .expect("Welcome id")
            .to_owned();
        Client { ws, id }
    }

    fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    fn send(&mut self, message: &Value) {
        self.send_text(&message.to_string());
    }

    fn recv(&mut self) -> Value {
        read_json(&mut self.ws)
    }

    /// Sends an action and returns the next message (its reply, when nothing else is due).
    fn call(&mut self, action: &str, tag: Value, payload: Value) -> Value {
        self.send(&json!({"action": action, "tag": tag, "payload": payload}));
        self.recv()
    }

    fn subscribe(&mut self, exchange: &str, routing_key: &str) {
        let reply = self.call(
            "Subscribe",
            json!("sub"),
            json!({"exchange": exchange, "routing_key": routing_key}),
        );
        assert_eq!(reply["event"], "Subscribed", "{reply}");
    }

    /// Proves nothing else is queued for this client: a Ping's Pong is the next message.
    fn assert_nothing_pending(&mut self) {
        let reply = self.call("Ping", json!("nothing-pending"), json!({}));
        assert_eq!(
            reply,
            json!({"event":"Pong","tag":"nothing-pending","payload":{}}),
            "expected the Pong next"
        );
    }

    /// Reads until the server's close frame; returns its code.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }
}

/// The next text message as JSON, skipping pings and pongs.
fn read_json(ws: &mut tungstenite::WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return serde_json::from_str(&text).expect("relay messages are JSON")
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }
}

/// A REQ socket on the relay's injector.
struct Injector {
    _context: zmq::Context,
    socket: zmq::Socket,
}

impl Injector {
    fn connect(endpoint: &str) -> Injector {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).expect("REQ");
        socket.set_linger(0).expect("linger");
        socket.connect(endpoint).expect("connect the injector");
        Injector {
            _context: context,
            socket,
        }
    }

    fn request_parts(&self, parts: &[&[u8]]) -> Value {
        self.socket.send_multipart(parts, 0).expect("send");
        assert!(
            self.socket
                .poll(zmq::POLLIN, WAIT.as_millis() as i64)
                .expect("poll")
                > 0,
            "no ack"
        );
        let reply = self.socket.recv_bytes(0).expect("ack");
        assert!(!self.socket.get_rcvmore().expect("rcvmore"), "one-part ack");
        serde_json::from_slice(&reply).expect("ack is JSON")
    }

    fn request(&self, body: &[u8]) -> Value {
        self.request_parts(&[body])
    }

    fn publish(&self, exchange: &str, routing_key: &str, event: &str, payload: Value) -> Value {
        self.request(
            json!({"exchange": exchange, "routing_key": routing_key, "event": event, "payload": payload})
                .to_string()
                .as_bytes(),
        )
    }
}

fn event_json(exchange: &str, routing_key: &str, event: &str, payload: Value, seq: u64) -> Value {
    json!({"event": event, "payload": payload, "mq": {"e": exchange, "rk": routing_key, "seq": seq}})
}

/// Polls `/events/status` until `check` accepts it.
fn status_eventually(fixture: &Fixture, check: impl FnMut(&Value) -> bool) -> Value {
    fixture.relay.status_eventually(&fixture.m2, check)
}

// ----- the protocol ------------------------------------------------------------------------

#[test]
fn welcome_subscribe_wildcard_and_tags_on_every_reply() {
    let f = Fixture::start();
    let mut a = f.ws();
    let mut b = f.ws();
    assert_eq!(a.id.len(), 16);
    assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()), "{}", a.id);
    assert_ne!(a.id, b.id);

    // Tags of any JSON type come back on the reply.
    for tag in [json!("t-1"), json!(7), json!({"n": [1, 2]}), Value::Null] {
        let reply = a.call("Ping", tag.clone(), json!({}));
        assert_eq!(reply, json!({"event":"Pong","tag":tag,"payload":{}}));
    }
    let reply = a.call(
        "Subscribe",
        json!("s1"),
        json!({"exchange":"calls","routing_key":"queue.sales"}),
    );
    assert_eq!(
        reply,
        json!({"event":"Subscribed","tag":"s1","payload":{"exchange":"calls","routing_key":"queue.sales"}})
    );
    // A numeric routing key is taken as its decimal text (Myxi clients send ids).
    let reply = a.call(
        "Subscribe",
        json!("s2"),
        json!({"exchange":"agents","routing_keys":[7, "8"]}),
    );
    assert_eq!(
        reply,
        json!({"event":"Subscribed","tag":"s2","payload":{"exchange":"agents","routing_keys":["7","8"]}})
    );
    let reply = b.call(
        "Subscribe",
        json!("w"),
        json!({"exchange":"calls","routing_key":"queue.*"}),
    );
    assert_eq!(reply["event"], "Subscribed");
    let reply = a.call("ListSubscriptions", json!("l"), json!({}));
    assert_eq!(reply["tag"], "l");
    assert_eq!(reply["event"], "YourSubscriptions");
    let mut listed: Vec<Value> = reply["payload"]["subscriptions"]
        .as_array()
        .expect("list")
        .clone();
    listed.sort_by_key(|v| v.to_string());
    assert_eq!(
        listed,
        vec![
            json!({"exchange":"agents","routing_key":"7"}),
            json!({"exchange":"agents","routing_key":"8"}),
            json!({"exchange":"calls","routing_key":"queue.sales"}),
        ]
    );

    // The injector's ack counts the sessions each event was queued to.
    let inj = f.injector();
    let payload = json!({"caller":"555-1234","agent":"7"});
    let ack = inj.publish("calls", "queue.sales", "CallOffered", payload.clone());
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":2}));
    let ack = inj.publish("calls", "queue.support", "CallOffered", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":1}));
    let ack = inj.publish("calls", "other", "CallOffered", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":0}));
    let ack = inj.publish("agents", "7", "AgentReady", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":1}));

    let sales = event_json("calls", "queue.sales", "CallOffered", payload, 1);
    assert_eq!(a.recv(), sales);
    assert_eq!(
        a.recv(),
        event_json("agents", "7", "AgentReady", json!({}), 1)
    );
    a.assert_nothing_pending();
    assert_eq!(b.recv(), sales);
    assert_eq!(
        b.recv(),
        event_json("calls", "queue.support", "CallOffered", json!({}), 1)
    );
    b.assert_nothing_pending();
}

#[test]
fn every_error_name_keeps_the_session_open_and_auth_grants_access() {
    let f = Fixture::start();
    let mut c = f.ws();
    let error = |name: &str, tag: Option<Value>| match tag {
        Some(tag) => json!({"event":"Error","tag":tag,"payload":{"error":name}}),
        None => json!({"event":"Error","payload":{"error":name}}),
    };

    c.send_text("this is not JSON");
    assert_eq!(c.recv(), error("InvalidJSON", None));
    c.send_text("[1,2,3]");
    assert_eq!(c.recv(), error("InvalidJSON", None));
    c.send(&json!({"tag": "no-action"}));
    assert_eq!(c.recv(), error("InvalidAction", Some(json!("no-action"))));
    let reply = c.call("Fly", json!(1), json!({}));
    assert_eq!(reply, error("InvalidAction", Some(json!(1))));
    let reply = c.call("Subscribe", json!(2), json!({"exchange":"calls"}));
    assert_eq!(reply, error("InvalidPayload", Some(json!(2))));
    // Bigger than limits.message_size (64 KiB): refused unparsed, so without the tag.
    let huge = json!({"action":"Ping","tag":"big","payload":{"pad":"x".repeat(100_000)}});
    c.send(&huge);
    assert_eq!(c.recv(), error("InvalidPayload", None));
    let reply = c.call(
        "Subscribe",
        json!(3),
        json!({"exchange":"nope","routing_key":"x"}),
    );
    assert_eq!(reply, error("InvalidExchange", Some(json!(3))));
    let reply = c.call(
        "Subscribe",
        json!(4),
        json!({"exchange":"queues","routing_key":"elsewhere"}),
    );
    assert_eq!(reply, error("SubscriptionDenied", Some(json!(4))));
    c.subscribe("calls", "a");
    let reply = c.call(
        "Subscribe",
        json!(5),
        json!({"exchange":"calls","routing_key":"a"}),
    );
    assert_eq!(reply, error("AlreadySubscribed", Some(json!(5))));
    let reply = c.call(
        "Subscribe",
        json!(6),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply, error("AuthRequired", Some(json!(6))));
    let reply = c.call("Authenticate", json!(7), json!({"token":"wrong"}));
    assert_eq!(reply, error("InvalidToken", Some(json!(7))));
    // The limit is 5 and one is held: five more are refused all together.
    let reply = c.call(
        "Subscribe",
        json!(8),
        json!({"exchange":"calls","routing_keys":["b","c","d","e","f"]}),
    );
    assert_eq!(reply, error("TooManySubscriptions", Some(json!(8))));
    let reply = c.call("ListSubscriptions", json!(9), json!({}));
    assert_eq!(
        reply["payload"]["subscriptions"],
        json!([{"exchange":"calls","routing_key":"a"}])
    );

    // A token whose name the exchange does not list: denied, not "auth required".
    let reply = c.call("Authenticate", json!(10), json!({"token": OPS_TOKEN}));
    assert_eq!(
        reply,
        json!({"event":"Authenticated","tag":10,"payload":{"name":"ops"}})
    );
    let reply = c.call(
        "Subscribe",
        json!(11),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply, error("SubscriptionDenied", Some(json!(11))));
    let reply = c.call("Authenticate", json!(12), json!({"token": ADMIN_TOKEN}));
    assert_eq!(reply["payload"]["name"], "admin");
    let reply = c.call(
        "Subscribe",
        json!(13),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply["event"], "Subscribed");
    let ack = f
        .injector()
        .publish("admin", "x", "Secret", json!({"k":"v"}));
    assert_eq!(ack["delivered_to"], 1);
    assert_eq!(
        c.recv(),
        event_json("admin", "x", "Secret", json!({"k":"v"}), 1)
    );

    // After all of that the session is still open and alone.
    c.assert_nothing_pending();
    assert_eq!(f.status()["sessions"], 1);

    // Beyond the transport bound (4 x message_size, at least 1 MiB) the Transceiver closes.
    let mut big = f.ws();
    big.send_text(&"y".repeat(2 << 20));
    assert_eq!(big.close_code(), Some(1009));
    c.assert_nothing_pending();
}

#[test]
fn unsubscribe_one_key_keys_an_exchange_or_everything() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "a");
    c.subscribe("calls", "b");
    c.subscribe("calls", "q.*");
    c.subscribe("agents", "x");
    let list = |c: &mut Client| {
        let reply = c.call("ListSubscriptions", json!("l"), json!({}));
        let mut keys: Vec<String> = reply["payload"]["subscriptions"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["exchange"].as_str().unwrap(),
                    s["routing_key"].as_str().unwrap()
                )
            })
            .collect();
        keys.sort();
        keys
    };

    let reply = c.call(
        "Unsubscribe",
        json!("u1"),
        json!({"exchange":"calls","routing_key":"a"}),
    );
    assert_eq!(
        reply,
        json!({"event":"Unsubscribed","tag":"u1","payload":{"exchange":"calls","routing_key":"a"}})
    );
    assert_eq!(list(&mut c), ["agents/x", "calls/b", "calls/q.*"]);
    let reply = c.call(
        "Unsubscribe",
        json!("u2"),
        json!({"exchange":"calls","routing_keys":["b"]}),
    );
    assert_eq!(
        (reply["event"].clone(), reply["tag"].clone()),
        (json!("Unsubscribed"), json!("u2"))
    );
    assert_eq!(list(&mut c), ["agents/x", "calls/q.*"]);
    let reply = c.call("Unsubscribe", json!("u3"), json!({"exchange":"calls"}));
    assert_eq!(reply["event"], "Unsubscribed");
    assert_eq!(list(&mut c), ["agents/x"]);
    let reply = c.call("Unsubscribe", json!("u4"), json!({}));
    assert_eq!(
        (reply["event"].clone(), reply["tag"].clone()),
        (json!("Unsubscribed"), json!("u4"))
    );
    assert!(list(&mut c).is_empty());

    let inj = f.injector();
    for (exchange, key) in [("calls", "a"), ("calls", "q.1"), ("agents", "x")] {
        assert_eq!(
            inj.publish(exchange, key, "E", json!({}))["delivered_to"],
            0
        );
    }
    c.assert_nothing_pending();
    let status = f.status();
    assert_eq!(
        status["subscriptions"],
        json!({"admin":0,"agents":0,"calls":0,"queues":0})
    );
}

#[test]
fn resume_replays_history_with_and_without_a_gap() {
    let f = Fixture::start();
    let inj = f.injector();
    for n in 1..=5 {
        inj.publish("calls", "r1", "Tick", json!({"n": n}));
    }
    let mut c = f.ws();
    let reply = c.call(
        "Resume",
        json!("r"),
        json!({"exchange":"calls","routing_key":"r1","since":2}),
    );
    // The replay comes first, then the tagged Resumed.
    assert_eq!(reply, event_json("calls", "r1", "Tick", json!({"n":3}), 3));
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":4}), 4)
    );
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":5}), 5)
    );
    assert_eq!(
        c.recv(),
        json!({"event":"Resumed","tag":"r","payload":{"exchange":"calls","routing_key":"r1",
               "recovered":true,"more":false,"last_seq":5}})
    );
    // Resume subscribed the key: live events follow.
    assert_eq!(
        inj.publish("calls", "r1", "Tick", json!({"n":6}))["delivered_to"],
        1
    );
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":6}), 6)
    );
    c.assert_nothing_pending();

    // history_per_key is 10: after 15 events, seqs 3..5 are gone.
    for n in 1..=15 {
        inj.publish("calls", "r2", "Tick", json!({"n": n}));
    }
    let mut late = f.ws();
    late.send(&json!({"action":"Resume","tag":"g","payload":{"exchange":"calls","routing_key":"r2","since":2}}));
    for seq in 6..=15 {
        assert_eq!(
            late.recv(),
            event_json("calls", "r2", "Tick", json!({"n": seq}), seq)
        );
    }
    assert_eq!(
        late.recv(),
        json!({"event":"Resumed","tag":"g","payload":{"exchange":"calls","routing_key":"r2",
               "recovered":false,"more":false,"last_seq":15}})
    );
    late.assert_nothing_pending();
}

// ----- event sources -----------------------------------------------------------------------

#[test]
fn injector_answers_every_request_exactly_once() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "queue.sales");
    let inj = f.injector();
    let refused = |name: &str| json!({"ok":false,"error":name});
    assert_eq!(inj.request(b"not json"), refused("InvalidJSON"));
    assert_eq!(inj.request(b"{}"), refused("InvalidPayload"));
    assert_eq!(
        inj.request(br#"{"exchange":"nope","routing_key":"k","event":"E"}"#),
        refused("InvalidExchange")
    );
    assert_eq!(
        inj.request_parts(&[
            br#"{"exchange":"calls","routing_key":"k","event":"E"}"#,
            b"more"
        ]),
        refused("InvalidPayload")
    );
    let huge = json!({"exchange":"calls","routing_key":"k","event":"E","payload":{"pad":"x".repeat(200_000)}});
    assert_eq!(
        inj.request(huge.to_string().as_bytes()),
        refused("InvalidPayload")
    );
    // The same REQ socket still works: the REP never got out of step.
    assert_eq!(
        inj.publish("calls", "queue.sales", "Ok", json!({})),
        json!({"ok":true,"seq":1,"delivered_to":1})
    );
    assert_eq!(c.recv()["event"], "Ok");

    // The inject example: key=value pairs stay strings, key:=JSON is JSON.
    let run = |args: &[&str]| {
        let args = args.iter().map(|a| a.to_string());
        let output = support::child::program(env!("CARGO_BIN_EXE_inject"))
            .args(args)
            .env_clear()
            .output()
            .expect("run inject");
        (
            output.status.code().expect("inject exits"),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "--to",
        &f.relay.inject,
        "--exchange",
        "calls",
        "--routing-key",
        "queue.sales",
        "--event",
        "CallOffered",
        "caller=555-1234",
        "agent=7",
        "priority:=2",
    ]);
    assert_eq!(code, 0, "{err}");
    let ack: Value = serde_json::from_str(out.trim()).expect("ack printed");
    assert_eq!(ack, json!({"ok":true,"seq":2,"delivered_to":1}));
    assert_eq!(
        c.recv(),
        event_json(
            "calls",
            "queue.sales",
            "CallOffered",
            json!({"caller":"555-1234","agent":"7","priority":2}),
            2
        )
    );
    let (code, out, _) = run(&[
        "--to",
        &f.relay.inject,
        "--exchange",
        "nope",
        "--event",
        "E",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        refused("InvalidExchange")
    );
    let started = Instant::now();
    let (code, _, err) = run(&[
        "--to",
        &free_endpoint(),
        "--exchange",
        "calls",
        "--event",
        "E",
        "--timeout",
        "0.3",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no answer"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up on time"
    );
    let (code, _, _) = run(&["--exchange", "calls"]);
    assert_eq!(code, 2);

    let status = f.status();
    assert_eq!(status["events_in"]["inject"], 2);
    assert_eq!(status["events_rejected"]["inject"], 6);
    c.assert_nothing_pending();
}

#[test]
fn pull_socket_and_http_publish() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "k");

    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("PUSH");
    push.set_linger(1000).expect("linger");
    push.connect(&f.relay.pull_events).expect("connect");
    push.send(&b"not json"[..], 0).expect("send");
    push.send_multipart([&b"{}"[..], b"{}"], 0).expect("send");
    push.send(
        json!({"exchange":"calls","routing_key":"k","event":"Pulled","payload":{"via":"pull"}})
            .to_string()
            .as_bytes(),
        0,
    )
    .expect("send");
    assert_eq!(
        c.recv(),
        event_json("calls", "k", "Pulled", json!({"via":"pull"}), 1)
    );

    let publish = |auth: Option<&str>, body: &str| {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        f.http()
            .request(&format!(
                "POST /events/publish HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .expect("answered")
    };
    let body =
        json!({"exchange":"calls","routing_key":"k","event":"Posted","payload":{}}).to_string();
    for auth in [None, Some("Bearer wrong"), Some(PUBLISH_TOKEN)] {
        let response = publish(auth, &body);
        assert_eq!(response.status, 401, "{auth:?}");
        assert_eq!(response.json(), json!({"ok":false,"error":"AuthRequired"}));
    }
    let response = publish(Some(&format!("Bearer {PUBLISH_TOKEN}")), &body);
    assert_eq!(response.status, 202);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), json!({"ok":true,"seq":2,"delivered_to":1}));
    assert_eq!(c.recv(), event_json("calls", "k", "Posted", json!({}), 2));
    let response = publish(Some(&format!("Bearer {PUBLISH_TOKEN}")), "{oops");
    assert_eq!(response.status, 400);
    assert_eq!(response.json(), json!({"ok":false,"error":"InvalidJSON"}));

    let response = f.get("/events/publish");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
    for path in ["/events/nope", "/events", "/events/status/deeper"] {
        let response = f.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json(), json!({"ok":false,"error":"NotFound"}));
    }

    let status = f.status();
    assert_eq!(status["sessions"], 1);
    assert_eq!(status["subscriptions"]["calls"], 1);
    assert_eq!(
        status["events_in"],
        json!({"inject":0,"pull":1,"http":1,"link":0})
    );
    assert_eq!(
        status["events_rejected"],
        json!({"inject":0,"pull":2,"http":4,"link":0})
    );
    assert_eq!(status["history"]["events"], 2);
    assert!(status["uptime_seconds"].is_u64());
    let metrics = f.get("/events/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some(PROMETHEUS_TEXT));
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("relay_events_in_total{source=\"http\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("relay_events_in_total{source=\"pull\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("relay_sessions 1\n"), "{text}");
    c.assert_nothing_pending();
}

/// OpenMetrics text (what Prometheus scrapes), as the relay labels it.
const PROMETHEUS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ----- delivery under load -----------------------------------------------------------------

/// Publishes `count` events on calls/burst through the injector (one REQ round trip each)
/// and, from `pull` on, as fast as a PUSH socket goes; then checks they all arrive in order.
fn burst(f: &Fixture, client: &mut Client, first_seq: u64, count: u64, pad: usize, label: &str) {
    let inj = f.injector();
    let pad = "p".repeat(pad);
    let started = Instant::now();
    for n in 0..count {
        let ack = inj.publish("calls", "burst", "Burst", json!({"n": n, "pad": pad}));
        assert_eq!(ack["seq"], first_seq + n, "{ack}");
        assert_eq!(ack["delivered_to"], 1, "{ack}");
    }
    let injected = started.elapsed();
    for n in 0..count {
        let got = client.recv();
        assert_eq!(got["mq"]["seq"], first_seq + n, "{got}");
        assert_eq!(got["payload"]["n"], n);
    }
    let received = started.elapsed();
    eprintln!("{label}: {count} events injected in {injected:?}, all received after {received:?}");

    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("PUSH");
    push.set_linger(1000).expect("linger");
    push.connect(&f.relay.pull_events).expect("connect");
    let started = Instant::now();
    for n in 0..count {
        let event = json!({"exchange":"calls","routing_key":"burst","event":"Burst","payload":{"n": n, "pad": pad}});
        push.send(event.to_string().as_bytes(), 0).expect("push");
    }
    for n in 0..count {
        let got = client.recv();
        assert_eq!(got["mq"]["seq"], first_seq + count + n, "{got}");
        assert_eq!(got["payload"]["n"], n);
    }
    eprintln!(
        "{label}: {count} events pushed, all received after {:?}",
        started.elapsed()
    );
    client.assert_nothing_pending();
}

#[test]
fn a_burst_of_1000_events_arrives_in_order_and_the_client_stays() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "burst");
    burst(&f, &mut c, 1, 1000, 0, "no flow control");
    let status = f.status();
    assert_eq!(status["sessions"], 1);
    assert_eq!(status["lagged"], 0);
    assert_eq!(status["dropped"], 0);
}

#[test]
fn a_burst_within_mongrel2_download_credits() {
    // With download.flow_control Mongrel2 drops a client with more than 100 KiB queued;
    // 1000 events of ~600 bytes are several windows, so credits must come back in between.
    let f = Fixture::with(&test_config(), &[("download.flow_control", 1)]);
    let mut c = f.ws();
    c.subscribe("calls", "burst");
    burst(&f, &mut c, 1, 1000, 500, "download.flow_control");
    assert_eq!(f.status()["sessions"], 1);
}

/// Keeps a process stopped (SIGSTOP) until dropped (SIGCONT), even if the test panics.
struct Stopped(libc::pid_t);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a live child of
        // this process (the fixture's Mongrel2), so it cannot have been recycled.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[test]
fn a_burst_survives_mongrel2_stalling() {
    // Mongrel2 reads every reply already queued on its socket before its writer task runs,
    // so replies that pile up while it is descheduled land in the client's queue at once,
    // and more than 16 drop the client. Measured: unpaced (one flush per event), a 20 ms
    // stall in an injector burst dropped the client; with flushes 10 ms apart it takes a
    // stall of about 16 x 10 ms. The stall here is simulated with SIGSTOP/SIGCONT.
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "stall");
    let inj = f.injector();
    let mut stopped = None;
    let mut stall_started = Instant::now();
    for n in 0..600u64 {
        if n == 100 {
            stopped = Some(Stopped::new(f.m2.pid().expect("Mongrel2 runs")));
            stall_started = Instant::now();
        }
        if stall_started.elapsed() >= Duration::from_millis(50) {
            stopped = None;
        }
        let ack = inj.publish("calls", "stall", "Stall", json!({"n": n}));
        assert_eq!(ack["delivered_to"], 1, "{ack}");
    }
    drop(stopped);
    for n in 0..600u64 {
        let got = c.recv();
        assert_eq!(got["mq"]["seq"], n + 1, "{got}");
    }
    c.assert_nothing_pending();
    assert_eq!(f.status()["sessions"], 1);
}

#[test]
fn three_hundred_subscribers_each_get_every_event_exactly_once() {
    // More than limits.handler_targets (128): deliveries are split into batches.
    let f = Fixture::start();
    let mut clients: Vec<Client> = (0..300).map(|_| f.ws()).collect();
    // All requests first, then all answers: 300 sessions busy at once.
    let subscribe = json!({"action":"Subscribe","tag":"s","payload":{"exchange":"calls","routing_key":"fanout"}});
    for c in &mut clients {
        c.send(&subscribe);
    }
    for c in &mut clients {
        assert_eq!(c.recv()["event"], "Subscribed");
    }
    let inj = f.injector();
    for n in 1..=3u64 {
        let ack = inj.publish("calls", "fanout", "Fan", json!({"n": n}));
        assert_eq!(ack, json!({"ok":true,"seq":n,"delivered_to":300}));
    }
    for c in &mut clients {
        for n in 1..=3u64 {
            assert_eq!(
                c.recv(),
                event_json("calls", "fanout", "Fan", json!({"n": n}), n)
            );
        }
    }
    // Exactly once: the next message after the three events is the answer to a Ping.
    for c in &mut clients {
        c.send(&json!({"action":"Ping","tag":"after"}));
    }
    for c in &mut clients {
        assert_eq!(c.recv(), json!({"event":"Pong","tag":"after","payload":{}}));
    }
    let status = f.status();
    assert_eq!(status["sessions"], 300);
    assert_eq!(status["subscriptions"]["calls"], 300);
}

#[test]
fn session_tables_are_empty_after_churn() {
    let f = Fixture::start();
    for round in 0..20 {
        let mut batch: Vec<Client> = (0..10).map(|_| f.ws()).collect();
        for (i, c) in batch.iter_mut().enumerate() {
            c.subscribe("calls", &format!("churn.{i}"));
        }
        for (i, mut c) in batch.into_iter().enumerate() {
            if (round + i) % 2 == 0 {
                // A clean close: the relay hears the close frame.
                c.ws.close(None).expect("close");
                while c.ws.read().is_ok() {}
            } else {
                // The TCP connection just goes: Mongrel2 reports the disconnect.
                drop(c);
            }
        }
    }
    let status = status_eventually(&f, |s| {
        s["sessions"] == 0 && s["subscriptions"]["calls"] == 0
    });
    assert_eq!(status["sessions_opened"], 200);
    assert_eq!(
        status["subscriptions"],
        json!({"admin":0,"agents":0,"calls":0,"queues":0})
    );
}

// ----- shutdown ----------------------------------------------------------------------------

#[test]
fn sigterm_closes_every_session_with_1001_and_exits_0() {
    let mut f = Fixture::start();
    let mut clients: Vec<Client> = (0..3).map(|_| f.ws()).collect();
    for c in &mut clients {
        c.subscribe("calls", "bye");
    }
    let started = Instant::now();
    f.relay.signal(libc::SIGTERM);
    let status = f.relay.wait_exit(Duration::from_secs(1));
    let elapsed = started.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running after 1 s:\n{}", f.relay.log_tail()));
    eprintln!("relay exited {status} {elapsed:?} after SIGTERM");
    assert!(status.success(), "{status}\n{}", f.relay.log_tail());
    for c in &mut clients {
        assert_eq!(c.close_code(), Some(u16::from(CloseCode::Away)));
    }
    assert!(f
        .relay
        .log_tail()
        .contains("shutting down: closing 3 sessions"));
}

#[path = "event_relay/network.rs"]
mod network;

#[path = "event_relay/rpc.rs"]
mod rpc;

#[path = "event_relay/sse.rs"]
mod sse;
