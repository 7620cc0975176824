//! Positions and a bounded history of encoded events, for `Resume`.
//!
//! Every event gets a position on its exchange: 1, 2, 3, ... across all its routing keys,
//! in publish order. A position is what a subscriber resumes from, whatever its pattern: an
//! exact key and a `prefix*` wildcard both say "I have everything up to position N of this
//! exchange" (a per-key counter could not do that for a wildcard). Positions are only
//! meaningful within an epoch (see the relay's `epoch`), which the caller checks.
//!
//! Events are kept per (exchange, routing key), bounded three ways: events per key, keys,
//! and bytes overall. When over the key or byte budget the least recently published key is
//! forgotten entirely. Whatever is dropped raises a "lost up to" mark (per key when trimmed,
//! per exchange when a whole key is forgotten, since its name is not kept), so a resume from
//! before it is answered `recovered: false`, never a quiet gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use mongrel2_transceiver::http::ChunkedResponse;

use super::frame::{sse_event_with_head, sse_head, Meta, SessionKind};
use super::subscriptions::Pattern;

/// One event's client JSON, framed once for WebSocket and (lazily) once for SSE, shared by
/// history and every outbox that queues it.
#[derive(Debug)]
pub struct Encoded {
    ws: Arc<[u8]>,
    header: usize,
    /// The SSE `id:` and `event:` lines, kept so the SSE frame can be built on first use.
    sse_head: Box<str>,
    sse: OnceLock<Arc<[u8]>>,
    /// Where the event entered the relay network (origin relay, its seq), for relays in a
    /// group: a repaired copy must dedupe like the original.
    origin: Option<(Arc<str>, u64)>,
}

impl Encoded {
    /// Frames `json` for WebSocket now; `meta` names it for SSE.
    pub fn new(json: &[u8], meta: &Meta<'_>) -> Encoded {
        let ws = SessionKind::WebSocket.framed(json, meta);
        Encoded {
            header: ws.len() - json.len(),
            ws,
            sse_head: sse_head(meta).into_boxed_str(),
            sse: OnceLock::new(),
            origin: None,
        }
    }

    /// The same, remembering where the event entered the relay network.
    pub fn with_origin(mut self, relay: Arc<str>, seq: u64) -> Encoded {
        self.origin = Some((relay, seq));
        self
    }

    /// Where the event entered the relay network, when known.
    pub fn origin(&self) -> Option<(&Arc<str>, u64)> {
        self.origin.as_ref().map(|(relay, seq)| (relay, *seq))
    }

    /// The client JSON.
    pub fn json(&self) -> &[u8] {
        &self.ws[self.header..]
    }

    /// The frame for `kind`, shared.
    pub fn frame(&self, kind: SessionKind) -> Arc<[u8]> {
        match kind {
            SessionKind::WebSocket => self.ws.clone(),
            SessionKind::Sse => self
                .sse
                .get_or_init(|| {
                    let event = sse_event_with_head(self.sse_head.as_bytes(), self.json());
                    ChunkedResponse::chunk(&event).into()
                })
                .clone(),
        }
    }

    /// Bytes held (WebSocket frame and SSE head; the SSE frame again when built).
    pub fn size(&self) -> usize {
        self.ws.len() + self.sse_head.len() + self.sse.get().map_or(0, |s| s.len())
    }
}

struct KeyHistory {
    touched: u64,
    /// Position of this key's newest event.
    last_pos: u64,
    /// Position of the newest event of this key dropped from history (0: none).
    lost_upto: u64,
    events: VecDeque<(u64, Arc<Encoded>)>,
    bytes: usize,
}

#[derive(Default)]
struct ExchangeHistory {
    /// Position of the exchange's newest event (0: none yet).
    last_pos: u64,
    /// Newest position of any key forgotten entirely (0: none).
    forgotten_upto: u64,
    keys: HashMap<Arc<str>, KeyHistory>,
}

/// A newly recorded event.
pub struct Recorded {
    /// The interned routing key (shared by outbox entries).
    pub routing_key: Arc<str>,
    /// Its position on the exchange, from 1.
    pub seq: u64,
    /// Its encoding.
    pub encoded: Arc<Encoded>,
}

/// Stored events for a resume.
pub struct Replay {
    /// Stored events after the position asked for, matching the pattern, in position order.
    pub events: Vec<(u64, Arc<str>, Arc<Encoded>)>,
    /// The newest position, among the events the pattern may cover, that is no longer
    /// stored (0: nothing covered was ever dropped). A resume from before it has a gap.
    pub lost_upto: u64,
    /// The exchange's newest position (0 if nothing was published on it).
    pub last_seq: u64,
}

/// Aggregate sizes, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistorySize {
    /// Keys with history.
    pub keys: usize,
    /// Events stored.
    pub events: usize,
    /// Bytes stored.
    pub bytes: usize,
}

/// Positions and history for every exchange.
pub struct History {
    per_key: usize,
    max_keys: usize,
    max_bytes: usize,
    exchanges: HashMap<Arc<str>, ExchangeHistory>,
    /// touched tick -> key, oldest first.
    lru: BTreeMap<u64, (Arc<str>, Arc<str>)>,
    tick: u64,
    size: HistorySize,
}

impl History {
    /// History keeping `per_key` events per key, at most `max_keys` keys and `max_bytes`.
    pub fn new(per_key: usize, max_keys: usize, max_bytes: usize) -> History {
        History {
            per_key,
            max_keys: max_keys.max(1),
            max_bytes,
            exchanges: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            size: HistorySize::default(),
        }
    }

    /// Assigns the next position on `exchange`, encodes the event with it and stores it.
    pub fn record(
        &mut self,
        exchange: &Arc<str>,
        routing_key: &str,
        encode: impl FnOnce(u64) -> Encoded,
    ) -> Recorded {
        let next = self.last_position(exchange) + 1;
        self.record_at(exchange, routing_key, next, encode)
            .unwrap_or_else(|| unreachable!("the next position is always new"))
    }

    /// The newest position recorded on `exchange` (0: none).
    pub fn last_position(&self, exchange: &str) -> u64 {
        self.exchanges.get(exchange).map_or(0, |ex| ex.last_pos)
    }

    /// Stores an event at a position given from outside (an offset in a shared log), so
    /// every relay reading that log numbers events alike. `None` (nothing stored) for a
    /// position at or below the newest one: a repeat. Positions skipped over are lost
    /// (a resume from before them is not recovered).
    pub fn record_at(
        &mut self,
        exchange: &Arc<str>,
        routing_key: &str,
        pos: u64,
        encode: impl FnOnce(u64) -> Encoded,
    ) -> Option<Recorded> {
        // Exchanges come from the config, so this map stays small; it is never pruned
        // because the position counter must survive its keys being forgotten.
        let ex = self.exchanges.entry(exchange.clone()).or_default();
        if pos <= ex.last_pos {
            return None;
        }
        if pos > ex.last_pos + 1 {
            ex.forgotten_upto = pos - 1;
        }
        ex.last_pos = pos;
        self.tick += 1;
        let tick = self.tick;
        let rk: Arc<str> = match ex.keys.get_key_value(routing_key) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(routing_key);
                ex.keys.insert(
                    k.clone(),
                    KeyHistory {
                        touched: tick,
                        last_pos: 0,
                        lost_upto: 0,
                        events: VecDeque::new(),
                        bytes: 0,
                    },
                );
                self.size.keys += 1;
                k
            }
        };
        // Inserted just above when absent.
        let Some(h) = ex.keys.get_mut(&rk) else {
            unreachable!("key present")
        };
        self.lru.remove(&h.touched);
        h.touched = tick;
        h.last_pos = pos;
        self.lru.insert(tick, (exchange.clone(), rk.clone()));
        let encoded = Arc::new(encode(pos));
        if self.per_key > 0 {
            let size = encoded.size();
            h.events.push_back((pos, encoded.clone()));
            h.bytes += size;
            self.size.bytes += size;
            self.size.events += 1;
            while h.events.len() > self.per_key {
                if let Some((old_pos, old)) = h.events.pop_front() {
                    h.lost_upto = old_pos;
                    h.bytes -= old.size();
                    self.size.bytes -= old.size();
                    self.size.events -= 1;
                }
            }
        } else {
            h.lost_upto = pos;
        }
        self.evict(exchange, &rk);
        Some(Recorded {
            routing_key: rk,
            seq: pos,
            encoded,
        })
    }

    /// Every exchange's newest position: (exchange, position), for a group's tips.
    pub fn tips(&self) -> Vec<(Arc<str>, u64)> {
        let mut tips: Vec<(Arc<str>, u64)> = self
            .exchanges
            .iter()
            .filter(|(_, ex)| ex.last_pos > 0)
            .map(|(e, ex)| (e.clone(), ex.last_pos))
            .collect();
        tips.sort_unstable();
        tips
    }

    /// Whether any position was ever recorded here.
    pub fn has_positions(&self) -> bool {
        self.exchanges.values().any(|ex| ex.last_pos > 0)
    }

    fn evict(&mut self, current_exchange: &Arc<str>, current_key: &Arc<str>) {
        while self.size.keys > self.max_keys || self.size.bytes > self.max_bytes {
            let Some((&tick, (e, k))) = self.lru.iter().next() else {
                return;
            };
            if Arc::ptr_eq(e, current_exchange) && Arc::ptr_eq(k, current_key) {
                // Only the key just published remains: trim its oldest events instead.
                self.trim_current(current_exchange, current_key);
                return;
            }
            let (e, k) = (e.clone(), k.clone());
            self.lru.remove(&tick);
            if let Some(ex) = self.exchanges.get_mut(&e) {
                if let Some(h) = ex.keys.remove(&k) {
                    ex.forgotten_upto = ex.forgotten_upto.max(h.last_pos);
                    self.size.keys -= 1;
                    self.size.events -= h.events.len();
                    self.size.bytes -= h.bytes;
                }
            }
        }
    }

    fn trim_current(&mut self, exchange: &str, key: &str) {
        let Some(h) = self
            .exchanges
            .get_mut(exchange)
            .and_then(|ex| ex.keys.get_mut(key))
        else {
            return;
        };
        while self.size.bytes > self.max_bytes && h.events.len() > 1 {
            if let Some((old_pos, old)) = h.events.pop_front() {
                h.lost_upto = old_pos;
                h.bytes -= old.size();
                self.size.bytes -= old.size();
                self.size.events -= 1;
            }
        }
    }

    /// Stored events on `exchange` after position `since` whose keys `pattern` matches,
    /// and how far back events it matches were lost. Costs one pass over the exchange's
    /// keys (bounded by `max_keys`) plus a sort of what is returned.
    pub fn since(&self, exchange: &str, pattern: &Pattern, since: u64) -> Replay {
        let Some(ex) = self.exchanges.get(exchange) else {
            return Replay {
                events: Vec::new(),
                lost_upto: 0,
                last_seq: 0,
            };
        };
        let mut events = Vec::new();
        let mut lost_upto = ex.forgotten_upto;
        let mut add = |rk: &Arc<str>, h: &KeyHistory| {
            lost_upto = lost_upto.max(h.lost_upto);
            // Positions are increasing within a key: skip what the client has.
            let start = h.events.partition_point(|(p, _)| *p <= since);
            events.extend(
                h.events
                    .range(start..)
                    .map(|(p, e)| (*p, rk.clone(), e.clone())),
            );
        };
        match pattern {
            Pattern::Exact(k) => {
                if let Some((rk, h)) = ex.keys.get_key_value(&**k) {
                    add(rk, h);
                }
            }
            Pattern::Prefix(_) => {
                for (rk, h) in &ex.keys {
                    if pattern.matches(rk) {
                        add(rk, h);
                    }
                }
            }
        }
        events.sort_unstable_by_key(|(p, _, _)| *p);
        Replay {
            events,
            lost_upto,
            last_seq: ex.last_pos,
        }
    }

    /// Sizes for status.
    pub fn size(&self) -> HistorySize {
        self.size
    }
}

#[cfg(test)]
mod tests;
