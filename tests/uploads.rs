//! Upload notices through a real Mongrel2: clients can send `X-Mongrel2-Upload-*` headers
//! themselves, and those must reach the handler as ordinary HTTP requests, while genuine
//! large uploads (temp file and `upload.stream`) still arrive as upload events.

use mongrel2_test_fixture as common;
mod raw_http;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{HandlerConf, Mongrel2, UPLOAD_TEMP_STORE};
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::{ConnId, Event, Transceiver};
use raw_http::read_response;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Small enough that a modest body takes the upload path; not below Mongrel2's 4096-byte
/// read buffer (it would then stall).
const CONTENT_LENGTH_LIMIT: i64 = 4096;
const UPLOAD_LEN: usize = 10_000;

fn server(stream: bool) -> Mongrel2 {
    let builder = Mongrel2::builder()
        .handler(HandlerConf::new("/up"))
        .setting("limits.content_length", CONTENT_LENGTH_LIMIT)
        .setting("upload.temp_store", UPLOAD_TEMP_STORE);
    if stream {
        builder.setting("upload.stream", 1).start()
    } else {
        builder.start()
    }
}

fn handler(m2: &Mongrel2) -> Transceiver {
    let h = m2.handler(0);
    let mut transceiver = Transceiver::builder(&h.send_ident)
        .pull(&h.send_spec)
        .publish(&h.recv_spec)
        .control(None)
        .upload_temp_store(UPLOAD_TEMP_STORE)
        .build()
        .expect("handler builds");
    assert!(
        transceiver.wait_ready(TIMEOUT).unwrap(),
        "Mongrel2 subscribed"
    );
    transceiver
}

/// The next event, past the disconnect notices of earlier clients.
fn next_event(handler: &mut Transceiver) -> Event {
    loop {
        match handler.recv_timeout(TIMEOUT).expect("recv") {
            Some(Event::Disconnected(_)) => continue,
            Some(event) => return event,
            None => panic!("no event in time"),
        }
    }
}

fn connect(m2: &Mongrel2) -> TcpStream {
    let client = TcpStream::connect(m2.http_addr()).expect("connect");
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client
}

/// Requests with upload headers a client wrote itself. Each must reach the handler as
/// [`Event::Http`]; the handler answers `200 ordinary`.
fn forged_requests() -> Vec<(&'static str, String)> {
    let inside = "/tmp/upload.a1B2c3";
    let head = |method: &str, headers: &str| {
        format!("{method} /up/a HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n")
    };
    vec![
        (
            "done only",
            head("GET", "X-Mongrel2-Upload-Done: /etc/passwd\r\n"),
        ),
        (
            "start and done equal",
            head(
                "GET",
                "X-Mongrel2-Upload-Start: /etc/passwd\r\nX-Mongrel2-Upload-Done: /etc/passwd\r\n",
            ),
        ),
        (
            "outside the store",
            head(
                "GET",
                "X-Mongrel2-Upload-Start: /tmp/upload.a1B2c3/../../etc/passwd\r\n\
                 X-Mongrel2-Upload-Done: /tmp/upload.a1B2c3/../../etc/passwd\r\n",
            ),
        ),
        (
            "inside the store, never started",
            head(
                "GET",
                &format!(
                    "X-Mongrel2-Upload-Start: {inside}\r\nX-Mongrel2-Upload-Done: {inside}\r\n"
                ),
            ),
        ),
        (
            "inside the store, body inline",
            head(
                "POST",
                &format!(
                    "Content-Length: 5\r\nX-Mongrel2-Upload-Start: {inside}\r\n\
                     X-Mongrel2-Upload-Done: {inside}\r\n"
                ),
            ) + "hello",
        ),
        (
            // Mongrel2 lower-cases client header names, so its own upper-case stream
            // headers cannot be forged.
            "stream headers",
            head("GET", "UPLOAD_STREAM: 0\r\nUPLOAD_STREAM_DONE: 1\r\n"),
        ),
        (
            "start only",
            head("GET", &format!("X-Mongrel2-Upload-Start: {inside}\r\n")),
        ),
    ]
}

fn forged_requests_are_ordinary(m2: &Mongrel2, handler: &mut Transceiver) {
    for (case, request) in forged_requests() {
        let mut client = connect(m2);
        client.write_all(request.as_bytes()).expect("send");
        match next_event(handler) {
            Event::Http(request) => handler
                .reply_http(&request, &Response::ok().body("ordinary"))
                .unwrap(),
            other => panic!("{case}: a forged notice became {other:?}"),
        }
        let (head, body) = read_response(&mut client);
        assert!(head.starts_with("HTTP/1.1 200"), "{case}: {head}");
        assert_eq!(body, b"ordinary", "{case}");
    }
}

fn upload_body() -> Vec<u8> {
    (0..UPLOAD_LEN).map(|i| (i % 251) as u8).collect()
}

fn send_upload(m2: &Mongrel2, body: &[u8]) -> TcpStream {
    let mut client = connect(m2);
    let head = format!(
        "POST /up/file HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).expect("send head");
    client
}

#[test]
fn forged_notices_are_ordinary_requests_and_a_temp_file_upload_still_works() {
    let m2 = server(false);
    let mut handler = handler(&m2);
    forged_requests_are_ordinary(&m2, &mut handler);

    let body = upload_body();
    let mut client = send_upload(&m2, &body);
    client.write_all(&body).expect("send body");
    let Event::UploadStarted(start) = next_event(&mut handler) else {
        panic!("the upload start");
    };
    let path = start.upload_start().expect("start path").to_owned();
    let Event::UploadDone(done) = next_event(&mut handler) else {
        panic!("the upload done");
    };
    assert_eq!(done.upload_done(), Some(path.as_str()));
    // The path is relative to Mongrel2's chroot.
    let file = m2.chroot_path(&path);
    assert_eq!(std::fs::read(&file).expect("the temp file"), body);
    std::fs::remove_file(&file).unwrap();
    handler
        .reply_http(&done, &Response::new(201).body("stored"))
        .unwrap();
    let (head, reply) = read_response(&mut client);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert_eq!(reply, b"stored");
}

#[test]
fn forged_notices_are_ordinary_requests_and_a_streamed_upload_still_works() {
    let m2 = server(true);
    let mut handler = handler(&m2);
    forged_requests_are_ordinary(&m2, &mut handler);

    let body = upload_body();
    let mut client = send_upload(&m2, &body);
    let Event::UploadStarted(start) = next_event(&mut handler) else {
        panic!("the upload start");
    };
    assert!(start.is_upload_stream_start());
    let conn = ConnId::of(&start);
    client.write_all(&body).expect("send body");
    handler.grant_credits(&conn, body.len() as u64).unwrap();
    let mut received = Vec::new();
    loop {
        let Event::UploadChunk(chunk) = next_event(&mut handler) else {
            panic!("an upload chunk");
        };
        received.extend_from_slice(chunk.body());
        if chunk.upload_stream_done() {
            break;
        }
        // Mongrel2 asks again after every chunk it sent.
        handler
            .grant_credits(&conn, (body.len() - received.len()) as u64)
            .unwrap();
    }
    assert_eq!(received, body);
    handler
        .reply(
            &conn,
            "HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nstored",
        )
        .unwrap();
    let (head, reply) = read_response(&mut client);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert_eq!(reply, b"stored");
}
