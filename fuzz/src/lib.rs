//! The checks behind every fuzz target, as plain functions of the input bytes, so
//! `tests/regressions.rs` can replay crashers and seeds without libFuzzer.
//!
//! A check panics only on a real defect: a decoder panicking on hostile input, or a
//! round trip that does not give back what went in.

use std::borrow::Cow;
use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use mongrel2_transceiver::reply::{self, Reply};
use mongrel2_transceiver::request::{
    parse_query, percent_decode, HeaderProtocol, Request, RequestError, RequestLimits,
};
use mongrel2_transceiver::tnetstring::{self, Dict, Value};
use mongrel2_transceiver::websocket::{self, CloseFrame, Flags, Frame, Opcode};

// The relay's I/O-free core: its client protocol and its config file face users too.
pub use mongrel2_event_relay::{config, protocol, subscriptions};

mod zmtp_stream;
pub use zmtp_stream::zmtp_decode;

/// Every target by name, for the regression replay.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("tnetstring_parse", tnetstring_parse),
    ("tnetstring_serde", tnetstring_serde),
    ("request_parse", request_parse),
    ("websocket_frame", websocket_frame),
    ("reply_parse", reply_parse),
    ("harness_http_response", harness_http_response),
    ("relay_protocol", relay_protocol),
    ("relay_config", relay_config),
    ("zmtp_decode", zmtp_decode),
    ("roundtrip_tnetstring", roundtrip_tnetstring),
    ("roundtrip_frame", roundtrip_frame),
    ("roundtrip_request", roundtrip_request),
    ("roundtrip_reply", roundtrip_reply),
];

/// Structural equality with floats compared bit for bit (so `-0.0` and `0.0` differ).
pub fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
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

fn touch_value(value: &Value<'_>) {
    let _ = (
        value.as_bytes(),
        value.as_str(),
        value.as_i64(),
        value.as_f64(),
    );
    let _ = (value.as_bool(), value.is_null());
    if let Some(dict) = value.as_dict() {
        let _ = dict.get("a");
        let _ = dict.get_ignore_ascii_case("A");
    }
}

/// `tnetstring::parse` and friends; a parsed value must re-encode to the same value.
pub fn tnetstring_parse(data: &[u8]) {
    let _ = tnetstring::parse_with_max_depth(data, 3);
    let _ = tnetstring::parse_complete(data);
    let Ok((value, rest)) = tnetstring::parse(data) else {
        return;
    };
    assert!(rest.len() < data.len(), "a parse consumed nothing");
    touch_value(&value);
    let bytes = value.to_bytes().expect("a parsed value encodes");
    let (again, tail) = tnetstring::parse(&bytes).expect("a re-encoded value parses");
    assert!(tail.is_empty());
    assert!(same(&value, &again), "{value:?} != {again:?}");
    let owned = value.into_owned();
    assert!(same(&owned, &again));
}

/// A typed shape with borrowed, optional, nested and map fields, like a handler's.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Control<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    id: Option<u32>,
    tags: Vec<&'a str>,
    extra: BTreeMap<String, f64>,
    kind: Kind,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum Kind {
    Unit,
    Newtype(i64),
    Tuple(bool, String),
    Struct { a: Vec<u8> },
}

/// `tnetstring::from_slice` into untyped and typed targets.
pub fn tnetstring_serde(data: &[u8]) {
    let _ = tnetstring::from_slice::<serde_json::Value>(data);
    let _ = tnetstring::from_slice::<Control>(data);
    let _ = tnetstring::from_slice::<(String, Vec<u8>, Option<bool>)>(data);
    if let Ok(value) = tnetstring::from_slice::<Value>(data) {
        let bytes = tnetstring::to_vec(&value).expect("a deserialized value serializes");
        let again: Value = tnetstring::from_slice(&bytes).expect("serialized value reads back");
        assert!(same(&value, &again), "{value:?} != {again:?}");
    }
}

/// Every accessor a handler may call on a parsed request.
fn touch_request(req: &Request<'_>) {
    let _ = (
        req.sender(),
        req.conn_id(),
        req.path(),
        req.body(),
        req.protocol(),
    );
    for (name, values) in req.headers().iter() {
        let _ = (name, values.first(), values.len(), values.is_empty());
        let _ = values.iter().rev().count();
        let _ = req.header(name);
        let _ = req.header_all(name).count();
        let _ = req.headers().get_exact(name);
    }
    let _ = req.header_all("accept").count();
    let _ = (
        req.method(),
        req.version(),
        req.uri(),
        req.pattern(),
        req.query_string(),
    );
    let _ = (req.fragment(), req.url_scheme(), req.remote_addr());
    if let Some(query) = req.query_string() {
        let _ = parse_query(query);
        let _ = percent_decode(query);
    }
    let _ = (req.query("text"), req.query("a%20b"));
    let _ = req.query_pairs();
    let _ = req.flags();
    let _ = (
        req.download_credits(),
        req.upload_stream(),
        req.upload_stream_done(),
    );
    let _ = (
        req.is_upload_stream_start(),
        req.upload_start(),
        req.upload_done(),
    );
    let _ = req.json::<serde_json::Value>();
    let _ = req.json::<BTreeMap<String, String>>();
    let _ = (req.should_close(), req.is_disconnect(), req.kind());
}

/// `Request::parse` (both header protocols: the first byte of the headers element
/// selects), every accessor, `into_owned`, and re-encoding.
pub fn request_parse(data: &[u8]) {
    let tight = RequestLimits {
        max_headers: 4,
        max_values_per_header: 2,
        max_size: 4096,
    };
    let _ = Request::parse_with_limits(data, &tight);
    let Ok(req) = Request::parse(data) else {
        return;
    };
    touch_request(&req);
    let bytes = req.encode();
    let again = Request::parse(&bytes).expect("a re-encoded request parses");
    assert_eq!(again, req);
    // Through the other header protocol too.
    let other = match req.protocol() {
        HeaderProtocol::Tnetstring => HeaderProtocol::Json,
        HeaderProtocol::Json => HeaderProtocol::Tnetstring,
    };
    let switched = req.clone().with_protocol(other).encode();
    let back = Request::parse(&switched).expect("the other protocol's encoding parses");
    assert_eq!(back.headers(), req.headers());
    let owned = req.clone().into_owned();
    assert_eq!(owned, req);
    touch_request(&owned);
}

/// Frame decoding over a byte stream, then what the runtime does with each frame:
/// validation and close payload parsing.
pub fn websocket_frame(data: &[u8]) {
    let (limit, mut buf) = match data.split_first() {
        Some((&l, rest)) => (u64::from(l) * 64, rest),
        None => return,
    };
    while let Ok(Some((frame, used))) = Frame::decode_with_limit(buf, limit) {
        assert!(used > 0 && used <= buf.len());
        let flags = frame.flags();
        let _ = websocket::validate(flags, &frame.payload, limit as usize);
        if frame.opcode == Opcode::Close {
            if let Ok(Some(close)) = websocket::decode_close(&frame.payload) {
                let _ = (
                    close.code.is_valid(),
                    close.sent_reason(),
                    close.code.to_string(),
                );
                let payload = close.to_payload();
                let back = websocket::decode_close(&payload).expect("re-encoded close");
                assert_eq!(back, Some(close.clone()));
                let _ = close.into_owned();
            }
        }
        let _ = Flags::from_header(&flags.to_header());
        buf = &buf[used..];
    }
    let _ = websocket::decode_close(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(flags) = Flags::from_header(text) {
            let _ = websocket::validate(flags, data, 256);
        }
    }
}

/// `Reply::parse` as the harness router runs it on every message from a handler.
pub fn reply_parse(data: &[u8]) {
    let _ = Reply::parse_with_max_targets(data, 3);
    let Ok(reply) = Reply::parse(data) else {
        return;
    };
    let _ = reply.is_close();
    let _ = reply.extended_value();
    if !reply.extended && !reply.ids.is_empty() {
        let bytes = reply::reply(reply.sender, &reply.ids, reply.body).expect("re-encode");
        assert_eq!(
            Reply::parse(&bytes).expect("re-encoded reply parses"),
            reply
        );
    }
}

/// The harness client's HTTP response and WebSocket handshake parsers.
pub fn harness_http_response(data: &[u8]) {
    let is_head = data.first().is_some_and(|b| b & 1 == 1);
    let _ = mongrel2_transceiver::harness::parse_response_for_fuzzing(data, is_head);
    let _ = mongrel2_transceiver::harness::parse_handshake_for_fuzzing(
        data,
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    );
}

/// The relay's client actions and event input, as a WebSocket message or a POST body.
pub fn relay_protocol(data: &[u8]) {
    if let Ok(envelope) = protocol::parse_envelope(data, 64 * 1024) {
        // The per-session key limit from the input's first byte, so both sides of it are
        // explored.
        let max_keys = usize::from(data.first().copied().unwrap_or(0));
        if let Ok(action) = protocol::Action::parse(&envelope.action, &envelope.payload, max_keys) {
            let _ = format!("{action:?}");
        }
        let _ = protocol::error_json(protocol::ErrorName::InvalidPayload, envelope.tag.as_ref());
    }
    if let Ok(input) = protocol::parse_event_input(data, 64 * 1024) {
        let _ = format!("{input:?}");
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = protocol::routing_key(&value);
    }
}

/// The relay's config file and its token list variable.
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::Config::from_parts(Some(text), &|_| None);
    let _ = config::parse_token_list(text);
    let _ = config::Config::from_parts(None, &|name| {
        (name == "RELAY_TOKENS").then(|| text.to_owned())
    });
}

/// A tnetstring value built by the fuzzer.
#[derive(Debug, Arbitrary)]
enum AnyValue {
    Bytes(Vec<u8>),
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<AnyValue>),
    Dict(Vec<(Vec<u8>, AnyValue)>),
}

impl AnyValue {
    fn build(self) -> Value<'static> {
        match self {
            AnyValue::Bytes(b) => Value::from(b),
            AnyValue::Text(s) => Value::from(s),
            AnyValue::Integer(i) => Value::Integer(i),
            // Only finite floats have a tnetstring form.
            AnyValue::Float(f) if f.is_finite() => Value::Float(f),
            AnyValue::Float(_) => Value::Null,
            AnyValue::Bool(b) => Value::Bool(b),
            AnyValue::Null => Value::Null,
            AnyValue::List(items) => Value::List(items.into_iter().map(Self::build).collect()),
            AnyValue::Dict(pairs) => Value::Dict(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, v.build()))
                    .collect::<Dict>(),
            ),
        }
    }
}

/// Container nesting: a leaf is 0, a list or dict one more than its deepest item.
pub fn depth(value: &Value<'_>) -> usize {
    match value {
        Value::List(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Dict(dict) => 1 + dict.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses what the encoder wrote. The encoder has no depth limit and the parser does
/// (a peer controls the input): a value deeper than the default must be refused as
/// `TooDeep`, and parse back with the limit raised to its depth.
fn parse_encoded<'a>(bytes: &'a [u8], value: &Value<'_>) -> (Value<'a>, bool) {
    match tnetstring::parse(bytes) {
        Ok((back, rest)) => {
            assert!(rest.is_empty());
            (back, true)
        }
        Err(tnetstring::Error::TooDeep { .. }) if depth(value) >= tnetstring::DEFAULT_MAX_DEPTH => {
            let (back, rest) = tnetstring::parse_with_max_depth(bytes, depth(value) + 1)
                .expect("parses with the limit raised to its depth");
            assert!(rest.is_empty());
            (back, false)
        }
        Err(err) => panic!("an encoded value of depth {} fails: {err}", depth(value)),
    }
}

/// Encode then parse (and serde) gives the value back, byte for byte.
pub fn roundtrip_tnetstring(data: &[u8]) {
    let Ok(any) = AnyValue::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let value = any.build();
    let bytes = value.to_bytes().expect("a built value encodes");
    let (back, within_limits) = parse_encoded(&bytes, &value);
    assert!(same(&back, &value), "{back:?} != {value:?}");
    assert_eq!(back.to_bytes().expect("re-encode"), bytes);
    if !within_limits {
        return;
    }
    let via_serde: Value = tnetstring::from_slice(&bytes).expect("serde reads it");
    assert!(same(&via_serde, &value));
    assert_eq!(
        tnetstring::to_vec(&via_serde).expect("serde writes it"),
        bytes
    );
}

#[derive(Debug, Arbitrary)]
struct AnyFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
    mask: Option<[u8; 4]>,
}

/// Encode (masked or not) then decode gives the frame back.
pub fn roundtrip_frame(data: &[u8]) {
    let Ok(any) = AnyFrame::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let frame = Frame {
        fin: any.fin,
        rsv: any.rsv & 7,
        opcode: Opcode::from_u8(any.opcode),
        payload: Cow::Owned(any.payload),
    };
    let mut bytes = Vec::new();
    frame.encode(any.mask, &mut bytes);
    let encodable = !frame.opcode.is_control() || (frame.fin && frame.payload.len() <= 125);
    match Frame::decode(&bytes) {
        Ok(Some((back, used))) => {
            assert!(encodable, "an invalid control frame decoded: {frame:?}");
            assert_eq!(used, bytes.len());
            assert_eq!(back, frame);
        }
        Ok(None) => panic!("a whole frame is incomplete: {frame:?}"),
        Err(err) => assert!(!encodable, "{frame:?} fails to decode: {err}"),
    }
    if frame.opcode == Opcode::Close && frame.payload.len() >= 2 {
        let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
        if let Ok(reason) = std::str::from_utf8(&frame.payload[2..]) {
            let close = CloseFrame::new(code.into(), reason);
            let payload = close.to_payload();
            if close.code.is_valid() {
                let back = websocket::decode_close(&payload).expect("valid close decodes");
                assert_eq!(back.map(|c| c.code), Some(close.code));
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct AnyRequest {
    sender: String,
    conn_id: u64,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: bool,
}

/// A request built with `Request::new(..).with_header(..)` encodes and parses back equal.
pub fn roundtrip_request(data: &[u8]) {
    let Ok(any) = AnyRequest::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // The wire format separates sender, id and path with spaces.
    if any.sender.is_empty() || any.sender.contains(' ') || any.path.contains(' ') {
        return;
    }
    let protocol = if any.json {
        HeaderProtocol::Json
    } else {
        HeaderProtocol::Tnetstring
    };
    let mut req = Request::new(any.sender, any.conn_id, any.path)
        .with_body(any.body)
        .with_protocol(protocol);
    for (name, value) in any.headers {
        req = req.with_header(name, value);
    }
    let bytes = req.encode();
    // The builder has no limits, the parser does (peer-controlled input): within the
    // defaults the request parses back; beyond them it is refused, and parses back with
    // the limits lifted.
    let back = match Request::parse(&bytes) {
        Ok(back) => back,
        Err(RequestError::TooManyHeaders { .. } | RequestError::TooManyValues { .. }) => {
            let unlimited = RequestLimits {
                max_headers: usize::MAX,
                max_values_per_header: usize::MAX,
                max_size: usize::MAX,
            };
            Request::parse_with_limits(&bytes, &unlimited).expect("parses without limits")
        }
        Err(err) => panic!("an encoded request fails: {err}"),
    };
    assert_eq!(back, req);
    assert_eq!(back.encode(), bytes);
    touch_request(&back);
    assert_eq!(back.into_owned(), req);
}

#[derive(Debug, Arbitrary)]
struct AnyReply {
    uuid: String,
    ids: Vec<u64>,
    body: Vec<u8>,
    max_targets: u8,
    extended: Option<(String, AnyValue)>,
}

/// Replies (plain, batched and extended) encode and parse back equal.
pub fn roundtrip_reply(data: &[u8]) {
    let Ok(any) = AnyReply::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let max = usize::from(any.max_targets.max(1));
    let valid_uuid = !any.uuid.is_empty()
        && any
            .uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let Ok(batches) = reply::batched(&any.uuid, &any.ids, &any.body, max) else {
        assert!(!valid_uuid || any.ids.is_empty(), "batched refused {any:?}");
        return;
    };
    let mut seen = Vec::new();
    for message in &batches {
        let r = Reply::parse_with_max_targets(message, max).expect("a batch parses");
        assert_eq!(r.sender, any.uuid);
        assert_eq!(r.body, &any.body[..]);
        assert!(!r.extended);
        seen.extend(r.ids);
    }
    assert_eq!(seen, any.ids);
    if let Some((key, value)) = any.extended {
        let value = value.build();
        let mut out = Vec::new();
        if reply::encode_extended(&any.uuid, &any.ids, &key, &value, &mut out).is_ok() {
            let r = Reply::parse_with_max_targets(&out, any.ids.len()).expect("parses");
            assert!(r.extended);
            match r.extended_value() {
                Ok((k, v)) => {
                    assert_eq!(k, key);
                    assert!(same(&v, &value), "{v:?} != {value:?}");
                }
                // The body is a list around the value: one level more than the value.
                Err(reply::ReplyError::Tnetstring(tnetstring::Error::TooDeep { .. }))
                    if depth(&value) + 1 >= tnetstring::DEFAULT_MAX_DEPTH => {}
                Err(err) => panic!("extended value of depth {}: {err}", depth(&value)),
            }
        }
    }
}
