//! Property tests for the wire codecs: round trips and no panics on hostile bytes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mongrel2_transceiver::reply::{self, Reply};
use mongrel2_transceiver::request::{HeaderProtocol, Request};
use mongrel2_transceiver::tnetstring::{self, Dict, Value};
use proptest::prelude::*;

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
    ]
}

fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1)
    ]
}

fn value() -> impl Strategy<Value = Value<'static>> {
    let leaf = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        integer().prop_map(Value::Integer),
        float().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), inner), 0..6)
                .prop_map(|pairs| Value::Dict(pairs.into_iter().collect::<Dict>())),
        ]
    })
}

/// Bitwise float comparison, so -0.0 vs 0.0 and exact digits are checked.
fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

fn header_text() -> impl Strategy<Value = String> {
    // Quotes, backslashes, control bytes and non-ASCII all must survive both protocols.
    prop_oneof![
        "[a-zA-Z0-9 ,;=/*.:-]{0,20}",
        "[\"\\\\\t\r\n\u{0}a-z\u{e9}\u{1F600}]{0,10}",
        ".{0,16}",
    ]
}

fn request() -> impl Strategy<Value = Request<'static>> {
    (
        "[A-Za-z0-9-]{1,40}",
        any::<u64>(),
        "[^ ]{0,30}",
        proptest::collection::vec((header_text(), header_text()), 0..12),
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![Just(HeaderProtocol::Tnetstring), Just(HeaderProtocol::Json)],
    )
        .prop_map(|(sender, id, path, headers, body, protocol)| {
            let mut req = Request::new(sender, id, path)
                .with_body(body)
                .with_protocol(protocol);
            for (name, value) in headers {
                req = req.with_header(name, value);
            }
            req
        })
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Control<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    id: Option<u32>,
    tags: Vec<&'a str>,
    extra: BTreeMap<String, f64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tnetstring_roundtrips(v in value()) {
        let bytes = v.to_bytes().unwrap();
        let (back, rest) = tnetstring::parse(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert!(same(&back, &v), "{:?} != {:?}", back, v);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes.clone());
        // serde sees the same value and writes the same bytes.
        let via_serde: Value = tnetstring::from_slice(&bytes).unwrap();
        prop_assert!(same(&via_serde, &v));
        prop_assert_eq!(&tnetstring::to_vec(&via_serde).unwrap(), &bytes);
    }

    #[test]
    fn tnetstring_prefix_parse_leaves_rest(v in value(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut bytes = v.to_bytes().unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        let (_, rest) = tnetstring::parse(&bytes).unwrap();
        prop_assert_eq!(rest, &bytes[len..]);
    }

    #[test]
    fn request_roundtrips(req in request()) {
        let bytes = req.encode();
        let back = Request::parse(&bytes).unwrap();
        prop_assert_eq!(&back, &req);
        prop_assert_eq!(&back.encode(), &bytes);
        let owned = back.into_owned();
        prop_assert_eq!(&owned, &req);
    }

    #[test]
    fn reply_roundtrips(
        uuid in "[A-Za-z0-9-]{1,40}",
        ids in proptest::collection::vec(any::<u64>(), 1..200),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        max in 1usize..150,
    ) {
        let msgs = reply::batched(&uuid, &ids, &body, max).unwrap();
        prop_assert_eq!(msgs.len(), ids.len().div_ceil(max));
        let mut seen = Vec::new();
        for msg in &msgs {
            let r = Reply::parse_with_max_targets(msg, max).unwrap();
            prop_assert_eq!(r.sender, uuid.as_str());
            prop_assert_eq!(r.body, &body[..]);
            prop_assert!(!r.extended);
            seen.extend(r.ids);
        }
        prop_assert_eq!(seen, ids);
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }

    #[test]
    fn no_panic_on_mutated_messages(
        req in request(),
        v in value(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut ext = Vec::new();
        reply::encode_extended("h", &[1, 2], "ctl", &v, &mut ext).unwrap();
        for mut bytes in [req.encode(), v.to_bytes().unwrap(), ext] {
            for (at, byte) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            exercise(&bytes);
            exercise(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }
}

/// Runs every parser (and the accessors that interpret parsed data) on `bytes`.
fn exercise(bytes: &[u8]) {
    let _ = tnetstring::parse(bytes);
    let _ = tnetstring::parse_with_max_depth(bytes, 2);
    let _ = tnetstring::from_slice::<Value>(bytes);
    let _ = tnetstring::from_slice::<Control>(bytes);
    let _ = tnetstring::from_slice::<(String, Vec<u8>, Option<bool>)>(bytes);
    if let Ok(req) = Request::parse(bytes) {
        let _ = req.kind();
        let _ = req.should_close();
        let _ = req.query_pairs();
        let _ = req.flags();
        let _ = req.json::<serde_json::Value>();
        let _ = req.encode();
    }
    if let Ok(r) = Reply::parse(bytes) {
        let _ = r.extended_value();
    }
}
