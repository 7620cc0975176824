//! An echo handler on its own thread, for the harness and fidelity tests.
//!
//! HTTP: `…/stream` answers a chunked `one`,`two`,`three`; `…/close` answers and closes;
//! anything else echoes the body with `x-method`, `x-path` and `x-query` headers.
//! JSON socket messages are echoed raw. WebSocket: `broadcast:TEXT` sends TEXT to every
//! session, `count` answers the number of open sessions, `close:CODE` closes the session
//! with CODE; other messages are echoed.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use mongrel2_transceiver::harness::{spawn_handler, HandlerThread};
use mongrel2_transceiver::http::{ChunkedResponse, Response};
use mongrel2_transceiver::transceiver::Builder;
use mongrel2_transceiver::{ConnId, Error, Event, Message, Transceiver};

/// A running echo handler; dropping it stops the thread.
pub struct EchoHandler {
    thread: HandlerThread,
}

impl EchoHandler {
    /// A handler that only talks to harness Servers (through its control socket).
    pub fn spawn() -> EchoHandler {
        EchoHandler::spawn_with("nobody", |builder| builder, false)
    }

    /// A handler for `sender` configured by `configure` (its control socket stays on a
    /// free port). With `wait_ready` this returns once its Mongrel2 has subscribed.
    pub fn spawn_with(
        sender: &str,
        configure: impl FnOnce(Builder) -> Builder + Send + 'static,
        wait_ready: bool,
    ) -> EchoHandler {
        let (ready, subscribed) = mpsc::channel();
        let thread = spawn_handler(sender, configure, move |handler| {
            if wait_ready && !handler.wait_ready(Duration::from_secs(10))? {
                panic!("Mongrel2 never subscribed to the echo handler");
            }
            let _ = ready.send(());
            loop {
                match handler.recv() {
                    Ok(event) => serve(handler, event)?,
                    Err(Error::Interrupted) => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
        })
        .expect("echo handler starts");
        subscribed.recv().expect("echo handler serves");
        EchoHandler { thread }
    }

    /// The control endpoint to give a harness Server.
    pub fn control(&self) -> &str {
        self.thread.control()
    }
}

fn serve(handler: &mut Transceiver, event: Event) -> Result<(), Error> {
    match event {
        Event::Http(request) => {
            let path = request.path().to_owned();
            if path.ends_with("/stream") {
                let head = ChunkedResponse::start(200).header("content-type", "text/plain");
                handler.stream_start(&request, &head)?;
                let conn = ConnId::of(&request);
                for part in ["one", "two", "three"] {
                    handler.stream_chunk(&conn, part.as_bytes())?;
                }
                handler.stream_end(&conn, false)?;
            } else {
                let response = Response::ok()
                    .header("x-method", request.method().unwrap_or_default())
                    .header("x-path", &path)
                    .header("x-query", request.query_string().unwrap_or_default())
                    .body(request.body().to_vec())
                    .for_request(&request);
                if path.ends_with("/close") {
                    // The handler decides to close: answer with Connection: close, then
                    // the empty reply.
                    let conn = ConnId::of(&request);
                    handler.reply(&conn, response.close(true).encode()?)?;
                    handler.close(&conn)?;
                } else {
                    handler.reply_http(&request, &response)?;
                }
            }
        }
        Event::Json(request) => {
            handler.reply(&ConnId::of(&request), request.body().to_vec())?;
        }
        Event::Message { conn, message } => match message {
            Message::Text(text) => {
                if let Some(rest) = text.strip_prefix("broadcast:") {
                    handler.broadcast_text(rest)?;
                } else if text == "count" {
                    let count = handler.session_count().to_string();
                    handler.send_text(&conn, &count)?;
                } else if let Some(code) = text.strip_prefix("close:") {
                    handler.close_session(
                        &conn,
                        mongrel2_transceiver::CloseCode(code.parse().unwrap_or(1000)),
                        "bye",
                    )?;
                } else {
                    handler.send_text(&conn, &text)?;
                }
            }
            Message::Binary(data) => handler.send_binary(&conn, &data)?,
        },
        _ => {}
    }
    Ok(())
}
