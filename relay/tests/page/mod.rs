//! The browser test's fixture: Mongrel2 serving the page, the relay as a child process,
//! injecting events, and reading the page's DOM.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::chrome::{self, Browser};
use mongrel2_test_fixture::support::{self, HttpClient};
use mongrel2_test_fixture::{free_endpoint, HandlerConf, Mongrel2};

/// Bound for anything that should happen "soon", reconnect backoff included.
pub const WAIT: Duration = Duration::from_secs(30);

// ----- fixture ---------------------------------------------------------------------------

/// Chromium, or `None` (after a loud message) when it is missing and this is not CI.
pub fn browser_tools() -> Option<PathBuf> {
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

pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Where screenshots are kept: `target/artifacts/` (or under `$CARGO_TARGET_DIR`).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("artifacts");
    fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Mongrel2 serving the page at `/` (a Dir route inside its chroot) and `/events`.
pub fn mongrel2_with_page() -> Mongrel2 {
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
pub struct RelayProcess {
    child: Option<Child>,
    inject: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    /// A relay whose `calls` and `agents` anyone may subscribe to (none announced).
    pub fn spawn(m2: &Mongrel2, limits: &Value) -> RelayProcess {
        let config = json!({
            "exchanges": {"calls": {"public": true}, "agents": {"public": true}},
            "limits": limits,
        });
        RelayProcess::spawn_with(m2, &config, &[])
    }

    /// A relay with this config file and extra flags.
    pub fn spawn_with(m2: &Mongrel2, config_json: &Value, flags: &[&str]) -> RelayProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("relay.json");
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
        command.args(args).args(flags);
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

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn stop(&mut self) {
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
pub fn try_get(m2: &Mongrel2, path: &str) -> Option<Value> {
    let mut client = HttpClient::connect(m2.http_addr());
    client.set_timeout(Duration::from_millis(500));
    let response = client
        .request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .ok()?;
    (response.status == 200).then(|| response.json())
}

/// Waits until the relay answers `GET /events/status` through Mongrel2.
pub fn relay_status_eventually(m2: &Mongrel2, relay: &mut RelayProcess) -> Value {
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
pub fn listeners(m2: &Mongrel2) -> String {
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
pub fn inject(relay: &RelayProcess, exchange: &str, key: &str, event: &str, n: u64) -> Value {
    inject_payload(relay, exchange, key, event, json!({"n": n, "queue": key}))
}

/// Publishes `payload` through the injector and returns the ack.
pub fn inject_payload(
    relay: &RelayProcess,
    exchange: &str,
    key: &str,
    event: &str,
    payload: Value,
) -> Value {
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).expect("req");
    req.set_linger(0).expect("linger");
    req.connect(&relay.inject).expect("connect the injector");
    let body = json!({
        "exchange": exchange,
        "routing_key": key,
        "event": event,
        "payload": payload,
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
pub struct Row {
    pub seq: u64,
    pub exchange: String,
    pub key: String,
    pub event: String,
    /// `payload.n`: which injection this is.
    pub n: u64,
}

pub fn rows(b: &Browser) -> Vec<Row> {
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
            let payload: Value =
                serde_json::from_str(r["payload"].as_str().expect("tr[data-payload]"))
                    .expect("tr[data-payload] holds JSON");
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
pub fn shown(b: &Browser) -> Vec<u64> {
    rows(b).iter().map(|r| r.n).collect()
}

/// Waits until exactly the injections `ns` are shown (in any order), once each.
pub fn wait_shown(b: &Browser, ns: &[u64]) -> Vec<Row> {
    let mut want = ns.to_vec();
    want.sort_unstable();
    b.wait_until(WAIT, &format!("events {ns:?} in #events"), |b| {
        let rows = rows(b);
        let mut got: Vec<u64> = rows.iter().map(|r| r.n).collect();
        got.sort_unstable();
        Ok((got == want).then_some(rows))
    })
}

pub fn counters(b: &Browser) -> BTreeMap<String, u64> {
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

pub fn state(b: &Browser) -> (String, u64) {
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

pub fn wait_state(b: &Browser, want: &str, welcomes: u64) {
    b.wait_until(
        WAIT,
        &format!("#state {want} after {welcomes} Welcome(s)"),
        |b| {
            let (s, w) = state(b);
            Ok((s == want && w == welcomes).then_some(()))
        },
    );
}

pub fn wait_state_is(b: &Browser, want: &str) {
    b.wait_until(WAIT, &format!("#state {want}"), |b| {
        Ok((state(b).0 == want).then_some(()))
    });
}

/// Subscribes through the form and waits for the relay's confirmation in the list.
pub fn subscribe(b: &Browser, exchange: &str, key: &str) {
    b.fill("#exchange", exchange).expect("type the exchange");
    b.fill("#routing-key", key).expect("type the routing key");
    b.click("#subscribe").expect("click subscribe");
    let css = format!(
        "#subscriptions li[data-exchange='{exchange}'][data-key='{key}'][data-status='active']"
    );
    b.wait_until(WAIT, &css, |b| Ok(b.exists(&css)?.then_some(())));
}

/// Saves a PNG of the whole page (not only the window) as `target/artifacts/NAME`.
pub fn save_screenshot(b: &Browser, name: &str) {
    let png = b.screenshot_full_page().expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifacts_dir().join(name);
    fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    // `DOCS_SCREENSHOTS=1 cargo test --test browser` refreshes the README's pictures, which
    // are the wallboard test's shots; other runs leave the tree alone.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    if std::env::var_os("DOCS_SCREENSHOTS").is_some() && name.starts_with("event-relay-") {
        fs::write(docs.join(name), &png).expect("write the docs screenshot");
    }
}

/// Waits until the relay holds `want` subscriptions on `exchange` (a page's Resumes add
/// none beside its own subscriptions).
pub fn wait_subscriptions(m2: &Mongrel2, exchange: &str, want: u64) {
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
pub fn open_page(chromium: &Path, m2: &Mongrel2) -> Browser {
    let browser = match Browser::start(chromium) {
        Ok(b) => b,
        Err(e) => panic!("headless Chromium did not start: {e}"),
    };
    // No `?sub=`: the page subscribes to what the relay announces, if anything.
    browser
        .goto(&format!("{}/", m2.base_url()))
        .expect("load the page through Mongrel2");
    wait_state(&browser, "live", 1);
    browser
}

/// `data-NAME` of the first element matching `css`, or `None` if there is none.
pub fn data(b: &Browser, css: &str, name: &str) -> Option<String> {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.getAttribute({}) : null;",
        json!(css),
        json!(format!("data-{name}"))
    );
    b.execute(&script)
        .expect("read an attribute")
        .as_str()
        .map(str::to_owned)
}

/// Waits until `data-NAME` of `css` is `want`.
pub fn wait_data(b: &Browser, css: &str, name: &str, want: &str) {
    b.wait_until(WAIT, &format!("{css}[data-{name}={want}]"), |b| {
        Ok((data(b, css, name).as_deref() == Some(want)).then_some(()))
    });
}
