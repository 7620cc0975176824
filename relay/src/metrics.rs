//! Relay statistics: JSON for `GET /events/status`, OpenMetrics text (which Prometheus
//! scrapes) for `GET /events/metrics`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::HistorySize;
use super::protocol::Source;

/// A count per event source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    /// Injector REP socket.
    pub inject: u64,
    /// PULL socket.
    pub pull: u64,
    /// HTTP publish.
    pub http: u64,
    /// Linked relays.
    pub link: u64,
}

impl SourceCounts {
    /// The count for `source`.
    pub fn get(&self, source: Source) -> u64 {
        match source {
            Source::Inject => self.inject,
            Source::Pull => self.pull,
            Source::Http => self.http,
            Source::Link => self.link,
        }
    }

    /// Adds one for `source`.
    pub fn bump(&mut self, source: Source) {
        let c = match source {
            Source::Inject => &mut self.inject,
            Source::Pull => &mut self.pull,
            Source::Http => &mut self.http,
            Source::Link => &mut self.link,
        };
        *c += 1;
    }
}

/// Monotonic counters the relay keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Events accepted, per source.
    pub events_in: SourceCounts,
    /// Events refused (bad JSON, payload, exchange, auth), per source.
    pub events_rejected: SourceCounts,
    /// Linked events dropped as already seen.
    pub events_duplicate: u64,
    /// Event frames queued to sessions (one per event per recipient).
    pub events_queued: u64,
    /// Frames handed to the I/O loop by flushes (events, replies, notices).
    pub frames_out: u64,
    /// Payloads handed to the I/O loop (one per group of sessions per flush).
    pub payloads_out: u64,
    /// `Lagged` notices produced.
    pub lagged: u64,
    /// Event frames dropped from full outboxes.
    pub dropped: u64,
    /// Sessions closed because their outbox overflowed.
    pub overflowed: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Events not forwarded to linked relays because the forward queue was full.
    pub forward_dropped: u64,
    /// `Authenticate` attempts refused (wrong token, or too many wrong ones before).
    pub auth_failures: u64,
    /// Resumes (`Resume`, SSE `Last-Event-ID`) answered `recovered: false`.
    pub resumes_unrecovered: u64,
    /// Events read back from the shared backbone (RabbitMQ) and delivered.
    pub backbone_in: u64,
    /// Events read back from the backbone that were not valid events.
    pub backbone_rejected: u64,
}

/// RPC forwarding counters, kept by the I/O layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RpcStats {
    /// Calls waiting for an answer.
    pub in_flight: usize,
    /// Calls sent to a backend.
    pub calls: u64,
    /// Answers passed on as `Result`.
    pub results: u64,
    /// Answers passed on as `BackendError` (backend errors and malformed answers).
    pub errors: u64,
    /// Calls answered `BackendTimeout`.
    pub timeouts: u64,
    /// Calls refused before reaching a backend (`TooManyCalls`, `BackendUnavailable`).
    pub refused: u64,
    /// Answers dropped because they came after the timeout (or named no call at all).
    pub late: u64,
    /// Answers dropped because the calling session had gone.
    pub orphaned: u64,
}

/// The RabbitMQ backbone, kept by the I/O layer (`--amqp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AmqpStats {
    /// Connected, with exchanges, streams and consumers in place.
    pub connected: bool,
    /// Times the connection failed or was lost.
    pub outages: u64,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Events handed to RabbitMQ.
    pub published: u64,
    /// Of those, confirmed by RabbitMQ.
    pub confirmed: u64,
    /// Of those, refused or lost with the connection (the publisher was told, or for
    /// PULL, which has no answer, only counted).
    pub failed: u64,
    /// Publishes waiting for their confirm.
    pub in_flight: usize,
}

/// Linked-relay state, kept by the I/O layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// This relay's id on the link network (relay id plus run suffix).
    pub relay: String,
    /// Links prove a shared secret (both ways), see the binary's `links` module.
    pub authenticated: bool,
    /// Where this relay publishes to linked relays (`None`: it does not).
    pub bind: Option<String>,
    /// Relays whose subscription to our publisher is in place (as the publisher sees it).
    pub subscribers: Vec<String>,
    /// Events published to linked relays.
    pub published: u64,
    /// Subscribers refused: a wrong proof of the link secret, or none where one is needed.
    pub refused: u64,
    /// One entry per `--link`.
    pub peers: Vec<PeerStats>,
}

/// One `--link` subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// The peer's publisher address.
    pub endpoint: String,
    /// The peer's relay id (from its hello; `None` until heard).
    pub relay: Option<String>,
    /// `connecting` (no hello heard yet), `verified` (a hello came through this
    /// subscription recently, so everything the peer publishes from now on reaches us), or
    /// `stale` (the peer's hello is overdue).
    pub state: &'static str,
    /// `state == "verified"`.
    pub verified: bool,
    /// Event messages received from this peer.
    pub events: u64,
    /// Events the peer published that never arrived (counted from its hellos).
    pub missed: u64,
    /// Times the peer restarted (its relay id changed).
    pub restarts: u64,
    /// Messages dropped because they did not prove the link secret.
    pub refused: u64,
}

/// What one Mongrel2 control port last said of its clients (`--mongrel2-control`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mongrel2Status {
    /// The control port asked.
    pub endpoint: String,
    /// How many client connections Mongrel2 has open (`None` until it answered).
    pub open_connections: Option<usize>,
    /// The first of them (the list is bounded; `open_connections` counts all).
    pub connections: Vec<Mongrel2Connection>,
    /// Milliseconds since the last answer (`None`: never answered).
    pub answered_ms_ago: Option<u64>,
    /// Why the last ask failed (`None` when it was answered).
    pub error: Option<String>,
}

/// One client connection as Mongrel2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mongrel2Connection {
    /// The connection id handlers see (`None` until a request of it reached a handler).
    pub id: Option<u64>,
    /// Seconds since Mongrel2 last read from it.
    pub last_read_secs: i64,
    /// Seconds since Mongrel2 last wrote to it.
    pub last_write_secs: i64,
    /// Bytes read from the client.
    pub bytes_read: i64,
    /// Bytes written to the client.
    pub bytes_written: i64,
}

/// A snapshot of the relay's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Seconds since the relay started.
    pub uptime_seconds: u64,
    /// Open sessions (WebSocket and SSE).
    pub sessions: usize,
    /// Open SSE streams (included in `sessions`).
    pub streams: usize,
    /// Subscriptions per configured exchange.
    pub subscriptions: BTreeMap<String, usize>,
    /// Counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// History sizes.
    pub history: HistorySize,
    /// RPC forwarding (filled in by the I/O layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcStats>,
    /// Linked relays (filled in by the I/O layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkStats>,
    /// The RabbitMQ backbone (filled in by the I/O layer with `--amqp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpStats>,
    /// Mongrel2's open connections, per control port (filled in by the I/O layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongrel2: Option<Vec<Mongrel2Status>>,
    /// The group of relays this one is a member of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupStats>,
}

/// A member of a group of relays (see `group`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// This member's name.
    pub member: String,
    /// The live members, sorted.
    pub members: Vec<String>,
    /// Whether the members agree on the numbering (publishes are held until they do).
    pub synced: bool,
    /// Publishes held until then.
    pub held: usize,
    /// Publishes forwarded to a sequencer whose numbered event has not come back yet.
    pub unconfirmed: usize,
    /// Events numbered here that wait for the peers' acks before this member's sessions
    /// get them.
    pub awaiting: usize,
    /// Events delivered here without every peer's ack (the sync timeout passed).
    pub ack_timeouts: u64,
    /// Events this member numbered (as its exchanges' sequencer).
    pub sequenced: u64,
    /// Publishes sent on to another member's exchange.
    pub forwarded: u64,
    /// Publishes other members sent here.
    pub received_publishes: u64,
    /// Numbered events from other members kept here.
    pub received_events: u64,
    /// Stored events sent to members that lacked them.
    pub repairs_sent: u64,
    /// Forwards sent again after the members changed.
    pub resent: u64,
    /// Publishes dropped (too many held, or forwarded round too many members).
    pub dropped: u64,
    /// Times the live members changed.
    pub membership_changes: u64,
    /// Times the members did not agree within the sync timeout.
    pub sync_timeouts: u64,
}

mod exposition;
#[cfg(test)]
mod tests;
