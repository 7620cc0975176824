//! HTTP/1.0 clients and the `Date` header, through a real Mongrel2 with a raw socket.

use mongrel2_test_fixture as common;
mod raw_http;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{HandlerConf, Mongrel2};
use mongrel2_transceiver::http::{ChunkedResponse, Response};
use mongrel2_transceiver::request::OwnedRequest;
use mongrel2_transceiver::{ConnId, Event, Transceiver};
use raw_http::{closed_by_server, header, read_response};

const TIMEOUT: Duration = Duration::from_secs(5);

fn setup() -> (Mongrel2, Transceiver) {
    let m2 = Mongrel2::builder().handler(HandlerConf::new("/h")).start();
    let h = m2.handler(0);
    let mut handler = Transceiver::builder(&h.send_ident)
        .pull(&h.send_spec)
        .publish(&h.recv_spec)
        .control(None)
        .build()
        .expect("handler builds");
    assert!(handler.wait_ready(TIMEOUT).unwrap(), "Mongrel2 subscribed");
    (m2, handler)
}

fn connect(m2: &Mongrel2) -> TcpStream {
    let client = TcpStream::connect(m2.http_addr()).expect("connect");
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client
}

/// The next HTTP request, past the disconnect notices of earlier clients.
fn next_request(handler: &mut Transceiver) -> OwnedRequest {
    loop {
        match handler.recv_timeout(TIMEOUT).expect("recv") {
            Some(Event::Disconnected(_)) => continue,
            Some(Event::Http(request)) => return request,
            other => panic!("expected an HTTP request, got {other:?}"),
        }
    }
}

#[test]
fn responses_carry_a_date_unless_the_handler_says_otherwise() {
    let (m2, mut handler) = setup();
    let mut client = connect(&m2);
    for response in [
        Response::ok().body("auto"),
        Response::ok().date(false).body("none"),
        Response::ok()
            .header("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .body("own"),
    ] {
        client
            .write_all(b"GET /h HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let request = next_request(&mut handler);
        handler.reply_http(&request, &response).unwrap();
        let (head, body) = read_response(&mut client);
        let date = header(&head, "date");
        match &body[..] {
            b"auto" => {
                let date = date.expect("a Date header");
                assert!(httpdate::parse_http_date(date).is_ok(), "{head}");
            }
            b"none" => assert_eq!(date, None, "{head}"),
            _ => assert_eq!(date, Some("Sun, 06 Nov 1994 08:49:37 GMT"), "{head}"),
        }
        assert_eq!(
            head.matches("\r\nDate:").count(),
            usize::from(date.is_some())
        );
    }
}

#[test]
fn an_http_1_0_keep_alive_request_keeps_its_connection() {
    let (m2, mut handler) = setup();
    let mut client = connect(&m2);
    for round in ["first", "second"] {
        client
            .write_all(b"GET /h HTTP/1.0\r\nHost: localhost\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap();
        let request = next_request(&mut handler);
        assert!(!request.should_close());
        handler
            .reply_http(&request, &Response::ok().body(round))
            .unwrap();
        let (head, body) = read_response(&mut client);
        assert_eq!(body, round.as_bytes());
        assert_eq!(header(&head, "connection"), Some("keep-alive"), "{head}");
    }
    // Without keep-alive an HTTP/1.0 connection closes after its response.
    client
        .write_all(b"GET /h HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let request = next_request(&mut handler);
    handler
        .reply_http(&request, &Response::ok().body("last"))
        .unwrap();
    let (head, body) = read_response(&mut client);
    assert_eq!(body, b"last");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(closed_by_server(&mut client));
}

fn stream(handler: &mut Transceiver, request: &OwnedRequest, then_close: bool) {
    let head = ChunkedResponse::start(200).header("Content-Type", "text/plain");
    handler.stream_start(request, &head).unwrap();
    let conn = ConnId::of(request);
    handler.stream_chunk(&conn, b"one,").unwrap();
    handler.stream_chunk(&conn, b"two").unwrap();
    handler.stream_end(&conn, then_close).unwrap();
}

#[test]
fn a_stream_to_an_http_1_0_client_is_close_delimited() {
    let (m2, mut handler) = setup();
    let mut client = connect(&m2);
    client
        .write_all(b"GET /h HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let request = next_request(&mut handler);
    // The handler asks to keep the connection; HTTP/1.0 cannot end the body otherwise.
    stream(&mut handler, &request, false);
    let (head, body) = read_response(&mut client);
    assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    // read_response read up to the close: the body is the data, unframed.
    assert_eq!(body, b"one,two");

    // HTTP/1.1 still gets chunks, and the connection stays.
    let mut client = connect(&m2);
    client
        .write_all(b"GET /h HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let request = next_request(&mut handler);
    stream(&mut handler, &request, false);
    let (head, body) = read_response(&mut client);
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(body, b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n");
    // The same connection serves another request.
    client
        .write_all(b"GET /h HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let request = next_request(&mut handler);
    handler
        .reply_http(&request, &Response::ok().body("again"))
        .unwrap();
    assert_eq!(read_response(&mut client).1, b"again");
}
