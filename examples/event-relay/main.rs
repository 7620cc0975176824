//! Event relay: fans events from ZeroMQ injectors, a PULL socket, HTTP and linked relays out
//! to WebSocket subscribers behind Mongrel2, speaking Myxi's action/event protocol.
//!
//! Layout: `flags` and `config` (startup), `protocol` (wire JSON), `subscriptions`,
//! `history`, `outbox`, `dedupe` (state), `relay` (the I/O-free core tying them together),
//! `metrics` (status and Prometheus), `frame` (WebSocket/SSE framing).
//!
//! For now `main` parses flags and environment, loads the config and prints the effective
//! settings (secrets redacted). The I/O loop is wired once the Transceiver lands; it only
//! translates between sockets and `relay::Relay`:
//!
//! ```text
//! Event::Opened { conn, request }   -> relay.open_with(conn, OpenOptions { credits: request.download_credits(), .. })
//! Event::Message { conn, message }  -> if let Some(call) = relay.on_message(&conn, bytes) { forward to call.endpoint;
//!                                      later relay.rpc_reply(&call.session, call.tag.as_ref(), result) }
//! Event::Closed { conn, .. }        -> relay.close(&conn)
//! Event::Credits { conn, credits }  -> relay.credits(&conn, credits)
//! injector REP message              -> rep.send(relay.publish_json(Source::Inject, msg).to_json())
//! events PULL message               -> relay.publish_json(Source::Pull, msg)
//! POST /events/publish              -> ack = relay.http_publish(req.header("authorization"), req.body());
//!                                      reply ack.http_status() with ack.to_json()
//! GET /events/status | /metrics     -> relay.stats().to_json() | .to_prometheus() (text/plain; version=0.0.4)
//! every loop turn (or a few-ms tick) -> let f = relay.flush();
//!                                      for d in f.deliveries { t.deliver_to(&d.sessions, &d.payload) }
//!                                      for c in f.close { t.close_session(&c, 1008, "lagging") }
//!                                      relay.has_pending() => use a short recv timeout
//! links (later)                     -> relay.enable_forwarding(); send relay.take_forwards() to peers;
//!                                      peers' events -> relay.publish_json(Source::Link, msg)
//! ```
//!
//! Set the Transceiver's `max_message_size` at or above `limits.message_size`, so oversized
//! client messages get `InvalidPayload` from the relay instead of a 1009 close.

// Until the I/O loop is wired, most of the core is reached only from unit tests.
#![cfg_attr(not(test), allow(dead_code))]

mod config;
mod dedupe;
mod flags;
mod frame;
mod history;
mod metrics;
mod outbox;
mod protocol;
mod relay;
mod subscriptions;

use std::process::ExitCode;

use config::Config;
use flags::Parsed;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let env = |name: &str| std::env::var(name).ok();
    let options = match flags::parse(std::env::args().skip(1), &env) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Help) => {
            print!("{}", flags::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("event-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(options.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("event-relay: {e}");
            return ExitCode::from(2);
        }
    };
    // Building the relay validates that the config is usable; the I/O loop comes next.
    let relay: relay::Relay<(std::sync::Arc<str>, u64)> =
        relay::Relay::new(config, &options.sender_id);
    let summary = serde_json::json!({
        "options": options,
        "config": relay.config().redacted(),
    });
    match serde_json::to_string_pretty(&summary) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("event-relay: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
