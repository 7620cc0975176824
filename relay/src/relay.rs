//! The relay's I/O-free core. The I/O loop feeds it inputs (session opened / message /
//! closed, credits, events from the injector, PULL, HTTP or links) and periodically calls
//! [`Relay::flush`], which hands back coalesced payloads grouped by identical bytes, ready
//! for `Transceiver::deliver_to`. Nothing here touches a socket or a clock (except uptime
//! and the publish time stamped on events that come without one).
//!
//! Sessions are WebSocket or SSE ([`Relay::open_stream`]); they differ only in framing.
//! Configured RPC actions come back from [`Relay::on_message`] as an [`RpcCall`] and are
//! answered with [`Relay::rpc_reply`]. With [`Relay::enable_forwarding`], every accepted
//! event is queued for linked relays with its origin (relay run id, that relay's seq, hops);
//! linked events are dropped when already seen by origin or beyond `limits.max_hops`.
//!
//! Positions and epochs: every event gets a position on its exchange (`mq.seq`: 1, 2, 3, ...
//! across all its keys, see `history`). Positions belong to an epoch, named in `Welcome`
//! (`epoch`): in memory mode the relay's run (`Welcome.run`), since a restarted relay
//! numbers from 1 again and has lost what came before; in a group of relays the group's
//! epoch (see `group`), shared by its members. A position from another epoch proves nothing.
//!
//! Resume semantics (decided here): `Resume {exchange, routing_key, since, epoch}` needs the
//! same authorisation as `Subscribe`, and subscribes the key or `prefix*` pattern if it is
//! not subscribed yet (no `AlreadySubscribed` error if it is), so a reconnecting client gets
//! no gap between the replay and live events. `since` is the last position the client has
//! of that subscription (for a wildcard, of every key it covers). Replayed events are queued
//! exactly as live ones (no tag); `Resumed` (tagged) follows with `{exchange, routing_key,
//! recovered, more, last_seq, epoch, first_seq, from}`. `recovered` is true only when the
//! epoch is this one and nothing the pattern covers after `since` has left history; when
//! false, `first_seq` says from where delivery restarts: every covered event from that
//! position on reaches the client (replayed or live), and events before it may be missing.
//! A replay is cut to what fits in the session's outbox without evicting anything; then
//! `more` is true and the client resumes again with `since: last_seq` once it has read what
//! it got. `last_seq` is the position the client is caught up to (or should resume from).
//! Around a gap, positions may arrive twice or out of order (queued live events and a
//! replay can overlap): clients key events by (exchange, `mq.seq`) and drop repeats.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::config::Config;
use super::dedupe::Dedupe;
use super::frame::{sse_comment_chunk, EventId, Meta, SessionKind};
use super::history::{Encoded, History};
use super::metrics::{Counters, Stats};
use super::outbox::{Bounds, EventRef, Item, Outbox, Overflow};
use super::protocol::{
    backend_error_json, error_json, event_json, lagged_json, parse_envelope, parse_event_input,
    reply_json, welcome_json, Ack, Action, ErrorName, EventInput, Keys, Origin, Position, Source,
    WelcomeInfo, MAX_EVENT_NAME, MAX_ROUTING_KEY,
};
use super::subscriptions::{Index, Pattern};

mod actions;
mod flush;
mod group;
mod publish;
mod sessions;
#[cfg(test)]
mod tests;

pub use flush::Pacing;

/// What identifies a session: the library's `ConnId` (sender + connection id) in the real
/// relay, anything small and ordered in tests.
pub trait SessionKey: Clone + Eq + Hash + Ord + Debug {}
impl<T: Clone + Eq + Hash + Ord + Debug> SessionKey for T {}

/// Seqs remembered per linked origin relay, and origins remembered, for dedupe.
const DEDUPE_WINDOW: usize = 4096;
const DEDUPE_ORIGINS: usize = 64;
/// Events waiting to be forwarded to linked relays before the oldest are dropped.
const FORWARD_QUEUE: usize = 10_000;
/// Room for the `origin` a forwarding relay adds to an event (and for re-encoding).
pub const LINK_ENVELOPE: usize = 1024;
/// Outbox bytes kept free for the `Resumed` reply when a replay is sized.
const RESUMED_REPLY_RESERVE: usize = 1024;

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// WebSocket or SSE framing.
    pub kind: SessionKind,
    /// Mongrel2 download credits (the handshake's DOWNLOAD_CREDITS header) when
    /// `download.flow_control` is on; `None` otherwise.
    pub credits: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            kind: SessionKind::WebSocket,
            credits: None,
        }
    }
}

/// One payload for many sessions: send `payload` to each of `sessions` (already framed;
/// possibly several frames concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<K> {
    /// Frame bytes.
    pub payload: Vec<u8>,
    /// Recipients, in key order.
    pub sessions: Vec<K>,
}

/// Output of [`Relay::flush`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush<K> {
    /// Payloads to send; sessions with identical pending bytes share one.
    pub deliveries: Vec<Delivery<K>>,
    /// WebSocket sessions whose outbox overflowed: close them (1008). Already forgotten.
    pub close: Vec<K>,
    /// SSE streams whose outbox overflowed: end them (terminating chunk, then close the
    /// connection). Already forgotten.
    pub end_streams: Vec<K>,
}

/// A successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Queued to `delivered_to` sessions at position `seq` on its exchange.
    Delivered {
        /// Position on the exchange.
        seq: u64,
        /// Sessions it was queued to.
        delivered_to: usize,
        /// Network-wide identity to forward to linked relays (add one hop when forwarding).
        origin: Origin,
    },
    /// A linked event already seen (or our own coming back): nothing done.
    Duplicate,
    /// In a group of relays: handed on to the member that numbers its key (or held until
    /// the group settles); delivered from there.
    Forwarded,
}

/// What an SSE stream asks for (from its URL and headers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamRequest {
    /// Exchange to subscribe.
    pub exchange: String,
    /// Routing key or `prefix*` pattern.
    pub routing_key: String,
    /// Token for exchanges that need one.
    pub token: Option<String>,
    /// `Last-Event-ID`, already parsed: the last position the stream delivered.
    pub last_event: Option<Position>,
}

/// A backend's answer to an [`RpcCall`], as the client will see it.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcOutcome {
    /// `{"event":"Result","tag":TAG,"payload":RESULT}`.
    Result(Value),
    /// `Error` with `"error":"BackendError"` and the backend's code and message.
    BackendError {
        /// The backend's error code.
        code: Value,
        /// The backend's message.
        message: String,
    },
    /// `Error` with this name and nothing else (e.g. `BackendTimeout`).
    Failed(ErrorName),
}

/// A client action that is not built in but configured in `actions`: the I/O layer forwards
/// it to `endpoint` and answers with [`Relay::rpc_reply`].
#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall<K> {
    /// The calling session.
    pub session: K,
    /// Its Welcome id.
    pub session_id: String,
    /// Its token name, if authenticated.
    pub identity: Option<Arc<str>>,
    /// Action name.
    pub action: String,
    /// Tag to echo on the answer.
    pub tag: Option<Value>,
    /// The action's payload.
    pub payload: Map<String, Value>,
    /// Backend address from the config.
    pub endpoint: String,
}

struct Session {
    id: String,
    kind: SessionKind,
    identity: Option<Arc<str>>,
    /// Wrong tokens presented so far.
    auth_failures: usize,
    subs: BTreeSet<(Arc<str>, Pattern)>,
    outbox: Outbox,
    dirty: bool,
    overflowed: bool,
    /// When this session's pacing bucket is full again (see [`Pacing`]); `None` before
    /// any paced send.
    paced_until: Option<Instant>,
}

/// Unique 16-hex-digit session ids: a counter from a random start through a bijective
/// mixer, so ids never repeat within a run and look unrelated. They are labels, not secrets
/// (nothing is authorised by them).
struct IdGen {
    seed: u64,
    counter: u64,
}

impl IdGen {
    fn new() -> IdGen {
        IdGen {
            seed: RandomState::new().hash_one(0x5eed_u64),
            counter: 0,
        }
    }

    fn next(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        // splitmix64's finaliser: xor-shifts and odd multiplications are invertible.
        let mut z = self.seed.wrapping_add(self.counter);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("{:016x}", z ^ (z >> 31))
    }
}

/// The relay state machine.
pub struct Relay<K> {
    config: Config,
    /// This run's identity as an event origin: the relay id plus a random run suffix, so
    /// peers do not mistake a restarted relay's fresh seqs for duplicates.
    origin_id: Arc<str>,
    /// The epoch event positions belong to (see the module docs).
    epoch: Arc<str>,
    /// `Welcome.run`: names this run to clients (so a page can tell a restart, after which
    /// seqs begin again at 1) without handing out `origin_id`, which names the relay to
    /// its links; random and unrelated to it.
    welcome_run: String,
    /// What every `Welcome` says besides the session id and run.
    welcome: WelcomeInfo,
    forwarding: bool,
    forward: VecDeque<Vec<u8>>,
    sessions: HashMap<K, Session, foldhash::fast::RandomState>,
    index: Index<K>,
    history: History,
    dedupe: Dedupe,
    dirty: Vec<K>,
    ids: IdGen,
    origin_seq: u64,
    counters: Counters,
    started: Instant,
    group: Option<group::GroupState>,
}

impl<K: SessionKey> Relay<K> {
    /// A relay with `config`; `relay_id` names it to linked relays (origin of its events,
    /// with a per-run suffix, see [`Relay::origin_id`]).
    pub fn new(config: Config, relay_id: &str) -> Relay<K> {
        let run = RandomState::new().hash_one(0x0419_u64) as u32;
        let l = &config.limits;
        let welcome = WelcomeInfo {
            relay: relay_id.to_owned(),
            member: None,
            public: config.public_subscriptions(),
        };
        let welcome_run = format!("{:016x}", RandomState::new().hash_one(0x0072_756e_u64));
        Relay {
            welcome,
            history: History::new(l.history_per_key, l.history_keys, l.history_bytes),
            config,
            origin_id: Arc::from(format!("{relay_id}.{run:08x}")),
            epoch: Arc::from(welcome_run.as_str()),
            welcome_run,
            forwarding: false,
            forward: VecDeque::new(),
            sessions: HashMap::default(),
            index: Index::default(),
            dedupe: Dedupe::new(DEDUPE_WINDOW, DEDUPE_ORIGINS),
            dirty: Vec::new(),
            ids: IdGen::new(),
            origin_seq: 0,
            counters: Counters::default(),
            started: Instant::now(),
            group: None,
        }
    }

    /// Names this relay in `Welcome` (`relay`; the relay id given to [`Relay::new`] until
    /// then) and, in a group of relays, the member serving the sessions (`member`, left
    /// out when `None`).
    pub fn set_identity(&mut self, name: &str, member: Option<&str>) {
        self.welcome.relay = name.to_owned();
        self.welcome.member = member.map(str::to_owned);
    }

    /// The epoch that event positions belong to: this run's id unless
    /// [`Relay::set_epoch`] said otherwise.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Names the epoch of event positions, for a relay whose positions outlive its run
    /// (e.g. offsets in a shared, durable log). Call before any event is published: ids
    /// already framed keep the old epoch.
    pub fn set_epoch(&mut self, epoch: &str) {
        self.epoch = Arc::from(epoch);
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- status ------------------------------------------------------------------------

    /// A statistics snapshot.
    pub fn stats(&self) -> Stats {
        Stats {
            uptime_seconds: self.started.elapsed().as_secs(),
            sessions: self.sessions.len(),
            streams: self
                .sessions
                .values()
                .filter(|s| s.kind == SessionKind::Sse)
                .count(),
            subscriptions: self
                .config
                .exchanges
                .keys()
                .map(|e| (e.to_string(), self.index.count(e)))
                .collect(),
            counters: self.counters.clone(),
            history: self.history.size(),
            rpc: None,
            links: None,
            amqp: None,
            mongrel2: None,
            group: self.group_stats(),
        }
    }
}

fn bounds(config: &Config) -> Bounds {
    Bounds {
        frames: config.limits.pending_frames,
        bytes: config.limits.pending_bytes,
    }
}

fn mark_dirty<K: Clone>(s: &mut Session, key: &K, dirty: &mut Vec<K>) {
    if !s.dirty {
        s.dirty = true;
        dirty.push(key.clone());
    }
}

fn enqueue<K: Clone>(
    s: &mut Session,
    key: &K,
    item: Item,
    bounds: Bounds,
    counters: &mut Counters,
    dirty: &mut Vec<K>,
) {
    if s.overflowed {
        return;
    }
    match s.outbox.push(item, bounds) {
        Ok(cost) => {
            counters.dropped += cost.dropped as u64;
            counters.lagged += cost.lagged as u64;
        }
        Err(Overflow) => s.overflowed = true,
    }
    mark_dirty(s, key, dirty);
}
