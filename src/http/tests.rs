use serde::Serialize;

use super::response::Digits;
use super::*;

/// The response as text, without its automatic `Date` line (checked, then left out so
/// the framing assertions stay exact).
fn text(r: &Response) -> String {
    without_date(&String::from_utf8(r.encode().unwrap()).unwrap())
}

fn without_date(text: &str) -> String {
    let Some(at) = text.find("\r\nDate: ") else {
        return text.to_owned();
    };
    let line = &text[at + 2..];
    let end = line.find("\r\n").unwrap();
    assert!(httpdate::parse_http_date(&line[6..end]).is_ok(), "{line}");
    format!("{}{}", &text[..at + 2], &line[end + 2..])
}

#[test]
fn status_line_and_body() {
    let r = Response::new(404).body("nope");
    assert_eq!(
        text(&r),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
    );
    assert_eq!(r.encoded_len(), r.encode().unwrap().len());
}

#[test]
fn empty_body_has_zero_length() {
    assert_eq!(
        text(&Response::ok()),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn reason_phrases() {
    assert_eq!(reason_phrase(200), "OK");
    assert_eq!(reason_phrase(101), "Switching Protocols");
    assert_eq!(reason_phrase(413), "Content Too Large");
    assert_eq!(reason_phrase(422), "Unprocessable Content");
    assert_eq!(reason_phrase(511), "Network Authentication Required");
    assert_eq!(reason_phrase(299), "Success");
    assert_eq!(reason_phrase(499), "Client Error");
    assert_eq!(reason_phrase(599), "Server Error");
    assert_eq!(reason_phrase(42), "Unknown");
    // Every known code has a specific phrase, distinct from the class fallbacks.
    for code in [100, 103, 226, 308, 418, 451, 508] {
        assert!(![
            "Informational",
            "Success",
            "Redirection",
            "Client Error",
            "Server Error"
        ]
        .contains(&reason_phrase(code)));
    }
}

#[test]
fn custom_reason() {
    let r = Response::new(299).reason("Fine Thanks");
    assert!(text(&r).starts_with("HTTP/1.1 299 Fine Thanks\r\n"));
    let r = Response::new(200).reason("");
    assert!(text(&r).starts_with("HTTP/1.1 200 \r\n"));
}

#[test]
fn reason_with_crlf_is_rejected() {
    let r = Response::ok().reason("OK\r\nX-Evil: 1");
    assert!(matches!(r.error(), Some(HttpError::InvalidReason(_))));
    let mut out = b"kept".to_vec();
    assert!(matches!(
        r.encode_into(&mut out),
        Err(HttpError::InvalidReason(_))
    ));
    assert_eq!(out, b"kept", "nothing is written on error");
}

#[test]
fn invalid_status() {
    assert!(matches!(
        Response::new(99).encode(),
        Err(HttpError::InvalidStatus(99))
    ));
    assert!(matches!(
        Response::new(600).header("X", "y").encode(),
        Err(HttpError::InvalidStatus(600))
    ));
    assert!(matches!(
        ChunkedResponse::start(7).encode(),
        Err(HttpError::InvalidStatus(7))
    ));
    assert!(Response::new(100).encode().is_ok());
    assert!(Response::new(599).encode().is_ok());
}

#[test]
fn repeated_headers_keep_order() {
    let r = Response::ok()
        .header("Set-Cookie", "a=1")
        .header("X-Other", "x")
        .header("Set-Cookie", "b=2")
        .body("hi");
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: x\r\nSet-Cookie: b=2\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    let headers: Vec<_> = r.headers().collect();
    assert_eq!(
        headers,
        [
            ("Set-Cookie", "a=1"),
            ("X-Other", "x"),
            ("Set-Cookie", "b=2")
        ]
    );
}

#[test]
fn crlf_injection_is_rejected() {
    for (name, value) in [
        ("X-A", "v\r\nSet-Cookie: evil"),
        ("X-A", "v\nx"),
        ("X-A", "v\rx"),
        ("X-A", "v\0x"),
        ("X-A\r\nEvil", "v"),
        ("X-A:", "v"),
        ("X A", "v"),
        ("", "v"),
    ] {
        let r = Response::ok().header(name, value).header("X-Ok", "1");
        let err = r.encode().unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::InvalidHeaderName(_) | HttpError::InvalidHeaderValue { .. }
            ),
            "{name:?}: {value:?}"
        );
        let chunked = ChunkedResponse::start(200).header(name, value);
        assert!(chunked.encode().is_err(), "{name:?}: {value:?}");
    }
    // The first error is the one reported.
    let r = Response::ok().header("X", "\n").reason("\r");
    assert!(matches!(
        r.encode(),
        Err(HttpError::InvalidHeaderValue { .. })
    ));
    // Tabs and non-ASCII text are legal in values.
    let r = Response::ok().header("X-T", "a\tb é");
    assert!(text(&r).contains("X-T: a\tb é\r\n"));
}

#[test]
fn user_content_length_is_replaced_when_body_is_sent() {
    let r = Response::ok()
        .header("content-length", "999")
        .header("Transfer-Encoding", "chunked")
        .header("X-A", "1")
        .body("abc");
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc"
    );
    assert_eq!(r.encoded_len(), r.encode().unwrap().len());
}

#[test]
fn head_keeps_length_without_body() {
    let r = Response::ok()
        .header("Content-Type", "text/plain")
        .body("hello")
        .head(true);
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    );
    assert!(!r.body_allowed());
}

#[test]
fn head_keeps_first_user_content_length() {
    let r = Response::ok()
        .header("Content-Length", "1234")
        .header("Content-Length", "5")
        .head(true);
    assert_eq!(text(&r), "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    let r = Response::ok()
        .header("Content-Length", "1234")
        .header("Transfer-Encoding", "chunked")
        .head(true);
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn no_body_statuses() {
    let r = Response::new(204).header("Content-Length", "3").body("abc");
    assert_eq!(text(&r), "HTTP/1.1 204 No Content\r\n\r\n");
    let r = Response::new(101).header("Upgrade", "websocket").body("x");
    assert_eq!(
        text(&r),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    );
    let r = Response::new(304).header("ETag", "\"x\"").body("abc");
    assert_eq!(text(&r), "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
    let r = Response::new(304).header("Content-Length", "10");
    assert_eq!(
        text(&r),
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
    );
    let r = Response::new(204).head(true);
    assert_eq!(text(&r), "HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn connection_close() {
    let r = Response::ok().body("x").close(true);
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    let r = Response::ok()
        .header("Connection", "keep-alive")
        .close(true);
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let r = Response::ok().header("Connection", "keep-alive");
    assert!(text(&r).contains("Connection: keep-alive\r\n"));
}

#[test]
fn json_body() {
    #[derive(Serialize)]
    struct Msg {
        a: u32,
    }
    let r = Response::ok()
        .header("Content-Type", "text/plain")
        .json(&Msg { a: 1 });
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
    );
}

#[test]
fn encode_into_appends_with_one_allocation() {
    let r = Response::ok()
        .header("Content-Length", "1")
        .header("X", "y")
        .close(true)
        .body(vec![b'z'; 100_000]);
    let mut out = b"prefix".to_vec();
    r.encode_into(&mut out).unwrap();
    assert!(out.starts_with(b"prefixHTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 100000\r\n"));
    assert_eq!(out.len(), 6 + r.encoded_len());
    // Into an empty Vec the single reservation is exactly the encoded size.
    let mut exact = Vec::new();
    r.encode_into(&mut exact).unwrap();
    assert_eq!(exact.capacity(), r.encoded_len());
    assert_eq!(exact.len(), r.encoded_len());
}

#[test]
fn chunked_head() {
    let head = ChunkedResponse::start(200)
        .date(false)
        .header("Content-Type", "text/event-stream")
        .header("Content-Length", "5")
        .header("Transfer-Encoding", "gzip")
        .close(true)
        .encode()
        .unwrap();
    assert_eq!(
        head,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let head = ChunkedResponse::start(204).date(false).encode().unwrap();
    assert_eq!(head, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert!(!ChunkedResponse::start(204).body_allowed());
    assert!(ChunkedResponse::start(200).body_allowed());
    assert!(!ChunkedResponse::start(200).head(true).body_allowed());
}

#[test]
fn chunk_bytes() {
    assert_eq!(ChunkedResponse::chunk(b"hello"), b"5\r\nhello\r\n");
    assert_eq!(ChunkedResponse::chunk(&[b'x'; 255])[..5], *b"ff\r\nx");
    assert_eq!(ChunkedResponse::chunk(&[b'x'; 4096])[..6], *b"1000\r\n");
    assert!(ChunkedResponse::chunk(b"").is_empty());
    assert_eq!(ChunkedResponse::end(), b"0\r\n\r\n");
    let mut out = Vec::new();
    ChunkedResponse::chunk_into(b"ab", &mut out);
    ChunkedResponse::chunk_into(b"", &mut out);
    ChunkedResponse::chunk_into(b"c", &mut out);
    assert_eq!(out, b"2\r\nab\r\n1\r\nc\r\n");
}

#[test]
fn digits() {
    for n in [0usize, 7, 10, 99, 100, 123_456, usize::MAX] {
        assert_eq!(Digits::new(n).as_bytes(), n.to_string().as_bytes());
    }
}

#[test]
fn json_failure_is_reported_by_encode() {
    use std::collections::BTreeMap;
    // JSON object keys must be strings; a map keyed by tuples cannot be written.
    let bad: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
    let r = Response::ok().json(&bad).header("X", "y");
    assert!(matches!(r.encode(), Err(HttpError::Json(_))));
    // Reported again on every encode, since the builder may be reused.
    assert!(matches!(r.encode(), Err(HttpError::Json(_))));
}

#[test]
fn date_is_added_unless_turned_off_or_set() {
    let r = Response::ok();
    let raw = String::from_utf8(r.encode().unwrap()).unwrap();
    assert_eq!(raw.matches("\r\nDate: ").count(), 1, "{raw}");
    assert_eq!(r.encoded_len(), raw.len());
    let off = Response::ok().date(false).encode().unwrap();
    assert_eq!(off, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let own = Response::ok()
        .header("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
        .encode()
        .unwrap();
    assert_eq!(
        own,
        b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn keep_alive_for_http_1_0() {
    let r = Response::ok()
        .header("Connection", "close-ish")
        .keep_alive(true)
        .body("x");
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"
    );
    assert_eq!(r.encoded_len(), r.encode().unwrap().len());
    // Closing wins.
    let r = Response::ok().keep_alive(true).close(true);
    assert_eq!(
        text(&r),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let request = |version: &str, connection: Option<&str>| {
        let request = crate::request::Request::new("s", 1, "/")
            .with_header("METHOD", "GET")
            .with_header("VERSION", version.to_owned());
        match connection {
            Some(value) => request.with_header("connection", value.to_owned()),
            None => request,
        }
    };
    let kept = Response::ok().for_request(&request("HTTP/1.0", Some("Keep-Alive")));
    assert!(text(&kept).contains("Connection: keep-alive\r\n"));
    let closed = Response::ok().for_request(&request("HTTP/1.0", None));
    assert!(text(&closed).contains("Connection: close\r\n"));
    let http11 = Response::ok().for_request(&request("HTTP/1.1", None));
    assert!(!text(&http11).contains("Connection:"));
}

#[test]
fn close_delimited_stream_head() {
    let head = ChunkedResponse::start(200)
        .header("Content-Type", "text/event-stream")
        .header("Content-Length", "5")
        .header("Transfer-Encoding", "chunked")
        .close_delimited(true);
    assert_eq!(
        without_date(&String::from_utf8(head.encode().unwrap()).unwrap()),
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    let request = crate::request::Request::new("s", 1, "/")
        .with_header("METHOD", "GET")
        .with_header("VERSION", "HTTP/1.0")
        .with_header("connection", "keep-alive");
    assert!(ChunkedResponse::start(200)
        .for_request(&request)
        .is_close_delimited());
}

/// `encode_for` (what `reply_http` uses: no copy of the response) writes exactly what
/// `for_request` then `encode` would.
#[test]
fn encode_for_matches_for_request_then_encode() {
    let responses = [
        Response::ok().body("hello").date(false),
        Response::new(204).date(false),
        Response::new(304).header("ETag", "\"x\"").date(false),
        Response::ok()
            .header("Connection", "upgrade")
            .header("Content-Length", "99")
            .body("five!")
            .date(false),
        Response::ok()
            .close(true)
            .keep_alive(true)
            .body("x")
            .date(false),
    ];
    let requests = [
        ("GET", "HTTP/1.1", None),
        ("HEAD", "HTTP/1.1", None),
        ("GET", "HTTP/1.1", Some("close")),
        ("GET", "HTTP/1.0", None),
        ("GET", "HTTP/1.0", Some("keep-alive")),
        ("HEAD", "HTTP/1.0", Some("keep-alive")),
    ];
    for response in &responses {
        for (method, version, connection) in requests {
            let mut request = crate::request::Request::new("s", 1, "/")
                .with_header("METHOD", method)
                .with_header("VERSION", version);
            if let Some(value) = connection {
                request = request.with_header("connection", value);
            }
            // Both succeed here; comparing the results keeps a failure's error in the message.
            assert_eq!(
                response.encode_for(&request).map_err(|e| e.to_string()),
                response
                    .clone()
                    .for_request(&request)
                    .encode()
                    .map_err(|e| e.to_string()),
                "{method} {version} {connection:?}"
            );
        }
    }
}
