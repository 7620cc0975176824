//! Resume: positions on an exchange, epochs, wildcards, gaps.

use super::*;

/// Sends `Resume` on `calls` with this relay's epoch; returns what the session got.
fn resume(r: &mut Relay<Key>, key: &str, since: u64) -> Vec<Value> {
    let msg = json!({"action":"Resume","tag":1,
           "payload":{"exchange":"calls","routing_key":key,"since":since,"epoch":r.epoch()}});
    act(r, 1, &msg)
}

#[test]
fn resume_without_gap_replays_missed_events_then_goes_live() {
    let mut r = relay();
    for n in 1..=5 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    open(&mut r, 1);
    let got = resume(&mut r, "q", 2);
    assert_eq!(seqs_of(&got), [3, 4, 5]);
    assert_eq!(got[0]["event"], "E3");
    assert_eq!(
        got[3],
        json!({"event":"Resumed","tag":1,"payload":{"exchange":"calls","routing_key":"q",
               "recovered":true,"more":false,"last_seq":5,"epoch":r.epoch(),"first_seq":3,
               "from":"history"}})
    );
    // Resume subscribed the key: live events continue with the next position, no gap.
    assert_eq!(
        publish(&mut r, "calls", "q", "E6"),
        Ack::Published {
            seq: 6,
            delivered_to: 1
        }
    );
    assert_eq!(seqs_of(&flush(&mut r)[&1]), [6]);
    // Resuming an already subscribed key is fine (no AlreadySubscribed), and up to date.
    let got = resume(&mut r, "q", 6).remove(0);
    assert_eq!(
        (&got["payload"]["recovered"], &got["payload"]["last_seq"]),
        (&json!(true), &json!(6))
    );
    assert_eq!(subscription_count(&mut r, 1), 1);
}

#[test]
fn a_wildcard_resumes_every_key_it_covers_in_position_order() {
    let mut r = relay();
    for (k, name) in [("q.a", "A1"), ("q.b", "B1"), ("x", "X1"), ("q.a", "A2")] {
        publish(&mut r, "calls", k, name);
    }
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q.*");
    // A client that had position 1 (A1) missed B1 and A2, whatever their keys.
    let got = resume(&mut r, "q.*", 1);
    let names: Vec<&str> = got.iter().map(|f| f["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["B1", "A2", "Resumed"]);
    assert_eq!(seqs_of(&got), [2, 4]);
    assert_eq!(got[2]["payload"]["recovered"], json!(true));
    assert_eq!(got[2]["payload"]["routing_key"], json!("q.*"));
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"}))["payload"]["subscriptions"],
        json!([{"exchange":"calls","routing_key":"q.*"}]),
        "the wildcard itself, no exact keys added"
    );
}

#[test]
fn resume_with_gap_sends_what_is_left_and_says_from_where() {
    let mut r = relay_with(r#"{"limits":{"history_per_key":3}}"#);
    for n in 1..=10 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    open(&mut r, 1);
    let got = resume(&mut r, "q", 4);
    assert_eq!(seqs_of(&got), [8, 9, 10]);
    assert_eq!(
        got[3]["payload"],
        json!({"exchange":"calls","routing_key":"q","recovered":false,"more":false,
               "last_seq":10,"epoch":r.epoch(),"first_seq":8,"from":"history"})
    );
    // A position beyond what this epoch numbered cannot be ours: replay what is kept.
    let got = resume(&mut r, "q", 99);
    assert_eq!(seqs_of(&got), [8, 9, 10]);
    assert_eq!(got[3]["payload"]["recovered"], false);
    // A key never published: nothing to send, nothing missed.
    let got = resume(&mut r, "new", 0).remove(0);
    assert_eq!(
        (&got["payload"]["recovered"], &got["payload"]["last_seq"]),
        (&json!(true), &json!(10))
    );
    assert_eq!(r.stats().counters.resumes_unrecovered, 2);
}

#[test]
fn a_position_from_another_epoch_or_without_one_is_not_recovered() {
    let mut r = relay();
    for n in 1..=5 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    open(&mut r, 1);
    // The old run's position 3: the new run's 4 and 5 look like the rest, but its 1..3
    // would be lost if they were taken for the old ones. Everything kept is replayed.
    let other = json!({"action":"Resume",
                       "payload":{"exchange":"calls","routing_key":"q","since":3,"epoch":"relay-a.0"}});
    let got = act(&mut r, 1, &other);
    assert_eq!(seqs_of(&got), [1, 2, 3, 4, 5]);
    let p = &got[5]["payload"];
    assert_eq!(
        (&p["recovered"], &p["first_seq"]),
        (&json!(false), &json!(1))
    );
    // No epoch: only "I have nothing" (since 0) can be trusted.
    let bare = |since: u64| json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"q","since":since}});
    let got = act(&mut r, 1, &bare(3));
    assert_eq!(
        (seqs_of(&got).len(), &got[5]["payload"]["recovered"]),
        (5, &json!(false))
    );
    let got = act(&mut r, 1, &bare(0));
    assert_eq!(
        (seqs_of(&got).len(), &got[5]["payload"]["recovered"]),
        (5, &json!(true))
    );
}

#[test]
fn resume_needs_subscribe_rights() {
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
