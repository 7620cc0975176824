use crate::request::*;

fn body_ns(body: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", body.len()).into_bytes();
    v.extend_from_slice(body);
    v.push(b',');
    v
}

fn json_msg(sender: &str, id: u64, path: &str, headers: &[u8], body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{sender} {id} {path} {}:", headers.len()).into_bytes();
    msg.extend_from_slice(headers);
    msg.push(b',');
    msg.extend_from_slice(&body_ns(body));
    msg
}

#[test]
fn json_headers_mongrel2_escaping_and_raw_bytes() {
    // Mongrel2 escapes only '"' and '\'; tabs and obs-text pass through raw.
    let headers = b"{\"PATH\":\"/p\",\"x-q\":\"say \\\"hi\\\" \\\\ there\",\"x-tab\":\"a\tb\",\"x-latin\":\"caf\xe9\",\"METHOD\":\"GET\"}";
    let msg = json_msg("s", 3, "/p", headers, b"");
    let req = Request::parse(&msg).unwrap();
    assert_eq!(req.header("x-q"), Some(r#"say "hi" \ there"#));
    assert_eq!(req.header("x-tab"), Some("a\tb"));
    assert_eq!(req.header("x-latin"), Some("caf\u{fffd}"));
    let range = msg.as_ptr_range();
    assert!(
        range.contains(&req.header("x-tab").unwrap().as_ptr()),
        "no escapes: borrowed"
    );
}

#[test]
fn json_headers_standard_escapes_and_scalars() {
    let headers = br#"{ "a" : "\u00e9\ud83d\ude00\n\/" , "n": 12.5e3, "t": true, "f": false, "z": null, "l": [ "x", 1 ], "e": [] }"#;
    let msg = json_msg("s", 3, "/p", headers, b"");
    let req = Request::parse(&msg).unwrap();
    assert_eq!(req.header("a"), Some("é😀\n/"));
    assert_eq!(req.header("n"), Some("12.5e3"));
    assert_eq!(req.header("t"), Some("true"));
    assert_eq!(req.header("f"), Some("false"));
    assert_eq!(req.header("z"), Some("null"));
    assert_eq!(req.header_all("l").collect::<Vec<_>>(), ["x", "1"]);
    assert_eq!(req.header("e"), None);
    assert_eq!(req.headers().get("e").map(HeaderValue::len), Some(0));
    // Lone surrogates become U+FFFD rather than failing the request.
    let msg = json_msg("s", 3, "/p", br#"{"a":"\ud800x\udc00\ud800\u0041"}"#, b"");
    assert_eq!(
        Request::parse(&msg).unwrap().header("a"),
        Some("\u{fffd}x\u{fffd}\u{fffd}A")
    );
}

#[test]
fn invalid_json_headers_are_typed_errors() {
    for headers in [
        &br#"{"a":"b""#[..],
        br#"{"a":"b",}"#,
        br#"{"a" "b"}"#,
        br#"{"a":{"b":"c"}}"#,
        br#"{"a":[["b"]]}"#,
        br#"{"a":"\q"}"#,
        br#"{"a":"\u12"}"#,
        br#"{"a":"b"} x"#,
        br#"{"a":nope}"#,
        br#"{a:"b"}"#,
        br#"{"a":"unterminated}"#,
        b"{",
    ] {
        let msg = json_msg("s", 3, "/p", headers, b"");
        let err = Request::parse(&msg).unwrap_err();
        assert!(
            matches!(err, RequestError::InvalidJsonHeaders { offset, .. } if offset >= 9),
            "{:?}: {err:?}",
            String::from_utf8_lossy(headers)
        );
    }
}
