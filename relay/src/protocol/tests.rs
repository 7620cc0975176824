use super::*;

fn v(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn envelope_with_tag_and_payload() {
    let e = parse_envelope(
        br#"{"action":"Ping","tag":[1,"x"],"payload":{"a":1}}"#,
        1000,
    )
    .unwrap();
    assert_eq!(e.action, "Ping");
    assert_eq!(e.tag, Some(json!([1, "x"])));
    assert_eq!(e.payload.get("a"), Some(&json!(1)));
}

#[test]
fn envelope_errors_carry_the_tag_when_readable() {
    let r = parse_envelope(b"not json", 1000).unwrap_err();
    assert_eq!(
        r,
        Rejected {
            error: ErrorName::InvalidJson,
            tag: None
        }
    );
    let r = parse_envelope(b"[1,2]", 1000).unwrap_err();
    assert_eq!(r.error, ErrorName::InvalidJson);
    let r = parse_envelope(br#"{"tag":7}"#, 1000).unwrap_err();
    assert_eq!(
        r,
        Rejected {
            error: ErrorName::InvalidAction,
            tag: Some(json!(7))
        }
    );
    let r = parse_envelope(br#"{"tag":"t","action":5}"#, 1000).unwrap_err();
    assert_eq!(r.error, ErrorName::InvalidAction);
    let r = parse_envelope(br#"{"tag":"t","action":"Ping","payload":[]}"#, 1000).unwrap_err();
    assert_eq!(
        r,
        Rejected {
            error: ErrorName::InvalidPayload,
            tag: Some(json!("t"))
        }
    );
    let r = parse_envelope(&[b' '; 11], 10).unwrap_err();
    assert_eq!(
        r,
        Rejected {
            error: ErrorName::InvalidPayload,
            tag: None
        }
    );
}

#[test]
fn null_payload_is_empty_and_null_tag_is_kept() {
    let e = parse_envelope(br#"{"action":"Ping","tag":null,"payload":null}"#, 100).unwrap();
    assert_eq!(e.tag, Some(Value::Null));
    assert!(e.payload.is_empty());
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        parse_envelope(deep.as_bytes(), usize::MAX)
            .unwrap_err()
            .error,
        ErrorName::InvalidJson
    );
}

fn action(json: Value) -> Result<Action, ErrorName> {
    let Value::Object(m) = json["payload"].clone() else {
        panic!()
    };
    Action::parse(json["action"].as_str().unwrap(), &m, 100)
}

#[test]
fn a_key_list_over_the_limit_is_refused_before_any_key_is_read() {
    // 8,100 keys, the second of them invalid: the length check answers first, so no key
    // is parsed or compared (issue 18: a linear de-duplication per key stalled the loop).
    let mut keys: Vec<Value> = (0..8100).map(|i| json!(format!("k{i}"))).collect();
    keys[1] = json!({});
    for name in ["Subscribe", "Unsubscribe"] {
        let payload = json!({"exchange":"w","routing_keys":keys.clone()});
        assert_eq!(
            action(json!({"action":name,"payload":payload})),
            Err(ErrorName::TooManySubscriptions),
            "{name}"
        );
    }
    // At the limit, duplicates are folded (by a set) and order is kept.
    let mut at_limit: Vec<Value> = (0..99).map(|i| json!(format!("k{i}"))).collect();
    at_limit.push(json!("k0"));
    let Ok(Action::Subscribe { keys, .. }) =
        action(json!({"action":"Subscribe","payload":{"exchange":"w","routing_keys":at_limit}}))
    else {
        panic!()
    };
    assert_eq!(keys.as_slice().len(), 99);
    assert_eq!(keys.as_slice()[98], "k98");
}

#[test]
fn subscribe_forms() {
    assert_eq!(
        action(json!({"action":"Subscribe","payload":{"exchange":"widgets","routing_key":1234}})),
        Ok(Action::Subscribe {
            exchange: "widgets".into(),
            keys: Keys::One("1234".into())
        })
    );
    assert_eq!(
        action(
            json!({"action":"Subscribe","payload":{"exchange":"w","routing_keys":["a",2,"a","q.*"]}})
        ),
        Ok(Action::Subscribe {
            exchange: "w".into(),
            keys: Keys::Many(vec!["a".into(), "2".into(), "q.*".into()])
        })
    );
    for bad in [
        json!({"exchange":"w"}),
        json!({"routing_key":"a"}),
        json!({"exchange":1,"routing_key":"a"}),
        json!({"exchange":"w","routing_key":true}),
        json!({"exchange":"w","routing_keys":[]}),
        json!({"exchange":"w","routing_keys":"a"}),
        json!({"exchange":"w","routing_keys":[{}]}),
        json!({"exchange":"w","routing_key":"a","routing_keys":["b"]}),
        json!({"exchange":"w","routing_key":"k".repeat(MAX_ROUTING_KEY + 1)}),
    ] {
        assert_eq!(
            action(json!({"action":"Subscribe","payload":bad})),
            Err(ErrorName::InvalidPayload),
            "{bad}"
        );
    }
}

#[test]
fn unsubscribe_forms() {
    assert_eq!(
        action(json!({"action":"Unsubscribe","payload":{}})),
        Ok(Action::Unsubscribe {
            exchange: None,
            keys: None
        })
    );
    assert_eq!(
        action(json!({"action":"Unsubscribe","payload":{"exchange":"e"}})),
        Ok(Action::Unsubscribe {
            exchange: Some("e".into()),
            keys: None
        })
    );
    assert_eq!(
        action(json!({"action":"Unsubscribe","payload":{"exchange":"e","routing_keys":[1]}})),
        Ok(Action::Unsubscribe {
            exchange: Some("e".into()),
            keys: Some(Keys::Many(vec!["1".into()]))
        })
    );
    assert_eq!(
        action(json!({"action":"Unsubscribe","payload":{"routing_key":"k"}})),
        Err(ErrorName::InvalidPayload)
    );
}

#[test]
fn resume_authenticate_and_others() {
    assert_eq!(
        action(json!({"action":"Resume","payload":{"exchange":"e","routing_key":5,"since":3}})),
        Ok(Action::Resume {
            exchange: "e".into(),
            routing_key: "5".into(),
            position: Position {
                epoch: None,
                seq: 3
            }
        })
    );
    assert_eq!(
        action(
            json!({"action":"Resume","payload":{"exchange":"e","routing_key":"k.*","since":1,"epoch":"r.1"}})
        ),
        Ok(Action::Resume {
            exchange: "e".into(),
            routing_key: "k.*".into(),
            position: Position {
                epoch: Some("r.1".into()),
                seq: 1
            }
        }),
        "a wildcard resumes every key it covers"
    );
    for bad in [
        json!({"exchange":"e","routing_key":"k"}),
        json!({"exchange":"e","routing_key":"k","since":-1}),
        json!({"exchange":"e","routing_key":"k","since":1,"epoch":1}),
        json!({"exchange":"e","routing_key":"k","since":1,"epoch":"x".repeat(MAX_EPOCH + 1)}),
        json!({"exchange":"e","since":1}),
    ] {
        assert_eq!(
            action(json!({"action":"Resume","payload":bad})),
            Err(ErrorName::InvalidPayload)
        );
    }
    assert_eq!(
        action(json!({"action":"Authenticate","payload":{"token":"t"}})),
        Ok(Action::Authenticate { token: "t".into() })
    );
    assert_eq!(
        action(json!({"action":"Authenticate","payload":{"token":1}})),
        Err(ErrorName::InvalidPayload)
    );
    assert_eq!(
        action(json!({"action":"Ping","payload":{}})),
        Ok(Action::Ping)
    );
    assert_eq!(
        action(json!({"action":"ListSubscriptions","payload":{}})),
        Ok(Action::ListSubscriptions)
    );
    assert_eq!(
        action(json!({"action":"moveCar","payload":{}})),
        Ok(Action::Other("moveCar".into()))
    );
}

#[test]
fn reply_shapes() {
    assert_eq!(
        v(&reply_json("Pong", Some(&json!("t1")), &json!({}))),
        json!({"event":"Pong","tag":"t1","payload":{}})
    );
    assert_eq!(
        reply_json("Pong", None, &json!({})),
        br#"{"event":"Pong","payload":{}}"#
    );
    assert_eq!(
        error_json(ErrorName::InvalidJson, Some(&json!(1))),
        br#"{"event":"Error","tag":1,"payload":{"error":"InvalidJSON"}}"#
    );
    assert_eq!(
        v(&welcome_json(
            "00ff00ff00ff00ff",
            "relay.0000002a",
            "relay.0000002a",
            &WelcomeInfo::default()
        )),
        json!({"event":"Welcome","payload":{"id":"00ff00ff00ff00ff","run":"relay.0000002a",
               "epoch":"relay.0000002a","relay":"","public":null}})
    );
    let info = WelcomeInfo {
        relay: "east".into(),
        member: Some("mq-2".into()),
        public: json!([{"exchange":"calls","routing_keys":["queue.*"]}]),
    };
    assert_eq!(
        v(&welcome_json("01", "east.0000002a", "stream:1", &info)),
        json!({"event":"Welcome","payload":{"id":"01","run":"east.0000002a","epoch":"stream:1","relay":"east",
               "member":"mq-2","public":[{"exchange":"calls","routing_keys":["queue.*"]}]}})
    );
    assert_eq!(
        v(&lagged_json("calls", "q", 7)),
        json!({"event":"Lagged","payload":{"exchange":"calls","routing_key":"q","last_seq":7}})
    );
    let mut p = Map::new();
    p.insert("n".into(), json!("\"quoted\""));
    assert_eq!(
        v(&event_json(
            "CallOffered",
            &p,
            "calls",
            "queue.sales",
            9,
            None
        )),
        json!({"event":"CallOffered","payload":{"n":"\"quoted\""},"mq":{"e":"calls","rk":"queue.sales","seq":9}})
    );
    assert_eq!(
        v(&event_json(
            "E",
            &Map::new(),
            "calls",
            "q",
            1,
            Some(1_700_000_000_123)
        )),
        json!({"event":"E","payload":{},"mq":{"e":"calls","rk":"q","seq":1,"ts":1_700_000_000_123_u64}})
    );
}

#[test]
fn every_error_name() {
    let names: Vec<&str> = [
        ErrorName::InvalidJson,
        ErrorName::InvalidAction,
        ErrorName::InvalidPayload,
        ErrorName::InvalidExchange,
        ErrorName::SubscriptionDenied,
        ErrorName::AlreadySubscribed,
        ErrorName::AuthRequired,
        ErrorName::InvalidToken,
        ErrorName::TooManySubscriptions,
        ErrorName::BackendTimeout,
        ErrorName::BackendError,
        ErrorName::BackendUnavailable,
        ErrorName::TooManyCalls,
        ErrorName::TooManyAttempts,
    ]
    .iter()
    .map(|e| e.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "InvalidJSON",
            "InvalidAction",
            "InvalidPayload",
            "InvalidExchange",
            "SubscriptionDenied",
            "AlreadySubscribed",
            "AuthRequired",
            "InvalidToken",
            "TooManySubscriptions",
            "BackendTimeout",
            "BackendError",
            "BackendUnavailable",
            "TooManyCalls",
            "TooManyAttempts"
        ]
    );
}

#[test]
fn event_input_defaults_and_errors() {
    let e = parse_event_input(br#"{"exchange":"calls","event":"X"}"#, 1000).unwrap();
    assert_eq!(e.routing_key, "");
    assert!(e.payload.is_empty());
    assert_eq!(e.origin, None);
    assert_eq!(e.ts, None, "the relay stamps it");
    let e = parse_event_input(
        br#"{"exchange":"calls","routing_key":12,"event":"X","payload":{"a":1},"ts":1700000000123,"origin":{"relay":"r1","seq":4,"hops":2}}"#,
        1000,
    )
    .unwrap();
    assert_eq!(e.routing_key, "12");
    assert_eq!(e.ts, Some(1_700_000_000_123));
    assert_eq!(
        e.origin,
        Some(Origin {
            relay: "r1".into(),
            seq: 4,
            hops: 2
        })
    );

    assert_eq!(parse_event_input(b"{", 1000), Err(ErrorName::InvalidJson));
    assert_eq!(
        parse_event_input(b"\"s\"", 1000),
        Err(ErrorName::InvalidJson)
    );
    for bad in [
        r#"{"event":"X"}"#,
        r#"{"exchange":"c"}"#,
        r#"{"exchange":"c","event":""}"#,
        r#"{"exchange":"c","event":"X","payload":[1]}"#,
        r#"{"exchange":"c","event":"X","payload":"s"}"#,
        r#"{"exchange":"c","event":"X","routing_key":"a*"}"#,
        r#"{"exchange":"c","event":"X","routing_key":[]}"#,
        r#"{"exchange":"c","event":"X","origin":{"seq":1}}"#,
        r#"{"exchange":"c","event":"X","ts":-1}"#,
        r#"{"exchange":"c","event":"X","ts":"now"}"#,
        r#"{"exchange":"c","event":"X","origin":{"relay":"r","seq":1,"hops":-1}}"#,
    ] {
        assert_eq!(
            parse_event_input(bad.as_bytes(), 1000),
            Err(ErrorName::InvalidPayload),
            "{bad}"
        );
    }
    assert_eq!(
        parse_event_input(br#"{"exchange":"calls","event":"X"}"#, 10),
        Err(ErrorName::InvalidPayload)
    );
}

#[test]
fn ack_shapes_and_statuses() {
    let a = Ack::Published {
        seq: 3,
        delivered_to: 2,
    };
    assert_eq!(v(&a.to_json()), json!({"ok":true,"seq":3,"delivered_to":2}));
    assert_eq!(a.http_status(), 202);
    let r = Ack::Rejected(ErrorName::InvalidExchange);
    assert_eq!(
        v(&r.to_json()),
        json!({"ok":false,"error":"InvalidExchange"})
    );
    assert_eq!(r.http_status(), 400);
    assert_eq!(Ack::Rejected(ErrorName::AuthRequired).http_status(), 401);
    assert_eq!(
        Ack::Rejected(ErrorName::BackendUnavailable).http_status(),
        503
    );
    assert_eq!(
        v(&Ack::Confirmed.to_json()),
        json!({"ok":true,"confirmed":true})
    );
    assert_eq!(Ack::Confirmed.http_status(), 202);
    assert_eq!(
        v(&Ack::Duplicate.to_json()),
        json!({"ok":true,"duplicate":true})
    );
}
