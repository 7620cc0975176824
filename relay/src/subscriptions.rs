//! Subscription index: which sessions want (exchange, routing key).
//!
//! Per exchange, an exact-key map plus a map of wildcard prefixes. A lookup costs one hash
//! probe plus one `starts_with` per distinct prefix on that exchange: it never scans
//! sessions. Empty sets and maps are removed eagerly so churn leaves nothing behind.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// A subscribed routing key: exact, or a prefix wildcard (`queue.*`; `*` is every key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Matches this key only.
    Exact(Arc<str>),
    /// Matches every key starting with this prefix (the text before the trailing `*`).
    Prefix(Arc<str>),
}

impl Pattern {
    /// A key ending in `*` is a prefix wildcard; anything else is exact.
    pub fn parse(key: &str) -> Pattern {
        match key.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact(key.into()),
        }
    }

    /// The literal part: the key, or the prefix.
    pub fn literal(&self) -> &str {
        match self {
            Pattern::Exact(k) | Pattern::Prefix(k) => k,
        }
    }

    /// The pattern as the client wrote it.
    pub fn to_key(&self) -> String {
        match self {
            Pattern::Exact(k) => k.to_string(),
            Pattern::Prefix(p) => format!("{p}*"),
        }
    }

    /// Does `routing_key` match?
    pub fn matches(&self, routing_key: &str) -> bool {
        match self {
            Pattern::Exact(k) => &**k == routing_key,
            Pattern::Prefix(p) => routing_key.starts_with(&**p),
        }
    }
}

struct ExchangeSubs<K> {
    exact: HashMap<Arc<str>, BTreeSet<K>>,
    prefixes: HashMap<Arc<str>, BTreeSet<K>>,
    count: usize,
}

impl<K> Default for ExchangeSubs<K> {
    fn default() -> Self {
        ExchangeSubs {
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            count: 0,
        }
    }
}

/// Sessions by (exchange, pattern).
pub struct Index<K> {
    exchanges: HashMap<Arc<str>, ExchangeSubs<K>>,
}

impl<K> Default for Index<K> {
    fn default() -> Self {
        Index {
            exchanges: HashMap::new(),
        }
    }
}

impl<K: Clone + Ord + Hash> Index<K> {
    /// Adds `session` under (`exchange`, `pattern`); false if it was already there.
    pub fn insert(&mut self, exchange: &Arc<str>, pattern: &Pattern, session: K) -> bool {
        let subs = self.exchanges.entry(exchange.clone()).or_default();
        let map = match pattern {
            Pattern::Exact(_) => &mut subs.exact,
            Pattern::Prefix(_) => &mut subs.prefixes,
        };
        let key = match pattern {
            Pattern::Exact(k) | Pattern::Prefix(k) => k.clone(),
        };
        let added = map.entry(key).or_default().insert(session);
        subs.count += usize::from(added);
        added
    }

    /// Removes `session` from (`exchange`, `pattern`); false if it was not there.
    pub fn remove(&mut self, exchange: &str, pattern: &Pattern, session: &K) -> bool {
        let Some(subs) = self.exchanges.get_mut(exchange) else {
            return false;
        };
        let map = match pattern {
            Pattern::Exact(_) => &mut subs.exact,
            Pattern::Prefix(_) => &mut subs.prefixes,
        };
        let literal = pattern.literal();
        let Some(set) = map.get_mut(literal) else {
            return false;
        };
        let removed = set.remove(session);
        if set.is_empty() {
            map.remove(literal);
        }
        if removed {
            subs.count -= 1;
        }
        if subs.count == 0 {
            self.exchanges.remove(exchange);
        }
        removed
    }

    /// Every session subscribed to a pattern matching (`exchange`, `routing_key`), each
    /// once, in key order.
    pub fn matching(&self, exchange: &str, routing_key: &str) -> Vec<K> {
        let Some(subs) = self.exchanges.get(exchange) else {
            return Vec::new();
        };
        let mut sets: Vec<&BTreeSet<K>> = Vec::new();
        if let Some(set) = subs.exact.get(routing_key) {
            sets.push(set);
        }
        sets.extend(
            subs.prefixes
                .iter()
                .filter(|(prefix, _)| routing_key.starts_with(&***prefix))
                .map(|(_, set)| set),
        );
        match sets.as_slice() {
            [] => Vec::new(),
            [one] => one.iter().cloned().collect(),
            many => {
                // A session can match through several patterns; it gets the event once.
                let mut all: Vec<K> = many.iter().flat_map(|s| s.iter().cloned()).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        }
    }

    /// Subscriptions (session, pattern pairs) on `exchange`.
    pub fn count(&self, exchange: &str) -> usize {
        self.exchanges.get(exchange).map_or(0, |s| s.count)
    }

    /// True when nothing is subscribed anywhere.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn wildcard_patterns() {
        let p = Pattern::parse("queue.*");
        assert_eq!(p, Pattern::Prefix("queue.".into()));
        assert!(p.matches("queue.sales"));
        assert!(p.matches("queue."));
        assert!(!p.matches("queue"));
        assert!(!p.matches("other.sales"));
        assert_eq!(p.to_key(), "queue.*");
        let all = Pattern::parse("*");
        assert!(all.matches("") && all.matches("anything"));
        let exact = Pattern::parse("queue.sales");
        assert!(exact.matches("queue.sales") && !exact.matches("queue.sales2"));
        assert_eq!(
            Pattern::parse("a*b"),
            Pattern::Exact("a*b".into()),
            "only a trailing * is a wildcard"
        );
    }

    #[test]
    fn exact_and_prefix_lookup_delivers_once() {
        let mut idx = Index::default();
        let calls = ex("calls");
        assert!(idx.insert(&calls, &Pattern::parse("queue.sales"), 1u32));
        assert!(idx.insert(&calls, &Pattern::parse("queue.*"), 1));
        assert!(idx.insert(&calls, &Pattern::parse("*"), 2));
        assert!(idx.insert(&calls, &Pattern::parse("queue.support"), 3));
        assert!(!idx.insert(&calls, &Pattern::parse("queue.*"), 1));
        assert_eq!(idx.matching("calls", "queue.sales"), vec![1, 2]);
        assert_eq!(idx.matching("calls", "queue.support"), vec![1, 2, 3]);
        assert_eq!(idx.matching("calls", "agent.7"), vec![2]);
        assert_eq!(idx.matching("agents", "queue.sales"), Vec::<u32>::new());
        assert_eq!(idx.count("calls"), 4);
    }

    #[test]
    fn removal_cleans_up_empty_tables() {
        let mut idx = Index::default();
        let calls = ex("calls");
        let pats = ["a", "b.*", "*"].map(Pattern::parse);
        for s in 0..10u32 {
            for p in &pats {
                idx.insert(&calls, p, s);
            }
        }
        assert!(!idx.remove("calls", &Pattern::parse("zz"), &1));
        assert!(!idx.remove("nope", &pats[0], &1));
        for s in 0..10u32 {
            for p in &pats {
                assert!(idx.remove("calls", p, &s));
            }
        }
        assert!(idx.is_empty());
        assert_eq!(idx.count("calls"), 0);
    }
}
