//! The protocol state machine without sockets: requests and the time in, events and
//! replies out.

use std::time::{Duration, Instant};

use super::*;
use crate::request::Request;
use crate::websocket::{CloseCode, Opcode};
use crate::{CloseReason, Event, Handshake, Message};

const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn core(now: Instant) -> Core {
    let mut core = Core::new(now);
    core.set_ping_interval(Some(INTERVAL), now).unwrap();
    core.add_server("s1").unwrap();
    core
}

fn handshake(sender: &str, id: u64) -> Vec<u8> {
    Request::new(sender, id, "/ws")
        .with_header("METHOD", "WEBSOCKET_HANDSHAKE")
        .with_header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .with_body(ACCEPT.as_bytes())
        .encode()
}

pub(super) fn frame(sender: &str, id: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
    Request::new(sender, id, "/ws")
        .with_header("METHOD", "WEBSOCKET")
        .with_header("FLAGS", format!("0x{flags:X}"))
        .with_body(payload)
        .encode()
}

fn disconnect(sender: &str, id: u64) -> Vec<u8> {
    Request::new(sender, id, "@*")
        .with_header("METHOD", "JSON")
        .with_body(&br#"{"type":"disconnect"}"#[..])
        .encode()
}

/// One reply split into its sender, target ids and body.
pub(super) fn parse(out: &Outgoing) -> (String, Vec<u64>, Vec<u8>) {
    let message = &out.message;
    let space = message.iter().position(|&b| b == b' ').unwrap();
    let sender = String::from_utf8(message[..space].to_vec()).unwrap();
    let rest = &message[space + 1..];
    let colon = rest.iter().position(|&b| b == b':').unwrap();
    let len: usize = std::str::from_utf8(&rest[..colon])
        .unwrap()
        .parse()
        .unwrap();
    let ids = std::str::from_utf8(&rest[colon + 1..colon + 1 + len]).unwrap();
    let ids = ids.split(' ').map(|id| id.parse().unwrap()).collect();
    let body = rest[colon + 1 + len + 2..].to_vec();
    assert_eq!(
        sender, &*out.sender,
        "the reply goes to the server it names"
    );
    (sender, ids, body)
}

pub(super) fn replies(core: &mut Core) -> Vec<(String, Vec<u64>, Vec<u8>)> {
    std::iter::from_fn(|| core.poll_outgoing())
        .map(|out| parse(&out))
        .collect()
}

fn events(core: &mut Core) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

pub(super) fn close_frame_bytes(code: CloseCode, reason: &str) -> Vec<u8> {
    super::super::close_frame(code, reason)
}

pub(super) fn opened(core: &mut Core, id: u64) {
    core.handle_message("s1", &handshake("s1", id));
    core.outgoing.clear();
    core.events.clear();
}

#[test]
fn a_handshake_is_answered_and_opens_a_session() {
    let now = Instant::now();
    let mut core = core(now);
    core.handle_message("s1", &handshake("s1", 7));
    let out = replies(&mut core);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, vec![7]);
    let response = String::from_utf8(out[0].2.clone()).unwrap();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(response.contains(ACCEPT), "{response}");
    assert!(matches!(&events(&mut core)[..], [Event::Opened { conn, .. }] if conn.id == 7));
    assert!(core.is_session(&ConnId::new("s1", 7)));
}

#[test]
fn a_rejected_handshake_gets_the_response_then_a_close() {
    let now = Instant::now();
    let mut core = core(now);
    core.set_handshake(|_| Handshake::Reject(crate::http::Response::new(403).body("no")));
    core.handle_message("s1", &handshake("s1", 7));
    let out = replies(&mut core);
    assert_eq!(out.len(), 2);
    assert!(out[0].2.starts_with(b"HTTP/1.1 403"));
    assert!(out[1].2.is_empty(), "an empty reply closes the connection");
    assert!(events(&mut core).is_empty());
    assert_eq!(core.session_count(), 0);
}

#[test]
fn ping_rounds_keep_answering_sessions_and_close_silent_ones() {
    let start = Instant::now();
    let mut core = core(start);
    opened(&mut core, 1);
    opened(&mut core, 2);
    assert_eq!(core.next_timeout(), Some(start + INTERVAL));

    core.handle_timeout(start + INTERVAL - Duration::from_millis(1));
    assert!(!core.has_outgoing(), "nothing is due before the interval");

    core.handle_timeout(start + INTERVAL);
    let out = replies(&mut core);
    assert_eq!(out.len(), 1, "one batched ping for both sessions");
    let mut ids = out[0].1.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(out[0].2, [0x89, 0x00]);

    // Session 1 answers with a pong; session 2 stays silent.
    core.handle_message("s1", &frame("s1", 1, 0x8A, b""));
    assert!(events(&mut core).is_empty(), "pongs are not events");

    core.handle_timeout(start + 2 * INTERVAL);
    let out = replies(&mut core);
    let bodies: Vec<(Vec<u64>, Vec<u8>)> = out.into_iter().map(|(_, ids, b)| (ids, b)).collect();
    assert_eq!(
        bodies,
        vec![
            (vec![1], vec![0x89, 0x00]),
            (
                vec![2],
                close_frame_bytes(CloseCode::GOING_AWAY, "ping timeout")
            ),
            (vec![2], Vec::new()),
        ]
    );
    assert!(matches!(
        &events(&mut core)[..],
        [Event::Closed { conn, reason: CloseReason::PingTimeout }] if conn.id == 2
    ));
    assert_eq!(core.session_count(), 1);
    assert_eq!(core.next_timeout(), Some(start + 3 * INTERVAL));
}

#[test]
fn missed_rounds_are_skipped_not_fired_back_to_back() {
    let start = Instant::now();
    let mut core = core(start);
    opened(&mut core, 1);
    core.handle_timeout(start + 5 * INTERVAL + Duration::from_secs(1));
    assert_eq!(replies(&mut core).len(), 1, "one ping, no expiry");
    assert_eq!(core.next_timeout(), Some(start + 6 * INTERVAL));
}

#[test]
fn pings_can_be_turned_off() {
    let start = Instant::now();
    let mut core = core(start);
    core.set_ping_interval(None, start).unwrap();
    opened(&mut core, 1);
    assert_eq!(core.next_timeout(), None);
    core.handle_timeout(start + 1000 * INTERVAL);
    assert!(!core.has_outgoing());
    assert!(core.is_session(&ConnId::new("s1", 1)));
    assert!(core.set_ping_interval(Some(Duration::ZERO), start).is_err());
}

#[test]
fn a_client_close_is_echoed_with_its_code_and_reported() {
    let mut core = core(Instant::now());
    opened(&mut core, 3);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    core.handle_message("s1", &frame("s1", 3, 0x88, &payload));
    let bodies: Vec<Vec<u8>> = replies(&mut core).into_iter().map(|r| r.2).collect();
    assert_eq!(bodies, vec![vec![0x88, 0x02, 0x03, 0xE8], Vec::new()]);
    let events = events(&mut core);
    let [Event::Closed { reason, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!(
        reason,
        &CloseReason::Client {
            code: Some(CloseCode::NORMAL),
            reason: "bye".into()
        }
    );
    assert_eq!(reason.to_string(), "closed by the client (1000 \"bye\")");
    assert_eq!(core.session_count(), 0);
}

#[test]
fn rfc_6455_violations_close_with_their_codes() {
    let cases: [(u8, &[u8], CloseCode); 4] = [
        (0x81, &[0xff, 0xfe], CloseCode::INVALID_PAYLOAD),
        (0x81 | 0x40, b"rsv1", CloseCode::PROTOCOL_ERROR),
        (0x80, b"lone continuation", CloseCode::PROTOCOL_ERROR),
        (0x82, &[0; 65], CloseCode::TOO_BIG),
    ];
    for (flags, payload, code) in cases {
        let mut core = core(Instant::now());
        core.set_max_message_size(64);
        opened(&mut core, 4);
        core.handle_message("s1", &frame("s1", 4, flags, payload));
        let out = replies(&mut core);
        assert_eq!(out.len(), 2, "flags {flags:#x}");
        assert_eq!(&out[0].2[2..4], &code.0.to_be_bytes(), "flags {flags:#x}");
        assert!(out[1].2.is_empty());
        let events = events(&mut core);
        assert!(
            matches!(&events[..], [Event::Closed { reason: CloseReason::ProtocolViolation { code: sent, .. }, .. }] if *sent == code),
            "flags {flags:#x}: {events:?}"
        );
        assert_eq!(core.session_count(), 0);
    }
}

#[test]
fn messages_and_pings_from_the_client() {
    let mut core = core(Instant::now());
    opened(&mut core, 5);
    core.handle_message("s1", &frame("s1", 5, 0x81, b"hi"));
    core.handle_message("s1", &frame("s1", 5, 0x82, &[1, 2]));
    core.handle_message("s1", &frame("s1", 5, 0x89, b"p"));
    let events = events(&mut core);
    assert!(matches!(
        &events[..],
        [
            Event::Message { message: Message::Text(text), .. },
            Event::Message { message: Message::Binary(bytes), .. },
        ] if text == "hi" && bytes == &[1, 2]
    ));
    let bodies: Vec<Vec<u8>> = replies(&mut core).into_iter().map(|r| r.2).collect();
    assert_eq!(bodies, vec![vec![0x8A, 0x01, b'p']], "a ping gets its pong");
}

#[test]
fn a_frame_from_an_unknown_session_adopts_it() {
    let mut core = core(Instant::now());
    core.handle_message("s1", &frame("s1", 9, 0x81, b"still here"));
    let events = events(&mut core);
    assert!(matches!(
        &events[..],
        [Event::Opened { .. }, Event::Message { .. }]
    ));
    assert!(core.is_session(&ConnId::new("s1", 9)));
}

#[test]
fn disconnects_close_sessions_and_report_other_connections() {
    let mut core = core(Instant::now());
    opened(&mut core, 1);
    core.handle_message("s1", &disconnect("s1", 1));
    core.handle_message("s1", &disconnect("s1", 2));
    let events = events(&mut core);
    assert!(matches!(
        &events[..],
        [
            Event::Closed { reason: CloseReason::Disconnected, .. },
            Event::Disconnected(conn),
        ] if conn.id == 2
    ));
    assert!(!core.has_outgoing());
}

#[test]
fn deliver_text_frames_once_and_batches_per_server() {
    let mut core = core(Instant::now());
    core.add_server("s2").unwrap();
    core.set_handler_targets(2).unwrap();
    let mut conns: Vec<ConnId> = (1..=5).map(|id| ConnId::new("s1", id)).collect();
    conns.push(ConnId::new("s2", 1));
    core.deliver_text(&conns, "news").unwrap();
    let out = replies(&mut core);
    let frame = [0x81, 0x04, b'n', b'e', b'w', b's'];
    let mut s1_ids: Vec<u64> = Vec::new();
    for (sender, ids, body) in &out {
        assert_eq!(body, &frame);
        assert!(ids.len() <= 2, "handler_targets caps each message");
        if sender == "s1" {
            s1_ids.extend(ids.iter().copied());
        } else {
            assert_eq!(ids, &[1]);
        }
    }
    s1_ids.sort();
    assert_eq!(s1_ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(out.len(), 4, "three messages for s1, one for s2");

    core.deliver_binary(&[ConnId::new("s1", 1)], &[7]).unwrap();
    assert_eq!(replies(&mut core)[0].2, vec![0x82, 0x01, 7]);
}

#[test]
fn sending_to_an_unknown_server_fails() {
    let mut core = core(Instant::now());
    let err = core.send_text(&ConnId::new("nobody", 1), "x").unwrap_err();
    assert!(matches!(err, Error::UnknownSender(sender) if sender == "nobody"));
    assert!(!core.has_outgoing());
}

#[test]
fn the_handler_closing_a_session_reports_its_code() {
    let mut core = core(Instant::now());
    opened(&mut core, 1);
    core.close_session(&ConnId::new("s1", 1), CloseCode::POLICY, "lagging")
        .unwrap();
    let bodies: Vec<Vec<u8>> = replies(&mut core).into_iter().map(|r| r.2).collect();
    assert_eq!(
        bodies,
        vec![close_frame_bytes(CloseCode::POLICY, "lagging"), Vec::new()]
    );
    let events = events(&mut core);
    assert!(matches!(
        &events[..],
        [Event::Closed {
            reason: CloseReason::Handler {
                code: CloseCode::POLICY
            },
            ..
        }]
    ));
}

#[test]
fn shutdown_says_1001_to_every_session() {
    let mut core = core(Instant::now());
    core.add_server("s2").unwrap();
    opened(&mut core, 1);
    opened(&mut core, 2);
    core.handle_message("s2", &handshake("s2", 1));
    core.outgoing.clear();
    core.events.clear();
    core.shutdown();
    let out = replies(&mut core);
    let goodbye = close_frame_bytes(CloseCode::GOING_AWAY, "shutting down");
    for sender in ["s1", "s2"] {
        let mine: Vec<_> = out.iter().filter(|(s, _, _)| s == sender).collect();
        assert_eq!(mine.len(), 2, "{sender}: the goodbye, then the close");
        assert_eq!(mine[0].2, goodbye);
        assert!(mine[1].2.is_empty());
    }
    let closed = events(&mut core)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Closed {
                    reason: CloseReason::Shutdown,
                    ..
                }
            )
        })
        .count();
    assert_eq!(closed, 3);
    assert_eq!(core.session_count(), 0);
}

#[test]
fn removing_a_server_closes_its_sessions() {
    let mut core = core(Instant::now());
    opened(&mut core, 1);
    core.remove_server("s1").unwrap();
    assert!(matches!(
        &events(&mut core)[..],
        [Event::Closed {
            reason: CloseReason::Disconnected,
            ..
        }]
    ));
    assert!(core.remove_server("s1").is_err());
    assert!(core.add_server("s1").is_ok());
    assert!(matches!(
        core.add_server("s1"),
        Err(Error::DuplicateSender(_))
    ));
}

#[test]
fn close_reasons_read_as_sentences() {
    let cases = [
        (CloseReason::PingTimeout, "ping timeout"),
        (CloseReason::Disconnected, "disconnected"),
        (
            CloseReason::Handler {
                code: CloseCode::NORMAL,
            },
            "closed by the handler (1000)",
        ),
        (
            CloseReason::ProtocolViolation {
                code: CloseCode::INVALID_PAYLOAD,
                violation: "invalid UTF-8".into(),
            },
            "protocol violation (1007): invalid UTF-8",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
    let _ = Opcode::Text;
}

const STORE: &str = "/tmp/upload.XXXXXX";

/// An upload notice as Mongrel2 sends it: empty body, the client's declared length.
fn notice(id: u64, start: Option<&str>, done: Option<&str>) -> Request<'static> {
    let mut request = Request::new("s1", id, "/up")
        .with_header("METHOD", "POST")
        .with_header("VERSION", "HTTP/1.1")
        .with_header("content-length", "50000");
    if let Some(start) = start {
        request = request.with_header("x-mongrel2-upload-start", start.to_owned());
    }
    if let Some(done) = done {
        request = request.with_header("x-mongrel2-upload-done", done.to_owned());
    }
    request
}

fn upload_core() -> Core {
    let mut core = core(Instant::now());
    core.set_upload_temp_store(Some(STORE)).unwrap();
    core
}

fn judged(core: &mut Core, request: Request<'_>) -> &'static str {
    core.handle_message("s1", &request.encode());
    match core.poll_event() {
        Some(Event::UploadStarted(_)) => "start",
        Some(Event::UploadDone(_)) => "done",
        Some(Event::Http(_)) => "http",
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_genuine_temp_file_upload_is_believed() {
    let mut core = upload_core();
    let path = "/tmp/upload.a1B2c3";
    assert_eq!(judged(&mut core, notice(1, Some(path), None)), "start");
    assert_eq!(judged(&mut core, notice(1, Some(path), Some(path))), "done");
    assert_eq!(core.uploads.started_len(), 0, "the done forgets its start");
}

#[test]
fn without_a_temp_store_no_notice_is_an_upload() {
    let mut core = core(Instant::now());
    let path = "/tmp/upload.a1B2c3";
    assert_eq!(judged(&mut core, notice(1, Some(path), None)), "http");
    assert_eq!(judged(&mut core, notice(1, Some(path), Some(path))), "http");
}

#[test]
fn forged_notices_are_ordinary_requests() {
    let mut core = upload_core();
    let inside = "/tmp/upload.a1B2c3";
    // Done alone, or differing from the start.
    assert_eq!(judged(&mut core, notice(1, None, Some(inside))), "http");
    assert_eq!(
        judged(
            &mut core,
            notice(1, Some("/tmp/upload.zzzzzz"), Some(inside))
        ),
        "http"
    );
    // Outside the store, or escaping it.
    for path in [
        "/etc/passwd",
        "/tmp/upload.a1B2c3/../../etc/passwd",
        "/tmp/upload.a1B2c",
        "/tmp/upload.a1/2c3",
        "tmp/upload.a1B2c3",
    ] {
        assert_eq!(
            judged(&mut core, notice(1, Some(path), Some(path))),
            "http",
            "{path}"
        );
    }
    // Inside the store, but the request never took the upload path: it carried its body
    // inline, or declared none.
    let inline = notice(1, Some(inside), Some(inside)).with_body(&b"hello"[..]);
    assert_eq!(judged(&mut core, inline), "http");
    let no_body = Request::new("s1", 1, "/up")
        .with_header("METHOD", "GET")
        .with_header("x-mongrel2-upload-start", inside)
        .with_header("x-mongrel2-upload-done", inside);
    assert_eq!(judged(&mut core, no_body), "http");
    assert_eq!(core.uploads.started_len(), 0);
}

#[test]
fn a_done_must_match_the_start_this_process_saw() {
    let mut core = upload_core();
    let path = "/tmp/upload.a1B2c3";
    let other = "/tmp/upload.OTHER9";
    assert_eq!(judged(&mut core, notice(1, Some(path), None)), "start");
    assert_eq!(
        judged(&mut core, notice(1, Some(other), Some(other))),
        "http"
    );
    // A start seen by another process: nothing recorded here, the done is believed.
    assert_eq!(
        judged(&mut core, notice(2, Some(other), Some(other))),
        "done"
    );
}

#[test]
fn remembered_starts_are_bounded_and_forgotten_on_disconnect() {
    let mut core = upload_core();
    let max = super::super::uploads::MAX_STARTED_UPLOADS as u64;
    for id in 0..max + 10 {
        assert_eq!(
            judged(&mut core, notice(id, Some("/tmp/upload.a1B2c3"), None)),
            "start"
        );
    }
    assert_eq!(core.uploads.started_len(), max as usize);
    core.handle_message("s1", &disconnect("s1", max + 9));
    assert!(matches!(core.poll_event(), Some(Event::Disconnected(_))));
    assert_eq!(core.uploads.started_len(), max as usize - 1);
}

#[test]
fn a_temp_store_must_end_in_the_mkstemp_template() {
    let mut core = Core::new(Instant::now());
    assert!(core.set_upload_temp_store(Some("/tmp/upload")).is_err());
    assert!(core
        .set_upload_temp_store(Some("/tmp/upload.XXXXXX"))
        .is_ok());
    assert!(core.set_upload_temp_store(None).is_ok());
}

#[test]
fn streams_to_http_1_0_are_close_delimited() {
    use crate::http::ChunkedResponse;
    let mut core = core(Instant::now());
    let request = |id: u64, version: &str| {
        Request::new("s1", id, "/")
            .with_header("METHOD", "GET")
            .with_header("VERSION", version.to_owned())
    };
    let head = ChunkedResponse::start(200).date(false);
    for (id, version) in [(1, "HTTP/1.0"), (2, "HTTP/1.1")] {
        let conn = crate::ConnId::of(&request(id, version));
        core.stream_start(&request(id, version), &head).unwrap();
        core.stream_chunk(&conn, b"data").unwrap();
        core.stream_end(&conn, false).unwrap();
    }
    let bodies: Vec<Vec<u8>> = replies(&mut core).into_iter().map(|r| r.2).collect();
    let http10: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"data",
        b"",
    ];
    let http11: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4\r\ndata\r\n",
        b"0\r\n\r\n",
    ];
    assert_eq!(bodies, [http10, http11].concat());
}
