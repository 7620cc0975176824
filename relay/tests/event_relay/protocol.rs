//! The action/event protocol through Mongrel2: welcome, subscriptions, tags, errors,
//! authentication and Resume.

use super::*;

#[test]
fn welcome_subscribe_wildcard_and_tags_on_every_reply() {
    let f = Fixture::start();
    let mut a = f.ws();
    let mut b = f.ws();
    assert_eq!(a.id.len(), 16);
    assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()), "{}", a.id);
    assert_ne!(a.id, b.id);

    // Tags of any JSON type come back on the reply.
    for tag in [json!("t-1"), json!(7), json!({"n": [1, 2]}), Value::Null] {
        let reply = a.call("Ping", tag.clone(), json!({}));
        assert_eq!(reply, json!({"event":"Pong","tag":tag,"payload":{}}));
    }
    let reply = a.call(
        "Subscribe",
        json!("s1"),
        json!({"exchange":"calls","routing_key":"queue.sales"}),
    );
    assert_eq!(
        reply,
        json!({"event":"Subscribed","tag":"s1","payload":{"exchange":"calls","routing_key":"queue.sales"}})
    );
    // A numeric routing key is taken as its decimal text (Myxi clients send ids).
    let reply = a.call(
        "Subscribe",
        json!("s2"),
        json!({"exchange":"agents","routing_keys":[7, "8"]}),
    );
    assert_eq!(
        reply,
        json!({"event":"Subscribed","tag":"s2","payload":{"exchange":"agents","routing_keys":["7","8"]}})
    );
    let reply = b.call(
        "Subscribe",
        json!("w"),
        json!({"exchange":"calls","routing_key":"queue.*"}),
    );
    assert_eq!(reply["event"], "Subscribed");
    let reply = a.call("ListSubscriptions", json!("l"), json!({}));
    assert_eq!(reply["tag"], "l");
    assert_eq!(reply["event"], "YourSubscriptions");
    let mut listed: Vec<Value> = reply["payload"]["subscriptions"]
        .as_array()
        .expect("list")
        .clone();
    listed.sort_by_key(|v| v.to_string());
    assert_eq!(
        listed,
        vec![
            json!({"exchange":"agents","routing_key":"7"}),
            json!({"exchange":"agents","routing_key":"8"}),
            json!({"exchange":"calls","routing_key":"queue.sales"}),
        ]
    );

    // The injector's ack counts the sessions each event was queued to.
    let inj = f.injector();
    let payload = json!({"caller":"555-1234","agent":"7"});
    let ack = inj.publish("calls", "queue.sales", "CallOffered", payload.clone());
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":2}));
    // Positions count every key of the exchange.
    let ack = inj.publish("calls", "queue.support", "CallOffered", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":2,"delivered_to":1}));
    let ack = inj.publish("calls", "other", "CallOffered", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":3,"delivered_to":0}));
    let ack = inj.publish("agents", "7", "AgentReady", json!({}));
    assert_eq!(ack, json!({"ok":true,"seq":1,"delivered_to":1}));

    let sales = event_json("calls", "queue.sales", "CallOffered", payload, 1);
    assert_eq!(a.recv(), sales);
    assert_eq!(
        a.recv(),
        event_json("agents", "7", "AgentReady", json!({}), 1)
    );
    a.assert_nothing_pending();
    assert_eq!(b.recv(), sales);
    assert_eq!(
        b.recv(),
        event_json("calls", "queue.support", "CallOffered", json!({}), 2)
    );
    b.assert_nothing_pending();
}

#[test]
fn every_error_name_keeps_the_session_open_and_auth_grants_access() {
    let f = Fixture::start();
    let mut c = f.ws();
    let error = |name: &str, tag: Option<Value>| match tag {
        Some(tag) => json!({"event":"Error","tag":tag,"payload":{"error":name}}),
        None => json!({"event":"Error","payload":{"error":name}}),
    };

    c.send_text("this is not JSON");
    assert_eq!(c.recv(), error("InvalidJSON", None));
    c.send_text("[1,2,3]");
    assert_eq!(c.recv(), error("InvalidJSON", None));
    c.send(&json!({"tag": "no-action"}));
    assert_eq!(c.recv(), error("InvalidAction", Some(json!("no-action"))));
    let reply = c.call("Fly", json!(1), json!({}));
    assert_eq!(reply, error("InvalidAction", Some(json!(1))));
    let reply = c.call("Subscribe", json!(2), json!({"exchange":"calls"}));
    assert_eq!(reply, error("InvalidPayload", Some(json!(2))));
    // Bigger than limits.message_size (64 KiB): refused unparsed, so without the tag.
    let huge = json!({"action":"Ping","tag":"big","payload":{"pad":"x".repeat(100_000)}});
    c.send(&huge);
    assert_eq!(c.recv(), error("InvalidPayload", None));
    let reply = c.call(
        "Subscribe",
        json!(3),
        json!({"exchange":"nope","routing_key":"x"}),
    );
    assert_eq!(reply, error("InvalidExchange", Some(json!(3))));
    let reply = c.call(
        "Subscribe",
        json!(4),
        json!({"exchange":"queues","routing_key":"elsewhere"}),
    );
    assert_eq!(reply, error("SubscriptionDenied", Some(json!(4))));
    c.subscribe("calls", "a");
    let reply = c.call(
        "Subscribe",
        json!(5),
        json!({"exchange":"calls","routing_key":"a"}),
    );
    assert_eq!(reply, error("AlreadySubscribed", Some(json!(5))));
    let reply = c.call(
        "Subscribe",
        json!(6),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply, error("AuthRequired", Some(json!(6))));
    let reply = c.call("Authenticate", json!(7), json!({"token":"wrong"}));
    assert_eq!(reply, error("InvalidToken", Some(json!(7))));
    // The limit is 5 and one is held: five more are refused all together.
    let reply = c.call(
        "Subscribe",
        json!(8),
        json!({"exchange":"calls","routing_keys":["b","c","d","e","f"]}),
    );
    assert_eq!(reply, error("TooManySubscriptions", Some(json!(8))));
    let reply = c.call("ListSubscriptions", json!(9), json!({}));
    assert_eq!(
        reply["payload"]["subscriptions"],
        json!([{"exchange":"calls","routing_key":"a"}])
    );

    // A token whose name the exchange does not list: denied, not "auth required".
    let reply = c.call("Authenticate", json!(10), json!({"token": OPS_TOKEN}));
    assert_eq!(
        reply,
        json!({"event":"Authenticated","tag":10,"payload":{"name":"ops"}})
    );
    let reply = c.call(
        "Subscribe",
        json!(11),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply, error("SubscriptionDenied", Some(json!(11))));
    let reply = c.call("Authenticate", json!(12), json!({"token": ADMIN_TOKEN}));
    assert_eq!(reply["payload"]["name"], "admin");
    let reply = c.call(
        "Subscribe",
        json!(13),
        json!({"exchange":"admin","routing_key":"x"}),
    );
    assert_eq!(reply["event"], "Subscribed");
    let ack = f
        .injector()
        .publish("admin", "x", "Secret", json!({"k":"v"}));
    assert_eq!(ack["delivered_to"], 1);
    assert_eq!(
        c.recv(),
        event_json("admin", "x", "Secret", json!({"k":"v"}), 1)
    );

    // After all of that the session is still open and alone.
    c.assert_nothing_pending();
    assert_eq!(f.status()["sessions"], 1);

    // Beyond the transport bound (4 x message_size, at least 1 MiB) the Transceiver closes.
    let mut big = f.ws();
    big.send_text(&"y".repeat(2 << 20));
    assert_eq!(big.close_code(), Some(1009));
    c.assert_nothing_pending();
}

#[test]
fn unsubscribe_one_key_keys_an_exchange_or_everything() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "a");
    c.subscribe("calls", "b");
    c.subscribe("calls", "q.*");
    c.subscribe("agents", "x");
    let list = |c: &mut Client| {
        let reply = c.call("ListSubscriptions", json!("l"), json!({}));
        let mut keys: Vec<String> = reply["payload"]["subscriptions"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["exchange"].as_str().unwrap(),
                    s["routing_key"].as_str().unwrap()
                )
            })
            .collect();
        keys.sort();
        keys
    };

    let reply = c.call(
        "Unsubscribe",
        json!("u1"),
        json!({"exchange":"calls","routing_key":"a"}),
    );
    assert_eq!(
        reply,
        json!({"event":"Unsubscribed","tag":"u1","payload":{"exchange":"calls","routing_key":"a"}})
    );
    assert_eq!(list(&mut c), ["agents/x", "calls/b", "calls/q.*"]);
    let reply = c.call(
        "Unsubscribe",
        json!("u2"),
        json!({"exchange":"calls","routing_keys":["b"]}),
    );
    assert_eq!(
        (reply["event"].clone(), reply["tag"].clone()),
        (json!("Unsubscribed"), json!("u2"))
    );
    assert_eq!(list(&mut c), ["agents/x", "calls/q.*"]);
    let reply = c.call("Unsubscribe", json!("u3"), json!({"exchange":"calls"}));
    assert_eq!(reply["event"], "Unsubscribed");
    assert_eq!(list(&mut c), ["agents/x"]);
    let reply = c.call("Unsubscribe", json!("u4"), json!({}));
    assert_eq!(
        (reply["event"].clone(), reply["tag"].clone()),
        (json!("Unsubscribed"), json!("u4"))
    );
    assert!(list(&mut c).is_empty());

    let inj = f.injector();
    for (exchange, key) in [("calls", "a"), ("calls", "q.1"), ("agents", "x")] {
        assert_eq!(
            inj.publish(exchange, key, "E", json!({}))["delivered_to"],
            0
        );
    }
    c.assert_nothing_pending();
    let status = f.status();
    assert_eq!(
        status["subscriptions"],
        json!({"admin":0,"agents":0,"calls":0,"queues":0})
    );
}

#[test]
fn resume_replays_history_with_and_without_a_gap() {
    let f = Fixture::start();
    let inj = f.injector();
    for n in 1..=5 {
        inj.publish("calls", "r1", "Tick", json!({"n": n}));
    }
    let mut c = f.ws();
    let epoch = c.epoch.clone();
    let reply = c.call(
        "Resume",
        json!("r"),
        json!({"exchange":"calls","routing_key":"r1","since":2,"epoch":epoch}),
    );
    // The replay comes first, then the tagged Resumed.
    assert_eq!(reply, event_json("calls", "r1", "Tick", json!({"n":3}), 3));
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":4}), 4)
    );
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":5}), 5)
    );
    assert_eq!(
        c.recv(),
        json!({"event":"Resumed","tag":"r","payload":{"exchange":"calls","routing_key":"r1",
               "recovered":true,"more":false,"last_seq":5,"epoch":epoch,"first_seq":3,
               "from":"history"}})
    );
    // Resume subscribed the key: live events follow.
    assert_eq!(
        inj.publish("calls", "r1", "Tick", json!({"n":6}))["delivered_to"],
        1
    );
    assert_eq!(
        c.recv(),
        event_json("calls", "r1", "Tick", json!({"n":6}), 6)
    );
    c.assert_nothing_pending();

    // history_per_key is 10: after 15 events on r2 (positions 7..21), 7..11 are gone.
    for n in 1..=15 {
        inj.publish("calls", "r2", "Tick", json!({"n": n}));
    }
    let mut late = f.ws();
    late.send(&json!({"action":"Resume","tag":"g",
                      "payload":{"exchange":"calls","routing_key":"r2","since":8,"epoch":epoch}}));
    for n in 6..=15 {
        assert_eq!(
            late.recv(),
            event_json("calls", "r2", "Tick", json!({"n": n}), n + 6)
        );
    }
    assert_eq!(
        late.recv(),
        json!({"event":"Resumed","tag":"g","payload":{"exchange":"calls","routing_key":"r2",
               "recovered":false,"more":false,"last_seq":21,"epoch":epoch,"first_seq":12,
               "from":"history"}})
    );
    late.assert_nothing_pending();
}
