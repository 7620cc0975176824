use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

fn roundtrip(value: &Value<'_>) {
    let bytes = value.to_bytes().expect("encodable");
    let back = parse_complete(&bytes).expect("parses back");
    assert_eq!(&back, value, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(back.to_bytes().expect("encodable"), bytes);
}

#[test]
fn parses_every_type() {
    assert_eq!(parse_complete(b"5:hello,").unwrap(), Value::from("hello"));
    assert_eq!(parse_complete(b"0:,").unwrap(), Value::from(""));
    assert_eq!(parse_complete(b"2:42#").unwrap(), Value::Integer(42));
    assert_eq!(parse_complete(b"3:-42#").unwrap(), Value::Integer(-42));
    assert_eq!(parse_complete(b"3:1.5^").unwrap(), Value::Float(1.5));
    assert_eq!(parse_complete(b"4:true!").unwrap(), Value::Bool(true));
    assert_eq!(parse_complete(b"5:false!").unwrap(), Value::Bool(false));
    assert_eq!(parse_complete(b"0:~").unwrap(), Value::Null);
    assert_eq!(parse_complete(b"0:]").unwrap(), Value::List(vec![]));
    assert_eq!(parse_complete(b"0:}").unwrap(), Value::Dict(Dict::new()));
    let list = parse_complete(b"11:1:a,1:1#0:~]").unwrap();
    assert_eq!(
        list,
        Value::List(vec![Value::from("a"), Value::Integer(1), Value::Null])
    );
}

#[test]
fn strings_are_binary_safe_and_borrowed() {
    let input = b"4:\x00\xff:,,";
    let value = parse_complete(input).unwrap();
    match &value {
        Value::Bytes(Cow::Borrowed(b)) => {
            assert_eq!(*b, b"\x00\xff:,");
            assert_eq!(b.as_ptr(), input[2..].as_ptr(), "payload not copied");
        }
        other => panic!("expected borrowed bytes, got {other:?}"),
    }
    assert_eq!(value.as_str(), None, "not UTF-8");
    assert_eq!(value.as_bytes(), Some(&b"\x00\xff:,"[..]));
}

#[test]
fn parse_returns_the_rest() {
    let (value, rest) = parse(b"1:a,1:b,").unwrap();
    assert_eq!(value.as_str(), Some("a"));
    assert_eq!(rest, b"1:b,");
    assert_eq!(
        parse_complete(b"1:a,x"),
        Err(Error::TrailingBytes { offset: 4 })
    );
}

#[test]
fn dict_keeps_order_and_looks_up() {
    let value = parse_complete(b"34:4:host,1:h,6:METHOD,3:GET,1:a,1:1#}").unwrap();
    let dict = value.as_dict().unwrap();
    let keys: Vec<&[u8]> = dict.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![&b"host"[..], b"METHOD", b"a"]);
    assert_eq!(dict.get("METHOD").and_then(Value::as_str), Some("GET"));
    assert_eq!(dict.get("method"), None);
    assert_eq!(
        dict.get_ignore_ascii_case("method").and_then(Value::as_str),
        Some("GET")
    );
    assert_eq!(dict.get(b"a").and_then(Value::as_i64), Some(1));
    assert_eq!(dict.len(), 3);
}

#[test]
fn dict_insert_replaces_push_appends() {
    let mut d = Dict::new();
    d.insert("a", 1i64);
    d.insert("b", "x");
    d.insert("a", 2i64);
    assert_eq!(d.len(), 2);
    assert_eq!(d.get("a"), Some(&Value::Integer(2)));
    d.push("a", 3i64);
    assert_eq!(d.len(), 3);
    assert_eq!(d.get("a"), Some(&Value::Integer(2)), "first wins");
    let collected: Dict = vec![("k", Value::Null)].into_iter().collect();
    assert_eq!(collected.len(), 1);
    let owned: Dict<'static> = d.clone().into_owned();
    assert_eq!(owned, d);
    let pairs: Vec<_> = owned.into_iter().collect();
    assert_eq!(pairs.len(), 3);
}

#[test]
fn encodes_every_type_canonically() {
    let mut d = Dict::new();
    d.insert("k", Value::List(vec![Value::Bool(true), Value::Null]));
    let v = Value::List(vec![
        Value::from("hi"),
        Value::Integer(-7),
        Value::Float(0.1),
        Value::Bool(false),
        Value::Dict(d),
    ]);
    assert_eq!(
        v.to_bytes().unwrap(),
        b"46:2:hi,2:-7#3:0.1^5:false!18:1:k,10:4:true!0:~]}]".to_vec()
    );
    roundtrip(&v);
}

#[test]
fn integer_extremes() {
    for i in [0, 1, -1, i64::MAX, i64::MIN] {
        roundtrip(&Value::Integer(i));
    }
    assert_eq!(
        parse_complete(b"19:9223372036854775807#").unwrap(),
        Value::Integer(i64::MAX)
    );
    assert_eq!(
        parse_complete(b"20:-9223372036854775808#").unwrap(),
        Value::Integer(i64::MIN)
    );
    assert_eq!(
        parse_complete(b"19:9223372036854775808#"),
        Err(Error::IntegerOverflow { offset: 3 })
    );
    assert_eq!(
        parse_complete(b"20:-9223372036854775809#"),
        Err(Error::IntegerOverflow { offset: 3 })
    );
    for bad in [
        &b"0:#"[..],
        b"1:-#",
        b"2:+1#",
        b"2:1a#",
        b"3: 12#",
        b"3:1.0#",
    ] {
        assert!(
            matches!(parse_complete(bad), Err(Error::InvalidInteger { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn floats_roundtrip_exactly() {
    for f in [
        0.0,
        -0.0,
        0.1,
        1.0 / 3.0,
        1e300,
        -1e-300,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        5e-324,
        123456789.0,
    ] {
        let bytes = Value::Float(f).to_bytes().unwrap();
        let back = parse_complete(&bytes).unwrap();
        assert_eq!(back.as_f64().map(f64::to_bits), Some(f.to_bits()), "{f}");
    }
}

#[test]
fn float_grammar() {
    for good in [
        &b"1"[..],
        b"-1.5",
        b"+2.",
        b".5",
        b"1e5",
        b"1E-5",
        b"-0.0e+3",
    ] {
        let mut input = format!("{}:", good.len()).into_bytes();
        input.extend_from_slice(good);
        input.push(b'^');
        assert!(parse_complete(&input).is_ok(), "{good:?}");
    }
    for bad in [
        &b""[..],
        b"nan",
        b"NaN",
        b"inf",
        b"-inf",
        b"infinity",
        b"1e400",
        b".",
        b"e5",
        b"1e",
        b"0x10",
        b"1.0 ",
        b"1..0",
        b"--1",
    ] {
        let mut input = format!("{}:", bad.len()).into_bytes();
        input.extend_from_slice(bad);
        input.push(b'^');
        assert_eq!(
            parse_complete(&input),
            Err(Error::InvalidFloat {
                offset: input.len() - 1 - bad.len()
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn non_finite_floats_refuse_to_encode() {
    let mut out = b"keep".to_vec();
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let v = Value::List(vec![Value::from("x"), Value::Float(f)]);
        assert_eq!(v.encode(&mut out), Err(Error::NonFiniteFloat));
        assert_eq!(out, b"keep", "output restored");
    }
}

#[test]
fn hostile_lengths() {
    assert_eq!(
        parse(b"1234567890:"),
        Err(Error::LengthTooLong { offset: 0 })
    );
    // Nine digits is fine syntactically but runs past the end.
    assert_eq!(
        parse(b"999999999:abc,"),
        Err(Error::Truncated { offset: 0 })
    );
    assert_eq!(parse(b"5:abc,"), Err(Error::Truncated { offset: 0 }));
    assert_eq!(parse(b"3:abc"), Err(Error::MissingTag { offset: 5 }));
    assert_eq!(parse(b""), Err(Error::Truncated { offset: 0 }));
    assert_eq!(parse(b"12"), Err(Error::Truncated { offset: 0 }));
    assert_eq!(parse(b":abc,"), Err(Error::BadLength { offset: 0 }));
    assert_eq!(parse(b"x:abc,"), Err(Error::BadLength { offset: 0 }));
    assert_eq!(parse(b"-1:,"), Err(Error::BadLength { offset: 0 }));
    assert_eq!(parse(b"3x:abc,"), Err(Error::MissingColon { offset: 1 }));
    assert_eq!(
        parse(b"3:abcX"),
        Err(Error::UnknownTag {
            offset: 5,
            tag: b'X'
        })
    );
    // Offsets point into nested elements.
    assert_eq!(parse(b"8:1:a,9:b,]"), Err(Error::Truncated { offset: 6 }));
    assert_eq!(parse(b"8:1:a,2:b,]"), Err(Error::MissingTag { offset: 10 }));
}

#[test]
fn hostile_dicts_and_scalars() {
    assert_eq!(
        parse(b"8:1:1#1:a,}"),
        Err(Error::NonStringKey { offset: 2 })
    );
    assert_eq!(parse(b"4:1:a,}"), Err(Error::MissingValue { offset: 6 }));
    assert_eq!(parse(b"4:True!"), Err(Error::InvalidBool { offset: 2 }));
    assert_eq!(parse(b"1:x~"), Err(Error::InvalidNull { offset: 2 }));
}

#[test]
fn depth_is_bounded() {
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = Value::Null;
        for _ in 0..depth {
            v = Value::List(vec![v]);
        }
        v.to_bytes().unwrap()
    }
    assert!(parse(&nested(DEFAULT_MAX_DEPTH)).is_ok());
    assert!(matches!(
        parse(&nested(DEFAULT_MAX_DEPTH + 1)),
        Err(Error::TooDeep { max_depth: 64, .. })
    ));
    assert!(parse_with_max_depth(&nested(3), 3).is_ok());
    assert!(matches!(
        parse_with_max_depth(&nested(4), 3),
        Err(Error::TooDeep { max_depth: 3, .. })
    ));
    assert!(matches!(
        parse_with_max_depth(b"0:]", 0),
        Err(Error::TooDeep { offset: 0, .. })
    ));
    assert!(parse_with_max_depth(b"0:~", 0).is_ok());
    // A deep nesting attempt fails at the bound instead of recursing on.
    let mut deep = b"0:~".to_vec();
    for _ in 0..5_000 {
        let mut outer = format!("{}:", deep.len()).into_bytes();
        outer.extend_from_slice(&deep);
        outer.push(b']');
        deep = outer;
    }
    assert!(matches!(parse(&deep), Err(Error::TooDeep { .. })));
    assert!(matches!(
        from_slice::<Value>(&deep),
        Err(Error::TooDeep { .. })
    ));
}

#[test]
fn from_impls_and_helpers() {
    assert_eq!(Value::from(5i32), Value::Integer(5));
    assert_eq!(Value::from(5u32), Value::Integer(5));
    assert_eq!(Value::from(String::from("s")).as_str(), Some("s"));
    assert_eq!(Value::from(vec![1u8, 2]).as_bytes(), Some(&[1u8, 2][..]));
    assert_eq!(Value::from(&b"b"[..]).as_bytes(), Some(&b"b"[..]));
    assert_eq!(Value::from(2.5).as_f64(), Some(2.5));
    assert_eq!(Value::Integer(2).as_f64(), Some(2.0));
    assert_eq!(Value::from(true).as_bool(), Some(true));
    assert!(Value::Null.is_null());
    assert_eq!(
        Value::from(vec![Value::Null]).as_list().map(<[_]>::len),
        Some(1)
    );
    let input = b"5:hello,".to_vec();
    let owned: Value<'static> = parse_complete(&input).unwrap().into_owned();
    drop(input);
    assert_eq!(owned.as_str(), Some("hello"));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Wrapped(i32),
    Pair(u8, String),
    Named { x: i64 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Everything<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(with = "serde_bytes_like")]
    raw: &'a [u8],
    owned: String,
    small: u8,
    neg: i16,
    big: i64,
    ratio: f64,
    ratio32: f32,
    flag: bool,
    nothing: Option<u32>,
    something: Option<u32>,
    unit: (),
    list: Vec<u16>,
    tuple: (i32, String),
    map: BTreeMap<String, i32>,
    kinds: Vec<Kind>,
    bytes_vec: Vec<u8>,
    ch: char,
}

/// Borrowed byte slices (what `serde_bytes` would do, without the crate).
mod serde_bytes_like {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        <&'de [u8] as serde::Deserialize>::deserialize(d)
    }
}

#[test]
fn serde_roundtrip_everything() {
    let value = Everything {
        name: "n",
        raw: b"\x00\xff",
        owned: "o".into(),
        small: 255,
        neg: -300,
        big: i64::MIN,
        ratio: 0.1,
        ratio32: 0.1,
        flag: true,
        nothing: None,
        something: Some(7),
        unit: (),
        list: vec![1, 2],
        tuple: (-1, "t".into()),
        map: [("a".to_string(), 1), ("b".to_string(), 2)].into(),
        kinds: vec![
            Kind::Plain,
            Kind::Wrapped(3),
            Kind::Pair(1, "p".into()),
            Kind::Named { x: 9 },
        ],
        bytes_vec: vec![0, 1, 255],
        ch: 'é',
    };
    let bytes = to_vec(&value).unwrap();
    let back: Everything = from_slice(&bytes).unwrap();
    assert_eq!(back, value);
    // Borrowed fields really borrow.
    let range = bytes.as_ptr_range();
    assert!(range.contains(&back.name.as_ptr()));
    assert!(range.contains(&back.raw.as_ptr()));
    // And the generic Value sees the same structure.
    let generic: Value = from_slice(&bytes).unwrap();
    assert_eq!(generic, parse_complete(&bytes).unwrap());
    assert_eq!(to_vec(&generic).unwrap(), bytes);
}

#[test]
fn serde_enum_shapes() {
    assert_eq!(to_vec(&Kind::Plain).unwrap(), b"5:Plain,");
    assert_eq!(to_vec(&Kind::Wrapped(3)).unwrap(), b"14:7:Wrapped,1:3#}");
    assert_eq!(from_slice::<Kind>(b"5:Plain,").unwrap(), Kind::Plain);
    assert_eq!(from_slice::<Kind>(b"11:5:Plain,0:~}").unwrap(), Kind::Plain);
    assert!(from_slice::<Kind>(b"0:}").is_err());
    assert!(from_slice::<Kind>(b"25:7:Wrapped,1:3#5:Plain,0:~}").is_err());
    assert!(from_slice::<Kind>(b"1:1#").is_err());
}

#[test]
fn serde_headers_struct_zero_copy() {
    #[derive(Deserialize)]
    struct Headers<'a> {
        #[serde(rename = "METHOD")]
        method: &'a str,
        #[serde(rename = "x-dup")]
        dup: Vec<&'a str>,
        #[serde(rename = "missing", default)]
        missing: Option<&'a str>,
    }
    let input = b"46:6:METHOD,3:GET,5:x-dup,12:3:one,3:two,]1:z,0:]}";
    let h: Headers = from_slice(input).unwrap();
    assert_eq!(h.method, "GET");
    assert_eq!(h.dup, vec!["one", "two"]);
    assert_eq!(h.missing, None);
}

#[test]
fn serde_integer_overflow_and_type_errors() {
    assert!(from_slice::<u8>(b"3:256#").is_err());
    assert!(from_slice::<u8>(b"2:-1#").is_err());
    assert_eq!(from_slice::<i8>(b"4:-128#").unwrap(), -128);
    assert!(from_slice::<u64>(b"2:-1#").is_err());
    assert_eq!(
        from_slice::<u64>(b"19:9223372036854775807#").unwrap(),
        i64::MAX as u64
    );
    assert!(matches!(
        from_slice::<i64>(b"19:9223372036854775808#"),
        Err(Error::IntegerOverflow { offset: 3 })
    ));
    assert!(to_vec(&u64::MAX).is_err());
    assert_eq!(
        to_vec(&(i64::MAX as u64)).unwrap(),
        b"19:9223372036854775807#"
    );
    assert!(matches!(to_vec(&f64::NAN), Err(Error::NonFiniteFloat)));
    assert!(matches!(to_vec(&f32::INFINITY), Err(Error::NonFiniteFloat)));
    assert!(from_slice::<bool>(b"1:1#").is_err());
    assert!(from_slice::<String>(b"2:\xff\xfe,").is_err());
    assert_eq!(from_slice::<f64>(b"1:2#").unwrap(), 2.0);
    assert!(matches!(
        from_slice::<String>(b"1:a,1:b,"),
        Err(Error::TrailingBytes { offset: 4 })
    ));
    assert!(
        from_slice::<(u8, u8)>(b"12:1:1#1:2#1:3#]").is_err(),
        "too many items"
    );
}

#[test]
fn serde_maps_need_string_keys() {
    let mut m = BTreeMap::new();
    m.insert(1u32, "x");
    assert!(to_vec(&m).is_err());
    assert!(from_slice::<BTreeMap<u32, String>>(b"8:1:1,1:x,}").is_err());
    assert!(matches!(
        from_slice::<BTreeMap<String, String>>(b"8:1:1#1:x,}"),
        Err(Error::NonStringKey { offset: 2 })
    ));
    let bytes_keys: BTreeMap<Vec<u8>, i32> = [(b"\xff".to_vec(), 1)].into();
    // Vec<u8> keys serialize as a sequence in serde, which is not a string key.
    assert!(to_vec(&bytes_keys).is_err());
}

#[test]
fn serde_ignored_fields_are_validated() {
    #[derive(Deserialize, Debug)]
    struct Only {
        #[allow(dead_code)]
        a: i32,
    }
    assert!(from_slice::<Only>(b"17:1:a,1:1#1:b,2:xy#}").is_err());
    assert!(from_slice::<Only>(b"17:1:a,1:1#1:b,2:12#}").is_ok());
}

#[test]
fn value_serializes_into_json_too() {
    let v = parse_complete(b"26:1:a,11:1:1#4:true!]1:b,0:~}").unwrap();
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"a":[1,true],"b":null}"#
    );
}

#[test]
fn decimal_helpers_match_std_formatting() {
    let mut samples: Vec<u64> = vec![0, 1, 9, 10, 11, 99, 100, 101, u64::MAX, u64::MAX - 1];
    for p in 0..20u32 {
        let v = 10u64.pow(p);
        samples.extend([v - 1, v, v + 1, v.saturating_mul(7) / 3]);
    }
    samples.extend([
        u64::from(u32::MAX) - 1,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
    ]);
    for n in samples {
        let text = n.to_string();
        assert_eq!(decimal_len(n), text.len(), "{n}");
        let mut buf = vec![b'?'; text.len() + 3];
        let len = buf.len();
        let start = write_decimal_backwards(&mut buf, n);
        assert_eq!(&buf[start..], text.as_bytes());
        assert_eq!(start, len - text.len());
        let mut d = DecimalBuf::new();
        assert_eq!(d.format_u64(n), text.as_bytes());
        let i = n as i64;
        assert_eq!(d.format_i64(i), i.to_string().as_bytes());
    }
    let mut d = DecimalBuf::new();
    assert_eq!(d.format_i64(i64::MIN), b"-9223372036854775808");
}
