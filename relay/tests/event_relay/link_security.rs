//! Link authentication, link queue budgets and the status token (issue 18, items 2 and 6),
//! attacked through real sockets: a plain ZeroMQ SUB on `--link-bind`, a rogue XPUB that a
//! relay links to, relays with different secrets, a link subscriber that never reads.

use super::*;

/// The usual config, quick hellos, and the link secret.
fn secret_config() -> Value {
    let mut config = test_config();
    config["timing"] = json!({"link_heartbeat_ms": 200});
    config["link_secret"] = json!(LINK_SECRET);
    config
}

/// A raw ZeroMQ socket of the test, with its own context.
struct Raw {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl Raw {
    fn new(kind: zmq::SocketType) -> Raw {
        let context = zmq::Context::new();
        let socket = context.socket(kind).expect("socket");
        socket.set_linger(0).expect("linger");
        Raw {
            socket,
            _context: context,
        }
    }

    /// The next message within `WAIT` (frames), or `None`.
    fn recv_within(&self, wait: Duration) -> Option<Vec<Vec<u8>>> {
        let ready = self
            .socket
            .poll(
                zmq::POLLIN,
                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            )
            .expect("poll");
        (ready > 0).then(|| self.socket.recv_multipart(0).expect("recv"))
    }
}

#[test]
fn a_link_subscriber_without_the_secret_receives_nothing() {
    // a publishes; b links to a with the secret.
    let net = Net::with(&secret_config(), &[&[], &[0]]);
    let a = &net.relays[0];
    // A plain SUB that takes everything, and names itself as relays without a secret do.
    let plain = Raw::new(zmq::SUB);
    plain.socket.set_subscribe(b"").expect("subscribe");
    plain.socket.set_subscribe(b"id/rogue").expect("subscribe");
    plain.socket.connect(&net.binds[0]).expect("connect");
    a.status_eventually(&net.m2, |s| s["links"]["refused"] == 1);
    // A SUB that asks for a challenge gets one, but cannot answer it without the secret.
    let nonce = "0123456789abcdef0123456789abcdef";
    let guesser = Raw::new(zmq::SUB);
    let challenge_topic = format!("ch/{nonce}");
    guesser
        .socket
        .set_subscribe(challenge_topic.as_bytes())
        .expect("subscribe");
    guesser.socket.connect(&net.binds[0]).expect("connect");
    let challenge = guesser.recv_within(WAIT).expect("a challenge");
    assert_eq!(challenge[0], challenge_topic.as_bytes());
    let body: Value = serde_json::from_slice(&challenge[1]).expect("challenge JSON");
    let cookie = body["nonce"].as_str().expect("nonce");
    let answer = format!("au/rogue/{nonce}/{cookie}/{}", "00".repeat(32));
    guesser
        .socket
        .set_subscribe(answer.as_bytes())
        .expect("answer");
    a.status_eventually(&net.m2, |s| s["links"]["refused"] == 2);
    assert!(
        a.log_text().contains("authentication failed: wrong proof"),
        "{}",
        a.log_tail()
    );
    assert!(
        a.log_text().contains("requires the link secret"),
        "{}",
        a.log_tail()
    );

    // b, which holds the secret, gets a's events (token-protected ones included) ...
    net.links_verified(1);
    let mut on_b = net.relays[1].ws(&net.m2);
    let reply = on_b.call("Authenticate", json!(1), json!({"token": ADMIN_TOKEN}));
    assert_eq!(reply["event"], "Authenticated", "{reply}");
    on_b.subscribe("admin", "*");
    let ack = a
        .injector()
        .publish("admin", "k", "Secret", json!({"card": "4111"}));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(on_b.recv()["event"], "Secret");
    // ... which a sent to its admitted subscribers at once: the others got nothing, not
    // even a hello.
    let status = a.status(&net.m2);
    assert_eq!(
        status["links"]["subscribers"],
        json!([net.status(1)["links"]["relay"]])
    );
    for rogue in [&plain, &guesser] {
        if let Some(frames) = rogue.recv_within(Duration::from_millis(500)) {
            panic!(
                "a rogue subscriber got {:?}",
                String::from_utf8_lossy(&frames[0])
            );
        }
    }
}

#[test]
fn a_rogue_publisher_cannot_inject_events() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let rogue = Raw::new(zmq::XPUB);
    rogue.socket.set_xpub_verbose(true).expect("verbose");
    let endpoint = free_endpoint();
    rogue.socket.bind(&endpoint).expect("bind");
    let config = secret_config();
    let mut relay = RelayProcess::start(
        &m2,
        Setup {
            links: vec![endpoint],
            ..Setup::new(&config)
        },
    );
    relay.wait_ready(&m2);
    let mut client = relay.ws(&m2);
    client.subscribe("calls", "x");
    // The relay's SUB asks for a challenge; by then its `ev` and `hello` are in place too.
    let nonce = loop {
        let frames = rogue.recv_within(WAIT).expect("the relay subscribes");
        if let Some(nonce) = frames[0].strip_prefix(b"\x01ch/") {
            break nonce.to_vec();
        }
    };
    let event = json!({"exchange": "calls", "routing_key": "x", "event": "Injected",
                       "payload": {}, "origin": {"relay": "rogue.1", "seq": 1, "hops": 1}})
    .to_string();
    let hello = json!({"relay": "rogue.1", "sent": 1, "interval_ms": 200}).to_string();
    let forged_challenge =
        json!({"relay": "rogue.1", "nonce": "1.00", "proof": "00".repeat(32)}).to_string();
    let challenge_topic = [&b"ch/"[..], &nonce].concat();
    // Refusals are logged when their count is a power of two: the forged challenge (1)
    // and the first unsigned event (2) are.
    let messages: [&[&[u8]]; 5] = [
        &[&challenge_topic, forged_challenge.as_bytes()],
        &[b"ev", event.as_bytes()],
        &[b"ev", event.as_bytes(), &[0; 32]],
        &[b"hello", hello.as_bytes()],
        &[b"hello", hello.as_bytes(), &[7; 32]],
    ];
    for message in messages {
        rogue.socket.send_multipart(message, 0).expect("send");
    }
    let status = relay.status_eventually(&m2, |s| s["links"]["peers"][0]["refused"] == 5);
    let peer = &status["links"]["peers"][0];
    assert_eq!(peer["verified"], false, "{status}");
    assert_eq!(peer["events"], 0, "{status}");
    assert_eq!(status["events_in"]["link"], 0, "{status}");
    client.assert_nothing_pending();
    // Still unverified, the relay asks for a new challenge (with a new nonce) in a while.
    loop {
        let frames = rogue.recv_within(WAIT).expect("a new challenge request");
        if let Some(again) = frames[0].strip_prefix(b"\x01ch/") {
            assert_ne!(again, nonce);
            break;
        }
    }
    let log = relay.log_text();
    assert!(
        log.contains("message refused, not signed with the link secret"),
        "{log}"
    );
    assert!(log.contains("its challenge failed: wrong proof"), "{log}");
}

#[test]
fn a_wrong_secret_is_refused_and_the_right_one_may_come_from_a_file() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/a/events"))
        .handler(HandlerConf::new("/b/events"))
        .handler(HandlerConf::new("/c/events"))
        .start();
    let bind = free_endpoint();
    let secret = secret_config();
    let mut a = RelayProcess::start(
        &m2,
        Setup {
            link_bind: Some(bind.clone()),
            ..Setup::new(&secret)
        },
    );
    // b reads the right secret from a file (with the line break an editor adds); c has
    // another one in its config.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("link.key");
    fs::write(&file, format!("{LINK_SECRET}\n")).expect("write the secret");
    let mut plain = secret.clone();
    plain.as_object_mut().expect("object").remove("link_secret");
    let mut b = RelayProcess::start(
        &m2,
        Setup {
            handler: 1,
            links: vec![bind.clone()],
            args: vec!["--link-secret-file".into(), file.to_string_lossy().into()],
            ..Setup::new(&plain)
        },
    );
    let mut wrong = secret.clone();
    wrong["link_secret"] = json!("another-secret-0123456789abcdefgh");
    let mut c = RelayProcess::start(
        &m2,
        Setup {
            handler: 2,
            links: vec![bind],
            ..Setup::new(&wrong)
        },
    );
    for relay in [&mut a, &mut b, &mut c] {
        relay.wait_ready(&m2);
    }
    // (c asks for a new challenge every 5 s while unverified: at least one refusal.)
    let refused = c.status_eventually(&m2, |s| {
        s["links"]["peers"][0]["refused"].as_u64() >= Some(1)
    });
    assert_eq!(
        refused["links"]["peers"][0]["state"], "connecting",
        "{refused}"
    );
    assert!(c
        .log_text()
        .contains("its challenge failed: wrong proof (a different link secret?)"));
    b.status_eventually(&m2, |s| s["links"]["peers"][0]["verified"] == true);
    let (mut on_b, mut on_c) = (b.ws(&m2), c.ws(&m2));
    on_b.subscribe("calls", "k");
    on_c.subscribe("calls", "k");
    let ack = a.injector().publish("calls", "k", "E", json!({}));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(on_b.recv()["event"], "E");
    on_c.assert_nothing_pending();
    let status = a.status(&m2);
    assert_eq!(
        status["links"]["subscribers"],
        json!([b.status(&m2)["links"]["relay"]])
    );
    // Neither the secret nor its file's content is ever logged.
    for relay in [&a, &b, &c] {
        assert!(!relay.log_text().contains(LINK_SECRET));
        assert!(!relay.log_text().contains("another-secret"));
    }
}

#[test]
fn unsafe_link_setups_are_refused_at_startup() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let port = free_endpoint().rsplit_once(':').expect("port").1.to_owned();
    let config = test_config();
    let mut open = RelayProcess::start(
        &m2,
        Setup {
            link_bind: Some(format!("tcp://0.0.0.0:{port}")),
            ..Setup::new(&config)
        },
    );
    let status = open.wait_exit(WAIT).expect("refused at startup");
    assert_eq!(status.code(), Some(2), "{}", open.log_tail());
    assert!(
        open.log_text().contains("no link secret is set"),
        "{}",
        open.log_tail()
    );

    let mut short = test_config();
    short["link_secret"] = json!("too-short-a-secret");
    let mut weak = RelayProcess::start(&m2, Setup::new(&short));
    let status = weak.wait_exit(WAIT).expect("refused at startup");
    assert_eq!(status.code(), Some(2), "{}", weak.log_tail());
    let log = weak.log_text();
    assert!(
        log.contains("the link secret must be at least 32 bytes"),
        "{log}"
    );
    assert!(!log.contains("too-short-a-secret"), "{log}");
}

#[test]
fn status_and_metrics_need_the_status_token_and_welcome_keeps_the_link_id() {
    let mut config = test_config();
    config["status_token"] = json!("status-secret");
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let mut relay = RelayProcess::start(
        &m2,
        Setup {
            link_bind: Some(free_endpoint()),
            ..Setup::new(&config)
        },
    );
    relay.wait_ready(&m2);
    for path in ["/events/status", "/events/metrics"] {
        for token in [None, Some("wrong-token")] {
            let response = get_as(&m2, path, token);
            assert_eq!(response.status, 401, "{path} {token:?}");
            assert_eq!(response.json()["error"], "AuthRequired");
            assert!(response.header("www-authenticate").is_some());
        }
        assert_eq!(
            get_as(&m2, path, Some("status-secret")).status,
            200,
            "{path}"
        );
    }
    // Welcome's run tells a restart apart, nothing more: it is not the relay's id on its
    // links (which events' origins name).
    let link_id = relay.status(&m2)["links"]["relay"]
        .as_str()
        .expect("link id")
        .to_owned();
    let mut ws = ws_connect(m2.http_addr(), "/events");
    let welcome = read_json(&mut ws);
    let run = welcome["payload"]["run"].as_str().expect("run");
    assert!(
        !run.is_empty() && !link_id.contains(run) && !run.contains(&link_id),
        "{run} {link_id}"
    );
}

/// The relay's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: libc::pid_t) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_link_subscriber_that_never_reads_costs_at_most_the_queue_budget() {
    let mut config = test_config();
    config["limits"]["link_queue_bytes"] = json!(4 * 1024 * 1024);
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let bind = free_endpoint();
    let mut relay = RelayProcess::start(
        &m2,
        Setup {
            link_bind: Some(bind.clone()),
            ..Setup::new(&config)
        },
    );
    relay.wait_ready(&m2);
    // A subscriber admitted as a relay without a secret is (loopback only), which never
    // reads: its own queue holds one message, so TCP pushes back at once.
    let lazy = Raw::new(zmq::SUB);
    lazy.socket.set_rcvhwm(1).expect("rcvhwm");
    for topic in [&b"ev"[..], b"hello", b"id/lazy"] {
        lazy.socket.set_subscribe(topic).expect("subscribe");
    }
    lazy.socket.connect(&bind).expect("connect");
    relay.status_eventually(&m2, |s| s["links"]["subscribers"] == json!(["lazy"]));
    let before = peak_rss_kib(relay.pid());
    let injector = relay.injector();
    let payload = json!({"blob": "x".repeat(60_000)});
    const EVENTS: u64 = 1500;
    for n in 0..EVENTS {
        // Spread over keys so per-key history holds few of them.
        let ack = injector.publish("calls", &format!("k{}", n % 4), "Big", payload.clone());
        assert_eq!(ack["ok"], true, "{ack}");
    }
    relay.status_eventually(&m2, |s| s["links"]["published"] == EVENTS);
    let after = peak_rss_kib(relay.pid());
    eprintln!(
        "relay peak RSS {} MiB before, {} MiB after {EVENTS} x 60 KB events to a link \
         subscriber that never reads",
        before / 1024,
        after / 1024
    );
    // 90 MB went out; the budget is 4 MiB plus the history (40 events, 2.4 MB) and the
    // allocator's slack.
    assert!(
        after < before + 40 * 1024,
        "peak RSS {before} KiB -> {after} KiB"
    );
}
