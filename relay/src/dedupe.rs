//! Duplicate detection for events from linked relays, by (origin relay, origin seq).
//!
//! Bounded: the last `window` seqs to arrive from each origin, and a bounded number of
//! origins (the oldest origin seen is forgotten first). Memory is by arrival, not by seq
//! value: an earlier version also counted any seq older than a full window as seen, and
//! one far-ahead seq (1e15) plus a window of its neighbours then made every real event of
//! that origin look old and be dropped (issue 18). Now a seq only counts as seen while it
//! is remembered, so the worst a flood of odd seqs can do is make the relay forget, and a
//! late repeat be delivered twice; it can never make a new event look seen. Repeats in a
//! network of links arrive within a few hops of each other, well inside the window, and
//! `limits.max_hops` ends any loop.

use std::collections::{HashMap, HashSet, VecDeque};

/// Recently seen (origin, seq) pairs.
pub struct Dedupe {
    window: usize,
    max_origins: usize,
    seen: HashMap<String, Recent>,
    origins: VecDeque<String>,
}

/// One origin's last seqs, in arrival order and as a set.
#[derive(Default)]
struct Recent {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl Dedupe {
    /// Remembers the last `window` seqs of each of up to `max_origins` origins.
    pub fn new(window: usize, max_origins: usize) -> Dedupe {
        Dedupe {
            window: window.max(1),
            max_origins: max_origins.max(1),
            seen: HashMap::new(),
            origins: VecDeque::new(),
        }
    }

    /// True the first time (`origin`, `seq`) is offered (within the window).
    pub fn first_time(&mut self, origin: &str, seq: u64) -> bool {
        if !self.seen.contains_key(origin) {
            if self.origins.len() >= self.max_origins {
                if let Some(old) = self.origins.pop_front() {
                    self.seen.remove(&old);
                }
            }
            self.origins.push_back(origin.to_owned());
            self.seen.insert(origin.to_owned(), Recent::default());
        }
        let Some(recent) = self.seen.get_mut(origin) else {
            return false;
        };
        if !recent.set.insert(seq) {
            return false;
        }
        recent.order.push_back(seq);
        if recent.order.len() > self.window {
            if let Some(old) = recent.order.pop_front() {
                recent.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_caught_per_origin() {
        let mut d = Dedupe::new(4, 2);
        assert!(d.first_time("a", 1));
        assert!(!d.first_time("a", 1));
        assert!(d.first_time("b", 1));
        assert!(d.first_time("a", 3));
        assert!(d.first_time("a", 2), "out of order but new");
    }

    #[test]
    fn window_and_origin_bounds() {
        let mut d = Dedupe::new(3, 2);
        for s in 1..=5 {
            assert!(d.first_time("a", s));
        }
        assert!(!d.first_time("a", 5));
        assert!(!d.first_time("a", 3), "still among the last three");
        assert!(d.first_time("a", 1), "forgotten: delivered again, not lost");
        assert!(d.first_time("b", 1));
        assert!(d.first_time("c", 1));
        assert!(
            d.first_time("a", 5),
            "a was the oldest origin and was forgotten"
        );
    }

    #[test]
    fn far_ahead_seqs_do_not_make_real_events_look_seen() {
        // The issue-18 attack: one seq far ahead, then a full window of its neighbours.
        let mut d = Dedupe::new(4096, 64);
        assert!(d.first_time("victim.1", 1));
        for forged in 0..5000 {
            d.first_time("victim.1", 1_000_000_000_000_000 + forged);
        }
        for real in 2..100 {
            assert!(d.first_time("victim.1", real), "real seq {real} dropped");
        }
    }
}
