//! Transceiver behaviour checked through the harness (fast, no Mongrel2): handshake
//! decisions, hostile input, batching, extended replies, shutdown.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

use mongrel2_transceiver::harness::{
    spawn_handler, unbound_endpoint, HandlerThread, HarnessError, HttpRequest, Protocol, Server,
};
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::{
    Builder, ConnId, Error, Event, Handle, Handshake, Message, Transceiver,
};

/// A Transceiver on a thread that echoes text, acts on a few commands, and reports every
/// event's debug form.
struct Running {
    _handler: HandlerThread,
    control: String,
    handle: Handle,
    events: mpsc::Receiver<String>,
}

fn run(configure: impl FnOnce(Builder) -> Builder + Send + 'static) -> Running {
    let (seen, events) = mpsc::channel();
    let handler = spawn_handler("features", configure, move |t| loop {
        let event = match t.recv() {
            Ok(event) => event,
            Err(Error::Interrupted) => return Ok(()),
            Err(err) => return Err(err),
        };
        let _ = seen.send(format!("{event:?}"));
        match event {
            Event::Message {
                conn,
                message: Message::Text(text),
            } => match text.as_str() {
                "keep-alive" => t.keep_alive(&conn)?,
                "credits" => t.grant_credits(&conn, 4096)?,
                "cancel" => t.cancel(&conn)?,
                "deliver" => {
                    let everyone: Vec<ConnId> = t.sessions().collect();
                    t.deliver_text(&everyone, "delivered")?;
                }
                // Returning drops the Transceiver, which closes every session with 1001.
                "shutdown" => return Ok(()),
                _ => t.send_text(&conn, &text)?,
            },
            Event::Http(request) => t.reply_http(&request, &Response::ok().body("ok"))?,
            _ => {}
        }
    })
    .expect("the handler starts");
    Running {
        control: handler.control().to_owned(),
        handle: handler.handle().clone(),
        _handler: handler,
        events,
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Handle>();
    fn assert_send<T: Send>() {}
    assert_send::<Transceiver>();
    // A loop on another thread (or an async task) can own the sans-IO core.
    assert_send::<mongrel2_transceiver::Core>();
}

#[test]
fn a_handshake_callback_picks_a_subprotocol_or_rejects() {
    let handler = run(|b| {
        b.on_handshake(|request| {
            if request.path() == "/private" {
                Handshake::Reject(Response::new(403).body("no"))
            } else {
                Handshake::choose_protocol(request, &["chat.v2", "chat.v1"])
            }
        })
    });
    let mut server = Server::new([handler.control.as_str()]).unwrap();

    let mut ws = server.client(Protocol::WebSocket).unwrap();
    let response = ws
        .try_handshake(
            HttpRequest::get("/chat").header("Sec-WebSocket-Protocol", "chat.v1, chat.v2"),
        )
        .unwrap();
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-protocol"), Some("chat.v2"));

    let mut refused = server.client(Protocol::WebSocket).unwrap();
    let response = refused.try_handshake(HttpRequest::get("/private")).unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.body, b"no");
    refused.recv_close().unwrap();
}

#[test]
fn hostile_input_is_skipped_and_the_loop_keeps_serving() {
    let handler = run(|b| b);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut http = server.client(Protocol::Http).unwrap();
    let id = server.reserve_conn_id();
    for garbage in [
        &b""[..],
        b"no spaces at all",
        b"sender 12 /path 999999999999:",
        b"sender notanumber /path 2:{},0:,",
        b"sender 1 /path 5:1:a,}0:,",
        b"sender 1 /path 9999999999:x",
        &[0xff; 300][..],
    ] {
        server.send_raw(garbage).unwrap();
    }
    // A frame for an unknown session with bad FLAGS, and a frame whose FLAGS are garbage.
    let bad_flags = mongrel2_transceiver::request::Request::new(server.sender_id(), id, "/ws")
        .with_header("METHOD", "WEBSOCKET")
        .with_header("FLAGS", "0xZZ")
        .with_body(b"hi".to_vec());
    server.send(&bad_flags).unwrap();
    let response = http.get("/still/alive").unwrap();
    assert_eq!((response.status, response.body), (200, b"ok".to_vec()));
}

#[test]
fn a_thousand_sessions_cost_eight_messages() {
    let handler = run(|b| b);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut clients: Vec<_> = (0..1000)
        .map(|_| {
            let mut ws = server.client(Protocol::WebSocket).unwrap();
            ws.handshake("/ws").unwrap();
            ws
        })
        .collect();
    handler.handle.broadcast_text("everyone").unwrap();
    let mut batches = BTreeSet::new();
    let mut reached = BTreeSet::new();
    for ws in &mut clients {
        let reply = ws.recv().unwrap();
        assert!(reply.ids.len() <= 128);
        reached.extend(reply.ids.iter().copied());
        batches.insert(reply.ids);
    }
    assert_eq!(reached.len(), 1000);
    assert_eq!(batches.len(), 8, "1000 ids in messages of at most 128");
    assert!(server.take_rejected().is_empty());
}

#[test]
fn deliver_text_frames_once_for_many_sessions() {
    let handler = run(|b| b.handler_targets(2));
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut clients: Vec<_> = (0..3)
        .map(|_| {
            let mut ws = server.client(Protocol::WebSocket).unwrap();
            ws.handshake("/ws").unwrap();
            ws
        })
        .collect();
    clients[0].send_text("deliver").unwrap();
    for ws in &mut clients {
        assert_eq!(ws.recv_text().unwrap(), "delivered");
    }
    assert!(server.take_rejected().is_empty());
}

#[test]
fn an_interrupt_reads_the_same_from_recv_recv_timeout_and_events() {
    let nowhere = unbound_endpoint();
    let mut t = Transceiver::builder("interrupted")
        .pull(&nowhere)
        .publish(&nowhere)
        .control(None)
        .ping_interval(None)
        .build()
        .unwrap();
    let handle = t.handle();
    handle.interrupt().unwrap();
    assert!(matches!(
        t.recv_timeout(Duration::from_secs(60)),
        Err(Error::Interrupted)
    ));
    assert!(
        matches!(t.recv_timeout(Duration::ZERO), Ok(None)),
        "reported once"
    );
    handle.interrupt().unwrap();
    assert!(matches!(t.recv(), Err(Error::Interrupted)));
    handle.interrupt().unwrap();
    assert!(t.events().next().is_none(), "events() ends on an interrupt");
}

#[test]
fn extended_replies_reach_mongrel2_as_ctl() {
    let handler = run(|b| b);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut ws = server.client(Protocol::WebSocket).unwrap();
    ws.handshake("/ws").unwrap();
    for (text, key) in [
        ("keep-alive", "keep-alive"),
        ("credits", "credits"),
        ("cancel", "cancel"),
    ] {
        ws.send_text(text).unwrap();
        let reply = ws.recv().unwrap();
        assert!(reply.extended, "{text} is an extended reply");
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(body.contains("ctl") && body.contains(key), "{body}");
    }
}

#[test]
fn shutdown_closes_every_session_with_1001() {
    let handler = run(|b| b);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut first = server.client(Protocol::WebSocket).unwrap();
    first.handshake("/ws").unwrap();
    let mut second = server.client(Protocol::WebSocket).unwrap();
    second.handshake("/ws").unwrap();
    first.send_text("shutdown").unwrap();
    for ws in [&mut first, &mut second] {
        assert_eq!(ws.recv_close_frame().unwrap(), Some(1001));
    }
}

#[test]
fn the_same_conn_id_on_two_servers_is_two_sessions() {
    let handler = run(|b| b);
    let mut one = Server::new([handler.control.as_str()]).unwrap();
    let mut two = Server::new([handler.control.as_str()]).unwrap();
    let mut a = one.client(Protocol::WebSocket).unwrap();
    let mut b = two.client(Protocol::WebSocket).unwrap();
    assert_eq!(
        a.id(),
        b.id(),
        "fresh servers hand out the same first conn id"
    );
    a.handshake("/ws").unwrap();
    b.handshake("/ws").unwrap();
    a.send_close(Some((1000, "only a"))).unwrap();
    assert_eq!(a.recv_close_frame().unwrap(), Some(1000));
    b.send_text("b is still open").unwrap();
    assert_eq!(b.recv_text().unwrap(), "b is still open");
    let opened = handler
        .events
        .try_iter()
        .filter(|e| e.starts_with("Opened"))
        .count();
    assert_eq!(opened, 2);
    let conns: BTreeSet<ConnId> = [
        ConnId::new(one.sender_id(), a.id()),
        ConnId::new(two.sender_id(), b.id()),
    ]
    .into();
    assert_eq!(conns.len(), 2);
}

/// Replies made while received requests still wait are written in batches; `flush` writes
/// them at once for a handler that stops asking for events meanwhile.
#[test]
fn flush_writes_replies_held_while_requests_wait() {
    let (paused, pause_seen) = mpsc::channel();
    let (resume, resumed) = mpsc::channel::<()>();
    let (replied, reply_made) = mpsc::channel();
    let (seen, reply_seen) = mpsc::channel::<()>();
    let handler = spawn_handler(
        "flushing",
        |b| b,
        move |t| {
            let mut after_pause = false;
            loop {
                match t.recv() {
                    Ok(Event::Http(request)) => {
                        let body = format!("answer to {}", request.path());
                        t.reply_http(&request, &Response::ok().body(body))?;
                        if std::mem::take(&mut after_pause) {
                            t.flush()?;
                            let _ = replied.send(());
                            // Bounded, so a failed test cannot leave this thread waiting.
                            let _ = reply_seen.recv_timeout(Duration::from_secs(10));
                        }
                    }
                    Ok(_) => {}
                    // The first interrupt pauses the loop outside `recv` while requests queue up.
                    Err(Error::Interrupted) if paused.send(()).is_ok() => {
                        let _ = resumed.recv_timeout(Duration::from_secs(10));
                        after_pause = true;
                    }
                    Err(Error::Interrupted) => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
        },
    )
    .unwrap();
    let mut server = Server::new([handler.control()]).unwrap();
    let id = server.reserve_conn_id();
    let sender = server.sender_id().to_owned();
    let get = |path: &'static str| {
        mongrel2_transceiver::request::Request::new(sender.as_str(), id, path)
            .with_header("METHOD", "GET")
            .with_header("VERSION", "HTTP/1.1")
    };
    assert!(
        matches!(
            server.send(&get("/0")),
            Err(HarnessError::HandlersPending(_))
        ),
        "sending before the handler is connected says so at once"
    );
    server.connect_pending().unwrap();
    let answer = |path: &str| {
        let reply = server.recv_timeout(Duration::from_secs(5)).unwrap();
        let reply = reply.unwrap_or_else(|| panic!("no answer to {path}"));
        assert!(String::from_utf8_lossy(&reply.body).ends_with(&format!("answer to {path}")));
    };
    server.send(&get("/0")).unwrap();
    answer("/0");
    handler.handle().interrupt().unwrap();
    pause_seen.recv().unwrap();
    drop(pause_seen);
    for path in ["/1", "/2", "/3"] {
        server.send(&get(path)).unwrap();
    }
    resume.send(()).unwrap();
    reply_made.recv().unwrap();
    // The handler waits outside `recv` with /2 and /3 received: only its flush can have
    // written this.
    answer("/1");
    seen.send(()).unwrap();
    answer("/2");
    answer("/3");
}
