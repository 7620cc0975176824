//! The relay's I/O-free core. The I/O loop feeds it inputs (session opened / message /
//! closed, credits, events from the injector, PULL, HTTP or links) and periodically calls
//! [`Relay::flush`], which hands back coalesced payloads grouped by identical bytes, ready
//! for `Transceiver::deliver_to`. Nothing here touches a socket or a clock (except uptime).
//!
//! Sessions are WebSocket or SSE ([`Relay::open_stream`]); they differ only in framing.
//! Configured RPC actions come back from [`Relay::on_message`] as an [`RpcCall`] and are
//! answered with [`Relay::rpc_reply`]. With [`Relay::enable_forwarding`], every accepted
//! event is queued for linked relays with its origin (relay run id, that relay's seq, hops);
//! linked events are dropped when already seen by origin or beyond `limits.max_hops`.
//!
//! Resume semantics (decided here): `Resume` needs the same authorisation as `Subscribe`,
//! and subscribes the exact key if it is not subscribed yet (no `AlreadySubscribed` error
//! if it is), so a reconnecting client gets no gap between the replay and live events.
//! Replayed events are queued exactly as live ones (no tag); `Resumed` (tagged) follows with
//! `{exchange, routing_key, recovered, more, last_seq}`. A replay is cut to what fits in the
//! session's outbox without evicting anything; then `more` is true and the client resumes
//! again with `since: last_seq` once it has read what it got. `last_seq` is the seq the
//! client is caught up to (or should resume from). Around a gap, seqs may arrive twice or
//! out of order (queued live events and a replay can overlap): clients key events by
//! (exchange, routing key, `mq.seq`) and drop repeats.

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
    reply_json, welcome_json, Ack, Action, ErrorName, EventInput, Keys, Origin, Source,
    MAX_EVENT_NAME, MAX_ROUTING_KEY,
};
use super::subscriptions::{Index, Pattern};

#[cfg(test)]
mod tests;

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
    /// Queued to `delivered_to` sessions with `seq` on its key.
    Delivered {
        /// Seq on (exchange, routing key).
        seq: u64,
        /// Sessions it was queued to.
        delivered_to: usize,
        /// Network-wide identity to forward to linked relays (add one hop when forwarding).
        origin: Origin,
    },
    /// A linked event already seen (or our own coming back): nothing done.
    Duplicate,
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
    /// `Last-Event-ID`, already parsed: an exact key and the last seq the client saw on it.
    pub last_event: Option<(String, u64)>,
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
    subs: BTreeSet<(Arc<str>, Pattern)>,
    outbox: Outbox,
    dirty: bool,
    overflowed: bool,
    /// When a paced flush last sent to this session.
    last_flush: Option<Instant>,
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
    forwarding: bool,
    forward: VecDeque<Vec<u8>>,
    sessions: HashMap<K, Session>,
    index: Index<K>,
    history: History,
    dedupe: Dedupe,
    dirty: Vec<K>,
    ids: IdGen,
    origin_seq: u64,
    counters: Counters,
    started: Instant,
}

impl<K: SessionKey> Relay<K> {
    /// A relay with `config`; `relay_id` names it to linked relays (origin of its events,
    /// with a per-run suffix, see [`Relay::origin_id`]).
    pub fn new(config: Config, relay_id: &str) -> Relay<K> {
        let run = RandomState::new().hash_one(0x0419_u64) as u32;
        let l = &config.limits;
        Relay {
            history: History::new(l.history_per_key, l.history_keys, l.history_bytes),
            config,
            origin_id: Arc::from(format!("{relay_id}.{run:08x}")),
            forwarding: false,
            forward: VecDeque::new(),
            sessions: HashMap::new(),
            index: Index::default(),
            dedupe: Dedupe::new(DEDUPE_WINDOW, DEDUPE_ORIGINS),
            dirty: Vec::new(),
            ids: IdGen::new(),
            origin_seq: 0,
            counters: Counters::default(),
            started: Instant::now(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- session lifecycle -------------------------------------------------------------

    /// A WebSocket session opened (handshake answered): queues `Welcome`, returns its id.
    pub fn open(&mut self, key: K) -> String {
        self.open_with(key, OpenOptions::default())
    }

    /// A session opened with explicit options. Reopening a known key replaces the old session.
    pub fn open_with(&mut self, key: K, options: OpenOptions) -> String {
        if self.close(&key) {
            log::warn!("session {key:?} opened twice; the old one was forgotten");
        }
        let id = self.ids.next();
        self.sessions.insert(
            key.clone(),
            Session {
                id: id.clone(),
                kind: options.kind,
                identity: None,
                subs: BTreeSet::new(),
                outbox: Outbox::with_credits(options.credits),
                dirty: false,
                overflowed: false,
                last_flush: None,
            },
        );
        self.counters.sessions_opened += 1;
        let welcome = welcome_json(&id, &self.origin_id);
        self.send(&key, "Welcome", welcome);
        id
    }

    /// Opens an SSE stream: checks the token and the subscription first (nothing is
    /// created when they fail), then queues `Welcome`, subscribes, and replays history after
    /// `last_event` (then `Resumed`) when it names a key the stream covers. Only that one
    /// key can be replayed: an SSE client reports just the last id it saw.
    pub fn open_stream(
        &mut self,
        key: K,
        request: &StreamRequest,
        credits: Option<u64>,
    ) -> Result<String, ErrorName> {
        let identity: Option<Arc<str>> = match &request.token {
            Some(token) => Some(Arc::from(
                self.config
                    .token_name(token)
                    .ok_or(ErrorName::InvalidToken)?,
            )),
            None => None,
        };
        let rk = request.routing_key.as_str();
        if rk.len() > MAX_ROUTING_KEY {
            return Err(ErrorName::InvalidPayload);
        }
        let pattern = Pattern::parse(rk);
        let (_, rule) = self
            .config
            .exchange(&request.exchange)
            .ok_or(ErrorName::InvalidExchange)?;
        rule.check(&pattern, identity.as_deref())?;
        let id = self.open_with(
            key.clone(),
            OpenOptions {
                kind: SessionKind::Sse,
                credits,
            },
        );
        if let Some(s) = self.sessions.get_mut(&key) {
            s.identity = identity;
        }
        let subscribed = self.subscribe(&key, &request.exchange, rk);
        if let Err(e) = subscribed {
            self.close(&key);
            return Err(e);
        }
        if let Some((last_key, since)) = &request.last_event {
            if last_key.ends_with('*') || !pattern.matches(last_key) {
                log::debug!("stream {key:?}: Last-Event-ID names {last_key}, not covered");
            } else {
                match self.resume(&key, &request.exchange, last_key, *since) {
                    Ok((event, payload)) => {
                        self.send(&key, event, reply_json(event, None, &payload))
                    }
                    Err(e) => self.send_error(&key, e, None),
                }
            }
        }
        Ok(id)
    }

    /// The session closed, disconnected or timed out: forget it and its subscriptions.
    /// Returns false for an unknown key.
    pub fn close(&mut self, key: &K) -> bool {
        let Some(session) = self.sessions.remove(key) else {
            return false;
        };
        for (exchange, pattern) in &session.subs {
            self.index.remove(exchange, pattern, key);
        }
        true
    }

    /// Mongrel2 reported `bytes` more download credits for this session.
    pub fn credits(&mut self, key: &K, bytes: u64) {
        if let Some(s) = self.sessions.get_mut(key) {
            s.outbox.add_credits(bytes);
            if !s.outbox.is_empty() {
                mark_dirty(s, key, &mut self.dirty);
            }
        }
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The Welcome id of the session open under `key`.
    pub fn session_id(&self, key: &K) -> Option<&str> {
        self.sessions.get(key).map(|s| s.id.as_str())
    }

    /// Every open SSE stream.
    pub fn streams(&self) -> Vec<K> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.kind == SessionKind::Sse)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Queues a heartbeat comment on every SSE stream (idle streams stay visibly alive
    /// for clients and proxies).
    pub fn sse_heartbeat(&mut self) {
        let chunk: Arc<[u8]> = sse_comment_chunk("heartbeat").into();
        let bounds = bounds(&self.config);
        for (key, s) in &mut self.sessions {
            if s.kind != SessionKind::Sse {
                continue;
            }
            let item = Item {
                bytes: chunk.clone(),
                event: None,
            };
            enqueue(s, key, item, bounds, &mut self.counters, &mut self.dirty);
        }
    }

    /// True when no session and no subscription remain.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.index.is_empty()
    }

    // ----- client messages ---------------------------------------------------------------

    /// A complete message from a session. Replies are queued on the session; a configured
    /// RPC action is returned for the I/O layer to forward. Never closes the session.
    pub fn on_message(&mut self, key: &K, message: &[u8]) -> Option<RpcCall<K>> {
        if !self.sessions.contains_key(key) {
            log::debug!("message for unknown session {key:?} ignored");
            return None;
        }
        let envelope = match parse_envelope(message, self.config.limits.message_size) {
            Ok(e) => e,
            Err(rejected) => {
                self.send_error(key, rejected.error, rejected.tag.as_ref());
                return None;
            }
        };
        let tag = envelope.tag.as_ref();
        let action = match Action::parse(&envelope.action, &envelope.payload) {
            Ok(a) => a,
            Err(e) => {
                self.send_error(key, e, tag);
                return None;
            }
        };
        let result = match action {
            Action::Subscribe { exchange, keys } => self.subscribe_action(key, &exchange, keys),
            Action::Unsubscribe { exchange, keys } => self.unsubscribe_action(key, exchange, keys),
            Action::ListSubscriptions => Ok(("YourSubscriptions", self.list(key))),
            Action::Ping => Ok(("Pong", json!({}))),
            Action::Authenticate { token } => self
                .authenticate(key, &token)
                .map(|name| ("Authenticated", json!({ "name": name }))),
            Action::Resume {
                exchange,
                routing_key,
                since,
            } => self.resume(key, &exchange, &routing_key, since),
            Action::Other(name) => match self.config.actions.get(&name) {
                Some(endpoint) => {
                    let s = self.sessions.get(key)?;
                    return Some(RpcCall {
                        session: key.clone(),
                        session_id: s.id.clone(),
                        identity: s.identity.clone(),
                        action: name,
                        tag: envelope.tag,
                        payload: envelope.payload,
                        endpoint: endpoint.clone(),
                    });
                }
                None => Err(ErrorName::InvalidAction),
            },
        };
        match result {
            Ok((event, payload)) => self.send(key, event, reply_json(event, tag, &payload)),
            Err(e) => self.send_error(key, e, tag),
        }
        None
    }

    /// Answers an [`RpcCall`] made by the session whose Welcome id is `session_id`.
    /// Returns false (and sends nothing) when that session has gone, even if another one
    /// now has the same key.
    pub fn rpc_reply(
        &mut self,
        key: &K,
        session_id: &str,
        tag: Option<&Value>,
        outcome: RpcOutcome,
    ) -> bool {
        if self.session_id(key) != Some(session_id) {
            return false;
        }
        match outcome {
            RpcOutcome::Result(result) => {
                self.send(key, "Result", reply_json("Result", tag, &result))
            }
            RpcOutcome::BackendError { code, message } => {
                self.send(key, "Error", backend_error_json(tag, &code, &message))
            }
            RpcOutcome::Failed(e) => self.send_error(key, e, tag),
        }
        true
    }

    /// Subscribes a session to `routing_key` (exact or `prefix*`) on `exchange`, with the
    /// same checks as the `Subscribe` action (for subscribers that cannot send actions,
    /// e.g. SSE streams subscribed from the URL).
    pub fn subscribe(
        &mut self,
        key: &K,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), ErrorName> {
        self.subscribe_keys(
            key,
            exchange,
            std::slice::from_ref(&routing_key.to_owned()),
            false,
        )
    }

    /// Sets a session's identity from a token, as the `Authenticate` action does.
    pub fn authenticate(&mut self, key: &K, token: &str) -> Result<String, ErrorName> {
        // A failed attempt leaves any earlier identity in place.
        let name = self
            .config
            .token_name(token)
            .ok_or(ErrorName::InvalidToken)?
            .to_owned();
        if let Some(s) = self.sessions.get_mut(key) {
            s.identity = Some(Arc::from(name.as_str()));
        }
        Ok(name)
    }

    fn subscribe_action(
        &mut self,
        key: &K,
        exchange: &str,
        keys: Keys,
    ) -> Result<(&'static str, Value), ErrorName> {
        self.subscribe_keys(key, exchange, keys.as_slice(), false)?;
        let mut payload = Map::new();
        payload.insert("exchange".into(), json!(exchange));
        keys.insert_into(&mut payload);
        Ok(("Subscribed", Value::Object(payload)))
    }

    /// All-or-nothing: every key is checked before any is added. With `allow_existing`,
    /// keys already subscribed are skipped instead of refused (Resume).
    fn subscribe_keys(
        &mut self,
        key: &K,
        exchange: &str,
        keys: &[String],
        allow_existing: bool,
    ) -> Result<(), ErrorName> {
        let (exchange, rule) = self
            .config
            .exchange(exchange)
            .ok_or(ErrorName::InvalidExchange)?;
        let session = self.sessions.get_mut(key).ok_or(ErrorName::InvalidAction)?;
        let mut new = Vec::with_capacity(keys.len());
        for k in keys {
            let pattern = Pattern::parse(k);
            rule.check(&pattern, session.identity.as_deref())?;
            let entry = (exchange.clone(), pattern);
            if session.subs.contains(&entry) {
                if allow_existing {
                    continue;
                }
                return Err(ErrorName::AlreadySubscribed);
            }
            new.push(entry);
        }
        if session.subs.len() + new.len() > self.config.limits.subscriptions_per_session {
            return Err(ErrorName::TooManySubscriptions);
        }
        for (exchange, pattern) in new {
            self.index.insert(&exchange, &pattern, key.clone());
            session.subs.insert((exchange, pattern));
        }
        Ok(())
    }

    fn unsubscribe_action(
        &mut self,
        key: &K,
        exchange: Option<String>,
        keys: Option<Keys>,
    ) -> Result<(&'static str, Value), ErrorName> {
        if let Some(e) = &exchange {
            if self.config.exchange(e).is_none() {
                return Err(ErrorName::InvalidExchange);
            }
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return Err(ErrorName::InvalidAction);
        };
        let doomed: Vec<(Arc<str>, Pattern)> = match (&exchange, &keys) {
            (None, _) => session.subs.iter().cloned().collect(),
            (Some(e), None) => session
                .subs
                .iter()
                .filter(|(x, _)| &**x == e.as_str())
                .cloned()
                .collect(),
            (Some(e), Some(ks)) => {
                let patterns: BTreeSet<Pattern> =
                    ks.as_slice().iter().map(|k| Pattern::parse(k)).collect();
                session
                    .subs
                    .iter()
                    .filter(|(x, p)| &**x == e.as_str() && patterns.contains(p))
                    .cloned()
                    .collect()
            }
        };
        for sub in doomed {
            self.index.remove(&sub.0, &sub.1, key);
            session.subs.remove(&sub);
        }
        let mut payload = Map::new();
        payload.insert("exchange".into(), json!(exchange));
        if let Some(ks) = &keys {
            ks.insert_into(&mut payload);
        }
        Ok(("Unsubscribed", Value::Object(payload)))
    }

    fn list(&self, key: &K) -> Value {
        let subs: Vec<Value> = self
            .sessions
            .get(key)
            .map(|s| {
                s.subs
                    .iter()
                    .map(|(e, p)| json!({ "exchange": &**e, "routing_key": p.to_key() }))
                    .collect()
            })
            .unwrap_or_default();
        json!({ "subscriptions": subs })
    }

    fn resume(
        &mut self,
        key: &K,
        exchange: &str,
        routing_key: &str,
        since: u64,
    ) -> Result<(&'static str, Value), ErrorName> {
        self.subscribe_keys(
            key,
            exchange,
            std::slice::from_ref(&routing_key.to_owned()),
            true,
        )?;
        let replay = self.history.since(exchange, routing_key, since);
        let bounds = bounds(&self.config);
        let Some(session) = self.sessions.get_mut(key) else {
            return Err(ErrorName::InvalidAction);
        };
        // Replay only what fits without evicting anything (keeping room for the Resumed
        // reply): a replay bigger than the outbox would otherwise push out its own oldest
        // events and announce a new gap at the very seq the client asked for.
        let (frames_room, bytes_room) = session.outbox.room(bounds);
        let mut frames_room = frames_room.saturating_sub(1);
        let mut bytes_room = bytes_room.saturating_sub(RESUMED_REPLY_RESERVE);
        let (ex, rk): (Arc<str>, Arc<str>) = (Arc::from(exchange), Arc::from(routing_key));
        let mut replayed = None;
        for (seq, encoded) in &replay.events {
            let bytes = encoded.frame(session.kind);
            if frames_room == 0 || bytes.len() > bytes_room {
                break;
            }
            frames_room -= 1;
            bytes_room -= bytes.len();
            let item = Item {
                bytes,
                event: Some(EventRef {
                    exchange: ex.clone(),
                    routing_key: rk.clone(),
                    seq: *seq,
                }),
            };
            enqueue(
                session,
                key,
                item,
                bounds,
                &mut self.counters,
                &mut self.dirty,
            );
            replayed = Some(*seq);
        }
        let more = replayed != replay.events.last().map(|(s, _)| *s);
        // Where the client stands after this replay: resume from here if `more`.
        let last_seq = match (replayed, replay.events.first()) {
            (Some(seq), _) => seq,
            (None, Some((first, _))) => first.saturating_sub(1),
            (None, None) => replay.last_seq,
        };
        Ok((
            "Resumed",
            json!({
                "exchange": exchange,
                "routing_key": routing_key,
                "recovered": replay.recovered,
                "more": more,
                "last_seq": last_seq,
            }),
        ))
    }

    /// Queues a reply or notice; `event` is its name (for SSE framing).
    fn send(&mut self, key: &K, event: &str, json: Vec<u8>) {
        let bounds = bounds(&self.config);
        if let Some(s) = self.sessions.get_mut(key) {
            let item = Item {
                bytes: s.kind.framed(&json, &Meta::named(event)),
                event: None,
            };
            enqueue(s, key, item, bounds, &mut self.counters, &mut self.dirty);
        }
    }

    fn send_error(&mut self, key: &K, error: ErrorName, tag: Option<&Value>) {
        self.send(key, "Error", error_json(error, tag));
    }

    // ----- publishing --------------------------------------------------------------------

    /// Publishes a raw event (injector, PULL, HTTP body or link) and returns the ack.
    /// Events from links may be [`LINK_ENVELOPE`] bytes over `limits.message_size`: the
    /// forwarding relay added the origin to an event that was within the limit.
    pub fn publish_json(&mut self, source: Source, body: &[u8]) -> Ack {
        let limit = match source {
            Source::Link => self.config.limits.message_size + LINK_ENVELOPE,
            _ => self.config.limits.message_size,
        };
        let result = parse_event_input(body, limit).and_then(|input| self.publish_inner(input));
        self.count(source, &result);
        match result {
            Ok(Published::Delivered {
                seq, delivered_to, ..
            }) => Ack::Published { seq, delivered_to },
            Ok(Published::Duplicate) => Ack::Duplicate,
            Err(e) => Ack::Rejected(e),
        }
    }

    /// `POST /events/publish`: checks the `Authorization: Bearer` header first (401 without
    /// a configured publish token), then publishes the body.
    pub fn http_publish(&mut self, authorization: Option<&str>, body: &[u8]) -> Ack {
        if !self.config.publish_authorized(authorization) {
            self.counters.events_rejected.bump(Source::Http);
            return Ack::Rejected(ErrorName::AuthRequired);
        }
        self.publish_json(Source::Http, body)
    }

    /// Counts an input refused before it could be parsed (e.g. a multipart ZeroMQ message)
    /// as rejected from `source`, and returns the ack to answer it with.
    pub fn reject(&mut self, source: Source, error: ErrorName) -> Ack {
        self.counters.events_rejected.bump(source);
        Ack::Rejected(error)
    }

    /// Publishes an already parsed event.
    pub fn publish(&mut self, source: Source, input: EventInput) -> Result<Published, ErrorName> {
        let result = self.publish_inner(input);
        self.count(source, &result);
        result
    }

    fn count(&mut self, source: Source, result: &Result<Published, ErrorName>) {
        match result {
            Ok(Published::Delivered { .. }) => self.counters.events_in.bump(source),
            Ok(Published::Duplicate) => self.counters.events_duplicate += 1,
            Err(_) => self.counters.events_rejected.bump(source),
        }
    }

    fn publish_inner(&mut self, input: EventInput) -> Result<Published, ErrorName> {
        let exchange = self
            .config
            .exchange(&input.exchange)
            .map(|(e, _)| e.clone())
            .ok_or(ErrorName::InvalidExchange)?;
        // Re-checked here because inputs may be built in code rather than parsed.
        let rk = input.routing_key.as_str();
        if rk.len() > MAX_ROUTING_KEY
            || rk.ends_with('*')
            || input.event.is_empty()
            || input.event.len() > MAX_EVENT_NAME
        {
            return Err(ErrorName::InvalidPayload);
        }
        let max_hops = self.config.limits.max_hops;
        let origin = match input.origin {
            Some(o) if o.hops > max_hops => return Err(ErrorName::InvalidPayload),
            Some(o) if *o.relay == *self.origin_id => return Ok(Published::Duplicate),
            Some(o) if !self.dedupe.first_time(&o.relay, o.seq) => return Ok(Published::Duplicate),
            Some(o) => o,
            None => {
                self.origin_seq += 1;
                Origin {
                    relay: self.origin_id.to_string(),
                    seq: self.origin_seq,
                    hops: 0,
                }
            }
        };
        let (event, payload) = (&input.event, &input.payload);
        if self.forwarding && origin.hops < max_hops {
            if self.forward.len() >= FORWARD_QUEUE {
                self.forward.pop_front();
                self.counters.forward_dropped += 1;
            }
            let linked = json!({
                "exchange": &*exchange,
                "routing_key": rk,
                "event": event,
                "payload": payload,
                "origin": { "relay": origin.relay, "seq": origin.seq, "hops": origin.hops + 1 },
            });
            self.forward.push_back(linked.to_string().into_bytes());
        }
        let recorded = self.history.record(&exchange, rk, |seq| {
            let meta = Meta {
                event,
                id: Some(EventId {
                    exchange: &exchange,
                    routing_key: rk,
                    seq,
                }),
            };
            Encoded::new(&event_json(event, payload, &exchange, rk, seq), &meta)
        });
        let targets = self.index.matching(&exchange, rk);
        let bounds = bounds(&self.config);
        for key in &targets {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let item = Item {
                bytes: recorded.encoded.frame(session.kind),
                event: Some(EventRef {
                    exchange: exchange.clone(),
                    routing_key: recorded.routing_key.clone(),
                    seq: recorded.seq,
                }),
            };
            enqueue(
                session,
                key,
                item,
                bounds,
                &mut self.counters,
                &mut self.dirty,
            );
        }
        self.counters.events_queued += targets.len() as u64;
        log::debug!(
            "event {event} on {exchange}/{rk} seq {} queued to {} sessions",
            recorded.seq,
            targets.len()
        );
        Ok(Published::Delivered {
            seq: recorded.seq,
            delivered_to: targets.len(),
            origin,
        })
    }

    // ----- linked relays -----------------------------------------------------------------

    /// This relay's origin id on forwarded events (`RELAY_ID.RUN`).
    pub fn origin_id(&self) -> &str {
        &self.origin_id
    }

    /// Starts queueing every accepted event for linked relays (see [`Relay::take_forwards`]).
    pub fn enable_forwarding(&mut self) {
        self.forwarding = true;
    }

    /// Accepted events to send to every linked relay, as event-input JSON with `origin`
    /// (hops already incremented). Events that have crossed `limits.max_hops` links are
    /// not forwarded;
    /// if the link layer falls more than 10,000 behind, the oldest are dropped (counted).
    pub fn take_forwards(&mut self) -> Vec<Vec<u8>> {
        self.forward.drain(..).collect()
    }

    // ----- output ------------------------------------------------------------------------

    /// Is output waiting for a flush? (The I/O loop should flush again soon.)
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Takes what every session may be sent now, coalesced per session (`Lagged` notices
    /// first, then frames in order, at most `limits.flush_bytes` and never beyond download
    /// credits), and groups sessions whose bytes are identical so one event to many
    /// sessions stays one batched send.
    ///
    /// Every call can produce one Mongrel2 message per session, and Mongrel2 drops a client
    /// with more than 16 messages queued (without flow control): a loop should use
    /// [`Relay::flush_paced`], which spaces each session's messages.
    pub fn flush(&mut self) -> Flush<K> {
        self.flush_where(None)
    }

    /// Like [`Relay::flush`], but only for sessions last sent to at least `gap` before
    /// `now` (or never); the others keep their output for a later call. One message per
    /// session per `gap` however fast events arrive, while a session that has been quiet
    /// is served at once, whatever the others are doing.
    pub fn flush_paced(&mut self, now: Instant, gap: Duration) -> Flush<K> {
        self.flush_where(Some((now, gap)))
    }

    /// How long after `now` [`Relay::flush_paced`] with `gap` will have something to send:
    /// `None` when no output is waiting, zero when some is due already.
    pub fn flush_wait(&self, now: Instant, gap: Duration) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for key in &self.dirty {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            let due_in = match s.last_flush {
                Some(last) if !s.overflowed => (last + gap).saturating_duration_since(now),
                // Never sent to, or to be closed: due now.
                _ => Duration::ZERO,
            };
            if due_in.is_zero() {
                return Some(Duration::ZERO);
            }
            wait = Some(wait.map_or(due_in, |w| w.min(due_in)));
        }
        wait
    }

    fn flush_where(&mut self, paced: Option<(Instant, Duration)>) -> Flush<K> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let flush_bytes = self.config.limits.flush_bytes;
        // Sessions first group by the identity of their shared frames (cheap: fan-out
        // queues the same Arc everywhere); groups are then merged by bytes below.
        let mut by_frames: HashMap<Vec<(usize, usize)>, usize> = HashMap::new();
        let mut groups: Vec<Group<K>> = Vec::new();
        let mut close = Vec::new();
        let mut end_streams = Vec::new();
        for key in dirty {
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            if s.overflowed {
                s.dirty = false;
                match s.kind {
                    SessionKind::WebSocket => close.push(key),
                    SessionKind::Sse => end_streams.push(key),
                }
                continue;
            }
            if let Some((now, gap)) = paced {
                if s.last_flush.is_some_and(|last| now < last + gap) {
                    // Not yet: stays dirty for a later flush.
                    self.dirty.push(key);
                    continue;
                }
            }
            s.dirty = false;
            let kind = s.kind;
            let taken = s.outbox.take(flush_bytes, |e, rk, seq| {
                kind.framed(&lagged_json(e, rk, seq), &Meta::named("Lagged"))
            });
            if !s.outbox.is_empty() && !taken.credit_blocked {
                mark_dirty(s, &key, &mut self.dirty);
            }
            if taken.chunks.is_empty() {
                continue;
            }
            if let Some((now, _)) = paced {
                s.last_flush = Some(now);
            }
            self.counters.frames_out += taken.chunks.len() as u64;
            // Live chunks cannot share an address, and each group keeps its chunks alive
            // until payloads are built, so equal pointer lists mean equal bytes.
            let identity: Vec<(usize, usize)> = taken
                .chunks
                .iter()
                .map(|c| (c.as_ptr() as usize, c.len()))
                .collect();
            match by_frames.get(&identity) {
                Some(&g) => groups[g].1.push(key),
                None => {
                    by_frames.insert(identity, groups.len());
                    groups.push((taken.chunks, vec![key]));
                }
            }
        }
        let mut deliveries: Vec<Delivery<K>> = Vec::with_capacity(groups.len());
        let mut by_bytes: HashMap<u64, Vec<usize>> = HashMap::new();
        for (chunks, sessions) in groups {
            let payload = chunks.concat();
            let mut h = DefaultHasher::new();
            payload.hash(&mut h);
            let same = by_bytes.entry(h.finish()).or_default();
            match same.iter().find(|&&d| deliveries[d].payload == payload) {
                Some(&d) => deliveries[d].sessions.extend(sessions),
                None => {
                    same.push(deliveries.len());
                    deliveries.push(Delivery { payload, sessions });
                }
            }
        }
        for d in &mut deliveries {
            d.sessions.sort_unstable();
        }
        self.counters.payloads_out += deliveries.len() as u64;
        for key in close.iter().chain(&end_streams) {
            log::warn!("session {key:?} overflowed its outbox; closing it");
            self.counters.overflowed += 1;
            self.close(key);
        }
        Flush {
            deliveries,
            close,
            end_streams,
        }
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
        }
    }
}

/// Frames one or more sessions will receive in a flush, and those sessions.
type Group<K> = (Vec<Arc<[u8]>>, Vec<K>);

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
