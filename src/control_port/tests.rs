//! The client against fake control ports: garbage, refusals, timeouts.

use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A REP socket on a fresh inproc endpoint that answers each request with the next of
/// `answers` and hands back the requests it got.
fn fake_port(
    context: &zmq::Context,
    answers: Vec<Vec<u8>>,
) -> (String, thread::JoinHandle<Vec<Vec<u8>>>) {
    let rep = context.socket(zmq::REP).unwrap();
    rep.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = rep.get_last_endpoint().unwrap().unwrap();
    let server = thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            requests.push(rep.recv_bytes(0).unwrap());
            rep.send(answer, 0).unwrap();
        }
        requests
    });
    (endpoint, server)
}

/// Encodes a `{"headers": [...], "rows": [[...]]}` answer.
fn table(headers: &[&str], rows: Vec<Vec<Value<'static>>>) -> Vec<u8> {
    let headers = headers.iter().map(|h| Value::from(*h)).collect::<Vec<_>>();
    let rows = rows.into_iter().map(Value::List).collect::<Vec<_>>();
    let dict: Dict = [
        ("headers", Value::List(headers)),
        ("rows", Value::List(rows)),
    ]
    .into_iter()
    .collect();
    Value::Dict(dict).to_bytes().unwrap()
}

fn dict(entries: Vec<(&'static str, Value<'static>)>) -> Vec<u8> {
    Value::Dict(entries.into_iter().collect())
        .to_bytes()
        .unwrap()
}

fn client(context: &zmq::Context, endpoint: &str) -> ControlPort {
    ControlPort::with_context(context, endpoint)
        .unwrap()
        .timeout(Duration::from_secs(5))
}

#[test]
fn requests_are_a_command_and_an_args_dict() {
    let context = zmq::Context::new();
    let ok = table(&["id"], vec![vec![Value::from("OK")]]);
    let (endpoint, server) = fake_port(&context, vec![ok.clone(), ok]);
    let mut port = client(&context, &endpoint);
    let _ = port.call("uuid", Dict::new());
    let _ = port.status(StatusWhat::Net);
    let requests = server.join().unwrap();
    assert_eq!(requests[0], b"10:4:uuid,0:}]");
    assert_eq!(requests[1], b"26:6:status,13:4:what,3:net,}]");
}

#[test]
fn garbage_answers_are_errors_and_the_client_keeps_working() {
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not a tnetstring".to_vec(),
        b"999999999:x".to_vec(),
        b"2:hi,".to_vec(),
        b"0:}".to_vec(),
        // A header that is a number.
        dict(vec![
            ("headers", Value::List(vec![Value::from(3)])),
            ("rows", Value::List(vec![])),
        ]),
        // A row longer than the headers.
        table(&[], vec![vec![Value::from("x")]]),
        // Rows that are not lists.
        dict(vec![
            ("headers", Value::List(vec![])),
            ("rows", Value::from("x")),
        ]),
        [
            table(&["uuid"], vec![vec![Value::from("a")]]),
            b"trailing".to_vec(),
        ]
        .concat(),
        vec![0xff; 64],
        // A table that is fine, but not what `uuid` returns.
        table(&["a"], vec![]),
        // Two rows where one is expected.
        table(
            &["uuid"],
            vec![vec![Value::from("a")], vec![Value::from("b")]],
        ),
    ];
    let n = garbage.len();
    let mut answers = garbage;
    answers.push(table(&["uuid"], vec![vec![Value::from("abcd-123")]]));
    let context = zmq::Context::new();
    let (endpoint, server) = fake_port(&context, answers);
    let mut port = client(&context, &endpoint);
    for i in 0..n {
        match port.uuid() {
            Err(ControlError::BadReply {
                endpoint: named, ..
            }) => assert_eq!(named, endpoint),
            other => panic!("answer {i}: {other:?}"),
        }
    }
    assert_eq!(port.uuid().unwrap(), "abcd-123");
    server.join().unwrap();
}

#[test]
fn deep_nesting_is_refused_without_recursing() {
    let mut deep = b"0:]".to_vec();
    for _ in 0..10_000 {
        deep = [format!("{}:", deep.len()).into_bytes(), deep, b"]".to_vec()].concat();
    }
    let context = zmq::Context::new();
    let (endpoint, server) = fake_port(&context, vec![deep]);
    let err = client(&context, &endpoint).help().unwrap_err();
    assert!(matches!(err, ControlError::BadReply { .. }), "{err:?}");
    server.join().unwrap();
}

#[test]
fn a_refusal_carries_what_mongrel2_said() {
    let refusal = dict(vec![
        ("code", Value::from("NOT_CONNECTED")),
        ("error", Value::from("Socket not connected.")),
    ]);
    let context = zmq::Context::new();
    let (endpoint, server) = fake_port(&context, vec![refusal]);
    let err = client(&context, &endpoint).kill(7).unwrap_err();
    assert_eq!(err.refusal_code(), Some("NOT_CONNECTED"));
    let text = err.to_string();
    assert!(
        text.contains("Socket not connected.") && text.contains(&endpoint),
        "{text}"
    );
    assert_eq!(server.join().unwrap()[0], b"19:4:kill,9:2:id,1:7#}]");
}

#[test]
fn a_dead_endpoint_times_out_in_time_and_a_later_server_is_reached() {
    let context = zmq::Context::new();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = &format!("ipc://{}/control", dir.path().display());
    let timeout = Duration::from_millis(200);
    let mut port = ControlPort::with_context(&context, endpoint)
        .unwrap()
        .timeout(timeout);
    let started = Instant::now();
    let err = port.time().unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains(endpoint), "{err}");
    assert!(took >= timeout && took < timeout * 10, "{took:?}");
    // The stuck REQ was thrown away: a server that appears now answers the next call.
    let rep = context.socket(zmq::REP).unwrap();
    rep.bind(endpoint).unwrap();
    let server = thread::spawn(move || {
        rep.recv_bytes(0).unwrap();
        rep.send(table(&["time"], vec![vec![Value::from("1234")]]), 0)
            .unwrap();
    });
    port.set_timeout(Duration::from_secs(5));
    assert_eq!(port.time().unwrap(), 1234);
    server.join().unwrap();
}
