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
            conn_id: Some(42),
            text: "abc-123".into(),
            bare: false,
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

/// The seed's Connector, byte for byte (mongrel2-transceiver 0.3.0, tnetstring headers).
#[test]
fn the_seed_connectors_requests_are_understood() {
    let guid = "9b2f6c1e-3d4a-4f5b-8c7d-1e2f3a4b5c6d";
    let ping =
        format!("python_server -1 /__ping__ 73:6:METHOD,8:MONGREL2,5:QUERY,41:text={guid},}}0:,");
    let (reply, action) = interpret(ping.as_bytes());
    assert_eq!(reply, RECEIVED);
    assert_eq!(
        action,
        Ok(Some(Action::Ping {
            sender: "python_server".into(),
            conn_id: None,
            text: guid.into(),
            bare: true,
        }))
    );

    let body = r#"{"push": ["127.0.0.1", 5555], "sub": ["127.0.0.1", 5556]}"#;
    let add = format!(
        "python_server -1 /__add_connection__ 16:6:METHOD,4:JSON,}}{}:{body},",
        body.len()
    );
    assert_eq!(
        interpret(add.as_bytes()).1,
        Ok(Some(Action::Add {
            sender: "python_server".into(),
            pull: "tcp://127.0.0.1:5555".into(),
            publish: "tcp://127.0.0.1:5556".into(),
        }))
    );
    let remove = b"python_server -1 /__remove_connection__ 16:6:METHOD,4:JSON,}2:{},";
    assert_eq!(
        interpret(remove).1,
        Ok(Some(Action::Remove {
            sender: "python_server".into()
        }))
    );
    let disconnect_ping = b"python_server -1 /__disconnect_ping__ 20:6:METHOD,8:MONGREL2,}0:,";
    assert_eq!(interpret(disconnect_ping).1, Ok(None));
}

#[test]
fn minus_one_stays_refused_outside_the_control_socket() {
    let ping = b"python_server -1 /__ping__ 20:6:METHOD,8:MONGREL2,}0:,";
    assert!(matches!(
        Request::parse(ping),
        Err(crate::request::RequestError::InvalidConnId { offset: 14 })
    ));
    assert!(Request::parse_control(b"s -2 /x 0:}0:,").is_err());
}
