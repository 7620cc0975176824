//! The control-port client against a real Mongrel2 1.12.2: every command, a kill of a live
//! WebSocket, a reload under load, stop/terminate, and a control port that stops answering.

use mongrel2_test_fixture as common;
use mongrel2_test_fixture::support;

#[allow(dead_code)]
#[path = "../examples/m2ctl.rs"]
mod m2ctl;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{wait_for, HandlerConf, Mongrel2};
use mongrel2_transceiver::control_port::{ControlError, ControlPort, StatusWhat};
use mongrel2_transceiver::tnetstring::Dict;
use mongrel2_transceiver::CloseReason;
use support::{get_eventually, ws_connect, EchoHandler, HttpClient, Seen};

const WAIT: Duration = Duration::from_secs(10);

fn mongrel2_with_echo() -> (Mongrel2, EchoHandler) {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start();
    let h = m2.handler(0);
    // No pings during the test: a ping to a killed connection would tell the handler.
    let handler = EchoHandler::start(&h.send_ident, &h.send_spec, &h.recv_spec, |b| {
        b.ping_interval(Duration::from_secs(3600))
    });
    (m2, handler)
}

fn control(m2: &Mongrel2) -> ControlPort {
    ControlPort::new(m2.control_endpoint())
        .unwrap()
        .timeout(WAIT)
}

#[test]
fn the_read_only_commands_answer_in_their_documented_shapes() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start();
    let mut port = control(&m2);

    assert_eq!(port.uuid().unwrap(), m2.server_uuid());

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let time = port.time().unwrap();
    assert!((time - now).abs() < 60, "server time {time}, ours {now}");

    let info = port.info().unwrap();
    assert_eq!(info.uuid, m2.server_uuid());
    assert_eq!(info.port, i64::from(m2.http_port()));
    assert_eq!(info.bind_addr, "127.0.0.1");
    assert_eq!(info.default_hostname, "localhost");
    assert_eq!(info.pid_file, "/run/mongrel2.pid");

    let mut names: Vec<String> = port.help().unwrap().into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "control_stop",
            "help",
            "info",
            "kill",
            "reload",
            "status",
            "stop",
            "terminate",
            "time",
            "uuid"
        ]
    );

    let tasks = port.tasks().unwrap();
    assert!(tasks.iter().any(|t| t.name == "control"), "{tasks:?}");
    let table = port.status(StatusWhat::Tasks).unwrap();
    assert_eq!(table.headers(), ["id", "system", "name", "state", "status"]);

    assert!(port.connections().unwrap().is_empty());
    let table = port.status(StatusWhat::Net).unwrap();
    assert_eq!(
        table.headers(),
        [
            "id",
            "fd",
            "type",
            "last_ping",
            "last_read",
            "last_write",
            "bytes_read",
            "bytes_written"
        ]
    );
    // A client that has sent nothing is listed, without an id yet.
    let idle = std::net::TcpStream::connect(m2.http_addr()).unwrap();
    let listed = wait_for(WAIT, || {
        let conns = port.connections().unwrap();
        (!conns.is_empty()).then_some(conns)
    })
    .expect("the idle client is listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, None);
    drop(idle);
}

#[test]
fn refusals_say_what_mongrel2_answered() {
    let m2 = Mongrel2::builder().start();
    let mut port = control(&m2);

    let err = port.kill(12345).unwrap_err();
    assert_eq!(err.refusal_code(), Some("INVALID_ARGUMENT"), "{err}");
    assert!(err.to_string().contains(&m2.control_endpoint()), "{err}");

    let err = port.call("no_such_command", Dict::new()).unwrap_err();
    assert_eq!(err.refusal_code(), Some("CALLBACK_NOT_FOUND"), "{err}");

    let err = port
        .call("status", [("what", "everything")].into_iter().collect())
        .unwrap_err();
    match &err {
        ControlError::Refused { code, message, .. } => {
            assert_eq!(code, &None);
            assert!(message.contains("net"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Refusals leave the client usable.
    assert_eq!(port.uuid().unwrap(), m2.server_uuid());
}

#[test]
fn kill_closes_a_live_websocket_but_sends_the_handler_no_notice() {
    let (m2, handler) = mongrel2_with_echo();
    let mut port = control(&m2);
    let mut ws = ws_connect(m2.http_addr(), "/echo");
    let conn = handler.wait(WAIT, |seen| match seen {
        Seen::Opened(conn) => Some(conn.clone()),
        _ => None,
    });
    ws.send(tungstenite::Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("before"));

    let listed = port.connections().unwrap();
    assert!(listed.iter().any(|c| c.id == Some(conn.id)), "{listed:?}");

    port.kill(conn.id).unwrap();

    // The client sees its connection end (no close frame: Mongrel2 just closes the socket).
    match ws.read() {
        Ok(tungstenite::Message::Close(_)) | Err(_) => {}
        Ok(other) => panic!("expected the connection to end, got {other:?}"),
    }
    assert!(wait_for(WAIT, || {
        let conns = port.connections().unwrap();
        (!conns.iter().any(|c| c.id == Some(conn.id))).then_some(())
    })
    .is_some());

    // Mongrel2 1.12.2 pushes no disconnect notice after a kill. A second is far longer than
    // a notice takes through a local Mongrel2 (a graceful stop's notices arrive in ms).
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        if let Ok(Seen::Closed(closed, reason)) = handler.seen.recv_timeout(left) {
            panic!("unexpected notice for {closed:?}: {reason:?}");
        }
    }
    // The handler learns as soon as it writes to the connection: Mongrel2 answers a write
    // to a gone id with the disconnect notice.
    handler.handle.send_text(&conn, "anyone there?").unwrap();
    let reason = handler.wait(WAIT, |seen| match seen {
        Seen::Closed(closed, reason) if closed == &conn => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, CloseReason::Disconnected);

    let err = port.kill(conn.id).unwrap_err();
    assert!(err.refusal_code().is_some(), "{err}");
}

#[test]
fn after_a_kill_the_next_ping_tells_the_handler() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start();
    let h = m2.handler(0);
    let handler = EchoHandler::start(&h.send_ident, &h.send_spec, &h.recv_spec, |b| {
        b.ping_interval(Duration::from_millis(500))
    });
    let mut port = control(&m2);
    let _ws = ws_connect(m2.http_addr(), "/echo");
    let conn = handler.wait(WAIT, |seen| match seen {
        Seen::Opened(conn) => Some(conn.clone()),
        _ => None,
    });
    port.kill(conn.id).unwrap();
    // No write of ours: the Transceiver's own ping draws Mongrel2's disconnect notice.
    let reason = handler.wait(WAIT, |seen| match seen {
        Seen::Closed(closed, reason) if closed == &conn => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, CloseReason::Disconnected);
}

#[test]
fn reload_while_a_handler_serves_keeps_answering() {
    let (m2, _handler) = mongrel2_with_echo();
    let mut port = control(&m2);
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = m2.http_addr();
    let client = {
        let (answered, failures, stop) = (answered.clone(), failures.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut http = HttpClient::connect(addr);
                http.set_timeout(WAIT);
                match http.request("GET /echo/x HTTP/1.1\r\nHost: localhost\r\n\r\n") {
                    Ok(response) if response.status == 200 => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let after = |n: usize| {
        let target = answered.load(Ordering::SeqCst) + n;
        wait_for(WAIT, || {
            (answered.load(Ordering::SeqCst) >= target).then_some(())
        })
    };
    assert!(
        after(5).is_some(),
        "requests are answered before the reload"
    );
    assert_eq!(port.reload().unwrap(), "signal sent to server");
    assert!(
        after(50).is_some(),
        "requests are answered after the reload"
    );
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "{}", m2.log_tail(20));
    // The reloaded server still answers its control port.
    assert_eq!(port.uuid().unwrap(), m2.server_uuid());
}

#[test]
fn stop_ends_the_server_and_its_connections() {
    let (mut m2, handler) = mongrel2_with_echo();
    let mut port = control(&m2);
    let mut ws = ws_connect(m2.http_addr(), "/echo");
    handler.wait(WAIT, |seen| matches!(seen, Seen::Opened(_)).then_some(()));
    // Like terminate, stop races the signal against the answer.
    port.set_timeout(Duration::from_secs(2));
    match port.stop() {
        Ok(message) => assert_eq!(message, "signal sent to server"),
        Err(err) => assert!(err.is_timeout(), "{err:?}"),
    }
    assert!(wait_for(WAIT, || (!m2.is_running()).then_some(())).is_some());
    match ws.read() {
        Ok(tungstenite::Message::Close(_)) | Err(_) => {}
        Ok(other) => panic!("expected the connection to end, got {other:?}"),
    }
    // The handler's disconnect notice is NOT asserted: after a control-port `stop` it
    // arrived in most runs but not all (the process may exit before the notice is pushed).
}

#[test]
fn terminate_ends_the_server_answered_or_not() {
    let mut m2 = Mongrel2::builder().start();
    let mut port = control(&m2).timeout(Duration::from_secs(2));
    // Mongrel2 1.12.2 races the SIGTERM it raises against its answer: sometimes the
    // answer arrives, sometimes the process is gone first (the same holds for `stop`).
    match port.terminate() {
        Ok(message) => assert_eq!(message, "signal sent to server"),
        Err(err) => assert!(err.is_timeout(), "{err:?}"),
    }
    assert!(wait_for(WAIT, || (!m2.is_running()).then_some(())).is_some());
}

#[test]
fn after_control_stop_calls_time_out_naming_the_endpoint_and_http_still_serves() {
    let m2 = Mongrel2::builder().dir("/", "web/").start();
    let mut port = control(&m2);
    assert_eq!(port.control_stop().unwrap(), "stopping the control port");
    let timeout = Duration::from_millis(300);
    port.set_timeout(timeout);
    let started = Instant::now();
    let err = port.uuid().unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains(&m2.control_endpoint()), "{err}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(get_eventually(m2.http_addr(), "/missing", WAIT).is_some());
}

#[test]
fn a_dead_control_endpoint_times_out_within_the_timeout() {
    let mut m2 = Mongrel2::builder().start();
    let endpoint = m2.control_endpoint();
    m2.stop();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = mongrel2_transceiver::control_port::open_connections(
        &zmq::Context::new(),
        &endpoint,
        timeout,
    )
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains(&endpoint), "{err}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn m2ctl_prints_status_as_a_table() {
    let m2 = Mongrel2::builder().start();
    let endpoint = m2.control_endpoint();
    let m2ctl = |args: &[&str]| {
        m2ctl::run(
            ["--endpoint", endpoint.as_str(), "--timeout", "10"]
                .iter()
                .chain(args)
                .map(|s| s.to_string()),
        )
    };
    let _idle = std::net::TcpStream::connect(m2.http_addr()).unwrap();
    let status = wait_for(WAIT, || {
        let out = m2ctl(&["status"]).unwrap();
        (out.lines().count() == 3).then_some(out)
    })
    .expect("one connection listed");
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "id",
            "fd",
            "type",
            "last_ping",
            "last_read",
            "last_write",
            "bytes_read",
            "bytes_written"
        ]
    );
    assert!(lines[1].starts_with("--"), "{status}");
    assert!(lines[2].starts_with("-1 "), "{status}");

    let uuid = m2ctl(&["uuid"]).unwrap();
    assert_eq!(uuid.lines().nth(2), Some(m2.server_uuid()));
    assert!(m2ctl(&["status", "tasks"]).unwrap().contains("control"));
    let err = m2ctl(&["kill", "999"]).unwrap_err();
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert!(m2ctl(&["frobnicate"])
        .unwrap_err()
        .contains("unknown command"));
}
