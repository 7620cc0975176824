//! The fixture: a Mongrel2 and an `event-relay` child per test, WebSocket clients,
//! injectors and status polling.

use super::*;

/// How a relay child is set up: which Mongrel2 handler it serves, its config, and its links.
pub struct Setup<'a> {
    pub handler: usize,
    pub config: &'a Value,
    /// `--link-bind` (None: off).
    pub link_bind: Option<String>,
    /// `--link`s.
    pub links: Vec<String>,
    /// `--amqp` (None: off).
    pub amqp: Option<String>,
    /// More command-line arguments.
    pub args: Vec<String>,
    /// `--ping-interval` in seconds.
    pub ping_interval: u64,
}

impl<'a> Setup<'a> {
    pub fn new(config: &'a Value) -> Setup<'a> {
        Setup {
            handler: 0,
            config,
            link_bind: None,
            links: Vec::new(),
            amqp: None,
            args: Vec::new(),
            ping_interval: 30,
        }
    }
}

/// The relay child process; killed (after a SIGTERM) and reaped on drop.
pub struct RelayProcess {
    pub child: Option<Child>,
    /// The child's command line, one argument per line (kept for restarts).
    pub args: String,
    /// Mongrel2 route, e.g. `/events`.
    pub route: String,
    pub inject: String,
    pub pull_events: String,
    pub log: PathBuf,
    /// The config's `status_token`, sent with every status request.
    pub status_token: Option<String>,
    pub _dir: tempfile::TempDir,
}

impl RelayProcess {
    pub fn spawn(m2: &Mongrel2, config: &Value) -> RelayProcess {
        RelayProcess::start(m2, Setup::new(config))
    }

    pub fn start(m2: &Mongrel2, setup: Setup<'_>) -> RelayProcess {
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
            &setup.ping_interval.to_string(),
            "--link-bind",
            setup.link_bind.as_deref().unwrap_or("off"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for link in &setup.links {
            args.extend(["--link".to_owned(), link.clone()]);
        }
        if let Some(url) = &setup.amqp {
            args.extend(["--amqp".to_owned(), url.clone()]);
        }
        args.extend(setup.args.iter().cloned());
        let mut relay = RelayProcess {
            child: None,
            args: args.join("\n"),
            route: h.route.clone(),
            inject,
            pull_events,
            log,
            status_token: setup.config["status_token"].as_str().map(str::to_owned),
            _dir: dir,
        };
        relay.launch();
        relay
    }

    /// Starts the child (again), appending to the same log.
    pub fn launch(&mut self) {
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
    pub fn restart(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(WAIT).expect("the relay stops on SIGTERM");
        assert!(status.success(), "{status}\n{}", self.log_tail());
        self.launch();
    }

    pub fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("relay running");
        libc::pid_t::try_from(child.id()).expect("pid fits")
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
        // child, so it cannot have been recycled.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the relay answers `GET ROUTE/status` through Mongrel2 (each attempt
    /// waits up to 300 ms for the answer).
    pub fn wait_ready(&mut self, m2: &Mongrel2) {
        let deadline = Instant::now() + WAIT;
        let path = format!("{}/status", self.route);
        loop {
            if let Some(response) = try_get(m2, &path, self.status_token.as_deref()) {
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

    pub fn status(&self, m2: &Mongrel2) -> Value {
        let response = get_as(
            m2,
            &format!("{}/status", self.route),
            self.status_token.as_deref(),
        );
        assert_eq!(response.status, 200);
        response.json()
    }

    /// Polls the status until `check` accepts it.
    pub fn status_eventually(&self, m2: &Mongrel2, mut check: impl FnMut(&Value) -> bool) -> Value {
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

    pub fn ws(&self, m2: &Mongrel2) -> Client {
        Client::connect_at(m2, &self.route)
    }

    pub fn injector(&self) -> Injector {
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
pub struct Fixture {
    pub relay: RelayProcess,
    pub m2: Mongrel2,
}

impl Fixture {
    pub fn start() -> Fixture {
        Fixture::with(&test_config(), &[])
    }

    pub fn with(config: &Value, settings: &[(&str, i64)]) -> Fixture {
        let mut builder = Mongrel2::builder().handler(HandlerConf::new("/events"));
        for (key, value) in settings {
            builder = builder.setting(key, *value);
        }
        let m2 = builder.start();
        let mut relay = RelayProcess::spawn(&m2, config);
        relay.wait_ready(&m2);
        Fixture { relay, m2 }
    }

    pub fn http(&self) -> HttpClient {
        HttpClient::connect(self.m2.http_addr())
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        get(&self.m2, path)
    }

    pub fn status(&self) -> Value {
        self.relay.status(&self.m2)
    }

    pub fn ws(&self) -> Client {
        self.relay.ws(&self.m2)
    }

    pub fn injector(&self) -> Injector {
        self.relay.injector()
    }
}

pub fn get(m2: &Mongrel2, path: &str) -> HttpResponse {
    get_as(m2, path, None)
}

/// A GET with `Authorization: Bearer TOKEN` when `token` is given.
pub fn get_as(m2: &Mongrel2, path: &str, token: Option<&str>) -> HttpResponse {
    HttpClient::connect(m2.http_addr())
        .request(&get_request(path, token))
        .expect("answered")
}

fn get_request(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n")
}

/// One GET on a fresh connection with a short timeout (the relay may not be there yet).
pub fn try_get(m2: &Mongrel2, path: &str, token: Option<&str>) -> Option<HttpResponse> {
    let mut client = HttpClient::connect(m2.http_addr());
    client.set_timeout(Duration::from_millis(300));
    client.request(&get_request(path, token)).ok()
}

/// A WebSocket subscriber.
pub struct Client {
    pub ws: tungstenite::WebSocket<TcpStream>,
    pub id: String,
    /// The epoch its Welcome named (what `Resume` sends back with a position).
    pub epoch: String,
}

impl Client {
    pub fn connect_at(m2: &Mongrel2, route: &str) -> Client {
        let mut ws = ws_connect(m2.http_addr(), route);
        let welcome = read_json(&mut ws);
        assert_eq!(welcome["event"], "Welcome", "{welcome}");
        let id = welcome["payload"]["id"]
            .as_str()
            .expect("Welcome id")
            .to_owned();
        let epoch = welcome["payload"]["epoch"]
            .as_str()
            .expect("Welcome epoch")
            .to_owned();
        Client { ws, id, epoch }
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send(&mut self, message: &Value) {
        self.send_text(&message.to_string());
    }

    pub fn recv(&mut self) -> Value {
        read_json(&mut self.ws)
    }

    /// Sends an action and returns the next message (its reply, when nothing else is due).
    pub fn call(&mut self, action: &str, tag: Value, payload: Value) -> Value {
        self.send(&json!({"action": action, "tag": tag, "payload": payload}));
        self.recv()
    }

    pub fn subscribe(&mut self, exchange: &str, routing_key: &str) {
        let reply = self.call(
            "Subscribe",
            json!("sub"),
            json!({"exchange": exchange, "routing_key": routing_key}),
        );
        assert_eq!(reply["event"], "Subscribed", "{reply}");
    }

    /// Proves nothing else is queued for this client: a Ping's Pong is the next message.
    pub fn assert_nothing_pending(&mut self) {
        let reply = self.call("Ping", json!("nothing-pending"), json!({}));
        assert_eq!(
            reply,
            json!({"event":"Pong","tag":"nothing-pending","payload":{}}),
            "expected the Pong next"
        );
    }

    /// Reads until the server's close frame; returns its code.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }
}

/// The arguments that make a relay the group member at `bind` of the members at `binds`
/// (its own address among them, as every member gets the same list).
pub fn group_args(bind: &str, binds: &[String]) -> Vec<String> {
    let mut args = vec!["--group-bind".to_owned(), bind.to_owned()];
    for peer in binds {
        args.extend(["--group-peer".to_owned(), peer.clone()]);
    }
    args
}

/// The next text message as JSON, skipping pings and pongs.
pub fn read_json(ws: &mut tungstenite::WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return without_publish_time(
                    serde_json::from_str(&text).expect("relay messages are JSON"),
                )
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }
}

/// A REQ socket on the relay's injector.
pub struct Injector {
    pub _context: zmq::Context,
    pub socket: zmq::Socket,
}

impl Injector {
    pub fn connect(endpoint: &str) -> Injector {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).expect("REQ");
        socket.set_linger(0).expect("linger");
        socket.connect(endpoint).expect("connect the injector");
        Injector {
            _context: context,
            socket,
        }
    }

    pub fn request_parts(&self, parts: &[&[u8]]) -> Value {
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

    pub fn request(&self, body: &[u8]) -> Value {
        self.request_parts(&[body])
    }

    pub fn publish(&self, exchange: &str, routing_key: &str, event: &str, payload: Value) -> Value {
        self.request(
            json!({"exchange": exchange, "routing_key": routing_key, "event": event, "payload": payload})
                .to_string()
                .as_bytes(),
        )
    }
}

/// Checks that an event carries its publish time (`mq.ts`, the wall clock) and leaves it
/// out, so expectations can be literals.
pub fn without_publish_time(mut v: Value) -> Value {
    if let Some(mq) = v.get_mut("mq").and_then(Value::as_object_mut) {
        let ts = mq.remove("ts");
        assert!(ts.as_ref().is_some_and(Value::is_u64), "mq.ts: {ts:?}");
    }
    v
}

pub fn event_json(
    exchange: &str,
    routing_key: &str,
    event: &str,
    payload: Value,
    seq: u64,
) -> Value {
    json!({"event": event, "payload": payload, "mq": {"e": exchange, "rk": routing_key, "seq": seq}})
}

/// Polls `/events/status` until `check` accepts it.
pub fn status_eventually(fixture: &Fixture, check: impl FnMut(&Value) -> bool) -> Value {
    fixture.relay.status_eventually(&fixture.m2, check)
}
