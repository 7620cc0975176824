use super::*;

const UUID: &str = "54c6e5d2-2b70-4f4e-a5c5-5e3b7c1d345e";

#[test]
fn encodes_exact_wire_format() {
    assert_eq!(
        reply(UUID, &[7], b"hello").unwrap(),
        format!("{UUID} 1:7, hello").into_bytes()
    );
    assert_eq!(reply("h", &[1, 22, 333], b"x").unwrap(), b"h 8:1 22 333, x");
    assert_eq!(
        reply("h", &[u64::MAX], b"").unwrap(),
        b"h 20:18446744073709551615, "
    );
    let mut out = b"keep".to_vec();
    encode_reply("h", &[0], b"\x00\xff", &mut out).unwrap();
    assert_eq!(out, b"keeph 1:0, \x00\xff", "appends");
}

#[test]
fn close_is_an_empty_body() {
    let msg = close("h", &[5, 6]).unwrap();
    assert_eq!(msg, b"h 3:5 6, ");
    let parsed = Reply::parse(&msg).unwrap();
    assert!(parsed.is_close());
    let mut out = Vec::new();
    encode_close("h", &[5, 6], &mut out).unwrap();
    assert_eq!(out, msg);
}

#[test]
fn rejects_empty_targets_and_bad_uuids() {
    assert_eq!(reply("h", &[], b"x"), Err(ReplyError::EmptyTargets));
    assert_eq!(close("h", &[]), Err(ReplyError::EmptyTargets));
    for bad in ["", "a b", "a\n", "a\0b", "a\tb", "a\u{7f}"] {
        assert_eq!(
            reply(bad, &[1], b"x"),
            Err(ReplyError::InvalidUuid(bad.to_owned())),
            "{bad:?}"
        );
        assert!(batched(bad, &[1], b"x", 128).is_err());
        assert!(ctl_cancel(bad, &[1]).is_err());
    }
    assert!(reply("ABC-xyz-019", &[1], b"x").is_ok());
}

#[test]
fn free_form_senders_frame_but_only_some_suit_mongrel2() {
    // The seed's Python Server calls itself `python_server`; Mongrel2's send_ident is free-form.
    assert_eq!(
        reply("python_server", &[1], b"x").unwrap(),
        b"python_server 1:1, x"
    );
    assert_eq!(Reply::parse(b"h_1 1:1, x").unwrap().sender, "h_1");
    for (uuid, mongrel2) in [
        ("ABC-xyz-019", true),
        ("python_server", false),
        ("a:b", false),
        ("", false),
    ] {
        assert_eq!(is_mongrel2_uuid(uuid), mongrel2, "{uuid:?}");
    }
}

#[test]
fn batches_respect_handler_targets() {
    let ids: Vec<u64> = (1..=1000).collect();
    let msgs = batched(UUID, &ids, b"body", DEFAULT_HANDLER_TARGETS).unwrap();
    assert_eq!(msgs.len(), 8);
    let mut seen = Vec::new();
    for msg in &msgs {
        assert_eq!(msg.capacity(), msg.len(), "exactly sized");
        let r = Reply::parse(msg).unwrap();
        assert!(r.ids.len() <= DEFAULT_HANDLER_TARGETS);
        assert_eq!(r.body, b"body");
        assert_eq!(r.sender, UUID);
        seen.extend(r.ids);
    }
    assert_eq!(seen, ids);
    assert_eq!(batched("h", &ids[..128], b"", 128).unwrap().len(), 1);
    assert_eq!(batched("h", &ids[..129], b"", 128).unwrap().len(), 2);
    assert_eq!(batched("h", &ids[..3], b"", 1).unwrap().len(), 3);
    assert_eq!(
        batched("h", &ids, b"", 0),
        Err(ReplyError::InvalidMaxTargets)
    );
    assert_eq!(batched("h", &[], b"", 5), Err(ReplyError::EmptyTargets));

    let mut it = batches("h", &ids, b"z", 300).unwrap();
    assert_eq!(it.len(), 4);
    let mut out = Vec::new();
    assert!(it.next_into(&mut out));
    assert_eq!(
        Reply::parse_with_max_targets(&out, 300).unwrap().ids.len(),
        300
    );
    assert_eq!(it.count(), 3);
}

#[test]
fn extended_syntax_prefixes_x_once() {
    // handler_parser.rl: IdentList = ('X ')? Identifier*, so X precedes the list once.
    let msg = ctl_keep_alive("h", &[3, 7]).unwrap();
    assert_eq!(msg, b"h 5:X 3 7, 31:3:ctl,21:10:keep-alive,4:true!}]");
    let r = Reply::parse(&msg).unwrap();
    assert!(r.extended);
    assert!(!r.is_close());
    assert_eq!(r.ids, [3, 7]);
    let (key, value) = r.extended_value().unwrap();
    assert_eq!(key, "ctl");
    assert_eq!(
        value.as_dict().unwrap().get("keep-alive"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn ctl_helpers() {
    let credits = ctl_credits("h", &[9], 1024).unwrap();
    assert_eq!(credits, b"h 3:X 9, 27:3:ctl,17:7:credits,4:1024#}]");
    let (_, value) = Reply::parse(&credits).unwrap().extended_value().unwrap();
    assert_eq!(
        value
            .as_dict()
            .unwrap()
            .get("credits")
            .and_then(Value::as_i64),
        Some(1024)
    );
    assert_eq!(
        ctl_credits("h", &[9], 1 << 31),
        Err(ReplyError::InvalidCredits(1 << 31))
    );
    assert!(ctl_credits("h", &[9], i32::MAX as u64).is_ok());

    let cancel = ctl_cancel("h", &[1]).unwrap();
    let (key, value) = Reply::parse(&cancel).unwrap().extended_value().unwrap();
    assert_eq!(key, "ctl");
    assert!(value.as_dict().unwrap().get("cancel").is_some());
    assert_eq!(ctl_keep_alive("h", &[]), Err(ReplyError::EmptyTargets));
}

#[test]
fn encode_extended_any_value() {
    let mut out = Vec::new();
    encode_extended(
        "h",
        &[1],
        "custom",
        &Value::from(vec![Value::Integer(1)]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, b"h 3:X 1, 16:6:custom,4:1:1#]]");
    let mut out = b"keep".to_vec();
    assert_eq!(
        encode_extended("h", &[1], "k", &Value::Float(f64::NAN), &mut out),
        Err(ReplyError::Tnetstring(tnetstring::Error::NonFiniteFloat))
    );
    assert_eq!(out, b"keep", "nothing half-written");
}

#[test]
fn parse_follows_mongrel2_grammar() {
    let r = Reply::parse(b"h 6:1 2 3 , body with , and spaces").unwrap();
    assert_eq!(r.ids, [1, 2, 3], "trailing space allowed");
    assert_eq!(r.body, b"body with , and spaces");
    assert!(!r.extended);
    assert_eq!(Reply::parse(b"h 1:1, ").unwrap().body, b"", "empty body");

    use ReplyError as E;
    let cases: Vec<(&[u8], ReplyError)> = vec![
        (
            b"h",
            E::MissingSpace {
                field: "uuid",
                offset: 1,
            },
        ),
        (b" 1:1, x", E::InvalidUuid(String::new())),
        (b"h\t1 1:1, x", E::InvalidUuid("h\t1".into())),
        (
            b"h 1:1,x",
            E::MissingSpace {
                field: "targets",
                offset: 6,
            },
        ),
        (
            b"h 1:1,",
            E::MissingSpace {
                field: "targets",
                offset: 6,
            },
        ),
        (b"h 0:, x", E::EmptyTargets),
        (b"h 2:X , x", E::EmptyTargets),
        (b"h 3:1  , x", E::InvalidTargets { offset: 6 }),
        (b"h 3:1 a, x", E::InvalidTargets { offset: 6 }),
        (b"h 3: 12, x", E::InvalidTargets { offset: 4 }),
        (b"h 2:X1, x", E::InvalidTargets { offset: 4 }),
        (b"h 1:1# x", E::InvalidTargets { offset: 5 }),
        (
            b"h 20:18446744073709551616, x",
            E::InvalidTargets { offset: 5 },
        ),
        (
            b"h 9:1 2, x",
            E::Tnetstring(tnetstring::Error::Truncated { offset: 2 }),
        ),
        (
            b"h 1234567890:1, x",
            E::Tnetstring(tnetstring::Error::LengthTooLong { offset: 2 }),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            Reply::parse(input),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn parse_bounds_target_count() {
    let ids: Vec<u64> = (0..129).collect();
    let mut msg = Vec::new();
    encode_reply("h", &ids, b"x", &mut msg).unwrap();
    assert_eq!(
        Reply::parse(&msg),
        Err(ReplyError::TooManyTargets { max: 128 })
    );
    assert_eq!(Reply::parse_with_max_targets(&msg, 129).unwrap().ids, ids);
}

#[test]
fn extended_value_checks_shape() {
    let bad = |body: &'static [u8]| Reply {
        sender: "h",
        ids: vec![1],
        extended: true,
        body,
    };
    assert!(bad(b"3:ctl,").extended_value().is_err());
    assert!(bad(b"6:3:ctl,]").extended_value().is_err());
    assert!(bad(b"8:1:1#0:}]").extended_value().is_err());
    assert!(bad(b"9:3:ctl,0:}]x").extended_value().is_err());
    assert!(bad(b"9:3:ctl,0:}]").extended_value().is_ok());
    let plain = Reply {
        extended: false,
        ..bad(b"9:3:ctl,0:}]")
    };
    assert!(plain.extended_value().is_err());
}
