//! The event relay against a real Mongrel2, with real WebSocket clients, ZeroMQ injectors
//! and HTTP publishers.
//!
//! How the relay runs: each test starts its own Mongrel2 (fresh ports and send_ident) and
//! the `event-relay` binary as a child process, so signals and exit codes are real. Cargo
//! builds the crate's binaries before its integration tests, so the relay under test is
//! always the current one.
//!
//! Readiness is detected, not slept on: a test starts once `GET /events/status` through
//! Mongrel2 is answered by the relay. Every process is stopped by a Drop guard.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use mongrel2_test_fixture::support::{self, ws_connect, HttpClient, HttpResponse};
use mongrel2_test_fixture::{free_endpoint, HandlerConf, Mongrel2};

/// Generous bound for anything that should happen "soon" (loaded CI machines).
const WAIT: Duration = Duration::from_secs(20);

const ADMIN_TOKEN: &str = "admin-secret";
const OPS_TOKEN: &str = "ops-secret";
const PUBLISH_TOKEN: &str = "publish-secret";
/// A link secret of the minimum length (32 bytes).
const LINK_SECRET: &str = "link-secret-0123456789abcdefghij";

/// The configuration most tests use.
fn test_config() -> Value {
    json!({
        "exchanges": {
            "calls": {"public": true},
            "agents": {"public": true},
            "queues": {"public": true, "prefixes": ["queue."]},
            "admin": {"tokens": ["admin"]}
        },
        "tokens": {"admin": ADMIN_TOKEN, "ops": OPS_TOKEN},
        "publish_token": PUBLISH_TOKEN,
        "limits": {"subscriptions_per_session": 5, "history_per_key": 10}
    })
}

mod amqp;
mod amqp_group;
mod attacks;
mod fixture;
mod group;
mod link_security;
mod load;
mod network;
mod protocol;
mod rabbitmq;
mod rpc;
mod sources;
mod sse;

use fixture::*;
use network::Net;

// ----- shutdown ----------------------------------------------------------------------------

#[test]
fn sigterm_closes_every_session_with_1001_and_exits_0() {
    let mut f = Fixture::start();
    let mut clients: Vec<Client> = (0..3).map(|_| f.ws()).collect();
    for c in &mut clients {
        c.subscribe("calls", "bye");
    }
    let started = Instant::now();
    f.relay.signal(libc::SIGTERM);
    let status = f.relay.wait_exit(Duration::from_secs(1));
    let elapsed = started.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running after 1 s:\n{}", f.relay.log_tail()));
    eprintln!("relay exited {status} {elapsed:?} after SIGTERM");
    assert!(status.success(), "{status}\n{}", f.relay.log_tail());
    for c in &mut clients {
        assert_eq!(c.close_code(), Some(u16::from(CloseCode::Away)));
    }
    assert!(f
        .relay
        .log_tail()
        .contains("shutting down: closing 3 sessions"));
}
