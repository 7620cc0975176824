//! Echoes what it gets: HTTP requests as JSON (method, path, query pairs, headers, body),
//! WebSocket messages back with their opcode. A text message starting `broadcast:` is sent,
//! without the prefix, to every session instead (of the whole group, in a handler group).
//!
//! Several echo processes on one route act as one handler when given a group
//! (`--group-bind tcp://127.0.0.1:7001 --group-peer tcp://127.0.0.1:7001 --group-peer ...`,
//! the same peer list for each); each HTTP answer then also says which process served it
//! and how many sessions it sees.
//!
//! ```text
//! m2sh load -config mongrel2.conf -db config.sqlite
//! mongrel2 config.sqlite 8674e1cd-c50f-4190-a01a-1ef0931dfec6
//! RUST_LOG=info cargo run --example echo
//! # or, endpoints read from the database: --features config -- --config config.sqlite --handler echo
//! curl 'http://127.0.0.1:6767/echo?x=1'
//! ```

#[path = "common/flags.rs"]
pub mod flags;

use mongrel2_transceiver::request::Request;
use mongrel2_transceiver::{Error, Event, Message, Transceiver};

/// The JSON an HTTP request is echoed as.
fn describe(request: &Request<'_>, transceiver: &Transceiver) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                serde_json::json!(value.iter().collect::<Vec<_>>()),
            )
        })
        .collect();
    serde_json::json!({
        "method": request.method(),
        "path": request.path(),
        "query": request.query_pairs(),
        "headers": headers,
        "body": String::from_utf8_lossy(request.body()),
        "pid": std::process::id(),
        "sessions": transceiver.session_count(),
        "owned_sessions": transceiver.owned_session_count(),
        "group_members": transceiver.group_members(),
    })
}

fn main() -> Result<(), Error> {
    env_logger::init();
    run(&flags::Flags::parse("echo"))
}

/// Serves until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(flags: &flags::Flags) -> Result<(), Error> {
    let mut transceiver = flags.builder().build()?;
    transceiver.stop_on_signals()?;
    log::info!("echo handler {} ready", flags.sender_id);
    loop {
        let event = match transceiver.recv() {
            Ok(event) => event,
            Err(Error::Interrupted) => break,
            Err(err) => return Err(err),
        };
        let sent = match &event {
            Event::Http(request) => {
                let description = describe(request, &transceiver);
                transceiver.reply_json(request, 200, &description)
            }
            Event::Message {
                message: Message::Text(text),
                ..
            } if text.starts_with("broadcast:") => {
                transceiver.broadcast_text(&text["broadcast:".len()..])
            }
            Event::Message {
                conn,
                message: Message::Text(text),
            } => transceiver.send_text(conn, text),
            Event::Message { conn, message } => transceiver.send_binary(conn, message.as_bytes()),
            Event::Opened { conn, .. } => {
                log::info!("session {conn} opened");
                Ok(())
            }
            Event::Closed { conn, reason } => {
                log::info!("session {conn} closed: {reason}");
                Ok(())
            }
            other => {
                log::debug!("ignoring {other:?}");
                Ok(())
            }
        };
        if let Err(err) = sent {
            log::warn!("reply failed: {err}");
        }
    }
    // scripts/soak reads this line to check that no session leaked.
    log::info!(
        "shutting down with {} sessions open; closing them with 1001",
        transceiver.session_count()
    );
    transceiver.shutdown();
    Ok(())
}
