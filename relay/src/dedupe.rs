//! Duplicate detection for events from linked relays, by (origin relay, origin seq).
//!
//! Bounded: a window of recent seqs per origin and a bounded number of origins (the oldest
//! origin seen is forgotten first). A seq older than everything in a full window counts as
//! already seen, so a replayed old event cannot slip back in.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Recently seen (origin, seq) pairs.
pub struct Dedupe {
    window: usize,
    max_origins: usize,
    seen: HashMap<String, BTreeSet<u64>>,
    origins: VecDeque<String>,
}

impl Dedupe {
    /// Remembers up to `window` seqs for each of up to `max_origins` origins.
    pub fn new(window: usize, max_origins: usize) -> Dedupe {
        Dedupe {
            window: window.max(1),
            max_origins: max_origins.max(1),
            seen: HashMap::new(),
            origins: VecDeque::new(),
        }
    }

    /// True the first time (`origin`, `seq`) is offered.
    pub fn first_time(&mut self, origin: &str, seq: u64) -> bool {
        if !self.seen.contains_key(origin) {
            if self.origins.len() >= self.max_origins {
                if let Some(old) = self.origins.pop_front() {
                    self.seen.remove(&old);
                }
            }
            self.origins.push_back(origin.to_owned());
            self.seen.insert(origin.to_owned(), BTreeSet::new());
        }
        let Some(seqs) = self.seen.get_mut(origin) else {
            return false;
        };
        let full = seqs.len() >= self.window;
        if full && seqs.first().is_some_and(|&oldest| seq < oldest) {
            return false;
        }
        if !seqs.insert(seq) {
            return false;
        }
        if seqs.len() > self.window {
            seqs.pop_first();
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
        assert!(!d.first_time("a", 1), "older than a full window");
        assert!(!d.first_time("a", 5));
        assert!(d.first_time("b", 1));
        assert!(d.first_time("c", 1));
        assert!(
            d.first_time("a", 5),
            "a was the oldest origin and was forgotten"
        );
    }
}
