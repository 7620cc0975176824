use super::*;

#[test]
fn heads_and_bodies_are_delimited() {
    let (response, body, used) =
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
    assert_eq!(
        (response.status, body, used),
        (200, Some(Body::Length(5)), 38)
    );
    let (_, body, _) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(body, None, "a HEAD response has no body");
    let (response, body, _) = parse_head(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert!(response.chunked);
    assert_eq!(body, Some(Body::Chunked));
    assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-", false)
        .unwrap()
        .is_none());
    assert!(parse_head(b"NOT HTTP\r\n\r\n", false).is_err());
}

#[test]
fn chunks_decode_incrementally() {
    assert!(next_chunk(b"5\r\nhel").unwrap().is_none());
    match next_chunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap() {
        Some(Chunk::Data { start, len, used }) => assert_eq!((start, len, used), (3, 5, 10)),
        _ => panic!("expected data"),
    }
    assert!(matches!(
        next_chunk(b"0\r\n\r\n").unwrap(),
        Some(Chunk::Last { used: 5 })
    ));
    assert!(matches!(
        next_chunk(b"0\r\nx-t: 1\r\n\r\n").unwrap(),
        Some(Chunk::Last { used: 13 })
    ));
    assert!(next_chunk(b"5\r\nhelloXX").is_err());
}

#[test]
fn keep_alive_follows_the_version_rules() {
    let mut response = HttpResponse {
        minor_version: 1,
        status: 200,
        reason: "OK".into(),
        headers: vec![],
        body: vec![],
        chunked: false,
    };
    assert!(response.keeps_alive());
    response.headers.push(("Connection".into(), "close".into()));
    assert!(!response.keeps_alive());
    response.minor_version = 0;
    response.headers.clear();
    assert!(!response.keeps_alive());
}
