use super::*;
use std::collections::HashMap;

fn now_reply(body: &str) -> Value {
    match handle(
        body.as_bytes(),
        UNIX_EPOCH + Duration::from_millis(951_827_696_789),
    ) {
        Outcome::Now(v) => v,
        other => panic!("expected an immediate answer, got {other:?}"),
    }
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

#[test]
fn time_reports_milliseconds_and_utc() {
    let v = now_reply(r#"{"id":1,"method":"time","params":{},"session":{"id":"s","auth":null}}"#);
    assert_eq!(
        v,
        json!({"id":1,"result":{"unix_ms":951_827_696_789u64,"utc":"2000-02-29T12:34:56.789Z"}})
    );
    assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(utc_text(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    assert_eq!(utc_text(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    assert_eq!(utc_text(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
}

#[test]
fn echo_returns_params_and_keeps_string_ids() {
    let v = now_reply(r#"{"id":"abc","method":"echo","params":{"a":[1,"x",null]}}"#);
    assert_eq!(v, json!({"id":"abc","result":{"a":[1,"x",null]}}));
    let v = now_reply(r#"{"id":2,"method":"echo"}"#);
    assert_eq!(v, json!({"id":2,"result":null}));
}

#[test]
fn sum_is_exact_for_integers_and_checks_its_input() {
    assert_eq!(
        now_reply(r#"{"id":1,"method":"sum","params":{"numbers":[1,2,3]}}"#)["result"],
        json!({"sum":6})
    );
    assert_eq!(
        now_reply(r#"{"id":1,"method":"sum","params":[1.5,2]}"#)["result"],
        json!({"sum":3.5})
    );
    assert_eq!(
        now_reply(r#"{"id":1,"method":"sum","params":[]}"#)["result"],
        json!({"sum":0})
    );
    // i64 overflow falls back to floating point instead of wrapping.
    assert_eq!(
        now_reply(r#"{"id":1,"method":"sum","params":[9223372036854775807,1]}"#)["result"]["sum"]
            .as_f64(),
        Some(9_223_372_036_854_775_808.0)
    );
    for bad in [
        r#"{"numbers":"1"}"#,
        r#"[1,"2"]"#,
        r#"{"n":[1]}"#,
        r#"7"#,
        r#"[1e308,1e308]"#,
    ] {
        let v = now_reply(&format!(r#"{{"id":1,"method":"sum","params":{bad}}}"#));
        assert_eq!(error_code(&v), INVALID_PARAMS, "{bad}: {v}");
    }
    let many = vec![1; MAX_SUM_ITEMS + 1];
    let v = now_reply(&json!({"id":1,"method":"sum","params":many}).to_string());
    assert_eq!(error_code(&v), INVALID_PARAMS);
}

#[test]
fn sleep_answers_later_within_bounds() {
    assert_eq!(
        handle(
            br#"{"id":9,"method":"sleep","params":{"ms":250}}"#,
            SystemTime::now()
        ),
        Outcome::After(
            Duration::from_millis(250),
            json!({"id":9,"result":{"slept_ms":250}})
        )
    );
    for bad in [r#"{"ms":-1}"#, r#"{"ms":"5"}"#, r#"{}"#, r#"{"ms":60001}"#] {
        let v = now_reply(&format!(r#"{{"id":1,"method":"sleep","params":{bad}}}"#));
        assert_eq!(error_code(&v), INVALID_PARAMS, "{bad}");
    }
}

#[test]
fn bad_requests_get_errors_never_panics() {
    assert_eq!(
        now_reply("not json"),
        json!({"id":null,"error":{"code":PARSE_ERROR,"message":"request is not JSON"}})
    );
    assert_eq!(error_code(&now_reply("[1]")), INVALID_REQUEST);
    assert_eq!(
        error_code(&now_reply(r#"{"method":"time"}"#)),
        INVALID_REQUEST
    );
    assert_eq!(
        error_code(&now_reply(r#"{"id":[1],"method":"time"}"#)),
        INVALID_REQUEST
    );
    let v = now_reply(r#"{"id":5,"method":7}"#);
    assert_eq!(
        (v["id"].clone(), error_code(&v)),
        (json!(5), INVALID_REQUEST)
    );
    let v = now_reply(r#"{"id":5,"method":"launch"}"#);
    assert_eq!(
        (v["id"].clone(), error_code(&v)),
        (json!(5), METHOD_NOT_FOUND)
    );
    // Deeper than serde_json's nesting limit, but within the size limit.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(error_code(&now_reply(&deep)), PARSE_ERROR);
    let big = format!(
        r#"{{"id":1,"method":"echo","params":"{}"}}"#,
        "x".repeat(MAX_REQUEST)
    );
    assert_eq!(error_code(&now_reply(&big)), INVALID_REQUEST);
    assert_eq!(error_code(&now_reply("\u{0}\u{ff}")), PARSE_ERROR);
}

#[test]
fn envelopes_with_and_without_delimiter() {
    let f = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        split_envelope(f(&[b"id", b"{}"])),
        Some((f(&[b"id"]), b"{}".to_vec()))
    );
    assert_eq!(
        split_envelope(f(&[b"id", b"", b"{}"])),
        Some((f(&[b"id", b""]), b"{}".to_vec()))
    );
    assert_eq!(split_envelope(f(&[b"id"])), None);
    assert_eq!(split_envelope(f(&[b"id", b"x", b"{}"])), None);
    assert_eq!(split_envelope(f(&[b"id", b"", b"", b"{}"])), None);
}

#[test]
fn flags() {
    let args = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    };
    assert_eq!(
        parse_args(args(&[])),
        Ok(Some("tcp://127.0.0.1:9100".into()))
    );
    assert_eq!(
        parse_args(args(&["--bind", "ipc:///tmp/x"])),
        Ok(Some("ipc:///tmp/x".into()))
    );
    assert_eq!(parse_args(args(&["--help"])), Ok(None));
    assert!(parse_args(args(&["--bind"])).is_err());
    assert!(parse_args(args(&["--port", "1"])).is_err());
}

/// A served backend on a free port, stopped and joined on drop.
struct Served {
    endpoint: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), zmq::Error>>>,
}

impl Served {
    fn start(ctx: &zmq::Context) -> Served {
        let mut backend = Backend::bind(ctx, "tcp://127.0.0.1:*").expect("bind");
        let endpoint = backend.endpoint();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || backend.run(&flag));
        Served {
            endpoint,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let result = t.join().expect("backend thread panicked");
            if !std::thread::panicking() {
                result.expect("backend loop failed");
            }
        }
    }
}

fn dealer(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).expect("dealer");
    s.set_linger(0).expect("linger");
    s.set_rcvtimeo(10_000).expect("rcvtimeo");
    s.connect(endpoint).expect("connect");
    s
}

#[test]
fn serves_many_concurrent_requests_and_survives_garbage() {
    let ctx = zmq::Context::new();
    let served = Served::start(&ctx);
    let a = dealer(&ctx, &served.endpoint);
    let b = dealer(&ctx, &served.endpoint);

    // Garbage first: malformed envelopes and bodies must not stop the loop.
    a.send_multipart([&b"x"[..], b"y", b"z"], 0).expect("send");
    a.send_multipart([&b""[..], b"", b"{}"], 0).expect("send");
    a.send(&b"\xff\x00garbage"[..], 0).expect("send");

    // A long sleep must not hold up what comes after it.
    a.send(r#"{"id":"slow","method":"sleep","params":{"ms":3000}}"#, 0)
        .expect("send");
    a.send(r#"{"id":"fast","method":"time"}"#, 0).expect("send");

    let mut expected: HashMap<String, Value> = HashMap::new();
    for i in 0..300u64 {
        let (sock, req, result) = match i % 3 {
            0 => (
                &a,
                json!({"id":i,"method":"sleep","params":{"ms":i % 50}}),
                json!({"slept_ms": i % 50}),
            ),
            1 => (
                &b,
                json!({"id":i,"method":"sum","params":[i,1]}),
                json!({"sum": i + 1}),
            ),
            _ => (
                &b,
                json!({"id":i,"method":"echo","params":{"i":i},"session":{"id":"s","auth":"admin"}}),
                json!({"i": i}),
            ),
        };
        sock.send(req.to_string().as_bytes(), 0).expect("send");
        expected.insert(i.to_string(), result);
    }

    let recv = |s: &zmq::Socket| -> Value {
        let frames = s.recv_multipart(0).expect("reply within 10 s");
        assert_eq!(frames.len(), 1, "a DEALER gets the reply alone");
        serde_json::from_slice(&frames[0]).expect("reply is JSON")
    };
    // On socket a: the parse error for the garbage body, then "fast" before "slow".
    let first = recv(&a);
    assert_eq!(error_code(&first), PARSE_ERROR, "{first}");
    let mut a_replies = Vec::new();
    let mut b_left = 200;
    while b_left > 0 {
        let v = recv(&b);
        let id = v["id"].as_u64().expect("numeric id").to_string();
        assert_eq!(Some(&v["result"]), expected.get(&id), "{v}");
        b_left -= 1;
    }
    while a_replies.len() < 102 {
        a_replies.push(recv(&a));
    }
    assert_eq!(
        a_replies[0]["id"],
        json!("fast"),
        "time answered before sleeps"
    );
    assert_eq!(
        a_replies.last().map(|v| v["id"].clone()),
        Some(json!("slow"))
    );
    for v in &a_replies[1..101] {
        let id = v["id"].as_u64().expect("numeric id").to_string();
        assert_eq!(Some(&v["result"]), expected.get(&id), "{v}");
    }
}

#[test]
fn req_style_envelope_is_answered_in_kind() {
    let ctx = zmq::Context::new();
    let served = Served::start(&ctx);
    let req = ctx.socket(zmq::REQ).expect("req");
    req.set_linger(0).expect("linger");
    req.set_rcvtimeo(10_000).expect("rcvtimeo");
    req.connect(&served.endpoint).expect("connect");
    req.send(r#"{"id":1,"method":"echo","params":"hi"}"#, 0)
        .expect("send");
    let answer: Value = serde_json::from_slice(&req.recv_bytes(0).expect("reply")).expect("json");
    assert_eq!(answer, json!({"id":1,"result":"hi"}));
}
