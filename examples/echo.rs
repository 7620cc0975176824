//! Echoes what it gets: HTTP requests as JSON (method, path, query pairs, headers, body),
//! WebSocket messages back with their opcode.
//!
//! ```text
//! m2sh load -config mongrel2.conf -db config.sqlite
//! mongrel2 config.sqlite 8674e1cd-c50f-4190-a01a-1ef0931dfec6
//! RUST_LOG=info cargo run --example echo
//! curl 'http://127.0.0.1:6767/echo?x=1'
//! ```

#[path = "common/flags.rs"]
pub mod flags;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mongrel2_transceiver::request::Request;
use mongrel2_transceiver::{Event, Message};

/// The JSON an HTTP request is echoed as.
fn describe(request: &Request<'_>) -> serde_json::Value {
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
    })
}

fn main() -> Result<(), mongrel2_transceiver::Error> {
    env_logger::init();
    run(&flags::Flags::parse("echo"))
}

/// Serves until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(flags: &flags::Flags) -> Result<(), mongrel2_transceiver::Error> {
    let mut transceiver = flags.builder().build()?;
    let stop = flags::stop_on_signal(&transceiver);
    log::info!("echo handler {} ready", flags.sender_id);
    while !stop.load(Ordering::SeqCst) {
        let event = match transceiver.recv_timeout(Duration::from_secs(1))? {
            Some(event) => event,
            None => continue,
        };
        let sent = match &event {
            Event::Http(request) => transceiver.reply_json(request, 200, &describe(request)),
            Event::Message { conn, message } => match message {
                Message::Text(text) => transceiver.send_text(conn, text),
                Message::Binary(data) => transceiver.send_binary(conn, data),
            },
            Event::Opened { conn, .. } => {
                log::info!("session {conn} opened");
                Ok(())
            }
            Event::Closed { conn, reason } => {
                log::info!("session {conn} closed: {reason:?}");
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
        "shutting down with {} sessions open",
        transceiver.session_count()
    );
    transceiver.shutdown();
    Ok(())
}
