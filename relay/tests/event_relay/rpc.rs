//! RPC actions: a relay child forwarding configured actions to a ROUTER backend run by the
//! test (on its own thread), and what the client gets back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::*;

/// What the backend has seen and is holding back.
#[derive(Default)]
struct Shared {
    requests: Vec<Value>,
    /// Answers to `hold` calls, sent on `release`.
    held: Vec<(Vec<u8>, Value)>,
    release: bool,
}

/// A ROUTER backend: `echo` answers its params, `whoami` the caller's session, `fail` an
/// error, `sleep {ms}` its params after ms, `hold` only when the test releases it, and
/// anything else "unknown method".
pub(super) struct Backend {
    endpoint: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub(super) fn start() -> Backend {
        let endpoint = free_endpoint();
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).expect("ROUTER");
        router.set_linger(0).expect("linger");
        router.bind(&endpoint).expect("bind the backend");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || serve(&context, router, &shared, &stop))
        };
        Backend {
            endpoint,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the backend has received `n` requests.
    pub(super) fn wait_requests(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let requests = self.shared.lock().expect("lock").requests.clone();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "only {} requests",
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Answers every call held so far.
    fn release(&self) {
        self.shared.lock().expect("lock").release = true;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(_context: &zmq::Context, router: zmq::Socket, shared: &Mutex<Shared>, stop: &AtomicBool) {
    let mut sleeping: Vec<(Instant, Vec<u8>, Value)> = Vec::new();
    let send = |identity: &[u8], answer: &Value| {
        router
            .send_multipart([identity, answer.to_string().as_bytes()], 0)
            .expect("answer");
    };
    while !stop.load(Ordering::SeqCst) {
        if router.poll(zmq::POLLIN, 5).expect("poll") > 0 {
            let frames = router.recv_multipart(0).expect("request");
            let [identity, body] = frames.as_slice() else {
                panic!("expected [identity, request], got {} frames", frames.len());
            };
            let request: Value = serde_json::from_slice(body).expect("request JSON");
            shared.lock().expect("lock").requests.push(request.clone());
            let (id, params) = (&request["id"], &request["params"]);
            match request["method"].as_str() {
                Some("echo") => send(identity, &json!({"id": id, "result": params})),
                Some("whoami") => send(identity, &json!({"id": id, "result": request["session"]})),
                Some("fail") => send(
                    identity,
                    &json!({"id": id, "error": {"code": 42, "message": "no luck"}}),
                ),
                Some("sleep") => {
                    let ms = params["ms"].as_u64().expect("ms");
                    let answer = json!({"id": id, "result": params});
                    sleeping.push((
                        Instant::now() + Duration::from_millis(ms),
                        identity.clone(),
                        answer,
                    ));
                }
                Some("hold") => {
                    let answer = json!({"id": id, "result": "released"});
                    shared
                        .lock()
                        .expect("lock")
                        .held
                        .push((identity.clone(), answer));
                }
                _ => send(
                    identity,
                    &json!({"id": id, "error": {"code": -32601, "message": "unknown method"}}),
                ),
            }
        }
        let now = Instant::now();
        sleeping.retain(|(at, identity, answer)| {
            let due = *at <= now;
            if due {
                send(identity, answer);
            }
            !due
        });
        let released: Vec<(Vec<u8>, Value)> = {
            let mut shared = shared.lock().expect("lock");
            if std::mem::take(&mut shared.release) {
                std::mem::take(&mut shared.held)
            } else {
                Vec::new()
            }
        };
        for (identity, answer) in released {
            send(&identity, &answer);
        }
    }
}

/// The test config with every backend method as an action, plus `nobody` (no backend).
pub(super) fn rpc_config(backend: &Backend, timing: Value, limits: Value) -> Value {
    let mut config = test_config();
    let actions: serde_json::Map<String, Value> =
        ["echo", "whoami", "fail", "sleep", "hold", "nope"]
            .iter()
            .map(|a| ((*a).to_owned(), json!(backend.endpoint)))
            .chain([("nobody".to_owned(), json!(free_endpoint()))])
            .collect();
    config["actions"] = Value::Object(actions);
    config["timing"] = timing;
    for (k, v) in limits.as_object().expect("limits") {
        config["limits"][k] = v.clone();
    }
    config
}

#[test]
fn rpc_results_backend_errors_and_the_callers_identity() {
    let backend = Backend::start();
    let f = Fixture::with(&rpc_config(&backend, json!({}), json!({})), &[]);
    let mut c = f.ws();
    let reply = c.call("echo", json!(1), json!({"a": [1, 2], "b": "x"}));
    assert_eq!(
        reply,
        json!({"event":"Result","tag":1,"payload":{"a":[1,2],"b":"x"}})
    );
    let reply = c.call("fail", json!("f"), json!({}));
    assert_eq!(
        reply,
        json!({"event":"Error","tag":"f","payload":{"error":"BackendError","code":42,"message":"no luck"}})
    );
    let reply = c.call("nope", json!(3), json!({}));
    assert_eq!(reply["payload"]["error"], "BackendError");
    assert_eq!(reply["payload"]["code"], -32601);
    // The backend learns who is calling.
    let reply = c.call("whoami", json!(4), json!({}));
    assert_eq!(reply["payload"], json!({"id": c.id, "auth": null}));
    c.call("Authenticate", json!(5), json!({"token": OPS_TOKEN}));
    let reply = c.call("whoami", json!(6), json!({}));
    assert_eq!(reply["payload"], json!({"id": c.id, "auth": "ops"}));
    // The request as the backend saw it.
    let requests = backend.wait_requests(5);
    assert_eq!(
        requests[0],
        json!({"id": requests[0]["id"], "method":"echo","params":{"a":[1,2],"b":"x"},
               "session":{"id": c.id, "auth": null}})
    );
    // Actions nobody configured are still refused by the relay itself.
    let reply = c.call("moveCar", json!(7), json!({}));
    assert_eq!(
        reply,
        json!({"event":"Error","tag":7,"payload":{"error":"InvalidAction"}})
    );
    c.assert_nothing_pending();
    let status = f.status();
    assert_eq!(status["rpc"]["calls"], 5, "{status}");
    assert_eq!(status["rpc"]["results"], 3, "{status}");
    assert_eq!(status["rpc"]["errors"], 2, "{status}");
    assert_eq!(status["rpc"]["in_flight"], 0, "{status}");
}

#[test]
fn a_hundred_concurrent_calls_are_answered_out_of_order_by_tag() {
    let backend = Backend::start();
    let f = Fixture::with(&rpc_config(&backend, json!({}), json!({})), &[]);
    let mut clients: Vec<Client> = (0..4).map(|_| f.ws()).collect();
    // All 100 calls go out before any answer is read; later calls sleep less, so answers
    // come back in a different order than the calls.
    for i in 0..100u64 {
        let params = json!({"ms": (100 - i) % 25 * 4, "i": i});
        clients[(i % 4) as usize].send(&json!({"action":"sleep","tag": i,"payload": params}));
    }
    let mut answered = std::collections::BTreeSet::new();
    let mut in_call_order = true;
    for (k, client) in clients.iter_mut().enumerate() {
        let mut last = None;
        for _ in 0..25 {
            let reply = client.recv();
            assert_eq!(reply["event"], "Result", "{reply}");
            let tag = reply["tag"].as_u64().expect("tag");
            assert_eq!(tag % 4, k as u64, "answered to its caller");
            assert_eq!(reply["payload"]["i"], tag, "{reply}");
            in_call_order &= last.is_none_or(|l| l < tag);
            last = Some(tag);
            assert!(answered.insert(tag), "answered twice: {tag}");
        }
        client.assert_nothing_pending();
    }
    assert_eq!(answered.len(), 100);
    assert!(!in_call_order, "answers were expected out of call order");
    let status = f.status();
    assert_eq!(
        (
            &status["rpc"]["calls"],
            &status["rpc"]["results"],
            &status["rpc"]["in_flight"]
        ),
        (&json!(100), &json!(100), &json!(0))
    );

    // The caller goes before the answer comes: the answer is dropped.
    let mut gone = f.ws();
    gone.send(&json!({"action":"hold","tag":1,"payload":{}}));
    backend.wait_requests(101);
    gone.ws.close(None).expect("close");
    while gone.ws.read().is_ok() {}
    status_eventually(&f, |s| s["sessions"] == 4);
    backend.release();
    let status = status_eventually(&f, |s| s["rpc"]["orphaned"] == 1);
    assert_eq!(status["rpc"]["in_flight"], 0, "{status}");
    for client in &mut clients {
        client.assert_nothing_pending();
    }
}

#[test]
fn rpc_timeouts_late_answers_gone_callers_and_limits() {
    let backend = Backend::start();
    let config = rpc_config(
        &backend,
        json!({"rpc_timeout_ms": 300}),
        json!({"rpc_calls_per_session": 2}),
    );
    let f = Fixture::with(&config, &[]);
    let mut c = f.ws();

    // No backend at all: BackendTimeout after the timeout.
    let started = Instant::now();
    let reply = c.call("nobody", json!("n"), json!({}));
    assert_eq!(
        reply,
        json!({"event":"Error","tag":"n","payload":{"error":"BackendTimeout"}})
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Held past the timeout: BackendTimeout, and the late answer is dropped.
    c.send(&json!({"action":"hold","tag":"h1","payload":{}}));
    c.send(&json!({"action":"hold","tag":"h2","payload":{}}));
    // A third call while two wait: refused at once.
    let reply = c.call("echo", json!("e"), json!({}));
    assert_eq!(
        reply,
        json!({"event":"Error","tag":"e","payload":{"error":"TooManyCalls"}})
    );
    for tag in ["h1", "h2"] {
        assert_eq!(
            c.recv(),
            json!({"event":"Error","tag":tag,"payload":{"error":"BackendTimeout"}})
        );
    }
    backend.wait_requests(2);
    backend.release();
    let status = status_eventually(&f, |s| s["rpc"]["late"] == 2);
    assert_eq!(status["rpc"]["timeouts"], 3, "{status}");
    assert_eq!(status["rpc"]["refused"], 1, "{status}");
    assert_eq!(status["rpc"]["in_flight"], 0, "{status}");
    let metrics = f.get("/events/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("relay_rpc_calls_total{outcome=\"timeout\"} 3\n"),
        "{text}"
    );
    c.assert_nothing_pending();
}

#[test]
fn the_shipped_rpc_backend_example_answers_through_the_relay() {
    let endpoint = free_endpoint();
    let backend = support::child::program(env!("CARGO_BIN_EXE_rpc-backend"))
        .args(["--bind", &endpoint])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rpc-backend");
    // The relay's DEALER connects whenever the backend is bound: no readiness to wait for.
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _backend = Stop(backend);

    let mut config = test_config();
    config["actions"] = json!({"sum": endpoint, "echo": endpoint, "time": endpoint});
    let f = Fixture::with(&config, &[]);
    let mut c = f.ws();
    let reply = c.call("sum", json!("s"), json!({"numbers": [1, 2, 3]}));
    assert_eq!(
        reply,
        json!({"event":"Result","tag":"s","payload":{"sum":6}})
    );
    let reply = c.call("sum", json!("bad"), json!({"numbers": "nope"}));
    assert_eq!(reply["payload"]["error"], "BackendError", "{reply}");
    let reply = c.call("echo", json!(2), json!({"hello": "backend"}));
    assert_eq!(
        reply,
        json!({"event":"Result","tag":2,"payload":{"hello":"backend"}})
    );
    let reply = c.call("time", json!(3), json!({}));
    assert_eq!(reply["event"], "Result", "{reply}");
}
