//! Parses every captured Mongrel2 message (tests/data, see its README) in both
//! header protocols: kinds, fields, agreement between the protocols, and
//! byte-exact re-encoding.

use mongrel2_transceiver::request::{HeaderProtocol, Request, RequestKind};
use mongrel2_transceiver::websocket::Opcode;

const SENDER: &str = "c6a5e1f2-58d3-4e0b-9a7c-2b4f8d1e6a93";

macro_rules! capture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("data/", $name, ".tnetstring.bin")) as &[u8],
            include_bytes!(concat!("data/", $name, ".json.bin")) as &[u8],
        )
    };
}

const CAPTURES: &[(&str, &[u8], &[u8])] = &[
    capture!("http_get"),
    capture!("http_post"),
    capture!("http_10"),
    capture!("disconnect"),
    capture!("ws_handshake"),
    capture!("ws_text"),
    capture!("ws_binary"),
    capture!("ws_ping"),
    capture!("ws_fragmented"),
    capture!("ws_rsv1"),
    capture!("ws_close"),
    capture!("json_socket"),
    capture!("flow_request"),
    capture!("credits"),
    capture!("upload_start"),
    capture!("upload_done"),
    capture!("upload_stream_start"),
    capture!("upload_stream_chunk"),
    capture!("upload_stream_done"),
];

/// Upload temp names end in six random characters that differ between runs.
fn normalized(value: &str) -> String {
    match value.strip_prefix("/tmp/upload.") {
        Some(_) => "/tmp/upload.XXXXXX".to_owned(),
        None => value.to_owned(),
    }
}

/// Headers as a sorted list: the two protocols order them differently.
fn header_set(req: &Request<'_>) -> Vec<(String, Vec<String>)> {
    let mut set: Vec<_> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.iter().map(normalized).collect()))
        .collect();
    set.sort();
    set
}

fn upload_body(range: std::ops::Range<usize>) -> Vec<u8> {
    range.map(|i| (i % 251) as u8).collect()
}

/// What each capture must parse to, checked for both protocols.
fn check(name: &str, req: &Request<'_>) {
    let kind = req.kind().unwrap_or_else(|e| panic!("{name}: {e}"));
    let frame = |flags: u8| RequestKind::WebSocketFrame {
        flags: mongrel2_transceiver::websocket::Flags::from_header(&format!("0x{flags:X}"))
            .unwrap(),
    };
    match name {
        "http_get" => {
            assert_eq!(kind, RequestKind::Http);
            assert_eq!(req.path(), "/handler/get");
            assert_eq!(req.method(), Some("GET"));
            assert_eq!(req.version(), Some("HTTP/1.1"));
            assert_eq!(req.uri(), Some("/handler/get?a=1&b=two%20words&a=3"));
            assert_eq!(req.query_string(), Some("a=1&b=two%20words&a=3"));
            assert_eq!(req.query("b").as_deref(), Some("two words"));
            assert_eq!(req.fragment(), Some("frag"));
            assert_eq!(req.pattern(), Some("/handler"));
            assert_eq!(req.url_scheme(), Some("http"));
            assert_eq!(req.remote_addr(), Some("127.0.0.1"));
            assert_eq!(req.header("Host"), Some("localhost"));
            assert_eq!(req.header("User-Agent"), Some("mongrel2-capture"));
            assert_eq!(req.header("x-dup"), Some("one"));
            assert_eq!(req.header_all("X-Dup").collect::<Vec<_>>(), ["one", "two"]);
            assert_eq!(
                req.query_pairs(),
                [
                    ("a".to_owned(), "1".to_owned()),
                    ("b".to_owned(), "two words".to_owned()),
                    ("a".to_owned(), "3".to_owned()),
                ]
            );
            assert!(!req.should_close());
            assert_eq!(req.body(), b"");
        }
        "http_post" => {
            assert_eq!(kind, RequestKind::Http);
            assert_eq!(req.method(), Some("POST"));
            assert_eq!(req.body().len(), 25);
            assert_eq!(req.header("content-length"), Some("25"));
            for needle in [&b"\x00"[..], b"\xff", b"\r\n", b",", b":"] {
                assert!(req.body().windows(needle.len()).any(|w| w == needle));
            }
        }
        "http_10" => {
            assert_eq!(kind, RequestKind::Http);
            assert_eq!(req.version(), Some("HTTP/1.0"));
            assert_eq!(req.header("host"), None);
            assert!(req.should_close());
        }
        "disconnect" => {
            assert_eq!(kind, RequestKind::Disconnect);
            assert!(req.is_disconnect());
            assert_eq!(req.path(), "@*");
            assert_eq!(req.headers().len(), 1);
        }
        "ws_handshake" => {
            assert_eq!(
                kind,
                RequestKind::WebSocketHandshake {
                    accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                }
            );
            assert_eq!(
                req.header("sec-websocket-key"),
                Some("dGhlIHNhbXBsZSBub25jZQ==")
            );
            assert_eq!(req.query_pairs(), [("room".to_owned(), "1".to_owned())]);
            assert!(!req.should_close());
        }
        "ws_text" => {
            assert_eq!(kind, frame(0x81));
            assert_eq!(req.body(), b"Hello");
        }
        "ws_binary" => {
            assert_eq!(kind, frame(0x82));
            assert_eq!(req.body(), b"\x00\x01\x02\xff");
        }
        "ws_ping" => {
            assert_eq!(kind, frame(0x89));
            assert_eq!(req.body(), b"ping!");
        }
        "ws_fragmented" => {
            assert_eq!(kind, frame(0x81));
            assert_eq!(req.body(), b"Hello, world");
        }
        "ws_rsv1" => {
            let flags = req.flags().unwrap().unwrap();
            assert!(flags.fin() && flags.rsv1() && !flags.rsv2() && !flags.rsv3());
            assert_eq!(flags.opcode(), Opcode::Text);
            assert_eq!(req.body(), b"rsv1 set");
        }
        "ws_close" => {
            assert_eq!(kind, frame(0x88));
            assert_eq!(req.flags().unwrap().unwrap().opcode(), Opcode::Close);
            assert_eq!(req.body(), b"\x03\xe8bye");
        }
        "json_socket" => {
            assert_eq!(kind, RequestKind::Json);
            assert_eq!(req.path(), "@json");
            assert_eq!(req.version(), None);
            #[derive(serde::Deserialize)]
            struct Msg<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                msg: &'a str,
            }
            let m: Msg = req.json().unwrap();
            assert_eq!((m.kind, m.msg), ("msg", "hello"));
        }
        "flow_request" => {
            assert_eq!(kind, RequestKind::Http);
            assert_eq!(req.download_credits(), Some(102_400));
        }
        "credits" => {
            assert_eq!(kind, RequestKind::Credits { credits: 41 });
            assert!(!req.is_disconnect());
        }
        "upload_start" => {
            let RequestKind::UploadStart { path } = kind else {
                panic!("{name}: {kind:?}");
            };
            assert!(path.starts_with("/tmp/upload."));
            assert_eq!(req.upload_done(), None);
            assert_eq!(req.body(), b"");
        }
        "upload_done" => {
            let RequestKind::UploadDone { path } = kind else {
                panic!("{name}: {kind:?}");
            };
            assert_eq!(Some(path), req.upload_start());
            assert_eq!(req.body(), b"");
        }
        "upload_stream_start" => {
            assert_eq!(
                kind,
                RequestKind::UploadChunk {
                    offset: 0,
                    done: false
                }
            );
            assert!(req.is_upload_stream_start());
            assert_eq!(req.method(), Some("POST"));
        }
        "upload_stream_chunk" => {
            assert_eq!(
                kind,
                RequestKind::UploadChunk {
                    offset: 0,
                    done: false
                }
            );
            assert!(!req.is_upload_stream_start());
            assert_eq!(req.headers().len(), 1);
            assert_eq!(req.body(), upload_body(0..4096));
        }
        "upload_stream_done" => {
            assert_eq!(
                kind,
                RequestKind::UploadChunk {
                    offset: 4096,
                    done: true
                }
            );
            assert_eq!(req.body(), upload_body(4096..5000));
        }
        other => panic!("no expectations for capture {other}"),
    }
}

#[test]
fn every_capture_parses_in_both_protocols() {
    for &(name, tnet, json) in CAPTURES {
        let t = Request::parse(tnet).unwrap_or_else(|e| panic!("{name}.tnetstring: {e}"));
        let j = Request::parse(json).unwrap_or_else(|e| panic!("{name}.json: {e}"));
        assert_eq!(t.protocol(), HeaderProtocol::Tnetstring, "{name}");
        assert_eq!(j.protocol(), HeaderProtocol::Json, "{name}");
        for req in [&t, &j] {
            assert_eq!(req.sender(), SENDER, "{name}");
            check(name, req);
        }
        // Both protocols carry the same request.
        assert_eq!(t.path(), j.path(), "{name}");
        assert_eq!(t.body(), j.body(), "{name}");
        assert_eq!(header_set(&t), header_set(&j), "{name}");
    }
}

#[test]
fn every_capture_reencodes_byte_exact() {
    for &(name, tnet, json) in CAPTURES {
        for msg in [tnet, json] {
            let req = Request::parse(msg).unwrap();
            assert_eq!(req.encode(), msg, "{name}");
            // Switching protocol and back is lossless too.
            let other = match req.protocol() {
                HeaderProtocol::Tnetstring => HeaderProtocol::Json,
                HeaderProtocol::Json => HeaderProtocol::Tnetstring,
            };
            let converted = req.clone().with_protocol(other).encode();
            let back = Request::parse(&converted).unwrap().into_owned();
            assert_eq!(back.with_protocol(req.protocol()).encode(), msg, "{name}");
        }
    }
}

#[test]
fn captures_parse_zero_copy() {
    for &(name, tnet, json) in CAPTURES {
        for msg in [tnet, json] {
            let req = Request::parse(msg).unwrap();
            let range = msg.as_ptr_range();
            assert!(range.contains(&req.sender().as_ptr()), "{name}");
            if !req.body().is_empty() {
                assert!(range.contains(&req.body().as_ptr()), "{name}");
            }
            for (key, value) in req.headers().iter() {
                assert!(range.contains(&key.as_ptr()), "{name}: {key}");
                for v in value.iter().filter(|v| !v.is_empty()) {
                    assert!(range.contains(&v.as_ptr()), "{name}: {key}");
                }
            }
        }
    }
}
