//! Behaviour of the relay core as a client and a publisher see it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::frame::split_text_frames;
use crate::protocol::DEFAULT_MAX_HOPS;

mod actions;
mod flush;
mod group;
mod publish;
mod resume;
mod sessions;

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

/// The frames of a payload; events' publish times (`mq.ts`, the wall clock) are checked
/// to be there and left out, so expectations can be written as literals.
fn decode(payload: &[u8]) -> Vec<Value> {
    split_text_frames(payload)
        .iter()
        .map(|f| {
            let mut v: Value = serde_json::from_slice(f).unwrap();
            if let Some(mq) = v.get_mut("mq").and_then(Value::as_object_mut) {
                let ts = mq.remove("ts");
                assert!(ts.as_ref().is_some_and(Value::is_u64), "mq.ts: {ts:?}");
            }
            v
        })
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
    let run = r.welcome_run().to_owned();
    assert!(!run.contains(r.origin_id()) && run.len() == 16, "{run}");
    assert_eq!(
        got,
        vec![
            json!({"event":"Welcome","payload":{"id":id,"run":run,"epoch":r.epoch(),
            "relay":r.welcome.relay,"public":r.config().public_subscriptions()}})
        ]
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

/// How many subscriptions `ListSubscriptions` lists for `k`.
fn subscription_count(r: &mut Relay<Key>, k: Key) -> usize {
    let got = act1(r, k, json!({"action":"ListSubscriptions"}));
    got["payload"]["subscriptions"]
        .as_array()
        .map_or(0, Vec::len)
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
