//! A session's queue of frames waiting for the next flush.
//!
//! Bounded in frames and bytes. When full, the OLDEST queued event is dropped (replies to the
//! client's own actions are kept) and a `Lagged` notice for its (exchange, routing key) is
//! recorded, so the client learns exactly where its gap starts and can `Resume`. Notices are
//! sent before everything still queued, since the dropped events were the oldest. A session
//! that cannot be helped this way (its queue holds only replies, or it lags on more keys
//! than the frame bound) overflows and is closed by the relay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Identifies a queued event, so it can be reported when dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// Exchange.
    pub exchange: Arc<str>,
    /// Routing key.
    pub routing_key: Arc<str>,
    /// Seq on that key.
    pub seq: u64,
}

/// A queued frame: an event (droppable) or a reply/notice (kept).
#[derive(Debug, Clone)]
pub struct Item {
    /// Framed bytes, shared with other outboxes holding the same event.
    pub bytes: Arc<[u8]>,
    /// Set for application events.
    pub event: Option<EventRef>,
}

/// The outbox's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most queued frames.
    pub frames: usize,
    /// Most queued bytes.
    pub bytes: usize,
}

/// What a push cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Events dropped (old ones, or the pushed one).
    pub dropped: usize,
    /// New `Lagged` notices recorded.
    pub lagged: usize,
}

/// The session cannot be kept within its bounds: close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// What one flush takes from an outbox.
pub struct Taken {
    /// Frames to send, in order.
    pub chunks: Vec<Arc<[u8]>>,
    /// Their total size.
    pub bytes: usize,
    /// Stopped because download credits ran out (wait for more before trying again).
    pub credit_blocked: bool,
}

/// Frames waiting for one session.
#[derive(Debug, Default)]
pub struct Outbox {
    items: VecDeque<Item>,
    bytes: usize,
    /// (exchange, routing key) -> last seq delivered before the gap.
    lags: BTreeMap<(Arc<str>, Arc<str>), u64>,
    /// Remaining download credits (bytes) when Mongrel2 flow control is on.
    credits: Option<u64>,
}

impl Outbox {
    /// An outbox limited by Mongrel2 download credits (`None`: flow control off).
    pub fn with_credits(credits: Option<u64>) -> Outbox {
        Outbox {
            credits,
            ..Outbox::default()
        }
    }

    /// Queues `item`, evicting the oldest events if the bounds require it.
    pub fn push(&mut self, item: Item, bounds: Bounds) -> Result<Evicted, Overflow> {
        let mut cost = Evicted::default();
        while !self.items.is_empty()
            && (self.items.len() >= bounds.frames || self.bytes + item.bytes.len() > bounds.bytes)
        {
            match self.items.iter().position(|i| i.event.is_some()) {
                Some(pos) => {
                    // `pos` was just found in `items`.
                    let Some(old) = self.items.remove(pos) else {
                        break;
                    };
                    self.bytes -= old.bytes.len();
                    cost.dropped += 1;
                    if let Some(ev) = old.event {
                        cost.lagged += usize::from(self.note_lag(&ev));
                    }
                }
                None => {
                    // Only replies are queued: drop the new event if there is one (noting
                    // the gap), otherwise this session is beyond help.
                    return match &item.event {
                        Some(ev) => {
                            cost.dropped += 1;
                            cost.lagged += usize::from(self.note_lag(ev));
                            self.check_lags(bounds).map(|()| cost)
                        }
                        None => Err(Overflow),
                    };
                }
            }
        }
        self.check_lags(bounds)?;
        self.bytes += item.bytes.len();
        self.items.push_back(item);
        Ok(cost)
    }

    /// Records the gap for `ev`'s key; true if this is a new notice.
    fn note_lag(&mut self, ev: &EventRef) -> bool {
        let key = (ev.exchange.clone(), ev.routing_key.clone());
        if self.lags.contains_key(&key) {
            return false;
        }
        self.lags.insert(key, ev.seq.saturating_sub(1));
        true
    }

    fn check_lags(&self, bounds: Bounds) -> Result<(), Overflow> {
        if self.lags.len() > bounds.frames {
            Err(Overflow)
        } else {
            Ok(())
        }
    }

    /// Adds download credits (Mongrel2 reported bytes written); no-op without flow control.
    pub fn add_credits(&mut self, bytes: u64) {
        if let Some(c) = &mut self.credits {
            *c = c.saturating_add(bytes);
        }
    }

    /// Takes what may be sent now: `Lagged` notices first, then queued frames, up to
    /// `max_bytes` (at least one frame, so an oversized one cannot stall) and the remaining
    /// credits (strictly: Mongrel2 disconnects a client that overdraws). `lagged_frame`
    /// frames a notice.
    pub fn take(
        &mut self,
        max_bytes: usize,
        lagged_frame: impl Fn(&str, &str, u64) -> Arc<[u8]>,
    ) -> Taken {
        let mut taken = Taken {
            chunks: Vec::new(),
            bytes: 0,
            credit_blocked: false,
        };
        let credit_limit = self
            .credits
            .map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
        let fits = |taken: &mut Taken, len: usize| {
            let total = taken.bytes + len;
            taken.credit_blocked = total > credit_limit;
            !taken.credit_blocked && (total <= max_bytes || taken.chunks.is_empty())
        };
        while let Some(entry) = self.lags.first_entry() {
            let ((exchange, rk), last_seq) = (entry.key().clone(), *entry.get());
            let frame = lagged_frame(&exchange, &rk, last_seq);
            if !fits(&mut taken, frame.len()) {
                break;
            }
            entry.remove();
            taken.bytes += frame.len();
            taken.chunks.push(frame);
        }
        if self.lags.is_empty() {
            while let Some(front) = self.items.front() {
                if !fits(&mut taken, front.bytes.len()) {
                    break;
                }
                // `front` exists (checked just above).
                let Some(item) = self.items.pop_front() else {
                    break;
                };
                self.bytes -= item.bytes.len();
                taken.bytes += item.bytes.len();
                taken.chunks.push(item.bytes);
            }
        }
        if let Some(c) = &mut self.credits {
            *c = c.saturating_sub(taken.bytes as u64);
        }
        taken
    }

    /// Anything waiting?
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.lags.is_empty()
    }

    /// Frames and bytes that can still be queued without evicting anything.
    pub fn room(&self, bounds: Bounds) -> (usize, usize) {
        (
            bounds.frames.saturating_sub(self.items.len()),
            bounds.bytes.saturating_sub(self.bytes),
        )
    }

    /// Frames queued (excluding notices).
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, key: &str) -> Item {
        Item {
            bytes: Arc::from(format!("e{key}{seq};").into_bytes()),
            event: Some(EventRef {
                exchange: "calls".into(),
                routing_key: key.into(),
                seq,
            }),
        }
    }

    fn reply(text: &str) -> Item {
        Item {
            bytes: Arc::from(text.as_bytes()),
            event: None,
        }
    }

    fn lag_frame(e: &str, k: &str, s: u64) -> Arc<[u8]> {
        Arc::from(format!("L{e}/{k}/{s};").into_bytes())
    }

    fn drain(o: &mut Outbox) -> String {
        let t = o.take(usize::MAX, lag_frame);
        String::from_utf8(t.chunks.concat()).unwrap()
    }

    const ROOMY: Bounds = Bounds {
        frames: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn under_the_bound_nothing_is_dropped() {
        let mut o = Outbox::default();
        for s in 1..=3 {
            assert_eq!(o.push(event(s, "k"), ROOMY), Ok(Evicted::default()));
        }
        assert_eq!(drain(&mut o), "ek1;ek2;ek3;");
        assert!(o.is_empty());
    }

    #[test]
    fn burst_drops_oldest_events_and_notes_one_lag_per_key() {
        let mut o = Outbox::default();
        let b = Bounds {
            frames: 4,
            bytes: 1 << 20,
        };
        o.push(reply("W;"), b).unwrap();
        let mut dropped = 0;
        let mut lagged = 0;
        for s in 1..=10 {
            let c = o.push(event(s, "k"), b).unwrap();
            dropped += c.dropped;
            lagged += c.lagged;
        }
        assert_eq!((dropped, lagged), (7, 1));
        // Reply kept, gap announced first (last seq delivered before it: 0), newest 3 kept.
        assert_eq!(drain(&mut o), "Lcalls/k/0;W;ek8;ek9;ek10;");
    }

    #[test]
    fn byte_bound_drops_too() {
        let mut o = Outbox::default();
        let b = Bounds {
            frames: 100,
            bytes: 10,
        };
        for s in 1..=4 {
            o.push(event(s, "k"), b).unwrap();
        }
        assert_eq!(drain(&mut o), "Lcalls/k/0;ek3;ek4;");
    }

    #[test]
    fn only_replies_queued_drops_new_event_or_overflows() {
        let mut o = Outbox::default();
        let b = Bounds {
            frames: 2,
            bytes: 1 << 20,
        };
        o.push(reply("a;"), b).unwrap();
        o.push(reply("b;"), b).unwrap();
        assert_eq!(
            o.push(event(5, "k"), b),
            Ok(Evicted {
                dropped: 1,
                lagged: 1
            })
        );
        assert_eq!(o.push(reply("c;"), b), Err(Overflow));
    }

    #[test]
    fn lagging_on_more_keys_than_the_bound_overflows() {
        let mut o = Outbox::default();
        let b = Bounds {
            frames: 2,
            bytes: 1 << 20,
        };
        let mut result = Ok(Evicted::default());
        for s in 0..10 {
            result = o.push(event(1, &format!("k{s}")), b);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Overflow));
    }

    #[test]
    fn take_respects_flush_cap_but_always_sends_one() {
        let mut o = Outbox::default();
        for s in 1..=4 {
            o.push(event(s, "k"), ROOMY).unwrap();
        }
        let t = o.take(8, lag_frame);
        assert_eq!(t.chunks.concat(), b"ek1;ek2;");
        let t = o.take(1, lag_frame);
        assert_eq!(
            t.chunks.concat(),
            b"ek3;",
            "one frame even when bigger than the cap"
        );
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn credits_are_never_overdrawn() {
        let mut o = Outbox::with_credits(Some(6));
        for s in 1..=3 {
            o.push(event(s, "k"), ROOMY).unwrap();
        }
        let t = o.take(usize::MAX, lag_frame);
        assert_eq!(
            (t.chunks.concat(), t.credit_blocked),
            (b"ek1;".to_vec(), true)
        );
        let t = o.take(usize::MAX, lag_frame);
        assert_eq!(
            (t.bytes, t.credit_blocked),
            (0, true),
            "2 credits left, frame is 4"
        );
        o.add_credits(8);
        let t = o.take(usize::MAX, lag_frame);
        assert_eq!(
            (t.chunks.concat(), t.credit_blocked),
            (b"ek2;ek3;".to_vec(), false)
        );
        assert!(o.is_empty());
        let mut plain = Outbox::default();
        plain.add_credits(5);
        plain.push(event(1, "k"), ROOMY).unwrap();
        plain.push(event(2, "k"), ROOMY).unwrap();
        let t = plain.take(4, lag_frame);
        assert!(!t.credit_blocked, "stopped by the flush cap, not credits");
    }
}
