//! Event relay: fans events from ZeroMQ injectors, a PULL socket, HTTP and linked relays out
//! to WebSocket and Server-Sent-Events subscribers behind Mongrel2, speaking Myxi's
//! action/event protocol, and forwards configured actions to RPC backends.
//!
//! Layout: `flags` and `config` (startup), `protocol` (wire JSON), `subscriptions`,
//! `history`, `outbox`, `dedupe` (state), `relay` (the I/O-free core tying them together),
//! `metrics` (status and Prometheus), `frame` (WebSocket/SSE framing); then `http_api`
//! (HTTP endpoints), `sse` (event streams), `sources` (ZeroMQ event sockets), `links`
//! (linked relays), `rpc` (actions forwarded to backends) and `io` (the loop) for I/O.
//!
//! ```text
//! cargo run --release --example event-relay -- [--config relay.json] [--inject tcp://127.0.0.1:9996] ...
//! ```
//!
//! Run with Mongrel2 and the repository's mongrel2.conf (route `/events`); see `--help` for
//! every flag (each also settable as `RELAY_…` in the environment) and the README for a
//! walk-through. Exit status: 0 after SIGINT/SIGTERM (every session closed with 1001),
//! 1 when the loop fails, 2 for bad flags or config.
//!
//! The loop (`io`) only translates between sockets and `relay::Relay`:
//!
//! ```text
//! Event::Opened { conn, request }   -> relay.open_with(conn, OpenOptions { credits: request.download_credits(), .. })
//! Event::Message { conn, message }  -> relay.on_message(&conn, bytes); a configured RPC action
//!                                      -> rpc.call(..): DEALER to call.endpoint; its answer or
//!                                      deadline -> relay.rpc_reply(..)
//! Event::Closed { conn, .. }        -> relay.close(&conn)
//! Event::Disconnected(conn)         -> relay.close(&conn) (SSE streams)
//! Event::Credits { conn, credits }  -> relay.credits(&conn, credits)
//! injector REP message              -> rep.send(relay.publish_json(Source::Inject, msg).to_json())
//! events PULL message               -> relay.publish_json(Source::Pull, msg)
//! HTTP GET /stream                  -> relay.open_stream(..) + t.stream_start(..) (see `sse`)
//! other HTTP under the route        -> http_api::respond (publish, status, metrics, 404)
//! link SUB message                  -> relay.publish_json(Source::Link, msg) (see `links`)
//! after each batch of inputs        -> links.publish(relay.take_forwards());
//!                                      let f = relay.flush_paced(now, io::FLUSH_INTERVAL);
//!                                      for d in f.deliveries { t.deliver_to(&d.sessions, &d.payload) }
//!                                      for c in f.close { t.close_session(&c, 1008, "lagging") }
//!                                      for c in f.end_streams { t.stream_end(&c, true) }
//! timers                            -> rpc.expire (BackendTimeout), links.tick (hello),
//!                                      relay.sse_heartbeat()
//! ```
//!
//! The Transceiver's `max_message_size` is `sources::transport_limit(limits.message_size)`,
//! above the relay's own limit, so oversized client messages get `InvalidPayload` from the
//! relay instead of a 1009 close (and only messages beyond that bound are closed).
//!
//! Modules refer to each other with `super::` so that the whole example can also be
//! compiled as a module: the integration tests (tests/event_relay.rs) embed it and run
//! [`cli`] in a child process.

// A few conveniences of the core (`Relay::open`, `publish`, `is_idle`, ...) are reached only
// from unit tests.
#![cfg_attr(not(test), allow(dead_code))]

mod config;
mod dedupe;
mod flags;
mod frame;
mod history;
mod http_api;
mod io;
mod links;
mod metrics;
mod outbox;
mod protocol;
mod relay;
mod rpc;
mod sources;
mod sse;
mod subscriptions;

use std::process::ExitCode;

use config::Config;
use flags::Parsed;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let env = |name: &str| std::env::var(name).ok();
    ExitCode::from(cli(std::env::args().skip(1), &env))
}

/// Runs the relay with command-line `args` (without the program name) and `env` for the
/// `RELAY_…` variables; returns the exit status. Stops on SIGINT/SIGTERM.
pub fn cli(args: impl IntoIterator<Item = String>, env: &dyn Fn(&str) -> Option<String>) -> u8 {
    let options = match flags::parse(args, env) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Help) => {
            print!("{}", flags::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("event-relay: {e}");
            return 2;
        }
    };
    let config = match Config::load(options.config.as_deref(), env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("event-relay: {e}");
            return 2;
        }
    };
    let relay = relay::Relay::new(config, &options.sender_id);
    log::info!(
        "config: {}",
        serde_json::json!({ "options": options, "config": relay.config().redacted() })
    );
    match io::run(&options, relay, io::stop_on_signal) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            eprintln!("event-relay: {e}");
            1
        }
    }
}
