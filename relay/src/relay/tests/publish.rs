//! Publishing: acks, seqs, delivery, HTTP tokens, linked relays and status.

use super::*;

// ----- publishing and delivery --------------------------------------------------------------

#[test]
fn wildcards_match_prefixes_and_deliver_once() {
    let mut r = relay();
    for k in 1..=4 {
        open(&mut r, k);
    }
    sub(&mut r, 1, "calls", "queue.sales");
    sub(&mut r, 2, "calls", "queue.*");
    sub(&mut r, 3, "calls", "*");
    sub(&mut r, 4, "agents", "*");
    sub(&mut r, 1, "calls", "queue.*"); // overlaps its exact key: still one copy

    assert_eq!(delivered(&publish(&mut r, "calls", "queue.sales", "A")), 3);
    assert_eq!(
        delivered(&publish(&mut r, "calls", "queue.support", "B")),
        3
    );
    assert_eq!(delivered(&publish(&mut r, "calls", "agent.7", "C")), 1);
    assert_eq!(delivered(&publish(&mut r, "calls", "", "D")), 1);
    let got = flush(&mut r);
    let names = |k: Key| {
        got[&k]
            .iter()
            .map(|f| f["event"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(1), ["A", "B"]);
    assert_eq!(names(2), ["A", "B"]);
    assert_eq!(names(3), ["A", "B", "C", "D"]);
    assert!(!got.contains_key(&4));
}

#[test]
fn acks_count_positions_per_exchange_and_recipients() {
    let mut r = relay();
    for k in 1..=3 {
        open(&mut r, k);
        sub(&mut r, k, "calls", "queue.sales");
    }
    assert_eq!(
        publish(&mut r, "calls", "queue.sales", "E"),
        Ack::Published {
            seq: 1,
            delivered_to: 3
        }
    );
    assert_eq!(
        publish(&mut r, "calls", "queue.sales", "E"),
        Ack::Published {
            seq: 2,
            delivered_to: 3
        }
    );
    assert_eq!(
        publish(&mut r, "calls", "queue.other", "E"),
        Ack::Published {
            seq: 3,
            delivered_to: 0
        },
        "positions count every key of the exchange"
    );
    assert_eq!(
        publish(&mut r, "agents", "queue.sales", "E"),
        Ack::Published {
            seq: 1,
            delivered_to: 0
        }
    );
    r.close(&2);
    assert_eq!(
        publish(&mut r, "calls", "queue.sales", "E"),
        Ack::Published {
            seq: 4,
            delivered_to: 2
        }
    );

    assert_eq!(
        r.publish_json(Source::Inject, b"{nope"),
        Ack::Rejected(ErrorName::InvalidJson)
    );
    assert_eq!(
        publish(&mut r, "nope", "k", "E"),
        Ack::Rejected(ErrorName::InvalidExchange)
    );
    assert_eq!(
        r.publish_json(
            Source::Pull,
            br#"{"exchange":"calls","event":"E","payload":[1]}"#
        ),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
    let big =
        json!({"exchange":"calls","event":"E","payload":{"pad":"x".repeat(70_000)}}).to_string();
    assert_eq!(
        r.publish_json(Source::Pull, big.as_bytes()),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
    // Acks as the injector and HTTP publisher receive them.
    assert_eq!(
        serde_json::from_slice::<Value>(&publish(&mut r, "calls", "queue.sales", "E").to_json())
            .unwrap(),
        json!({"ok":true,"seq":5,"delivered_to":2})
    );
    // Inputs refused before parsing (multipart ZeroMQ messages) count as rejected too.
    assert_eq!(
        r.reject(Source::Pull, ErrorName::InvalidPayload),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
    let s = r.stats();
    assert_eq!(s.counters.events_in.inject, 6);
    assert_eq!(s.counters.events_rejected.inject, 2);
    assert_eq!(s.counters.events_rejected.pull, 3);
}

#[test]
fn http_publish_needs_the_bearer_token() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let body = event("calls", "q", "E");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("pub-secret"),
        Some("Basic pub-secret"),
    ] {
        let ack = r.http_publish(auth, &body);
        assert_eq!(
            (ack.http_status(), ack),
            (401, Ack::Rejected(ErrorName::AuthRequired)),
            "{auth:?}"
        );
    }
    let ack = r.http_publish(Some("Bearer pub-secret"), &body);
    assert_eq!(
        (ack.http_status(), ack),
        (
            202,
            Ack::Published {
                seq: 1,
                delivered_to: 1
            }
        )
    );
    assert_eq!(
        r.http_publish(Some("Bearer pub-secret"), b"[]")
            .http_status(),
        400
    );
    let s = r.stats().counters;
    assert_eq!((s.events_in.http, s.events_rejected.http), (1, 5));
}

#[test]
fn forwarded_events_may_exceed_the_size_limit_by_their_envelope() {
    let mut r = relay_with(r#"{"limits":{"message_size":200}}"#);
    let pad = "p".repeat(140);
    let plain = json!({"exchange":"calls","event":"E","payload":{"pad":pad}}).to_string();
    let linked = json!({"exchange":"calls","event":"E","payload":{"pad":pad},
                        "origin":{"relay":"relay-b.0123456789abcdef","seq":1,"hops":1}})
    .to_string();
    assert!(plain.len() <= 200 && linked.len() > 200);
    assert!(matches!(
        r.publish_json(Source::Link, linked.as_bytes()),
        Ack::Published { .. }
    ));
    assert_eq!(
        r.publish_json(Source::Inject, linked.as_bytes()),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
}

#[test]
fn origins_are_accepted_only_from_links() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let victim = "relay-b.0123abcd";
    let forged = json!({"exchange":"calls","routing_key":"q","event":"F",
                        "origin":{"relay":victim,"seq":1_000_000_000_000_000u64,"hops":0}})
    .to_string();
    for source in [Source::Inject, Source::Pull] {
        assert_eq!(
            r.publish_json(source, forged.as_bytes()),
            Ack::Rejected(ErrorName::InvalidPayload),
            "{source:?}"
        );
    }
    assert_eq!(
        r.http_publish(Some("Bearer pub-secret"), forged.as_bytes())
            .http_status(),
        400
    );
    let input = parse_event_input(forged.as_bytes(), 1 << 16).unwrap();
    assert_eq!(
        r.publish(Source::Inject, input),
        Err(ErrorName::InvalidPayload)
    );
    // The victim's real event still gets through its link.
    let real = json!({"exchange":"calls","routing_key":"q","event":"R",
                      "origin":{"relay":victim,"seq":1,"hops":1}})
    .to_string();
    assert_eq!(
        r.publish_json(Source::Link, real.as_bytes()),
        Ack::Published {
            seq: 1,
            delivered_to: 1
        }
    );
}

#[test]
fn the_hop_limit_is_configurable() {
    let mut r = relay_with(r#"{"limits":{"max_hops":2}}"#);
    r.enable_forwarding();
    let linked = |seq: u64, hops: u32| {
        json!({"exchange":"calls","event":"L","origin":{"relay":"b.1","seq":seq,"hops":hops}})
            .to_string()
            .into_bytes()
    };
    assert!(matches!(
        r.publish_json(Source::Link, &linked(1, 1)),
        Ack::Published { .. }
    ));
    assert!(matches!(
        r.publish_json(Source::Link, &linked(2, 2)),
        Ack::Published { .. }
    ));
    assert_eq!(
        r.publish_json(Source::Link, &linked(3, 3)),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
    let hops: Vec<u64> = r
        .take_forwards()
        .iter()
        .map(|f| {
            serde_json::from_slice::<Value>(f).unwrap()["origin"]["hops"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        hops,
        [2],
        "the event that crossed two links goes no further"
    );
}

#[test]
fn linked_events_are_deduplicated_by_origin() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let linked = |relay: &str, seq: u64, hops: u32| {
        json!({"exchange":"calls","routing_key":"q","event":"L","origin":{"relay":relay,"seq":seq,"hops":hops}})
            .to_string()
            .into_bytes()
    };
    assert_eq!(
        r.publish_json(Source::Link, &linked("relay-b", 1, 1)),
        Ack::Published {
            seq: 1,
            delivered_to: 1
        }
    );
    assert_eq!(
        r.publish_json(Source::Link, &linked("relay-b", 1, 2)),
        Ack::Duplicate
    );
    let own = r.origin_id().to_owned();
    assert!(own.starts_with("relay-a."), "{own}");
    assert_eq!(
        r.publish_json(Source::Link, &linked(&own, 5, 1)),
        Ack::Duplicate,
        "our own, come back"
    );
    assert_eq!(
        r.publish_json(Source::Link, &linked("relay-c", 1, DEFAULT_MAX_HOPS + 1)),
        Ack::Rejected(ErrorName::InvalidPayload)
    );
    // Local events get this relay as origin, one counter across keys.
    let input = |rk: &str| EventInput {
        exchange: "calls".into(),
        routing_key: rk.into(),
        event: "E".into(),
        payload: Default::default(),
        origin: None,
        ts: None,
    };
    let Ok(Published::Delivered { origin, .. }) = r.publish(Source::Inject, input("x")) else {
        panic!()
    };
    assert_eq!(
        origin,
        Origin {
            relay: own.clone(),
            seq: 1,
            hops: 0
        }
    );
    let Ok(Published::Delivered { origin, .. }) = r.publish(Source::Inject, input("y")) else {
        panic!()
    };
    assert_eq!(origin.seq, 2);
    assert_eq!(
        r.publish(Source::Inject, input("bad*")),
        Err(ErrorName::InvalidPayload)
    );
    let s = r.stats().counters;
    assert_eq!(
        (
            s.events_in.link,
            s.events_duplicate,
            s.events_rejected.link,
            s.events_in.inject
        ),
        (1, 2, 1, 2)
    );
}

#[test]
fn stats_report_sessions_subscriptions_traffic_and_history() {
    let mut r = relay();
    open(&mut r, 1);
    open(&mut r, 2);
    sub(&mut r, 1, "calls", "q");
    sub(&mut r, 2, "calls", "*");
    sub(&mut r, 2, "agents", "a");
    publish(&mut r, "calls", "q", "E");
    r.http_publish(Some("Bearer pub-secret"), &event("agents", "a", "E"));
    r.flush();
    let s = r.stats();
    assert_eq!(s.sessions, 2);
    assert_eq!(s.subscriptions.get("calls"), Some(&2));
    assert_eq!(s.subscriptions.get("agents"), Some(&1));
    assert_eq!(s.subscriptions.get("admin"), Some(&0));
    assert_eq!(
        (s.counters.events_in.inject, s.counters.events_in.http),
        (1, 1)
    );
    assert_eq!(s.counters.events_queued, 3);
    assert_eq!(s.history.keys, 2);
    assert_eq!(s.history.events, 2);
    assert!(
        s.counters.frames_out >= 3 + 2 + 3,
        "welcomes, subscribed replies and events"
    );
    let text = s.to_prometheus();
    assert!(text.contains("relay_sessions 2\n"));
    assert!(text.contains("relay_subscriptions{exchange=\"calls\"} 2\n"));
    assert!(text.contains("relay_events_in_total{source=\"http\"} 1\n"));
    let json: Value = serde_json::from_slice(&s.to_json()).unwrap();
    assert_eq!(json["subscriptions"]["calls"], 2);
    assert_eq!(json["history"]["keys"], 2);
}

#[test]
fn conn_id_like_keys_plug_in() {
    // The runtime's ConnId is (sender: Arc<str>, id: u64); any such key works.
    let mut r: Relay<(Arc<str>, u64)> = Relay::new(config(None), "relay-a");
    let a: (Arc<str>, u64) = (Arc::from("m2-a"), 7);
    let b: (Arc<str>, u64) = (Arc::from("m2-b"), 7);
    r.open(a.clone());
    r.open(b.clone());
    for k in [&a, &b] {
        r.subscribe(k, "calls", "q").unwrap();
    }
    r.flush();
    publish_any(&mut r);
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, vec![a.clone(), b.clone()]);
    r.close(&a);
    r.close(&b);
    assert!(r.is_idle());
}

fn publish_any<K: SessionKey>(r: &mut Relay<K>) {
    r.publish_json(Source::Inject, &event("calls", "q", "E"));
}

#[test]
fn accepted_events_are_queued_for_linked_relays_with_one_more_hop() {
    let mut r = relay();
    publish(&mut r, "calls", "q", "Before");
    assert!(r.take_forwards().is_empty(), "forwarding is off by default");
    r.enable_forwarding();
    publish(&mut r, "calls", "q", "Local");
    let far = json!({"exchange":"agents","routing_key":"a","event":"Far","origin":{"relay":"relay-b.1","seq":9,"hops":2}});
    r.publish_json(Source::Link, far.to_string().as_bytes());
    let edge = json!({"exchange":"agents","event":"Edge","origin":{"relay":"relay-b.1","seq":10,"hops":DEFAULT_MAX_HOPS}});
    r.publish_json(Source::Link, edge.to_string().as_bytes());
    publish(&mut r, "nope", "q", "Rejected");
    let sent: Vec<Value> = r
        .take_forwards()
        .iter()
        .map(|b| {
            let mut v: Value = serde_json::from_slice(b).unwrap();
            let ts = v.as_object_mut().unwrap().remove("ts");
            assert!(ts.as_ref().is_some_and(Value::is_u64), "ts: {ts:?}");
            v
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            json!({"exchange":"calls","routing_key":"q","event":"Local","payload":{"n":"Local"},
                   "origin":{"relay":r.origin_id(),"seq":2,"hops":1}}),
            json!({"exchange":"agents","routing_key":"a","event":"Far","payload":{},
                   "origin":{"relay":"relay-b.1","seq":9,"hops":3}}),
        ]
    );
    assert!(r.take_forwards().is_empty());
    // What a peer receives parses as event input, and comes back to us as a duplicate.
    let back = json!({"exchange":"calls","routing_key":"q","event":"Local","origin":{"relay":r.origin_id(),"seq":2,"hops":1}});
    assert_eq!(
        r.publish_json(Source::Link, back.to_string().as_bytes()),
        Ack::Duplicate
    );
}

#[test]
fn the_relay_can_move_to_the_io_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Relay<(Arc<str>, u64)>>();
    assert_send::<Flush<(Arc<str>, u64)>>();
    assert_send::<RpcCall<(Arc<str>, u64)>>();
}

#[test]
fn events_carry_their_publish_time() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let mut r = relay();
    r.enable_forwarding();
    open(&mut r, 1);
    r.on_message(
        &1,
        br#"{"action":"Subscribe","payload":{"exchange":"calls","routing_key":"q"}}"#,
    );
    flush(&mut r);
    let before = now();
    r.publish_json(
        Source::Inject,
        br#"{"exchange":"calls","routing_key":"q","event":"Stamped"}"#,
    );
    let after = now();
    r.publish_json(
        Source::Pull,
        br#"{"exchange":"calls","routing_key":"q","event":"Given","ts":1700000000123}"#,
    );
    let raw = r.flush().deliveries.remove(0).payload;
    let ts: Vec<u64> = split_text_frames(&raw)
        .iter()
        .map(|f| {
            serde_json::from_slice::<Value>(f).unwrap()["mq"]["ts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        (before..=after).contains(&ts[0]),
        "stamped on arrival: {ts:?}"
    );
    assert_eq!(ts[1], 1_700_000_000_123, "the publisher's time is kept");
    // Linked relays get the same time, so their pages show the delay from the source.
    let forwarded: Vec<Value> = r
        .take_forwards()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(forwarded[0]["ts"], ts[0]);
    assert_eq!(forwarded[1]["ts"], ts[1]);
}

#[test]
fn backbone_events_are_checked_then_numbered_by_their_position() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q.*");
    // Checked and stamped for the backbone; nothing delivered yet.
    let (exchange, key, body) = r
        .prepare_backbone(Source::Http, &event("calls", "q.a", "E1"))
        .unwrap();
    assert_eq!((&*exchange, key.as_str()), ("calls", "q.a"));
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert!(sent["ts"].is_u64(), "{sent}");
    assert!(flush(&mut r).is_empty());
    assert_eq!(
        r.prepare_backbone(Source::Pull, &event("nope", "k", "E")),
        Err(ErrorName::InvalidExchange)
    );
    // Read back at its position: delivered under it; repeats and older ones are dropped.
    assert!(matches!(
        r.publish_at("calls", "q.a", &body, 7),
        Ok(Published::Delivered { seq: 7, .. })
    ));
    assert_eq!(
        r.publish_at("calls", "q.a", &body, 7),
        Ok(Published::Duplicate)
    );
    assert_eq!(
        r.publish_at("calls", "q.a", &body, 3),
        Ok(Published::Duplicate)
    );
    assert_eq!(seqs_of(&flush(&mut r)[&1]), [7]);
    assert_eq!(
        r.publish_at("calls", "q.a", b"{", 8),
        Err(ErrorName::InvalidJson)
    );
    // A body naming another exchange does not belong in this log.
    assert_eq!(
        r.publish_at("agents", "q.a", &body, 8),
        Err(ErrorName::InvalidExchange)
    );
    // Myxi-style: the application published {event, payload} straight into the exchange.
    let myxi = br#"{"event":"WidgetQtyChanged","payload":{"quantity":3}}"#;
    assert!(matches!(
        r.publish_at("calls", "q.1234", myxi, 9),
        Ok(Published::Delivered { seq: 9, .. })
    ));
    let got = flush(&mut r).remove(&1).unwrap();
    assert_eq!(
        got,
        [json!({"event":"WidgetQtyChanged","payload":{"quantity":3},
                "mq":{"e":"calls","rk":"q.1234","seq":9}})]
    );
    let c = r.stats().counters;
    assert_eq!(
        (c.backbone_in, c.backbone_rejected, c.events_duplicate),
        (2, 2, 2)
    );
    assert_eq!((c.events_in.http, c.events_rejected.pull), (1, 1));
}
