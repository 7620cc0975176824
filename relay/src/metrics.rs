//! Relay statistics: JSON for `GET /events/status`, Prometheus text exposition (format
//! 0.0.4) for `GET /events/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

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

/// Linked-relay state, kept by the I/O layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// This relay's id on the link network (relay id plus run suffix).
    pub relay: String,
    /// Where this relay publishes to linked relays (`None`: it does not).
    pub bind: Option<String>,
    /// Relays whose subscription to our publisher is in place (as the publisher sees it).
    pub subscribers: Vec<String>,
    /// Events published to linked relays.
    pub published: u64,
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
}

impl Stats {
    /// The status document.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs of numbers and string-keyed maps always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Prometheus text exposition.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        let c = &self.counters;
        let plain = |v: u64| vec![(Vec::new(), v)];
        let per_source = |counts: &SourceCounts| {
            Source::ALL
                .iter()
                .map(|s| (vec![("source", s.as_str().to_owned())], counts.get(*s)))
                .collect::<Vec<_>>()
        };
        let mut families: Vec<(&str, &str, &str, Samples)> = vec![
            (
                "relay_uptime_seconds",
                "gauge",
                "Seconds since the relay started.",
                plain(self.uptime_seconds),
            ),
            (
                "relay_sessions",
                "gauge",
                "Open subscriber sessions.",
                plain(self.sessions as u64),
            ),
            (
                "relay_streams",
                "gauge",
                "Open SSE streams (included in relay_sessions).",
                plain(self.streams as u64),
            ),
            (
                "relay_subscriptions",
                "gauge",
                "Subscriptions per exchange.",
                self.subscriptions
                    .iter()
                    .map(|(e, n)| (vec![("exchange", e.clone())], *n as u64))
                    .collect(),
            ),
            (
                "relay_events_in_total",
                "counter",
                "Events accepted, by source.",
                per_source(&c.events_in),
            ),
            (
                "relay_events_rejected_total",
                "counter",
                "Events refused, by source.",
                per_source(&c.events_rejected),
            ),
            (
                "relay_events_duplicate_total",
                "counter",
                "Linked events dropped as already seen.",
                plain(c.events_duplicate),
            ),
            (
                "relay_events_queued_total",
                "counter",
                "Event frames queued to sessions.",
                plain(c.events_queued),
            ),
            (
                "relay_frames_out_total",
                "counter",
                "Frames handed to Mongrel2.",
                plain(c.frames_out),
            ),
            (
                "relay_payloads_out_total",
                "counter",
                "Coalesced payloads handed to Mongrel2.",
                plain(c.payloads_out),
            ),
            (
                "relay_lagged_total",
                "counter",
                "Lagged notices sent to slow sessions.",
                plain(c.lagged),
            ),
            (
                "relay_dropped_total",
                "counter",
                "Event frames dropped from full outboxes.",
                plain(c.dropped),
            ),
            (
                "relay_history",
                "gauge",
                "History held: keys, events and bytes.",
                vec![
                    (vec![("kind", "keys".to_owned())], self.history.keys as u64),
                    (
                        vec![("kind", "events".to_owned())],
                        self.history.events as u64,
                    ),
                    (
                        vec![("kind", "bytes".to_owned())],
                        self.history.bytes as u64,
                    ),
                ],
            ),
            (
                "relay_forward_dropped_total",
                "counter",
                "Events not forwarded to linked relays (forward queue full).",
                plain(c.forward_dropped),
            ),
            (
                "relay_overflow_closes_total",
                "counter",
                "Sessions closed because their outbox overflowed.",
                plain(c.overflowed),
            ),
        ];
        if let Some(rpc) = &self.rpc {
            let outcome = |name: &str, v: u64| (vec![("outcome", name.to_owned())], v);
            families.push((
                "relay_rpc_in_flight",
                "gauge",
                "RPC calls waiting for their backend.",
                plain(rpc.in_flight as u64),
            ));
            families.push((
                "relay_rpc_calls_total",
                "counter",
                "RPC calls by outcome (sent counts every call handed to a backend).",
                vec![
                    outcome("sent", rpc.calls),
                    outcome("result", rpc.results),
                    outcome("error", rpc.errors),
                    outcome("timeout", rpc.timeouts),
                    outcome("refused", rpc.refused),
                    outcome("late", rpc.late),
                    outcome("orphaned", rpc.orphaned),
                ],
            ));
        }
        if let Some(links) = &self.links {
            let count = |state: &str| {
                let n = links.peers.iter().filter(|p| p.state == state).count();
                (vec![("state", state.to_owned())], n as u64)
            };
            families.push((
                "relay_link_peers",
                "gauge",
                "Linked relays this relay subscribes to, by state.",
                vec![count("connecting"), count("verified"), count("stale")],
            ));
            families.push((
                "relay_link_subscribers",
                "gauge",
                "Linked relays subscribed to this relay.",
                plain(links.subscribers.len() as u64),
            ));
            families.push((
                "relay_link_published_total",
                "counter",
                "Events published to linked relays.",
                plain(links.published),
            ));
            families.push((
                "relay_link_missed_total",
                "counter",
                "Events linked relays published that never arrived here.",
                plain(links.peers.iter().map(|p| p.missed).sum()),
            ));
        }
        for (name, kind, help, samples) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

type Samples = Vec<(Vec<(&'static str, String)>, u64)>;

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let mut counters = Counters::default();
        counters.events_in.bump(Source::Inject);
        counters.events_in.bump(Source::Http);
        counters.events_in.bump(Source::Http);
        counters.frames_out = 7;
        Stats {
            uptime_seconds: 12,
            sessions: 3,
            streams: 1,
            subscriptions: [("calls".to_owned(), 2), ("we\"ird\\\n".to_owned(), 1)]
                .into_iter()
                .collect(),
            counters,
            history: HistorySize {
                keys: 1,
                events: 2,
                bytes: 30,
            },
            rpc: Some(RpcStats {
                calls: 4,
                ..RpcStats::default()
            }),
            links: Some(LinkStats {
                peers: vec![PeerStats {
                    endpoint: "tcp://127.0.0.1:1".into(),
                    relay: None,
                    state: "connecting",
                    verified: false,
                    events: 0,
                    missed: 2,
                    restarts: 0,
                }],
                ..LinkStats::default()
            }),
        }
    }

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn prometheus_exposition_has_help_type_and_samples() {
        let text = sample().to_prometheus();
        assert!(text.contains("# HELP relay_sessions Open subscriber sessions.\n# TYPE relay_sessions gauge\nrelay_sessions 3\n"));
        assert!(text.contains("relay_events_in_total{source=\"http\"} 2\n"));
        assert!(text.contains("relay_events_in_total{source=\"link\"} 0\n"));
        assert!(text.contains("relay_subscriptions{exchange=\"calls\"} 2\n"));
        assert!(text.contains("relay_subscriptions{exchange=\"we\\\"ird\\\\\\n\"} 1\n"));
        assert!(text.contains("relay_history{kind=\"bytes\"} 30\n"));
        assert!(text.contains("# TYPE relay_frames_out_total counter\nrelay_frames_out_total 7\n"));
        assert!(text.contains("relay_streams 1\n"));
        assert!(text.contains("relay_rpc_calls_total{outcome=\"sent\"} 4\n"));
        assert!(text.contains("relay_link_peers{state=\"connecting\"} 1\n"));
        assert!(text.contains("relay_link_missed_total 2\n"));
        // Every sample line belongs to a family declared just before it.
        let mut declared = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared = rest.split(' ').next().map(str::to_owned);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name.to_owned()), declared, "{line}");
                assert!(
                    line.rsplit(' ').next().unwrap().parse::<u64>().is_ok(),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn status_json_shape() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(v["sessions"], 3);
        assert_eq!(v["uptime_seconds"], 12);
        assert_eq!(v["subscriptions"]["calls"], 2);
        assert_eq!(v["events_in"]["http"], 2);
        assert_eq!(v["events_in"]["pull"], 0);
        assert_eq!(v["frames_out"], 7);
        assert_eq!(v["history"]["events"], 2);
        assert_eq!(v["rpc"]["calls"], 4);
        assert_eq!(v["links"]["peers"][0]["state"], "connecting");
        let mut bare = sample();
        bare.rpc = None;
        bare.links = None;
        let v: serde_json::Value = serde_json::from_slice(&bare.to_json()).unwrap();
        assert!(v.get("rpc").is_none() && v.get("links").is_none(), "{v}");
    }
}
