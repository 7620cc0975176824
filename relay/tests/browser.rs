//! The live web page (`web/`) in headless Chromium, served by a real Mongrel2 next to a real
//! event relay: subscribing through the page's form, events injected through the relay's
//! injector REP socket and read back from the DOM, then Mongrel2 restarts (the page resumes
//! from the relay's history) and Mongrel2 + relay restarts (the relay numbers keys from 1
//! again and the page must notice).
//!
//! The relay is the crate's `event-relay` binary, run as a child process (Cargo builds it
//! before the tests), as in tests/event_relay.rs.
//!
//! Needs Chromium (`apt-get install -y chromium`; scripts/test installs it), driven over the
//! DevTools protocol by `headless_chrome`. Without them the test fails under `CI=true` and is skipped, loudly,
//! otherwise. Screenshots go to `target/artifacts/` for review.

mod chrome;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use chrome::Browser;
use mongrel2_test_fixture::support::{self, HttpClient};
use mongrel2_test_fixture::{free_endpoint, HandlerConf, Mongrel2};

/// Bound for anything that should happen "soon", reconnect backoff included.
const WAIT: Duration = Duration::from_secs(30);

// ----- fixture ---------------------------------------------------------------------------

/// Chromium, or `None` (after a loud message) when it is missing and this is not CI.
fn browser_tools() -> Option<PathBuf> {
    match chrome::find_chromium() {
        Ok(chromium) => Some(chromium),
        Err(e) if is_ci() => panic!("{e}\n(CI is set: the browser test must run, not skip)"),
        Err(e) => {
            eprintln!(
                "\n{bar}\nSKIPPED: the browser test did not run.\n{e}\n{bar}\n",
                bar = "*".repeat(78)
            );
            None
        }
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Where screenshots are kept: `target/artifacts/` (or under `$CARGO_TARGET_DIR`).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("artifacts");
    fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Mongrel2 serving the page at `/` (a Dir route inside its chroot) and `/events`.
fn mongrel2_with_page() -> Mongrel2 {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .dir("/", "web/")
        .start();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for entry in fs::read_dir(&source).expect("read web/") {
        let path = entry.expect("web/ entry").path();
        if path.is_file() {
            let name = path.file_name().expect("file name");
            fs::copy(&path, m2.dir().join("web").join(name)).expect("copy the page");
        }
    }
    m2
}

/// The relay child process; SIGTERM, then SIGKILL, and reaped on drop.
struct RelayProcess {
    child: Option<Child>,
    inject: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    fn spawn(m2: &Mongrel2, limits: &Value) -> RelayProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("relay.json");
        let config_json = json!({
            "exchanges": {"calls": {"public": true}, "agents": {"public": true}},
            "limits": limits,
        });
        fs::write(&config, config_json.to_string()).expect("write config");
        let log = dir.path().join("relay.log");
        let h = m2.handler(0);
        let inject = free_endpoint();
        let args = [
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
            "off",
            "--link-bind",
            "off",
            "--config",
            &config.to_string_lossy(),
        ];
        let mut command = support::child::program(env!("CARGO_BIN_EXE_event-relay"));
        command.args(args);
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("relay log file"));
        // Only the flags above configure the child, whatever the caller's environment holds.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RELAY_") {
                command.env_remove(name);
            }
        }
        RelayProcess {
            child: Some(command.spawn().expect("spawn the relay")),
            inject,
            log,
            _dir: dir,
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
            // unreaped child, so it cannot have been recycled.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One GET through Mongrel2 on a fresh connection with a short timeout.
fn try_get(m2: &Mongrel2, path: &str) -> Option<Value> {
    let mut client = HttpClient::connect(m2.http_addr());
    client.set_timeout(Duration::from_millis(500));
    let response = client
        .request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .ok()?;
    (response.status == 200).then(|| response.json())
}

/// Waits until the relay answers `GET /events/status` through Mongrel2.
fn relay_status_eventually(m2: &Mongrel2, relay: &mut RelayProcess) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = try_get(m2, "/events/status") {
            return status;
        }
        assert!(
            relay.is_running(),
            "the relay exited:\n{}",
            relay.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "the relay did not answer:\n{}\n{}\nlisteners on the handler's ports:\n{}",
            relay.log_tail(),
            m2.log_tail(20),
            listeners(m2)
        );
    }
}

/// Who listens on the handler's ports (`ss`), for failure messages: a restarted Mongrel2
/// binds the same ports again, and another process could have taken one meanwhile.
fn listeners(m2: &Mongrel2) -> String {
    let h = m2.handler(0);
    let ports: Vec<String> = [&h.send_spec, &h.recv_spec]
        .iter()
        .filter_map(|spec| spec.rsplit(':').next().map(|p| format!(":{p} ")))
        .collect();
    match Command::new("ss").args(["-ltnp"]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| ports.iter().any(|p| l.contains(p.as_str())))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(ss: {e})"),
    }
}

/// Publishes through the relay's injector REP socket and returns its ack.
fn inject(relay: &RelayProcess, exchange: &str, key: &str, event: &str, n: u64) -> Value {
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).expect("req");
    req.set_linger(0).expect("linger");
    req.connect(&relay.inject).expect("connect the injector");
    let body = json!({
        "exchange": exchange,
        "routing_key": key,
        "event": event,
        "payload": {"n": n, "queue": key},
    });
    req.send(body.to_string().as_bytes(), 0).expect("send");
    let timeout = i64::try_from(WAIT.as_millis()).unwrap_or(i64::MAX);
    assert!(
        req.poll(zmq::POLLIN, timeout).expect("poll") > 0,
        "no ack from the injector:\n{}",
        relay.log_tail()
    );
    let ack: Value = serde_json::from_slice(&req.recv_bytes(0).expect("ack")).expect("ack JSON");
    assert_eq!(ack["ok"], json!(true), "{ack}");
    ack
}

// ----- reading the page ------------------------------------------------------------------

/// One row of `#events`, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    seq: u64,
    exchange: String,
    key: String,
    event: String,
    /// `payload.n`: which injection this is.
    n: u64,
}

fn rows(b: &Browser) -> Vec<Row> {
    let v = b
        .execute(
            "return Array.from(document.querySelectorAll('#events tbody tr[data-seq]')).map(\
               tr => ({seq: Number(tr.dataset.seq), exchange: tr.dataset.exchange, \
                       key: tr.dataset.key, event: tr.dataset.event, \
                       payload: tr.dataset.payload}));",
        )
        .expect("read the event rows");
    v.as_array()
        .expect("rows array")
        .iter()
        .map(|r| {
            let payload: Value = serde_json::from_str(r["payload"].as_str().expect("payload text"))
                .expect("payload cell holds JSON");
            Row {
                seq: r["seq"].as_u64().expect("seq"),
                exchange: r["exchange"].as_str().expect("exchange").to_owned(),
                key: r["key"].as_str().expect("key").to_owned(),
                event: r["event"].as_str().expect("event").to_owned(),
                n: payload["n"].as_u64().expect("payload.n"),
            }
        })
        .collect()
}

/// The `n`s shown, newest first.
fn shown(b: &Browser) -> Vec<u64> {
    rows(b).iter().map(|r| r.n).collect()
}

/// Waits until exactly the injections `ns` are shown (in any order), once each.
fn wait_shown(b: &Browser, ns: &[u64]) -> Vec<Row> {
    let mut want = ns.to_vec();
    want.sort_unstable();
    b.wait_until(WAIT, &format!("events {ns:?} in #events"), |b| {
        let rows = rows(b);
        let mut got: Vec<u64> = rows.iter().map(|r| r.n).collect();
        got.sort_unstable();
        Ok((got == want).then_some(rows))
    })
}

fn counters(b: &Browser) -> BTreeMap<String, u64> {
    let v = b
        .execute(
            "return Array.from(document.querySelectorAll('#counters tbody tr[data-exchange]'))\
               .map(tr => [tr.dataset.exchange, Number(tr.querySelector('td').dataset.count)]);",
        )
        .expect("read the counters");
    v.as_array()
        .expect("counters array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("exchange").to_owned(),
                pair[1].as_u64().expect("count"),
            )
        })
        .collect()
}

fn state(b: &Browser) -> (String, u64) {
    let v = b
        .execute(
            "const s = document.getElementById('state');\
             return [s.dataset.state, Number(s.dataset.welcomes || 0)];",
        )
        .expect("read #state");
    (
        v[0].as_str().unwrap_or_default().to_owned(),
        v[1].as_u64().unwrap_or(0),
    )
}

fn wait_state(b: &Browser, want: &str, welcomes: u64) {
    b.wait_until(
        WAIT,
        &format!("#state {want} after {welcomes} Welcome(s)"),
        |b| {
            let (s, w) = state(b);
            Ok((s == want && w == welcomes).then_some(()))
        },
    );
}

fn wait_state_is(b: &Browser, want: &str) {
    b.wait_until(WAIT, &format!("#state {want}"), |b| {
        Ok((state(b).0 == want).then_some(()))
    });
}

/// Subscribes through the form and waits for the relay's confirmation in the list.
fn subscribe(b: &Browser, exchange: &str, key: &str) {
    b.fill("#exchange", exchange).expect("type the exchange");
    b.fill("#routing-key", key).expect("type the routing key");
    b.click("#subscribe").expect("click subscribe");
    let css = format!(
        "#subscriptions li[data-exchange='{exchange}'][data-key='{key}'][data-status='active']"
    );
    b.wait_until(WAIT, &css, |b| Ok(b.exists(&css)?.then_some(())));
}

fn save_screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifacts_dir().join(name);
    fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Waits until the relay holds `want` subscriptions on `exchange` (the page drops the
/// exact-key subscriptions its Resumes add under a wildcard).
fn wait_subscriptions(m2: &Mongrel2, exchange: &str, want: u64) {
    let mut last = Value::Null;
    let found = mongrel2_test_fixture::wait_for(WAIT, || {
        last = try_get(m2, "/events/status")?;
        (last["subscriptions"][exchange].as_u64() == Some(want)).then_some(())
    });
    assert!(
        found.is_some(),
        "{exchange}: want {want} subscriptions; status {last}"
    );
}

/// Headless Chromium showing the page from `m2`, once it is live.
fn open_page(chromium: &Path, m2: &Mongrel2) -> Browser {
    let browser = match Browser::start(chromium) {
        Ok(b) => b,
        Err(e) => panic!("headless Chromium did not start: {e}"),
    };
    browser
        .goto(&format!("{}/", m2.base_url()))
        .expect("load the page through Mongrel2");
    wait_state(&browser, "live", 1);
    browser
}

// ----- the tests -------------------------------------------------------------------------

#[test]
fn the_page_shows_live_events_and_catches_up_after_restarts() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let limits = json!({"history_per_key": 100});
    let mut m2 = mongrel2_with_page();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    relay_status_eventually(&m2, &mut relay);
    let browser = open_page(&tools, &m2);
    let title = browser.execute("return document.title;").expect("title");
    assert_eq!(title, json!("Event relay"));

    // Subscribing through the form: a wildcard on one exchange, an exact key on another.
    subscribe(&browser, "calls", "queue.*");
    subscribe(&browser, "agents", "agent.ada");

    // Live: matching events appear newest first; others are not shown.
    for (n, exchange, key, event, to_page) in [
        (1, "calls", "queue.sales", "CallOffered", 1),
        (2, "calls", "queue.sales", "CallAnswered", 1),
        (3, "calls", "queue.sales", "CallEnded", 1),
        (4, "calls", "queue.support", "CallOffered", 1),
        (5, "calls", "other.x", "Ignored", 0),
        (6, "agents", "agent.ada", "AgentBusy", 1),
        (7, "agents", "agent.bob", "AgentBusy", 0),
    ] {
        let ack = inject(&relay, exchange, key, event, n);
        assert_eq!(ack["delivered_to"], json!(to_page), "event {n}: {ack}");
    }
    let live = wait_shown(&browser, &[1, 2, 3, 4, 6]);
    assert_eq!(
        live.iter().map(|r| r.n).collect::<Vec<_>>(),
        [6, 4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(
        live[2],
        Row {
            seq: 3,
            exchange: "calls".into(),
            key: "queue.sales".into(),
            event: "CallEnded".into(),
            n: 3
        }
    );
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 1), ("calls".into(), 4)])
    );
    save_screenshot(&browser, "page-live.png");

    // Mongrel2 restarts; the relay keeps its history. Events published meanwhile reach the
    // page through Resume, exactly once.
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    for (n, key, event) in [
        (8, "queue.sales", "CallOffered"),
        (9, "queue.sales", "CallAnswered"),
    ] {
        inject(&relay, "calls", key, event, n);
    }
    inject(&relay, "agents", "agent.ada", "AgentReady", 10);
    m2.start();
    wait_state(&browser, "live", 2);
    wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10]);
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 2), ("calls".into(), 6)])
    );
    // The exact-key subscriptions that Resume added under `queue.*` are dropped again.
    wait_subscriptions(&m2, "calls", 1);
    wait_subscriptions(&m2, "agents", 1);

    // Mongrel2 and the relay restart: the new relay has lost its history and numbers keys
    // from 1 again, so old seqs must not hide new events, whether the new seqs stay below
    // what the page saw (queue.sales: 1, 2 < 5) or reach it (agent.ada: 1..3 >= 2).
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    relay.stop();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    inject(&relay, "calls", "queue.sales", "CallOffered", 11);
    inject(&relay, "calls", "queue.sales", "CallAnswered", 12);
    for n in 13..=15 {
        inject(&relay, "agents", "agent.ada", "AgentBusy", n);
    }
    m2.start();
    relay_status_eventually(&m2, &mut relay);
    wait_state(&browser, "live", 3);
    let after = wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15]);
    let ada: Vec<(u64, u64)> = after
        .iter()
        .filter(|r| r.n >= 13)
        .map(|r| (r.n, r.seq))
        .collect();
    assert_eq!(
        ada,
        [(15, 3), (14, 2), (13, 1)],
        "the new run's seqs, newest first"
    );
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 5), ("calls".into(), 8)])
    );

    // Unsubscribing through the page stops its events; a later event on the other
    // subscription proves the page is still live and in order.
    browser
        .click("#subscriptions li[data-exchange='agents'][data-key='agent.ada'] button.unsubscribe")
        .expect("click unsubscribe");
    wait_subscriptions(&m2, "agents", 0);
    let ack = inject(&relay, "agents", "agent.ada", "AgentReady", 16);
    assert_eq!(ack["delivered_to"], json!(0), "{ack}");
    inject(&relay, "calls", "queue.billing", "CallOffered", 17);
    wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 17]);
    assert_eq!(shown(&browser)[0], 17, "newest first");
    assert_eq!(
        browser
            .count("#subscriptions li")
            .expect("subscription list"),
        1
    );
    save_screenshot(&browser, "page.png");
}

#[test]
fn a_gap_longer_than_one_replay_is_resumed_in_parts() {
    let Some(tools) = browser_tools() else {
        return;
    };
    // A six-frame outbox: one Resume replays at most five events and answers `more`, so
    // the page has to resume again from `last_seq`, several times.
    let limits = json!({"history_per_key": 100, "pending_frames": 6});
    let mut m2 = mongrel2_with_page();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    relay_status_eventually(&m2, &mut relay);
    let browser = open_page(&tools, &m2);
    subscribe(&browser, "calls", "queue.sales");
    inject(&relay, "calls", "queue.sales", "CallOffered", 1);
    wait_shown(&browser, &[1]);

    m2.stop();
    wait_state_is(&browser, "reconnecting");
    for n in 2..=40 {
        inject(&relay, "calls", "queue.sales", "CallOffered", n);
    }
    m2.start();
    wait_state(&browser, "live", 2);
    let all: Vec<u64> = (1..=40).collect();
    let rows = wait_shown(&browser, &all);
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        all.iter().rev().copied().collect::<Vec<_>>(),
        "in seq order, newest first"
    );
    assert_eq!(counters(&browser), BTreeMap::from([("calls".into(), 40)]));
}
