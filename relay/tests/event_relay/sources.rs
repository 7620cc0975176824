//! Event sources: the injector REP socket (and the `inject` program), the PULL socket and
//! HTTP publish, status and metrics.

use super::*;

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
