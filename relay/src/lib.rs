//! The event relay's I/O-free core: it fans events from injectors, a PULL socket, HTTP and
//! linked relays out to WebSocket and Server-Sent-Events subscribers behind Mongrel2, speaking
//! Myxi's action/event protocol. The `event-relay` binary owns the sockets and the loop; this
//! crate owns everything that can be decided without them, so it is tested without sockets.
//!
//! Modules: `config` (startup), `protocol` (wire JSON), `subscriptions`, `history`, `outbox`,
//! `dedupe` (state), `group` (relays as a group), `relay` (the core tying them together), `metrics` (status and
//! Prometheus text) and `frame` (WebSocket/SSE framing).

pub mod config;
pub mod dedupe;
pub mod frame;
pub mod group;
pub mod history;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod relay;
pub mod subscriptions;
