//! Client actions and their replies: tags, errors, subscriptions, authentication, Resume,
//! configured RPC actions.

use super::*;

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
                "exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":1,"from":"history"}}))
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
        json!({"event":"Resumed","tag":1,"payload":{"exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":5,"from":"history"}})
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
            json!({"event":"Resumed","payload":{"exchange":"calls","routing_key":"q","recovered":true,"more":false,"last_seq":6,"from":"history"}})
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
        json!({"exchange":"calls","routing_key":"q","recovered":false,"more":false,"last_seq":10,"from":"history"})
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
        json!({"exchange":"calls","routing_key":"new","recovered":true,"more":false,"last_seq":0,"from":"history"})
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
fn a_new_identity_drops_the_subscriptions_it_may_not_hold_and_says_so() {
    let mut r = relay();
    open(&mut r, 1);
    let login = |r: &mut Relay<Key>, token: &str| {
        act1(
            r,
            1,
            json!({"action":"Authenticate","payload":{"token":token}}),
        )
    };
    login(&mut r, "admin-secret");
    sub(&mut r, 1, "admin", "*");
    sub(&mut r, 1, "calls", "q");
    assert_eq!(
        login(&mut r, "ops-secret"),
        json!({"event":"Authenticated","payload":{"name":"ops",
               "dropped":[{"exchange":"admin","routing_key":"*"}]}})
    );
    assert_eq!(
        act1(&mut r, 1, json!({"action":"ListSubscriptions"})),
        json!({"event":"YourSubscriptions","payload":{"subscriptions":[
            {"exchange":"calls","routing_key":"q"}]}})
    );
    assert_eq!(delivered(&publish(&mut r, "admin", "x", "Secret")), 0);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "Public")), 1);
}

#[test]
fn wrong_tokens_lock_authentication_after_the_configured_count() {
    let mut r = relay_with(r#"{"limits":{"auth_failures_per_session":3}}"#);
    open(&mut r, 1);
    open(&mut r, 2);
    let login = |r: &mut Relay<Key>, k: Key, token: &str| {
        act1(
            r,
            k,
            json!({"action":"Authenticate","payload":{"token":token}}),
        )
    };
    for _ in 0..3 {
        assert_eq!(login(&mut r, 1, "guess"), error("InvalidToken"));
    }
    // Even the right token is not checked any more on this session.
    assert_eq!(login(&mut r, 1, "admin-secret"), error("TooManyAttempts"));
    assert_eq!(r.stats().counters.auth_failures, 4);
    // Other sessions are not affected.
    assert_eq!(login(&mut r, 2, "admin-secret")["event"], "Authenticated");
    assert!(r
        .stats()
        .to_prometheus()
        .contains("relay_auth_failures_total 4"));
}
