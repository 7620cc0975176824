//! Per (exchange, routing key) sequence numbers and a bounded history of encoded events,
//! for `Resume`.
//!
//! Bounded three ways: events per key, keys, and bytes overall. When over the key or byte
//! budget the least recently published key is forgotten entirely, so its seq restarts at 1
//! (a client resuming it sees `recovered: false`, which is the truth).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use mongrel2_transceiver::http::ChunkedResponse;

use super::frame::{sse_event_with_head, sse_head, Meta, SessionKind};

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
    last_seq: u64,
    touched: u64,
    events: VecDeque<(u64, Arc<Encoded>)>,
    bytes: usize,
}

/// A newly recorded event.
pub struct Recorded {
    /// The interned routing key (shared by outbox entries).
    pub routing_key: Arc<str>,
    /// Its seq on (exchange, routing key), from 1.
    pub seq: u64,
    /// Its encoding.
    pub encoded: Arc<Encoded>,
}

/// The answer to a resume request.
pub struct Replay {
    /// Stored events after `since`, oldest first.
    pub events: Vec<(u64, Arc<Encoded>)>,
    /// False when events after `since` existed that are no longer stored (or `since` is
    /// from a different life of this key, e.g. before a relay restart).
    pub recovered: bool,
    /// The key's current seq (0 if never published or forgotten).
    pub last_seq: u64,
}

/// Aggregate sizes, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistorySize {
    /// Keys with a seq counter.
    pub keys: usize,
    /// Events stored.
    pub events: usize,
    /// Bytes stored.
    pub bytes: usize,
}

/// Seq counters and history for every (exchange, routing key).
pub struct History {
    per_key: usize,
    max_keys: usize,
    max_bytes: usize,
    exchanges: HashMap<Arc<str>, HashMap<Arc<str>, KeyHistory>>,
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

    /// Assigns the next seq on (`exchange`, `routing_key`), encodes the event with it and
    /// stores it.
    pub fn record(
        &mut self,
        exchange: &Arc<str>,
        routing_key: &str,
        encode: impl FnOnce(u64) -> Encoded,
    ) -> Recorded {
        match self.record_at(exchange, routing_key, None, encode) {
            Some(recorded) => recorded,
            None => unreachable!("a fresh seq is always recorded"),
        }
    }

    /// Stores an event another relay numbered `seq` (`None`: the next seq). `None` when the
    /// key is already at or past `seq` (a repeat). Past a gap the older stored events go:
    /// a replay must not skip the seqs this relay never had.
    pub fn record_at(
        &mut self,
        exchange: &Arc<str>,
        routing_key: &str,
        at: Option<u64>,
        encode: impl FnOnce(u64) -> Encoded,
    ) -> Option<Recorded> {
        if let Some(seq) = at {
            if seq <= self.last_seq(exchange, routing_key) {
                return None;
            }
        }
        self.tick += 1;
        let tick = self.tick;
        let keys = self.exchanges.entry(exchange.clone()).or_default();
        let rk: Arc<str> = match keys.get_key_value(routing_key) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(routing_key);
                keys.insert(
                    k.clone(),
                    KeyHistory {
                        last_seq: 0,
                        touched: tick,
                        events: VecDeque::new(),
                        bytes: 0,
                    },
                );
                self.size.keys += 1;
                k
            }
        };
        // Inserted just above when absent.
        let Some(h) = keys.get_mut(&rk) else {
            unreachable!("key present")
        };
        let seq = at.unwrap_or(h.last_seq.saturating_add(1));
        if seq > h.last_seq.saturating_add(1) {
            self.size.events -= h.events.len();
            self.size.bytes -= h.bytes;
            h.events.clear();
            h.bytes = 0;
        }
        self.lru.remove(&h.touched);
        h.touched = tick;
        self.lru.insert(tick, (exchange.clone(), rk.clone()));
        h.last_seq = seq;
        let encoded = Arc::new(encode(seq));
        if self.per_key > 0 {
            let size = encoded.size();
            h.events.push_back((seq, encoded.clone()));
            h.bytes += size;
            self.size.bytes += size;
            self.size.events += 1;
            while h.events.len() > self.per_key {
                if let Some((_, old)) = h.events.pop_front() {
                    h.bytes -= old.size();
                    self.size.bytes -= old.size();
                    self.size.events -= 1;
                }
            }
        }
        self.evict(exchange, &rk);
        Some(Recorded {
            routing_key: rk,
            seq,
            encoded,
        })
    }

    /// The key's current seq (0 if never published or forgotten).
    pub fn last_seq(&self, exchange: &str, routing_key: &str) -> u64 {
        self.exchanges
            .get(exchange)
            .and_then(|m| m.get(routing_key))
            .map_or(0, |h| h.last_seq)
    }

    /// Every key's current seq: (exchange, routing key, seq).
    pub fn tips(&self) -> Vec<(Arc<str>, Arc<str>, u64)> {
        self.exchanges
            .iter()
            .flat_map(|(e, keys)| keys.iter().map(|(k, h)| (e.clone(), k.clone(), h.last_seq)))
            .collect()
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
            if let Some(keys) = self.exchanges.get_mut(&e) {
                if let Some(h) = keys.remove(&k) {
                    self.size.keys -= 1;
                    self.size.events -= h.events.len();
                    self.size.bytes -= h.bytes;
                }
                if keys.is_empty() {
                    self.exchanges.remove(&e);
                }
            }
        }
    }

    fn trim_current(&mut self, exchange: &str, key: &str) {
        let Some(h) = self
            .exchanges
            .get_mut(exchange)
            .and_then(|m| m.get_mut(key))
        else {
            return;
        };
        while self.size.bytes > self.max_bytes && h.events.len() > 1 {
            if let Some((_, old)) = h.events.pop_front() {
                h.bytes -= old.size();
                self.size.bytes -= old.size();
                self.size.events -= 1;
            }
        }
    }

    /// Stored events on (`exchange`, `routing_key`) after `since`.
    pub fn since(&self, exchange: &str, routing_key: &str, since: u64) -> Replay {
        let Some(h) = self
            .exchanges
            .get(exchange)
            .and_then(|m| m.get(routing_key))
        else {
            // Never published (or forgotten): nothing was missed only if nothing was seen.
            return Replay {
                events: Vec::new(),
                recovered: since == 0,
                last_seq: 0,
            };
        };
        if since > h.last_seq {
            // The client saw seqs this key never reached: they are from an earlier life of
            // the key. Send everything we have and say the gap is unknown.
            return Replay {
                events: h.events.iter().cloned().collect(),
                recovered: false,
                last_seq: h.last_seq,
            };
        }
        let events: Vec<_> = h
            .events
            .iter()
            .filter(|(s, _)| *s > since)
            .cloned()
            .collect();
        let first_needed = since + 1;
        let recovered =
            since == h.last_seq || events.first().is_some_and(|(s, _)| *s == first_needed);
        Replay {
            events,
            recovered,
            last_seq: h.last_seq,
        }
    }

    /// Sizes for status.
    pub fn size(&self) -> HistorySize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(h: &mut History, e: &Arc<str>, k: &str) -> u64 {
        h.record(e, k, |seq| {
            Encoded::new(format!("{{\"seq\":{seq}}}").as_bytes(), &Meta::named("E"))
        })
        .seq
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.events.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn seq_is_per_exchange_and_key_from_one() {
        let mut h = History::new(10, 100, 1 << 20);
        let (calls, agents) = (Arc::from("calls"), Arc::from("agents"));
        assert_eq!(rec(&mut h, &calls, "a"), 1);
        assert_eq!(rec(&mut h, &calls, "a"), 2);
        assert_eq!(rec(&mut h, &calls, "b"), 1);
        assert_eq!(rec(&mut h, &agents, "a"), 1);
        assert_eq!(h.size().keys, 3);
        assert_eq!(h.size().events, 4);
    }

    #[test]
    fn since_with_and_without_gap() {
        let mut h = History::new(3, 100, 1 << 20);
        let e = Arc::from("calls");
        for _ in 0..5 {
            rec(&mut h, &e, "k");
        }
        let r = h.since("calls", "k", 2);
        assert_eq!((seqs(&r), r.recovered), (vec![3, 4, 5], true));
        let r = h.since("calls", "k", 1);
        assert_eq!(
            (seqs(&r), r.recovered),
            (vec![3, 4, 5], false),
            "seq 2 is gone"
        );
        let r = h.since("calls", "k", 5);
        assert_eq!((seqs(&r), r.recovered), (vec![], true));
        let r = h.since("calls", "k", 9);
        assert_eq!(
            (seqs(&r), r.recovered),
            (vec![3, 4, 5], false),
            "seq from an earlier life"
        );
        let r = h.since("calls", "never", 0);
        assert_eq!((seqs(&r), r.recovered), (vec![], true));
        let r = h.since("calls", "never", 3);
        assert!(!r.recovered);
        let json = r#"{"seq":4}"#;
        assert_eq!(h.since("calls", "k", 3).events[0].1.json(), json.as_bytes());
    }

    #[test]
    fn key_budget_forgets_least_recently_published() {
        let mut h = History::new(2, 2, 1 << 20);
        let e = Arc::from("calls");
        rec(&mut h, &e, "a");
        rec(&mut h, &e, "b");
        rec(&mut h, &e, "a");
        rec(&mut h, &e, "c");
        assert_eq!(h.size().keys, 2);
        assert!(
            h.since("calls", "b", 0).events.is_empty(),
            "b was least recent"
        );
        assert_eq!(seqs(&h.since("calls", "a", 0)), vec![1, 2]);
        assert_eq!(rec(&mut h, &e, "b"), 1, "a forgotten key starts again");
        assert_eq!(h.size().events, 2, "a went this time");
    }

    #[test]
    fn byte_budget_is_kept() {
        let one = Encoded::new(br#"{"seq":1}"#, &Meta::named("E")).size();
        let mut h = History::new(100, 100, one * 3);
        let e = Arc::from("calls");
        for _ in 0..5 {
            rec(&mut h, &e, "a");
        }
        assert!(h.size().bytes <= one * 3);
        assert_eq!(seqs(&h.since("calls", "a", 0)), vec![3, 4, 5]);
        rec(&mut h, &e, "b");
        assert!(h.size().bytes <= one * 3);
        assert_eq!(h.size().keys, 1, "the older key went first");
    }

    #[test]
    fn zero_history_still_counts_seq() {
        let mut h = History::new(0, 10, 1 << 20);
        let e = Arc::from("calls");
        assert_eq!(rec(&mut h, &e, "a"), 1);
        assert_eq!(rec(&mut h, &e, "a"), 2);
        assert_eq!(h.size().events, 0);
        assert!(!h.since("calls", "a", 1).recovered);
    }

    #[test]
    fn numbered_elsewhere_repeats_are_refused_and_gaps_drop_older_events() {
        let mut h = History::new(10, 10, 1 << 20);
        let e = Arc::from("calls");
        let at = |h: &mut History, seq| {
            h.record_at(&e, "k", Some(seq), |seq| {
                Encoded::new(format!("{{\"seq\":{seq}}}").as_bytes(), &Meta::named("E"))
            })
            .map(|r| r.seq)
        };
        assert_eq!(at(&mut h, 1), Some(1));
        assert_eq!(at(&mut h, 2), Some(2));
        assert_eq!(at(&mut h, 2), None, "a repeat");
        assert_eq!(at(&mut h, 1), None, "an older one");
        assert_eq!(at(&mut h, 5), Some(5));
        assert_eq!(seqs(&h.since("calls", "k", 0)), vec![5]);
        assert!(!h.since("calls", "k", 2).recovered, "3 and 4 never came");
        assert_eq!(rec(&mut h, &e, "k"), 6, "numbering goes on from there");
        assert_eq!(h.last_seq("calls", "k"), 6);
        assert_eq!(h.size().events, 2);
        assert_eq!(h.tips(), vec![(e.clone(), Arc::from("k"), 6)]);
    }

    #[test]
    fn sse_frame_is_built_once_and_shared() {
        let enc = Encoded::new(b"{}", &Meta::named("E"));
        let a = enc.frame(SessionKind::Sse);
        let b = enc.frame(SessionKind::Sse);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, b"13\r\nevent: E\ndata: {}\n\n\r\n");
        assert_eq!(&enc.frame(SessionKind::WebSocket)[..], b"\x81\x02{}");
    }
}
