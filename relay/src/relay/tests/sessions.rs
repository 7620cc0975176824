//! WebSocket sessions and SSE streams: ids, churn, framing, heartbeats.

use super::*;

// ----- sessions ------------------------------------------------------------------------------

#[test]
fn welcome_ids_are_16_hex_digits_and_unique() {
    let mut r = relay();
    let mut ids = BTreeSet::new();
    for k in 0..2000 {
        r.open(k);
    }
    for (k, frames) in flush(&mut r) {
        assert_eq!(frames.len(), 1, "session {k}");
        assert_eq!(frames[0]["event"], "Welcome");
        let id = frames[0]["payload"]["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id}"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 2000);
}

#[test]
fn welcome_names_the_relay_and_its_public_subscriptions() {
    let mut r = relay_with(
        r#"{"exchanges": {"calls": {"public": true, "public_routing_keys": ["queue.*"]},
                          "agents": {"public": true}}}"#,
    );
    r.set_identity("east", Some("mq-2"));
    let id = r.open(1);
    let welcome = flush(&mut r).remove(&1).unwrap();
    assert_eq!(
        welcome,
        vec![
            json!({"event":"Welcome","payload":{"id":id,"run":r.welcome_run(),"epoch":r.epoch(),"relay":"east",
            "member":"mq-2","public":[{"exchange":"calls","routing_keys":["queue.*"]}]}})
        ]
    );
}

#[test]
fn churn_leaves_session_and_subscription_tables_empty() {
    let mut r = relay();
    for k in 0..10_000u32 {
        r.open(k);
        r.on_message(
            &k,
            json!({"action":"Subscribe","payload":{"exchange":"calls","routing_keys":["q.sales", "q.*", "*"]}})
                .to_string()
                .as_bytes(),
        );
        if k % 3 == 0 {
            publish(&mut r, "calls", "q.sales", "E");
        }
        if k % 7 == 0 {
            r.flush();
        }
        assert!(r.close(&k));
    }
    assert!(!r.close(&0), "already forgotten");
    assert!(r.is_idle());
    assert_eq!(r.session_count(), 0);
    assert!(r.stats().subscriptions.values().all(|n| *n == 0));
    // Pending output of closed sessions is dropped, not delivered.
    assert_eq!(
        r.flush(),
        Flush {
            deliveries: vec![],
            close: vec![],
            end_streams: vec![],
        }
    );
    assert!(!r.has_pending());
    assert_eq!(delivered(&publish(&mut r, "calls", "q.sales", "E")), 0);
}

#[test]
fn messages_for_unknown_sessions_are_ignored() {
    let mut r = relay();
    assert!(r.on_message(&9, br#"{"action":"Ping"}"#).is_none());
    assert!(!r.has_pending());
    assert!(r.is_idle());
}

#[test]
fn reopening_a_key_starts_a_fresh_session() {
    let mut r = relay();
    let first = open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let second = open(&mut r, 1);
    assert_ne!(first, second);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "E")), 0);
    assert_eq!(r.session_count(), 1);
}

/// SSE events from one flush: (id, event name, data JSON) per `data:` event; comments as
/// (None, ":comment", Null).
fn sse_events(payload: &[u8]) -> Vec<(Option<String>, String, Value)> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let len =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        let body = std::str::from_utf8(&rest[line_end + 2..line_end + 2 + len]).unwrap();
        rest = &rest[line_end + 2 + len + 2..];
        let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
        for line in body.trim_end_matches('\n').lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap();
                if let Some(mq) = data.get_mut("mq").and_then(Value::as_object_mut) {
                    mq.remove("ts");
                }
            } else if let Some(v) = line.strip_prefix(": ") {
                event = format!(":{v}");
            }
        }
        out.push((id, event, data));
    }
    out
}

fn stream(exchange: &str, routing_key: &str) -> StreamRequest {
    StreamRequest {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        ..StreamRequest::default()
    }
}

#[test]
fn streams_check_tokens_and_rights_before_anything_is_opened() {
    let mut r = relay();
    let mut admin = stream("admin", "*");
    assert_eq!(r.open_stream(1, &admin, None), Err(ErrorName::AuthRequired));
    admin.token = Some("nope".into());
    assert_eq!(r.open_stream(1, &admin, None), Err(ErrorName::InvalidToken));
    admin.token = Some("ops-secret".into());
    assert_eq!(
        r.open_stream(1, &admin, None),
        Err(ErrorName::SubscriptionDenied)
    );
    assert_eq!(
        r.open_stream(1, &stream("nope", "*"), None),
        Err(ErrorName::InvalidExchange)
    );
    assert_eq!(r.session_count(), 0, "nothing opened");
    assert!(!r.has_pending());
    admin.token = Some("admin-secret".into());
    let id = r.open_stream(1, &admin, None).unwrap();
    assert_eq!(r.streams(), [1]);
    assert_eq!(r.session_id(&1), Some(id.as_str()));
    publish(&mut r, "admin", "k", "Secret");
    let events = sse_events(&r.flush().deliveries[0].payload);
    assert_eq!(events[0].1, "Welcome");
    assert_eq!(events[0].2["payload"]["id"], json!(id));
    assert_eq!(
        events[1],
        (
            Some(format!("{}/1", r.epoch())),
            "Secret".into(),
            json!({"event":"Secret","payload":{"n":"Secret"},"mq":{"e":"admin","rk":"k","seq":1}})
        )
    );
    assert_eq!(r.stats().streams, 1);
}

fn at(epoch: &str, seq: u64) -> Option<Position> {
    Some(Position {
        epoch: Some(epoch.into()),
        seq,
    })
}

#[test]
fn a_stream_resumes_its_whole_subscription_after_its_last_event_id() {
    let mut r = relay();
    let epoch = r.epoch().to_owned();
    for (k, name) in [("q.a", "A1"), ("q.a", "A2"), ("q.b", "B1"), ("x", "X1")] {
        publish(&mut r, "calls", k, name);
    }
    publish(&mut r, "calls", "q.a", "A3");
    // The stream had everything up to position 2 (A2): both keys under q.* resume.
    let mut req = stream("calls", "q.*");
    req.last_event = at(&epoch, 2);
    r.open_stream(1, &req, None).unwrap();
    publish(&mut r, "calls", "q.a", "A4");
    let events = sse_events(&r.flush().deliveries[0].payload);
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names, ["Welcome", "B1", "A3", "Resumed", "A4"]);
    let ids: Vec<Option<String>> = events.iter().map(|e| e.0.clone()).collect();
    let id = |n: u64| Some(format!("{epoch}/{n}"));
    assert_eq!(
        ids,
        [None, id(3), id(5), None, id(6)],
        "positions, live once"
    );
    assert_eq!(
        events[3].2,
        json!({"event":"Resumed","payload":{"exchange":"calls","routing_key":"q.*",
               "recovered":true,"more":false,"last_seq":5,"epoch":epoch,"first_seq":3,
               "from":"history"}})
    );
    assert_eq!(r.stats().counters.resumes_unrecovered, 0);
}

/// The probe of issue 12: after a restart, an id from the old run (here in the old
/// `EXCHANGE/KEY/SEQ` form too) must not be called recovered, even where the new run's
/// numbers reach it; everything the new run kept is replayed.
#[test]
fn a_stream_id_from_another_epoch_is_not_recovered() {
    for old in ["calls/q.a/3", "relay-a.00000000/3"] {
        let mut r = relay();
        for n in 1..=5 {
            publish(&mut r, "calls", "q.a", &format!("A{n}"));
        }
        let (epoch, seq) = crate::frame::parse_event_id(old).unwrap();
        let mut req = stream("calls", "q.a");
        req.last_event = at(&epoch, seq);
        r.open_stream(1, &req, None).unwrap();
        let events = sse_events(&r.flush().deliveries[0].payload);
        let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(names, ["Welcome", "A1", "A2", "A3", "A4", "A5", "Resumed"]);
        let resumed = &events[6].2["payload"];
        assert_eq!(resumed["recovered"], json!(false), "{old}: {resumed}");
        assert_eq!(
            resumed["first_seq"],
            json!(1),
            "complete from the new run's start"
        );
        assert_eq!(resumed["epoch"], json!(r.epoch()));
        assert_eq!(r.stats().counters.resumes_unrecovered, 1);
    }
}

#[test]
fn streams_get_heartbeats_and_end_when_they_overflow() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":3}}"#);
    r.open(1);
    r.open_stream(2, &stream("calls", "q"), None).unwrap();
    r.flush();
    r.sse_heartbeat();
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, [2], "only streams");
    assert_eq!(
        sse_events(&f.deliveries[0].payload),
        [(None, ":heartbeat".to_owned(), Value::Null)]
    );
    for _ in 0..4 {
        r.sse_heartbeat();
    }
    let f = r.flush();
    assert_eq!((f.close, f.end_streams), (vec![], vec![2]));
    assert!(r.streams().is_empty());
}

#[test]
fn sse_sessions_get_sse_framing_and_share_event_encoding() {
    let mut r = relay();
    r.open_with(
        1,
        OpenOptions {
            kind: SessionKind::Sse,
            credits: None,
        },
    );
    r.subscribe(&1, "calls", "q").unwrap();
    assert_eq!(r.subscribe(&1, "admin", "q"), Err(ErrorName::AuthRequired));
    assert_eq!(
        r.subscribe(&1, "calls", "q"),
        Err(ErrorName::AlreadySubscribed)
    );
    publish(&mut r, "calls", "q", "E");
    let f = r.flush();
    let text = String::from_utf8(f.deliveries[0].payload.clone()).unwrap();
    assert!(
        text.contains("event: Welcome\ndata: {\"event\":\"Welcome\""),
        "{text}"
    );
    let id = format!("id: {}/1\n", r.epoch());
    assert!(text.contains(&id), "{text}");
    let event = format!("{id}event: E\ndata: {{\"event\":\"E\",\"payload\":{{\"n\":\"E\"}},\"mq\":{{\"e\":\"calls\",\"rk\":\"q\",\"seq\":1,\"ts\":");
    assert!(text.contains(&event), "{text}");
    assert!(text.ends_with("}}\n\n\r\n"), "{text}");
}
