use super::*;
use crate::request::HeaderProtocol;

fn control(path: &str, method: &str, query: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut request = Request::new("server-1", 42, path)
        .with_header("METHOD", method)
        .with_header("PATH", path)
        .with_body(body.to_vec())
        .with_protocol(HeaderProtocol::Json);
    if let Some(query) = query {
        request = request.with_header("QUERY", query);
    }
    request.encode()
}

#[test]
fn ping_in_any_case_gets_pong() {
    assert_eq!(interpret(b"PING").0, PONG);
    assert_eq!(interpret(b"ping").0, PONG);
    assert_eq!(interpret(b"PiNg").0, PONG);
}

#[test]
fn garbage_is_received_and_reported() {
    let (reply, action) = interpret(b"\xff\x00 not a request");
    assert_eq!(reply, RECEIVED);
    assert!(action.is_err());
}

#[test]
fn add_connection_builds_tcp_endpoints() {
    let body = br#"{"push": ["127.0.0.1", 5555], "sub": ["127.0.0.1", "5556"]}"#;
    let (reply, action) = interpret(&control("/__add_connection__", "JSON", None, body));
    assert_eq!(reply, RECEIVED);
    assert_eq!(
        action,
        Ok(Some(Action::Add {
            sender: "server-1".into(),
            pull: "tcp://127.0.0.1:5555".into(),
            publish: "tcp://127.0.0.1:5556".into(),
        }))
    );
}

#[test]
fn add_connection_rejects_odd_hosts_and_methods() {
    let body = br#"{"push": ["*;rm", 5555], "sub": ["127.0.0.1", 5556]}"#;
    assert!(
        interpret(&control("/__add_connection__", "JSON", None, body))
            .1
            .is_err()
    );
    let body = br#"{"push": ["127.0.0.1", 5555], "sub": ["127.0.0.1", 5556]}"#;
    assert!(
        interpret(&control("/__add_connection__", "GET", None, body))
            .1
            .is_err()
    );
}

#[test]
fn ping_carries_the_text_and_conn_id() {
    let (_, action) = interpret(&control("/__ping__", "GET", Some("text=abc-123"), b""));
    assert_eq!(
        action,
        Ok(Some(Action::Ping {
            sender: "server-1".into(),
            conn_id: 42,
            text: "abc-123".into(),
        }))
    );
}

#[test]
fn remove_and_disconnect_ping() {
    let (_, action) = interpret(&control("/__remove_connection__", "GET", None, b""));
    assert_eq!(
        action,
        Ok(Some(Action::Remove {
            sender: "server-1".into()
        }))
    );
    let (reply, action) = interpret(&control("/__disconnect_ping__", "GET", None, b""));
    assert_eq!((reply, action), (RECEIVED, Ok(None)));
}
