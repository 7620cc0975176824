use super::*;
use crate::tnetstring;
use crate::websocket::Opcode;

/// Modeled on the capture in mongrel2-protocol.md: Mongrel2 renders its own
/// headers first (reverse render order), then the client's, a repeated header
/// as a list.
const CAPTURED_TNET: &[u8] = b"54c6e5d2-2b70-4f4e-a5c5-5e3b7c1d345e 1 /handler/x 300:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,3:GET,10:URL_SCHEME,4:http,7:PATTERN,8:/handler,3:URI,20:/handler/x?a=1&b=x+y,5:QUERY,9:a=1&b=x+y,7:VERSION,8:HTTP/1.1,4:PATH,10:/handler/x,15:x-forwarded-for,9:127.0.0.1,6:accept,3:*/*,10:user-agent,11:curl/7.88.1,4:host,14:localhost:6767,5:x-dup,12:3:one,3:two,]}0:,";

/// The same request as Mongrel2's JSON protocol writes it (PATH first, then the
/// client headers, then METHOD and the rest).
fn captured_json() -> Vec<u8> {
    let headers = br#"{"PATH":"/handler/x","x-forwarded-for":"127.0.0.1","accept":"*/*","user-agent":"curl/7.88.1","host":"localhost:6767","x-dup":["one","two"],"METHOD":"GET","VERSION":"HTTP/1.1","URI":"/handler/x?a=1&b=x+y","QUERY":"a=1&b=x+y","PATTERN":"/handler","URL_SCHEME":"http","REMOTE_ADDR":"127.0.0.1"}"#;
    let mut msg = b"54c6e5d2-2b70-4f4e-a5c5-5e3b7c1d345e 1 /handler/x ".to_vec();
    msg.extend_from_slice(format!("{}:", headers.len()).as_bytes());
    msg.extend_from_slice(headers);
    msg.extend_from_slice(b",0:,");
    msg
}

fn check_captured(req: &Request<'_>) {
    assert_eq!(req.sender(), "54c6e5d2-2b70-4f4e-a5c5-5e3b7c1d345e");
    assert_eq!(req.conn_id(), 1);
    assert_eq!(req.path(), "/handler/x");
    assert_eq!(req.method(), Some("GET"));
    assert_eq!(req.version(), Some("HTTP/1.1"));
    assert_eq!(req.uri(), Some("/handler/x?a=1&b=x+y"));
    assert_eq!(req.pattern(), Some("/handler"));
    assert_eq!(req.query_string(), Some("a=1&b=x+y"));
    assert_eq!(req.query("b").as_deref(), Some("x y"));
    assert_eq!(req.fragment(), None);
    assert_eq!(req.url_scheme(), Some("http"));
    assert_eq!(req.remote_addr(), Some("127.0.0.1"));
    assert_eq!(req.header("Host"), Some("localhost:6767"));
    assert_eq!(req.header("USER-AGENT"), Some("curl/7.88.1"));
    assert_eq!(req.header("x-dup"), Some("one"));
    assert_eq!(req.header_all("X-Dup").collect::<Vec<_>>(), ["one", "two"]);
    assert_eq!(
        req.header_all("host").collect::<Vec<_>>(),
        ["localhost:6767"]
    );
    assert_eq!(req.header_all("absent").count(), 0);
    assert_eq!(
        req.query_pairs(),
        [("a".into(), "1".into()), ("b".into(), "x y".into())]
    );
    assert_eq!(req.body(), b"");
    assert!(matches!(req.kind().unwrap(), RequestKind::Http));
    assert!(!req.should_close());
    assert!(!req.is_disconnect());
    assert_eq!(req.headers().len(), 13);
}

#[test]
fn parses_captured_tnetstring_request() {
    let req = Request::parse(CAPTURED_TNET).unwrap();
    assert_eq!(req.protocol(), HeaderProtocol::Tnetstring);
    check_captured(&req);
    // Header order is wire order.
    let names: Vec<&str> = req.headers().iter().map(|(k, _)| k).take(3).collect();
    assert_eq!(names, ["REMOTE_ADDR", "METHOD", "URL_SCHEME"]);
}

#[test]
fn parses_captured_json_request() {
    let msg = captured_json();
    let req = Request::parse(&msg).unwrap();
    assert_eq!(req.protocol(), HeaderProtocol::Json);
    check_captured(&req);
}

#[test]
fn parsing_borrows_from_the_buffer() {
    for msg in [CAPTURED_TNET.to_vec(), captured_json()] {
        let req = Request::parse(&msg).unwrap();
        let range = msg.as_ptr_range();
        assert!(range.contains(&req.sender().as_ptr()));
        assert!(range.contains(&req.path().as_ptr()));
        assert!(range.contains(&req.header("host").unwrap().as_ptr()));
        assert!(range.contains(&req.header("x-dup").unwrap().as_ptr()));
        for (name, value) in req.headers().iter() {
            assert!(range.contains(&name.as_ptr()), "{name}");
            for v in value.iter() {
                assert!(range.contains(&v.as_ptr()) || v.is_empty(), "{v}");
            }
        }
    }
}

#[test]
fn into_owned_outlives_the_buffer() {
    let msg = CAPTURED_TNET.to_vec();
    let owned: OwnedRequest = Request::parse(&msg).unwrap().into_owned();
    drop(msg);
    check_captured(&owned);
}

#[test]
fn exact_name_wins_over_case_insensitive_match() {
    // A client "Method: evil" header arrives as "method"; Mongrel2's is "METHOD".
    let req = Request::new("s", 1, "/")
        .with_header("method", "evil")
        .with_header("METHOD", "GET")
        .with_header("path", "/client")
        .with_header("PATH", "/");
    let msg = req.encode();
    let req = Request::parse(&msg).unwrap();
    assert_eq!(req.method(), Some("GET"));
    assert_eq!(req.header("METHOD"), Some("GET"));
    assert_eq!(req.header("method"), Some("evil"));
    assert_eq!(
        req.header("Method"),
        Some("evil"),
        "first case-insensitive match"
    );
    assert_eq!(req.header("PATH"), Some("/"));
}

fn kind_of(req: Request<'_>) -> (Vec<u8>, Vec<u8>) {
    let tnet = req
        .clone()
        .with_protocol(HeaderProtocol::Tnetstring)
        .encode();
    let json = req.with_protocol(HeaderProtocol::Json).encode();
    (tnet, json)
}

#[test]
fn disconnect_notice_exact_mongrel2_bytes() {
    let tnet = b"sid 42 @* 16:6:METHOD,4:JSON,}21:{\"type\":\"disconnect\"},";
    let json = b"sid 42 @* 17:{\"METHOD\":\"JSON\"},21:{\"type\":\"disconnect\"},";
    for msg in [&tnet[..], &json[..]] {
        let req = Request::parse(msg).unwrap();
        assert!(req.is_disconnect());
        assert_eq!(req.kind().unwrap(), RequestKind::Disconnect);
        assert_eq!(req.conn_id(), 42);
        assert_eq!(req.encode(), msg, "encode is byte-exact");
    }
}

#[test]
fn credits_notice_exact_mongrel2_bytes() {
    let tnet =
        b"sid 7 @* 43:16:DOWNLOAD_CREDITS,4:1234,6:METHOD,4:JSON,}18:{\"type\":\"credits\"},";
    let json = b"sid 7 @* 43:{\"METHOD\":\"JSON\",\"DOWNLOAD_CREDITS\":\"1234\"},18:{\"type\":\"credits\"},";
    for msg in [&tnet[..], &json[..]] {
        let req = Request::parse(msg).unwrap();
        assert_eq!(req.kind().unwrap(), RequestKind::Credits { credits: 1234 });
        assert_eq!(req.download_credits(), Some(1234));
        assert!(!req.is_disconnect());
        assert_eq!(req.encode(), msg);
    }
    let missing = Request::new("s", 1, "@*")
        .with_header("METHOD", "JSON")
        .with_body(&br#"{"type":"credits"}"#[..]);
    assert!(matches!(
        missing.kind(),
        Err(RequestError::MissingHeader("DOWNLOAD_CREDITS"))
    ));
}

#[test]
fn socket_messages() {
    let json = Request::new("s", 1, "@chat")
        .with_header("METHOD", "JSON")
        .with_header("PATH", "@chat")
        .with_body(&br#"{"type":"msg","text":"hi"}"#[..]);
    assert_eq!(json.kind().unwrap(), RequestKind::Json);
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        text: String,
    }
    let m: Msg = json.json().unwrap();
    assert_eq!((m.kind, m.text.as_str()), ("msg", "hi"));
    assert!(matches!(json.json::<Vec<u8>>(), Err(RequestError::Json(_))));
    // A JSON message at @* that is not a notice stays Json.
    let other = Request::new("s", 1, "@*")
        .with_header("METHOD", "JSON")
        .with_body(&b"[1]"[..]);
    assert_eq!(other.kind().unwrap(), RequestKind::Json);
    let xml = Request::new("s", 1, "<ping")
        .with_header("METHOD", "XML")
        .with_body(&b"<ping/>"[..]);
    assert_eq!(xml.kind().unwrap(), RequestKind::Xml);
    for (tnet, json) in [kind_of(json), kind_of(xml)] {
        for msg in [tnet, json] {
            assert!(Request::parse(&msg).unwrap().kind().is_ok());
        }
    }
}

#[test]
fn websocket_handshake_and_frames() {
    let hs = Request::new("s", 9, "/ws")
        .with_header("METHOD", "WEBSOCKET_HANDSHAKE")
        .with_header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .with_body(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..]);
    assert_eq!(
        hs.kind().unwrap(),
        RequestKind::WebSocketHandshake {
            accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        }
    );
    let frame = |flags: &'static str| {
        Request::new("s", 9, "/ws")
            .with_header("METHOD", "WEBSOCKET")
            .with_header("FLAGS", flags)
            .with_body(&b"hello"[..])
    };
    for (flags, fin, rsv1, opcode) in [
        ("0x81", true, false, Opcode::Text),
        ("0x82", true, false, Opcode::Binary),
        ("0x88", true, false, Opcode::Close),
        ("0x89", true, false, Opcode::Ping),
        ("0x8A", true, false, Opcode::Pong),
        ("0xC1", true, true, Opcode::Text),
        ("0x83", true, false, Opcode::Reserved(3)),
    ] {
        let (tnet, json) = kind_of(frame(flags));
        for msg in [tnet, json] {
            let req = Request::parse(&msg).unwrap();
            let RequestKind::WebSocketFrame { flags: f } = req.kind().unwrap() else {
                panic!("not a frame: {flags}");
            };
            assert_eq!(
                (f.fin(), f.rsv1(), f.opcode()),
                (fin, rsv1, opcode),
                "{flags}"
            );
            assert!(!f.rsv2() && !f.rsv3());
            assert_eq!(req.body(), b"hello");
        }
    }
    assert!(matches!(frame("0xZZ").kind(), Err(RequestError::Flags(_))));
    let no_flags = Request::new("s", 9, "/ws").with_header("METHOD", "WEBSOCKET");
    assert!(matches!(
        no_flags.kind(),
        Err(RequestError::MissingHeader("FLAGS"))
    ));
    let bad_accept = Request::new("s", 9, "/ws")
        .with_header("METHOD", "WEBSOCKET_HANDSHAKE")
        .with_body(&b"\xff"[..]);
    assert!(matches!(bad_accept.kind(), Err(RequestError::BodyNotUtf8)));
}

#[test]
fn uploads() {
    let base = || {
        Request::new("s", 2, "/up")
            .with_header("METHOD", "POST")
            .with_header("content-length", "30000")
    };
    let start = base().with_header("x-mongrel2-upload-start", "/tmp/upload.ABC");
    assert_eq!(
        start.kind().unwrap(),
        RequestKind::UploadStart {
            path: "/tmp/upload.ABC"
        }
    );
    let done = base()
        .with_header("x-mongrel2-upload-start", "/tmp/upload.ABC")
        .with_header("x-mongrel2-upload-done", "/tmp/upload.ABC");
    assert_eq!(
        done.kind().unwrap(),
        RequestKind::UploadDone {
            path: "/tmp/upload.ABC"
        }
    );
    assert_eq!(done.upload_start(), Some("/tmp/upload.ABC"));
    assert_eq!(done.upload_done(), Some("/tmp/upload.ABC"));

    let first = base()
        .with_header("UPLOAD_STREAM", "0")
        .with_body(&b"abc"[..]);
    assert_eq!(
        first.kind().unwrap(),
        RequestKind::UploadChunk {
            offset: 0,
            done: false
        }
    );
    // Later chunks carry only UPLOAD_STREAM (no METHOD, no PATH header).
    let last = Request::new("s", 2, "/up")
        .with_header("UPLOAD_STREAM", "3")
        .with_header("UPLOAD_STREAM_DONE", "1")
        .with_body(&b"def"[..]);
    let (tnet, json) = kind_of(last);
    for msg in [tnet, json] {
        let req = Request::parse(&msg).unwrap();
        assert_eq!(
            req.kind().unwrap(),
            RequestKind::UploadChunk {
                offset: 3,
                done: true
            }
        );
        assert_eq!(req.upload_stream(), Some(3));
        assert!(req.upload_stream_done());
    }
    let bad = Request::new("s", 2, "/up").with_header("UPLOAD_STREAM", "x");
    assert!(matches!(
        bad.kind(),
        Err(RequestError::InvalidHeader {
            name: "UPLOAD_STREAM",
            ..
        })
    ));
    assert!(matches!(
        Request::new("s", 2, "/").kind(),
        Err(RequestError::MissingHeader("METHOD"))
    ));
}

#[test]
fn should_close_rules() {
    let req = |version: &'static str, connection: &[&'static str]| {
        let mut r = Request::new("s", 1, "/")
            .with_header("METHOD", "GET")
            .with_header("VERSION", version);
        for c in connection {
            r = r.with_header("connection", *c);
        }
        r
    };
    assert!(req("HTTP/1.0", &[]).should_close());
    assert!(!req("HTTP/1.0", &["keep-alive"]).should_close());
    assert!(!req("HTTP/1.0", &["Keep-Alive"]).should_close());
    assert!(!req("HTTP/1.0", &["foo, KEEP-ALIVE"]).should_close());
    assert!(req("HTTP/1.0", &["keep-alive, close"]).should_close());
    assert!(!req("HTTP/1.1", &[]).should_close());
    assert!(req("HTTP/1.1", &["close"]).should_close());
    assert!(req("HTTP/1.1", &["Upgrade, Close"]).should_close());
    assert!(req("HTTP/1.1", &["upgrade", "close"]).should_close());
    assert!(!req("HTTP/1.1", &["closed"]).should_close());
    assert!(!Request::new("s", 1, "@chat").should_close(), "no VERSION");
}

#[test]
fn encode_roundtrips_both_protocols() {
    let req = Request::new("sender-1", 18446744073709551615, "/a/b")
        .with_header("PATH", "/a/b")
        .with_header("x-dup", "one")
        .with_header("x-dup", "t\"w\\o")
        .with_header("x-dup", "three")
        .with_header("METHOD", "POST")
        .with_header("x-tab", "a\tb\r\n c")
        .with_body(&b"\x00binary,body:}"[..]);
    for protocol in [HeaderProtocol::Tnetstring, HeaderProtocol::Json] {
        let req = req.clone().with_protocol(protocol);
        let bytes = req.encode();
        let back = Request::parse(&bytes).unwrap();
        assert_eq!(back, req, "{}", String::from_utf8_lossy(&bytes));
        let mut out = b"prefix".to_vec();
        back.encode_into(&mut out);
        assert_eq!(&out[6..], &bytes[..]);
    }
    assert_eq!(
        req.clone().with_protocol(HeaderProtocol::Json).encode(),
        b"sender-1 18446744073709551615 /a/b 83:{\"PATH\":\"/a/b\",\"x-dup\":[\"one\",\"t\\\"w\\\\o\",\"three\"],\"METHOD\":\"POST\",\"x-tab\":\"a\tb\r\n c\"},14:\x00binary,body:},"
    );
}

#[test]
fn encodes_captured_request_byte_exact() {
    let req = Request::parse(CAPTURED_TNET).unwrap();
    assert_eq!(req.encode(), CAPTURED_TNET);
    let json = captured_json();
    assert_eq!(Request::parse(&json).unwrap().encode(), json);
}

#[test]
fn framing_errors_are_typed() {
    use RequestError as E;
    type Check = fn(&RequestError) -> bool;
    let cases: Vec<(&[u8], Check)> = vec![
        (b"", |e| {
            matches!(
                e,
                E::Missing {
                    field: "sender",
                    offset: 0
                }
            )
        }),
        (b"s", |e| {
            matches!(
                e,
                E::Missing {
                    field: "sender",
                    ..
                }
            )
        }),
        (b" 1 / 0:}0:,", |e| {
            matches!(e, E::InvalidSender { offset: 0 })
        }),
        (b"\xff 1 / 0:}0:,", |e| matches!(e, E::InvalidSender { .. })),
        (b"s x / 0:}0:,", |e| {
            matches!(e, E::InvalidConnId { offset: 2 })
        }),
        (b"s  / 0:}0:,", |e| {
            matches!(e, E::InvalidConnId { offset: 2 })
        }),
        (b"s 18446744073709551616 / 0:}0:,", |e| {
            matches!(e, E::InvalidConnId { .. })
        }),
        (b"s 1 /", |e| matches!(e, E::Missing { field: "path", .. })),
        (b"s 1 / ", |e| {
            matches!(
                e,
                E::Missing {
                    field: "headers",
                    offset: 6
                }
            )
        }),
        (b"s 1 / 0:}", |e| {
            matches!(
                e,
                E::Missing {
                    field: "body",
                    offset: 9
                }
            )
        }),
        (b"s 1 / 3:abc,0:,", |e| {
            matches!(e, E::UnknownHeaderFormat { offset: 6 })
        }),
        (b"s 1 / 0:]0:,", |e| {
            matches!(e, E::UnknownHeaderFormat { .. })
        }),
        (b"s 1 / 0:}1:1#", |e| {
            matches!(e, E::InvalidBody { offset: 9 })
        }),
        (b"s 1 / 0:}0:,x", |e| {
            matches!(e, E::TrailingBytes { offset: 12 })
        }),
        (b"s 1 / 0:}5:ab,", |e| {
            matches!(e, E::Tnetstring(tnetstring::Error::Truncated { offset: 9 }))
        }),
        (b"s 1 / 1234567890:", |e| {
            matches!(
                e,
                E::Tnetstring(tnetstring::Error::LengthTooLong { offset: 6 })
            )
        }),
        (b"s 1 / 8:1:1#1:a,}0:,", |e| {
            matches!(
                e,
                E::Tnetstring(tnetstring::Error::NonStringKey { offset: 8 })
            )
        }),
        (b"s 1 / 4:1:a,}0:,", |e| {
            matches!(e, E::Tnetstring(tnetstring::Error::MissingValue { .. }))
        }),
        (b"s 1 / 7:1:a,0:}}0:,", |e| {
            matches!(e, E::InvalidHeaderValue { offset: 12 })
        }),
        (b"s 1 / 10:1:a,3:0:]]}0:,", |e| {
            matches!(e, E::InvalidHeaderValue { .. })
        }),
        (b"s 1 / 8:1:a,1:x#}0:,", |e| {
            matches!(e, E::Tnetstring(tnetstring::Error::InvalidInteger { .. }))
        }),
    ];
    for (input, check) in cases {
        let err = Request::parse(input).unwrap_err();
        assert!(check(&err), "{:?}: {err:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn tnetstring_scalar_header_values_become_text() {
    let msg = b"s 1 / 52:1:a,2:12#1:b,3:1.5^1:c,4:true!1:d,0:~1:e,8:1:x,1:2#]}0:,";
    let req = Request::parse(msg).unwrap();
    assert_eq!(req.header("a"), Some("12"));
    assert_eq!(req.header("b"), Some("1.5"));
    assert_eq!(req.header("c"), Some("true"));
    assert_eq!(req.header("d"), Some(""));
    assert_eq!(req.header_all("e").collect::<Vec<_>>(), ["x", "2"]);
}

#[test]
fn limits_bound_headers_and_values() {
    let mut req = Request::new("s", 1, "/");
    for i in 0..10 {
        req = req.with_header(format!("h{i}"), "v");
    }
    for _ in 0..4 {
        req = req.with_header("dup", "v");
    }
    let limits = RequestLimits {
        max_headers: 11,
        max_values_per_header: 4,
        max_size: 4096,
    };
    for protocol in [HeaderProtocol::Tnetstring, HeaderProtocol::Json] {
        let msg = req.clone().with_protocol(protocol).encode();
        assert!(Request::parse_with_limits(&msg, &limits).is_ok());
        let fewer_headers = RequestLimits {
            max_headers: 10,
            ..limits
        };
        assert!(matches!(
            Request::parse_with_limits(&msg, &fewer_headers),
            Err(RequestError::TooManyHeaders { max: 10, .. })
        ));
        let fewer_values = RequestLimits {
            max_values_per_header: 3,
            ..limits
        };
        assert!(matches!(
            Request::parse_with_limits(&msg, &fewer_values),
            Err(RequestError::TooManyValues { max: 3, .. })
        ));
    }
}

#[test]
fn non_utf8_header_values_are_replaced_not_rejected() {
    let msg = b"s 1 / 12:1:a,5:caf\xe9!,}0:,";
    let req = Request::parse(msg).unwrap();
    assert_eq!(req.header("a"), Some("caf\u{fffd}!"));
}

#[test]
fn query_parameters() {
    let bare = Request::new("s", 1, "/");
    assert!(bare.query_pairs().is_empty());
    assert_eq!(bare.query("a"), None);
    let req = bare.with_header("QUERY", "a=1&b=%C3%A9t%C3%A9&a=2&empty=&flag");
    assert_eq!(req.query("a").as_deref(), Some("1"));
    assert_eq!(req.query("b").as_deref(), Some("été"));
    assert_eq!(req.query("empty").as_deref(), Some(""));
    assert_eq!(req.query("flag").as_deref(), Some(""));
    assert_eq!(req.query("A"), None, "names are case-sensitive");
}

#[test]
fn the_whole_message_size_is_bounded() {
    let msg = Request::new("s", 1, "/")
        .with_body(vec![b'x'; 100])
        .encode();
    let exact = RequestLimits {
        max_size: msg.len(),
        ..RequestLimits::default()
    };
    assert!(Request::parse_with_limits(&msg, &exact).is_ok());
    let smaller = RequestLimits {
        max_size: msg.len() - 1,
        ..exact
    };
    assert!(matches!(
        Request::parse_with_limits(&msg, &smaller),
        Err(RequestError::TooLarge { size, max }) if size == msg.len() && max == msg.len() - 1
    ));
    let big = vec![b'x'; crate::request::DEFAULT_MAX_REQUEST_SIZE];
    let msg = Request::new("s", 1, "/").with_body(big).encode();
    assert!(matches!(
        Request::parse(&msg),
        Err(RequestError::TooLarge { .. })
    ));
}

#[test]
fn header_values_nest_no_deeper_than_a_list_of_strings() {
    // tnetstring headers: a dict value, and a list holding a dict or a list, are refused.
    let headers = |inner: &str| format!("s 1 / {}:{inner}}}0:,", inner.len()).into_bytes();
    for value in ["0:}", "3:0:}]", "3:0:]]"] {
        assert!(
            matches!(
                Request::parse(&headers(&format!("1:a,{value}"))),
                Err(RequestError::InvalidHeaderValue { .. })
            ),
            "{value}"
        );
    }
    // A peer's deep nesting fails on the first level too deep, without recursing.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let json = format!("{{\"a\":{deep}}}");
    let msg = format!("s 1 / {}:{json},0:,", json.len());
    assert!(matches!(
        Request::parse(msg.as_bytes()),
        Err(RequestError::InvalidJsonHeaders { .. })
    ));
    let json = r#"{"a":{"b":"c"}}"#;
    let msg = format!("s 1 / {}:{json},0:,", json.len());
    assert!(matches!(
        Request::parse(msg.as_bytes()),
        Err(RequestError::InvalidJsonHeaders { .. })
    ));
}
