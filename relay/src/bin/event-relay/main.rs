//! Event relay: fans events from ZeroMQ injectors, a PULL socket, HTTP and linked relays out
//! to WebSocket and Server-Sent-Events subscribers behind Mongrel2, speaking Myxi's
//! action/event protocol, and forwards configured actions to RPC backends.
//!
//! The I/O-free core is the `mongrel2_event_relay` library; this binary holds `flags`
//! (command line), `http_api` (HTTP endpoints), `sse` (event streams), `sources` (ZeroMQ
//! event sockets), `links` (linked relays), `rpc` (actions forwarded to backends), `amqp`
//! and `backbone` (RabbitMQ with `--amqp`: its thread, and the loop's side) and `io` (the
//! loop).
//!
//! ```text
//! cargo run --release -p mongrel2-event-relay --bin event-relay -- [--config relay.json] [--inject tcp://127.0.0.1:9996] ...
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
//! Event::Opened { conn, request, .. } -> relay.open_with(conn, OpenOptions { credits: request.download_credits(), .. })
//! Event::Opened { adopted: true, .. } -> t.close_session(&conn, 1012, "service restart")
//!                                      (a group member died; the client resumes)
//! Event::GroupMessage { from, body } -> relay.group_message(&from, &body, now)
//! Event::Message { conn, message }  -> relay.on_message(&conn, bytes); a configured RPC action
//!                                      -> rpc.call(..): DEALER to call.endpoint; its answer or
//!                                      deadline -> relay.rpc_reply(..)
//! Event::Closed { conn, .. }        -> relay.close(&conn)
//! Event::Disconnected(conn)         -> relay.close(&conn) (SSE streams)
//! Event::Credits { conn, credits }  -> relay.credits(&conn, credits)
//! injector REP message              -> rep.send(relay.publish_json(Source::Inject, msg).to_json())
//! events PULL message               -> relay.publish_json(Source::Pull, msg)
//!   (with --amqp both go to RabbitMQ: backbone.publish -> relay.prepare_backbone + confirm;
//!    what the streams bring back -> relay.publish_at(exchange, key, body, offset + 1))
//! HTTP GET /stream                  -> relay.open_stream(..) + t.stream_start(..) (see `sse`)
//! other HTTP under the route        -> http_api::respond (publish, status, metrics, 404)
//! link SUB message                  -> relay.publish_json(Source::Link, msg) (see `links`)
//! after each batch of inputs        -> links.publish(relay.take_forwards());
//!                                      let f = relay.flush_paced(now, io::PACING);
//!                                      for d in f.deliveries { t.deliver_to(&d.sessions, &d.payload) }
//!                                      for c in f.close { t.close_session(&c, 1008, "lagging") }
//!                                      for c in f.end_streams { t.stream_end(&c, true) }
//! timers                            -> rpc.expire (BackendTimeout), links.tick (hello),
//!                                      relay.sse_heartbeat()
//! in a group (--group-bind), each turn -> relay.group_members(t.group_member_names(), now);
//!                                      relay.group_tick(now);
//!                                      for (to, body) in relay.take_group_sends() { t.group_send(&to, body) }
//! ```
//!
//! The Transceiver's `max_message_size` is `sources::transport_limit(limits.message_size)`,
//! above the relay's own limit, so oversized client messages get `InvalidPayload` from the
//! relay instead of a 1009 close (and only messages beyond that bound are closed).

mod amqp;
mod backbone;
mod flags;
mod http_api;
mod io;
mod links;
mod mongrel2_status;
mod rpc;
mod sources;
mod sse;

// The core's modules, under the names the I/O modules reach them by (`super::relay`, ...).
use mongrel2_event_relay::{config, frame, metrics, protocol, relay};

use std::process::ExitCode;

use clap::Parser as _;

use config::Config;
use flags::{Flags, Options};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let options: Options = match Flags::try_parse() {
        Ok(flags) => flags.into(),
        Err(e) => {
            // Help and version go to stdout with status 0; mistakes to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    ExitCode::from(run(options, &env))
}

/// Runs the relay with `options` and `env` for the config's `RELAY_…` secrets; returns the
/// exit status. Stops on SIGINT/SIGTERM.
fn run(options: Options, env: &dyn Fn(&str) -> Option<String>) -> u8 {
    let loaded = Config::load(options.config.as_deref(), env).and_then(|mut config| {
        if let Some(path) = &options.link_secret_file {
            config.read_link_secret(path)?;
        }
        Ok(config)
    });
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("event-relay: {e}");
            return 2;
        }
    };
    if let Err(e) = links::check_exposure(
        options.link_bind.as_deref(),
        &options.links,
        config.link_secret.is_some(),
    ) {
        eprintln!("event-relay: {e}");
        return 2;
    }
    let mut relay = relay::Relay::new(config, &options.sender_id);
    relay.set_identity(&options.name, None);
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
