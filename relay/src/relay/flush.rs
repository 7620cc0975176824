//! Output: flushes hand the I/O loop coalesced payloads grouped by identical bytes, paced
//! per session.

use super::*;

/// How [`Relay::flush_paced`] spaces each session's messages: a token bucket holding
/// `burst` messages, refilled by one every `gap` (kept as the time the bucket is full
/// again, a single instant per session). A session with nothing sent in the last
/// `burst × gap` is served at once, and so are up to `burst` messages in quick succession
/// (events that arrive a little early or in a small bunch wait for nothing). Only output
/// faster than one message per `gap` for longer than the burst waits, and is coalesced
/// into one message per `gap`: the batching that keeps high rates cheap. However long the
/// peer stalls, a session is sent at most `burst + stall / gap` messages meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// One message's worth of refill.
    pub gap: Duration,
    /// Messages a quiet session may be sent back to back (at least 1).
    pub burst: u32,
}

impl Pacing {
    /// When a session whose bucket is full again at `until` may be sent to.
    fn due(self, until: Instant) -> Instant {
        let slack = self.gap * self.burst.max(1).saturating_sub(1);
        until.checked_sub(slack).unwrap_or(until)
    }

    /// The new `until` after a message at `now` (`None`: never sent to, bucket full).
    fn after_send(self, until: Option<Instant>, now: Instant) -> Instant {
        until.map_or(now, |u| u.max(now)) + self.gap
    }
}

/// Frames one or more sessions will receive in a flush, and those sessions.
type Group<K> = (Vec<Arc<[u8]>>, Vec<K>);

impl<K: SessionKey> Relay<K> {
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
    /// [`Relay::flush_paced`], which bounds each session's messages per interval.
    pub fn flush(&mut self) -> Flush<K> {
        self.flush_where(None)
    }

    /// Like [`Relay::flush`], but only for sessions `pacing` lets through at `now` (see
    /// [`Pacing`]); the others keep their output for a later call. A session with nothing
    /// sent recently is served at once, whatever the others are doing; one sent to
    /// continuously gets a message per `pacing.gap`, each carrying everything queued since.
    pub fn flush_paced(&mut self, now: Instant, pacing: Pacing) -> Flush<K> {
        self.flush_where(Some((now, pacing)))
    }

    /// How long after `now` [`Relay::flush_paced`] with `pacing` will have something to
    /// send: `None` when no output is waiting, zero when some is due already.
    pub fn flush_wait(&self, now: Instant, pacing: Pacing) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for key in &self.dirty {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            let due_in = match s.paced_until {
                Some(until) if !s.overflowed => pacing.due(until).saturating_duration_since(now),
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

    pub(super) fn flush_where(&mut self, paced: Option<(Instant, Pacing)>) -> Flush<K> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let flush_bytes = self.config.limits.flush_bytes;
        // Sessions first group by the identity of their shared frames (cheap: fan-out
        // queues the same Arc everywhere); groups are then merged by bytes below.
        let mut by_frames: HashMap<Vec<(usize, usize)>, usize, foldhash::fast::RandomState> =
            HashMap::default();
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
            if let Some((now, pacing)) = paced {
                if s.paced_until.is_some_and(|until| now < pacing.due(until)) {
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
            if let Some((now, pacing)) = paced {
                s.paced_until = Some(pacing.after_send(s.paced_until, now));
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
}
