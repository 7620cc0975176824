//! Event relay: fans events from ZeroMQ injectors, a PULL socket, HTTP and linked relays out
//! to WebSocket subscribers behind Mongrel2, speaking Myxi's action/event protocol.
//!
//! Layout: `flags` and `config` (startup), `protocol` (wire JSON), `subscriptions`,
//! `history`, `outbox`, `dedupe` (state), `relay` (the I/O-free core tying them together),
//! `metrics` (status and Prometheus), `frame` (WebSocket/SSE framing).
//!
//! For now `main` parses flags and environment, loads the config and prints the effective
//! settings. The I/O loop is wired once the Transceiver lands; it drives [`relay::Relay`]:
//! `open`/`on_message`/`close`/`credits` from transceiver events, `publish_json` from the
//! injector and PULL sockets, `http_publish`/`stats` from HTTP, and `flush` every loop turn,
//! sending each `Delivery` with `deliver_to(&sessions, &payload)`.

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
