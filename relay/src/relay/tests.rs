//! Behaviour of the relay core as a client and a publisher see it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::frame::split_text_frames;
use super::super::protocol::DEFAULT_MAX_HOPS;
use super::*;

type Key = u32;

fn test_env(name: &str) -> Option<String> {
    match name {
        "RELAY_TOKENS" => Some("admin:admin-secret,ops:ops-secret".into()),
        "RELAY_PUBLISH_TOKEN" => Some("pub-secret".into()),
        _ => None,
    }
}

fn config(json: Option<&str>) -> Config {
    Config::from_parts(json, &test_env).unwrap()
}

fn relay() -> Relay<Key> {
    Relay::new(config(None), "relay-a")
}

fn relay_with(json: &str) -> Relay<Key> {
    Relay::new(config(Some(json)), "relay-a")
}

fn decode(payload: &[u8]) -> Vec<Value> {
    split_text_frames(payload)
        .iter()
        .map(|f| serde_json::from_slice(f).unwrap())
        .collect()
}

/// Flushes once and returns what each session received.
fn flush(r: &mut Relay<Key>) -> BTreeMap<Key, Vec<Value>> {
    let f = r.flush();
    assert!(f.close.is_empty(), "unexpected close: {:?}", f.close);
    let mut out: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
    for d in f.deliveries {
        let frames = decode(&d.payload);
        for s in d.sessions {
            assert!(
                out.insert(s, frames.clone()).is_none(),
                "session {s} in two deliveries"
            );
        }
    }
    out
}

/// Opens `k` and consumes its Welcome.
fn open(r: &mut Relay<Key>, k: Key) -> String {
    let id = r.open(k);
    let got = flush(r).remove(&k).unwrap();
    let run = r.origin_id().to_owned();
    assert_eq!(
        got,
        vec![json!({"event":"Welcome","payload":{"id":id,"run":run}})]
    );
    id
}

/// Sends an action from `k` and returns the frames `k` got.
fn act(r: &mut Relay<Key>, k: Key, msg: &Value) -> Vec<Value> {
    act_raw(r, k, msg.to_string().as_bytes())
}

fn act_raw(r: &mut Relay<Key>, k: Key, bytes: &[u8]) -> Vec<Value> {
    assert!(r.on_message(&k, bytes).is_none());
    flush(r).remove(&k).unwrap_or_default()
}

/// Sends an action that gets exactly one reply, and returns it.
fn act1(r: &mut Relay<Key>, k: Key, msg: Value) -> Value {
    let mut got = act(r, k, &msg);
    assert_eq!(got.len(), 1, "{msg} -> {got:?}");
    got.remove(0)
}

fn error(name: &str) -> Value {
    json!({"event":"Error","payload":{"error":name}})
}

fn sub(r: &mut Relay<Key>, k: Key, exchange: &str, key: &str) {
    let got = act1(
        r,
        k,
        json!({"action":"Subscribe","payload":{"exchange":exchange,"routing_key":key}}),
    );
    assert_eq!(got["event"], "Subscribed", "{got}");
}

fn event(exchange: &str, rk: &str, name: &str) -> Vec<u8> {
    json!({"exchange":exchange,"routing_key":rk,"event":name,"payload":{"n":name}})
        .to_string()
        .into_bytes()
}

fn publish(r: &mut Relay<Key>, exchange: &str, rk: &str, name: &str) -> Ack {
    r.publish_json(Source::Inject, &event(exchange, rk, name))
}

fn delivered(ack: &Ack) -> usize {
    match ack {
        Ack::Published { delivered_to, .. } => *delivered_to,
        other => panic!("not published: {other:?}"),
    }
}

fn seqs_of(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f.get("mq").is_some())
        .map(|f| f["mq"]["seq"].as_u64().unwrap())
        .collect()
}

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

// ----- actions, replies and tags ---------------------------------------------------------

#[test]
fn every_action_reply_echoes_the_tag_or_omits_it() {
    for tag in [
        Some(json!("abc123abc")),
        Some(json!(7)),
        Some(json!({"x":[1]})),
        Some(Value::Null),
        None,
    ] {
        let mut r = relay();
        open(&mut r, 1);
        publish(&mut r, "calls", "q", "Old");
        let with_tag = |mut msg: Value| {
            if let Some(t) = &tag {
                msg["tag"] = t.clone();
            }
            msg
        };
        let expect = |mut reply: Value| {
            if let Some(t) = &tag {
                reply["tag"] = t.clone();
            }
            reply
        };
        let cases = [
            (
                json!({"action":"Subscribe","payload":{"exchange":"calls","routing_key":"q"}}),
                json!({"event":"Subscribed","payload":{"exchange":"calls","routing_key":"q"}}),
            ),
            (
                json!({"action":"ListSubscriptions"}),
                json!({"event":"YourSubscriptions","payload":{"subscriptions":[{"exchange":"calls","routing_key":"q"}]}}),
            ),
            (
                json!({"action":"Ping"}),
                json!({"event":"Pong","payload":{}}),
            ),
            (
                json!({"action":"Authenticate","payload":{"token":"ops-secret"}}),
                json!({"event":"Authenticated","payload":{"name":"ops"}}),
            ),
            (
                json!({"action":"Unsubscribe","payload":{"exchange":"calls","routing_key":"q"}}),
                json!({"event":"Unsubscribed","payload":{"exchange":"calls","routing_key":"q"}}),
            ),
            (json!({"action":"Nope"}), error("InvalidAction")),
            (
                json!({"action":"Subscribe","payload":{"exchange":"calls"}}),
                error("InvalidPayload"),
            ),
            (
                json!({"action":"Subscribe","payload":{"exchange":"nope","routing_key":"q"}}),
                error("InvalidExchange"),
            ),
            (
                json!({"action":"Subscribe","payload":{"exchange":"admin","routing_key":"q"}}),
                error("SubscriptionDenied"),
            ),
            (
                json!({"action":"Authenticate","payload":{"token":"wrong"}}),
                error("InvalidToken"),
            ),
            (
                json!({"action":"Ping","payload":"x"}),
                error("InvalidPayload"),
            ),
            (json!({"action":5}), error("InvalidAction")),
        ];
        for (msg, reply) in cases {
            assert_eq!(
                act1(&mut r, 1, with_tag(msg.clone())),
                expect(reply),
                "tag {tag:?}, {msg}"
            );
        }
        // Resume: replayed events are plain events (untagged); the Resumed reply is tagged.
        let got = act(
            &mut r,
            1,
            &with_tag(
                json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"q","since":0}}),
            ),
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            json!({"event":"Old","payload":{"n":"Old"},"mq":{"e":"calls","rk":"q","seq":1}})
        );
        assert_eq!(
            got[1],
            expect(json!({"event":"Resumed","payload":{
                "exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":1}}))
        );
    }
}

#[test]
fn errors_that_need_state_carry_the_tag_too() {
    let mut r = relay_with(
        r#"{"limits":{"subscriptions_per_session":1},"exchanges":{"calls":{"public":true},"admin":{"tokens":["admin"]}}}"#,
    );
    open(&mut r, 1);
    let tagged =
        |action: &str, payload: Value| json!({"action":action,"tag":"T","payload":payload});
    let err = |name: &str| json!({"event":"Error","tag":"T","payload":{"error":name}});
    assert_eq!(
        act1(
            &mut r,
            1,
            tagged("Subscribe", json!({"exchange":"admin","routing_key":"x"}))
        ),
        err("AuthRequired")
    );
    sub(&mut r, 1, "calls", "a");
    assert_eq!(
        act1(
            &mut r,
            1,
            tagged("Subscribe", json!({"exchange":"calls","routing_key":"a"}))
        ),
        err("AlreadySubscribed")
    );
    assert_eq!(
        act1(
            &mut r,
            1,
            tagged("Subscribe", json!({"exchange":"calls","routing_key":"b"}))
        ),
        err("TooManySubscriptions")
    );
    assert_eq!(
        act1(
            &mut r,
            1,
            tagged(
                "Resume",
                json!({"exchange":"calls","routing_key":"b","since":0})
            )
        ),
        err("TooManySubscriptions")
    );
}

#[test]
fn bad_messages_never_close_the_session() {
    let mut r = relay_with(r#"{"limits":{"message_size":100,"pending_bytes":2048}}"#);
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    for (bytes, reply) in [
        (&b"not json"[..], error("InvalidJSON")),
        (b"[1,2,3]", error("InvalidJSON")),
        (b"\xff\xfe", error("InvalidJSON")),
        (b"", error("InvalidJSON")),
        (
            br#"{"tag":"t"}"#,
            json!({"event":"Error","tag":"t","payload":{"error":"InvalidAction"}}),
        ),
    ] {
        assert_eq!(act_raw(&mut r, 1, bytes), vec![reply]);
    }
    // Over the size limit: refused unparsed, so no tag.
    let big = json!({"action":"Ping","tag":"t","payload":{"pad":"x".repeat(200)}});
    assert_eq!(act(&mut r, 1, &big), vec![error("InvalidPayload")]);
    assert_eq!(
        act1(&mut r, 1, json!({"action":"Ping"})),
        json!({"event":"Pong","payload":{}})
    );
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "Still")), 1);
}

#[test]
fn subscribe_echoes_the_field_used_and_normalises_numeric_keys() {
    let mut r = relay();
    open(&mut r, 1);
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Subscribe","tag":"abc123abc","payload":{"exchange":"calls","routing_key":1234}})
        ),
        json!({"event":"Subscribed","tag":"abc123abc","payload":{"exchange":"calls","routing_key":"1234"}})
    );
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Subscribe","payload":{"exchange":"agents","routing_keys":[7, "a.*", 7]}})
        ),
        json!({"event":"Subscribed","payload":{"exchange":"agents","routing_keys":["7","a.*"]}})
    );
    let got = r.publish_json(Source::Pull, br#"{"exchange":"calls","routing_key":1234,"event":"WidgetQtyChanged","payload":{"quantity":3}}"#);
    assert_eq!(
        got,
        Ack::Published {
            seq: 1,
            delivered_to: 1
        }
    );
    assert_eq!(
        flush(&mut r)[&1],
        vec![
            json!({"event":"WidgetQtyChanged","payload":{"quantity":3},"mq":{"e":"calls","rk":"1234","seq":1}})
        ]
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"],
        json!([
            {"exchange":"agents","routing_key":"7"},
            {"exchange":"agents","routing_key":"a.*"},
            {"exchange":"calls","routing_key":"1234"}
        ])
    );
}

#[test]
fn subscribing_a_list_is_all_or_nothing() {
    let mut r = relay_with(
        r#"{"limits":{"subscriptions_per_session":3},"exchanges":{"q":{"public":true,"prefixes":["queue."]}}}"#,
    );
    open(&mut r, 1);
    let many =
        |keys: Value| json!({"action":"Subscribe","payload":{"exchange":"q","routing_keys":keys}});
    assert_eq!(
        act1(&mut r, 1, many(json!(["queue.a", "other"]))),
        error("SubscriptionDenied")
    );
    assert_eq!(
        act1(
            &mut r,
            1,
            many(json!(["queue.a", "queue.b", "queue.c", "queue.d"]))
        ),
        error("TooManySubscriptions")
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"],
        json!([])
    );
    assert_eq!(
        act1(&mut r, 1, many(json!(["queue.a", "queue.*"])))["event"],
        "Subscribed"
    );
    assert_eq!(
        act1(&mut r, 1, many(json!(["queue.b", "queue.a"]))),
        error("AlreadySubscribed")
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn unsubscribe_keys_exchange_or_everything() {
    let mut r = relay();
    open(&mut r, 1);
    for (e, k) in [
        ("calls", "a"),
        ("calls", "b"),
        ("calls", "c"),
        ("calls", "q.*"),
        ("agents", "x"),
    ] {
        sub(&mut r, 1, e, k);
    }
    let list = |r: &mut Relay<Key>| {
        act1(r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"].clone()
    };
    let unsub = |payload: Value| json!({"action":"Unsubscribe","payload":payload});

    assert_eq!(
        act1(
            &mut r,
            1,
            unsub(json!({"exchange":"calls","routing_key":"a"}))
        ),
        json!({"event":"Unsubscribed","payload":{"exchange":"calls","routing_key":"a"}})
    );
    assert_eq!(delivered(&publish(&mut r, "calls", "a", "E")), 0);
    assert_eq!(
        act1(
            &mut r,
            1,
            unsub(json!({"exchange":"calls","routing_keys":["b","never"]}))
        ),
        json!({"event":"Unsubscribed","payload":{"exchange":"calls","routing_keys":["b","never"]}})
    );
    assert_eq!(
        list(&mut r),
        json!([{"exchange":"agents","routing_key":"x"},{"exchange":"calls","routing_key":"c"},{"exchange":"calls","routing_key":"q.*"}])
    );
    assert_eq!(
        act1(&mut r, 1, unsub(json!({"exchange":"calls"}))),
        json!({"event":"Unsubscribed","payload":{"exchange":"calls"}})
    );
    assert_eq!(
        list(&mut r),
        json!([{"exchange":"agents","routing_key":"x"}])
    );
    assert_eq!(
        act1(&mut r, 1, unsub(json!({"exchange":"nope"}))),
        error("InvalidExchange")
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"Unsubscribe"})),
        json!({"event":"Unsubscribed","payload":{"exchange":null}})
    );
    assert_eq!(list(&mut r), json!([]));
    assert!(r.is_idle() || r.session_count() == 1);
    assert_eq!(r.stats().subscriptions.values().sum::<usize>(), 0);
    // Nothing subscribed any more, and unsubscribing again is harmless.
    assert_eq!(
        act1(&mut r, 1, json!({"action":"Unsubscribe","payload":{}}))["event"],
        "Unsubscribed"
    );
}

#[test]
fn authentication_required_denied_granted() {
    let mut r = relay();
    open(&mut r, 1);
    let admin = json!({"action":"Subscribe","payload":{"exchange":"admin","routing_key":"*"}});
    assert_eq!(act1(&mut r, 1, admin.clone()), error("AuthRequired"));
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Authenticate","payload":{"token":"nope"}})
        ),
        error("InvalidToken")
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"Authenticate","payload":{}})),
        error("InvalidPayload")
    );
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Authenticate","payload":{"token":"ops-secret"}})
        )["payload"]["name"],
        "ops"
    );
    assert_eq!(act1(&mut r, 1, admin.clone()), error("SubscriptionDenied"));
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Authenticate","payload":{"token":"admin-secret"}})
        )["payload"]["name"],
        "admin"
    );
    // A failed attempt does not undo an earlier success.
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Authenticate","payload":{"token":"x"}})
        ),
        error("InvalidToken")
    );
    assert_eq!(act1(&mut r, 1, admin)["event"], "Subscribed");
    assert_eq!(
        delivered(&publish(&mut r, "admin", "anything", "Secret")),
        1
    );
}

#[test]
fn without_configured_tokens_nobody_authenticates_and_admin_is_closed() {
    let mut r: Relay<Key> = Relay::new(Config::from_parts(None, &|_| None).unwrap(), "r");
    open(&mut r, 1);
    for token in ["", "admin", "admin-secret"] {
        assert_eq!(
            act1(
                &mut r,
                1,
                json!({"action":"Authenticate","payload":{"token":token}})
            ),
            error("InvalidToken")
        );
    }
    assert_eq!(
        act1(
            &mut r,
            1,
            json!({"action":"Subscribe","payload":{"exchange":"admin","routing_key":"x"}})
        ),
        error("AuthRequired")
    );
    assert_eq!(
        r.http_publish(Some("Bearer "), &event("calls", "q", "E")),
        Ack::Rejected(ErrorName::AuthRequired)
    );
}

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
fn acks_count_seq_per_key_and_recipients() {
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
            seq: 1,
            delivered_to: 0
        }
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
            seq: 3,
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
        json!({"ok":true,"seq":4,"delivered_to":2})
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

// ----- resume ---------------------------------------------------------------------------------

#[test]
fn resume_without_gap_replays_missed_events_then_goes_live() {
    let mut r = relay();
    for n in 1..=5 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    open(&mut r, 1);
    let got = act(
        &mut r,
        1,
        &json!({"action":"Resume","tag":1,"payload":{"exchange":"calls","routing_key":"q","since":2}}),
    );
    assert_eq!(seqs_of(&got), [3, 4, 5]);
    assert_eq!(got[0]["event"], "E3");
    assert_eq!(
        got[3],
        json!({"event":"Resumed","tag":1,"payload":{"exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":5}})
    );
    // Resume subscribed the key: live events continue with the next seq, no gap.
    assert_eq!(
        publish(&mut r, "calls", "q", "E6"),
        Ack::Published {
            seq: 6,
            delivered_to: 1
        }
    );
    assert_eq!(seqs_of(&flush(&mut r)[&1]), [6]);
    // Resuming an already subscribed key is fine (no AlreadySubscribed), and up to date.
    let got = act(
        &mut r,
        1,
        &json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"q","since":6}}),
    );
    assert_eq!(
        got,
        [
            json!({"event":"Resumed","payload":{"exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":6}})
        ]
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn resume_with_gap_sends_what_is_left_and_says_not_recovered() {
    let mut r = relay_with(r#"{"limits":{"history_per_key":3}}"#);
    for n in 1..=10 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    open(&mut r, 1);
    let resume = |since: u64| json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"q","since":since}});
    let got = act(&mut r, 1, &resume(4));
    assert_eq!(seqs_of(&got), [8, 9, 10]);
    assert_eq!(
        got[3]["payload"],
        json!({"exchange":"calls","routing_key":"q","recovered":false,"more":false,"last_seq":10})
    );
    // A since beyond the key's seq comes from an earlier life (e.g. a relay restart).
    let got = act(&mut r, 1, &resume(99));
    assert_eq!(seqs_of(&got), [8, 9, 10]);
    assert_eq!(got[3]["payload"]["recovered"], false);
    // A key never published: nothing to send; recovered only if the client saw nothing.
    let got = act1(
        &mut r,
        1,
        json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"new","since":0}}),
    );
    assert_eq!(
        got["payload"],
        json!({"exchange":"calls","routing_key":"new","recovered":true,"more":false,"last_seq":0})
    );
    let got = act1(
        &mut r,
        1,
        json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"new","since":3}}),
    );
    assert_eq!(
        (
            got["payload"]["recovered"].clone(),
            got["payload"]["last_seq"].clone()
        ),
        (json!(false), json!(0))
    );
}

#[test]
fn resume_needs_subscribe_rights_and_exact_keys() {
    let mut r = relay();
    publish(&mut r, "admin", "k", "Secret");
    open(&mut r, 1);
    let resume = |e: &str, k: &str| json!({"action":"Resume","payload":{"exchange":e,"routing_key":k,"since":0}});
    assert_eq!(act1(&mut r, 1, resume("admin", "k")), error("AuthRequired"));
    assert_eq!(
        act1(&mut r, 1, resume("nope", "k")),
        error("InvalidExchange")
    );
    assert_eq!(
        act1(&mut r, 1, resume("calls", "q.*")),
        error("InvalidPayload")
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"],
        json!([])
    );
    act1(
        &mut r,
        1,
        json!({"action":"Authenticate","payload":{"token":"admin-secret"}}),
    );
    assert_eq!(seqs_of(&act(&mut r, 1, &resume("admin", "k"))), [1]);
}

// ----- coalescing, grouping, lag -------------------------------------------------------------

#[test]
fn one_event_to_a_thousand_sessions_is_one_group() {
    let mut r = relay();
    for k in 0..1000 {
        r.open(k);
        r.on_message(
            &k,
            br#"{"action":"Subscribe","payload":{"exchange":"calls","routing_key":"q"}}"#,
        );
    }
    // Each Welcome carries its own id, so the first flush cannot share.
    assert_eq!(r.flush().deliveries.len(), 1000);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "E")), 1000);
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, (0..1000).collect::<Vec<_>>());
    assert_eq!(decode(&f.deliveries[0].payload)[0]["event"], "E");
    // 1000 ids at Mongrel2's default 128 targets per message: 8 messages.
    assert_eq!(f.deliveries[0].sessions.chunks(128).count(), 8);
    assert_eq!(r.stats().counters.payloads_out, 1000 + 1);
}

#[test]
fn sessions_group_by_identical_pending_bytes() {
    let mut r = relay();
    for k in 1..=4 {
        open(&mut r, k);
    }
    sub(&mut r, 1, "calls", "a");
    sub(&mut r, 2, "calls", "a");
    sub(&mut r, 3, "calls", "a");
    sub(&mut r, 3, "calls", "b");
    sub(&mut r, 4, "calls", "b");
    publish(&mut r, "calls", "a", "A");
    publish(&mut r, "calls", "b", "B");
    // Same bytes from different allocations still share a group (untagged Pongs).
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&4, br#"{"action":"Ping"}"#);
    let mut f = r.flush();
    f.deliveries.sort_by(|a, b| a.sessions.cmp(&b.sessions));
    let shapes: Vec<(Vec<Key>, Vec<String>)> = f
        .deliveries
        .iter()
        .map(|d| {
            let names = decode(&d.payload)
                .iter()
                .map(|v| v["event"].as_str().unwrap().to_owned())
                .collect();
            (d.sessions.clone(), names)
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (vec![1], vec!["A".into(), "Pong".into()]),
            (vec![2], vec!["A".into()]),
            (vec![3], vec!["A".into(), "B".into()]),
            (vec![4], vec!["B".into(), "Pong".into()]),
        ]
    );
    // Now without the pings: 1 and 2 share, and a Pong-only round merges 1 and 4.
    publish(&mut r, "calls", "a", "A2");
    let f = r.flush();
    let group: Vec<_> = f.deliveries.iter().map(|d| d.sessions.clone()).collect();
    assert_eq!(group, vec![vec![1, 2, 3]]);
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&4, br#"{"action":"Ping"}"#);
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, vec![1, 4]);
}

#[test]
fn a_burst_of_1000_arrives_complete_in_order_in_few_payloads() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    for n in 1..=1000 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    let frames = decode(&f.deliveries[0].payload);
    assert_eq!(seqs_of(&frames), (1..=1000).collect::<Vec<_>>());
    assert!(f.deliveries[0].payload.len() <= 256 * 1024);
    assert!(!r.has_pending());
    assert_eq!(r.stats().counters.dropped, 0);
}

#[test]
fn big_bursts_are_split_across_flushes_within_the_byte_cap() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let pad = "x".repeat(1000);
    for n in 1..=1000 {
        let body =
            json!({"exchange":"calls","routing_key":"q","event":"Big","payload":{"n":n,"pad":pad}})
                .to_string();
        r.publish_json(Source::Pull, body.as_bytes());
    }
    let mut seqs = Vec::new();
    let mut flushes = 0;
    while r.has_pending() {
        let f = r.flush();
        flushes += 1;
        assert_eq!(f.deliveries.len(), 1);
        assert!(f.deliveries[0].payload.len() <= 256 * 1024);
        seqs.extend(seqs_of(&decode(&f.deliveries[0].payload)));
        assert!(flushes < 100, "no progress");
    }
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert!((4..=6).contains(&flushes), "{flushes} flushes for ~1 MB");
}

#[test]
fn burst_over_a_small_bound_lags_and_resume_fills_the_gap() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":16,"history_per_key":1000}}"#);
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    for n in 1..=1000 {
        assert_eq!(
            delivered(&publish(&mut r, "calls", "q", &format!("E{n}"))),
            1
        );
    }
    let got = flush(&mut r).remove(&1).unwrap();
    // The gap is announced first (nothing delivered on q before it), then the newest 16.
    assert_eq!(
        got[0],
        json!({"event":"Lagged","payload":{"exchange":"calls","routing_key":"q","last_seq":0}})
    );
    assert_eq!(seqs_of(&got[1..]), (985..=1000).collect::<Vec<_>>());
    let s = r.stats().counters;
    assert_eq!((s.dropped, s.lagged, s.overflowed), (984, 1, 0));
    assert_eq!(r.session_count(), 1, "the client stays connected");

    // A client following the protocol resumes until nothing more is missing.
    let mut have: BTreeSet<u64> = seqs_of(&got).into_iter().collect();
    let mut since = got[0]["payload"]["last_seq"].as_u64().unwrap();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200);
        let got = act(
            &mut r,
            1,
            &json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"q","since":since}}),
        );
        let (resumed, events) = got.split_last().unwrap();
        let replayed = seqs_of(events);
        assert!(replayed.windows(2).all(|w| w[1] == w[0] + 1), "in order");
        assert!(
            !events.iter().any(|e| e["event"] == "Lagged"),
            "a replay never lags itself"
        );
        have.extend(replayed);
        assert_eq!(resumed["payload"]["recovered"], true);
        since = resumed["payload"]["last_seq"].as_u64().unwrap();
        if resumed["payload"]["more"] == false {
            break;
        }
    }
    assert_eq!(have, (1..=1000).collect::<BTreeSet<_>>());
    assert_eq!(since, 1000);
}

#[test]
fn lag_on_several_keys_gives_one_notice_per_key() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":4}}"#);
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "*");
    for n in 0..10 {
        publish(&mut r, "calls", if n % 2 == 0 { "a" } else { "b" }, "E");
    }
    let got = flush(&mut r).remove(&1).unwrap();
    let lagged: Vec<_> = got
        .iter()
        .filter(|f| f["event"] == "Lagged")
        .map(|f| f["payload"].clone())
        .collect();
    assert_eq!(
        lagged,
        vec![
            json!({"exchange":"calls","routing_key":"a","last_seq":0}),
            json!({"exchange":"calls","routing_key":"b","last_seq":0}),
        ]
    );
    assert_eq!(got.len(), 2 + 4);
}

#[test]
fn a_session_that_only_piles_up_replies_is_closed() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":8}}"#);
    open(&mut r, 1);
    open(&mut r, 2);
    for _ in 0..9 {
        r.on_message(&1, br#"{"action":"Ping"}"#);
    }
    r.on_message(&2, br#"{"action":"Ping"}"#);
    let f = r.flush();
    assert_eq!(f.close, vec![1]);
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, vec![2]);
    assert_eq!(r.session_count(), 1);
    assert_eq!(r.stats().counters.overflowed, 1);
}

#[test]
fn download_credits_are_never_overdrawn() {
    let mut r = relay();
    let welcome_len = {
        r.open_with(
            1,
            OpenOptions {
                kind: SessionKind::WebSocket,
                credits: Some(10_000),
            },
        );
        r.flush().deliveries[0].payload.len()
    };
    sub(&mut r, 1, "calls", "q");
    let mut sent = welcome_len;
    let budget = 10_000;
    for n in 0..200 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    let mut seqs = Vec::new();
    while r.has_pending() {
        for d in r.flush().deliveries {
            sent += d.payload.len();
            seqs.extend(seqs_of(&decode(&d.payload)));
        }
    }
    // The Subscribed reply was counted when `sub` flushed; stop short of the budget.
    assert!(sent <= budget, "{sent}");
    assert!(seqs.len() < 200, "credits ran out first");
    assert!(
        !r.has_pending(),
        "a starved session is not flushed again until credits arrive"
    );
    r.credits(&1, 1_000_000);
    assert!(r.has_pending());
    while r.has_pending() {
        for d in r.flush().deliveries {
            seqs.extend(seqs_of(&decode(&d.payload)));
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
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
            Some("admin/k/1".into()),
            "Secret".into(),
            json!({"event":"Secret","payload":{"n":"Secret"},"mq":{"e":"admin","rk":"k","seq":1}})
        )
    );
    assert_eq!(r.stats().streams, 1);
}

#[test]
fn a_stream_resumes_after_its_last_event_id() {
    let mut r = relay();
    for n in 1..=4 {
        publish(&mut r, "calls", "q.a", &format!("A{n}"));
    }
    publish(&mut r, "calls", "q.b", "B1");
    let mut req = stream("calls", "q.*");
    req.last_event = Some(("q.a".into(), 2));
    r.open_stream(1, &req, None).unwrap();
    publish(&mut r, "calls", "q.a", "A5");
    let events = sse_events(&r.flush().deliveries[0].payload);
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names, ["Welcome", "A3", "A4", "Resumed", "A5"]);
    assert_eq!(events[1].0.as_deref(), Some("calls/q.a/3"));
    assert_eq!(
        events[3].2,
        json!({"event":"Resumed","payload":{"exchange":"calls","routing_key":"q.a",
               "recovered":true,"more":false,"last_seq":4}})
    );
    assert_eq!(events[4].0.as_deref(), Some("calls/q.a/5"), "live, once");

    // An id for a key the stream does not cover is ignored.
    let mut other = stream("calls", "q.b");
    other.last_event = Some(("q.a".into(), 0));
    r.open_stream(2, &other, None).unwrap();
    let events = sse_events(&r.flush().deliveries[0].payload);
    assert_eq!(events.len(), 1, "{events:?}");
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
    assert!(text.ends_with("id: calls/q/1\nevent: E\ndata: {\"event\":\"E\",\"payload\":{\"n\":\"E\"},\"mq\":{\"e\":\"calls\",\"rk\":\"q\",\"seq\":1}}\n\n\r\n"), "{text}");
}

// ----- RPC seam, linked relays, status ------------------------------------------------------

#[test]
fn configured_actions_are_handed_out_for_forwarding() {
    let mut r = relay_with(r#"{"actions":{"moveCar":"tcp://127.0.0.1:9100"}}"#);
    let id = open(&mut r, 1);
    let call = r
        .on_message(
            &1,
            br#"{"action":"moveCar","tag":"m1","payload":{"car":7}}"#,
        )
        .expect("forwarded");
    assert_eq!(call.session, 1);
    assert_eq!(call.session_id, id);
    assert_eq!(call.identity, None);
    assert_eq!(call.endpoint, "tcp://127.0.0.1:9100");
    assert_eq!(call.tag, Some(json!("m1")));
    assert_eq!(Value::Object(call.payload.clone()), json!({"car":7}));
    assert!(!r.has_pending(), "no reply until the backend answers");
    let mut ok = serde_json::Map::new();
    ok.insert("moved".into(), json!(true));
    let tag = call.tag.as_ref();
    assert!(r.rpc_reply(&1, &id, tag, RpcOutcome::Result(Value::Object(ok))));
    assert!(r.rpc_reply(&1, &id, tag, RpcOutcome::Result(json!([1, "two"]))));
    let failed = RpcOutcome::BackendError {
        code: json!(-32601),
        message: "no such method".into(),
    };
    assert!(r.rpc_reply(&1, &id, tag, failed));
    assert!(r.rpc_reply(&1, &id, tag, RpcOutcome::Failed(ErrorName::BackendTimeout)));
    assert_eq!(
        flush(&mut r)[&1],
        vec![
            json!({"event":"Result","tag":"m1","payload":{"moved":true}}),
            json!({"event":"Result","tag":"m1","payload":[1, "two"]}),
            json!({"event":"Error","tag":"m1","payload":{"error":"BackendError","code":-32601,"message":"no such method"}}),
            json!({"event":"Error","tag":"m1","payload":{"error":"BackendTimeout"}}),
        ]
    );
    // The caller went (or another session took its key): the answer is dropped.
    r.close(&1);
    assert!(!r.rpc_reply(&1, &id, tag, RpcOutcome::Result(json!(1))));
    open(&mut r, 1);
    assert!(!r.rpc_reply(&1, &id, tag, RpcOutcome::Result(json!(1))));
    assert!(!r.has_pending());
    assert_eq!(
        act1(&mut r, 1, json!({"action":"stopCar","tag":2})),
        json!({"event":"Error","tag":2,"payload":{"error":"InvalidAction"}})
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
        .map(|b| serde_json::from_slice(b).unwrap())
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

// ----- paced flushes --------------------------------------------------------------------------

/// Who got what from one flush: session -> frames.
fn received(f: Flush<Key>) -> BTreeMap<Key, Vec<Value>> {
    let mut out = BTreeMap::new();
    for d in f.deliveries {
        for s in d.sessions {
            out.insert(s, decode(&d.payload));
        }
    }
    out
}

#[test]
fn paced_flushes_space_each_session_and_serve_quiet_ones_at_once() {
    let ms = Duration::from_millis;
    let gap = ms(10);
    let mut r = relay();
    let t0 = Instant::now();
    assert_eq!(r.flush_wait(t0, gap), None, "nothing pending");
    r.open(1);
    r.open(2);
    assert_eq!(r.flush_wait(t0, gap), Some(Duration::ZERO), "never sent to");
    let got = received(r.flush_paced(t0, gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2]);

    // Session 1 was just sent to: its next message waits for the gap.
    r.on_message(&1, br#"{"action":"Ping","tag":"p"}"#);
    assert_eq!(r.flush_wait(t0 + ms(4), gap), Some(ms(6)));
    assert!(r.flush_paced(t0 + ms(4), gap).deliveries.is_empty());
    assert!(r.has_pending(), "kept for later");
    let got = received(r.flush_paced(t0 + gap, gap));
    assert_eq!(got[&1][0]["event"], "Pong");
    assert!(!r.has_pending());

    // Session 2 has been quiet since t0: served at once while 1 would wait.
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&2, br#"{"action":"Ping"}"#);
    let got = received(r.flush_paced(t0 + ms(12), gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(r.flush_wait(t0 + ms(12), gap), Some(ms(8)));
    let got = received(r.flush_paced(t0 + ms(20), gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1]);

    // Events that arrive within the gap are coalesced into the session's next message.
    sub(&mut r, 2, "calls", "q");
    for name in ["a", "b", "c"] {
        assert_eq!(delivered(&publish(&mut r, "calls", "q", name)), 1);
    }
    let now = t0 + ms(40);
    let got = received(r.flush_paced(now, gap));
    assert_eq!(seqs_of(&got[&2]), [1, 2, 3]);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "d")), 1);
    assert!(r.flush_paced(now + ms(9), gap).deliveries.is_empty());
    assert_eq!(seqs_of(&received(r.flush_paced(now + gap, gap))[&2]), [4]);
}
