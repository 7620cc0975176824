//! What one link has shown: hellos, counts, staleness.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::protocol::MAX_ROUTING_KEY;

/// A peer is stale when its hello is this many of its intervals overdue.
const STALE_AFTER: u32 = 3;
/// Hello intervals accepted from peers.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// What the hellos and events of one peer have shown.
pub struct LinkState {
    /// The peer's run id, from its last hello.
    pub relay: Option<String>,
    pub last_heard: Option<Instant>,
    pub interval: Duration,
    pub reported_stale: bool,
    /// The peer's `sent` at its last hello, and events received since.
    pub base: u64,
    pub received: u64,
    pub events: u64,
    pub missed: u64,
    pub restarts: u64,
}

impl LinkState {
    pub fn new(interval: Duration) -> LinkState {
        LinkState {
            relay: None,
            last_heard: None,
            interval,
            reported_stale: false,
            base: 0,
            received: 0,
            events: 0,
            missed: 0,
            restarts: 0,
        }
    }

    pub fn state(&self, now: Instant) -> &'static str {
        match self.last_heard {
            None => "connecting",
            Some(t) if now.duration_since(t) > self.interval * STALE_AFTER => "stale",
            Some(_) => "verified",
        }
    }
}

/// A parsed hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's run id.
    pub relay: String,
    /// Events it has published so far.
    pub sent: u64,
    /// Its hello interval.
    pub interval: Duration,
}

impl Hello {
    /// The hello's body.
    pub fn to_json(&self) -> Vec<u8> {
        json!({
            "relay": self.relay,
            "sent": self.sent,
            "interval_ms": u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
        })
        .to_string()
        .into_bytes()
    }

    /// Reads a hello body; `None` for anything else.
    pub fn parse(body: &[u8]) -> Option<Hello> {
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let relay = h
            .get("relay")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && r.len() <= MAX_ROUTING_KEY)?;
        let interval = h
            .get("interval_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)?;
        Some(Hello {
            relay: relay.to_owned(),
            sent: h.get("sent").and_then(Value::as_u64)?,
            interval: interval.clamp(Duration::from_millis(1), MAX_INTERVAL),
        })
    }
}

pub fn on_hello(peer: &mut LinkState, endpoint: &str, hello: Hello, now: Instant) {
    if peer.relay.as_deref() == Some(hello.relay.as_str()) {
        let expected = hello.sent.saturating_sub(peer.base);
        if peer.received < expected {
            let missed = expected - peer.received;
            peer.missed += missed;
            log::warn!(
                "{missed} events from linked relay {} were lost on the way",
                hello.relay
            );
        }
        if peer.reported_stale {
            log::info!("linked relay {} is back", hello.relay);
        }
    } else {
        if let Some(old) = &peer.relay {
            peer.restarts += 1;
            log::info!("linked relay {old} restarted as {}", hello.relay);
        }
        log::info!("link to {endpoint} ({}) verified", hello.relay);
        peer.relay = Some(hello.relay);
    }
    peer.base = hello.sent;
    peer.received = 0;
    peer.interval = hello.interval;
    peer.last_heard = Some(now);
    peer.reported_stale = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_bounds() {
        let hello = Hello {
            relay: "r.1".into(),
            sent: 9,
            interval: Duration::from_millis(250),
        };
        assert_eq!(Hello::parse(&hello.to_json()), Some(hello));
        let slow = br#"{"relay":"r","sent":0,"interval_ms":999999999999}"#;
        assert_eq!(Hello::parse(slow).unwrap().interval, MAX_INTERVAL);
        for bad in [
            &b"{}"[..],
            br#"{"relay":"","sent":1,"interval_ms":1}"#,
            br#"{"relay":"r","sent":-1,"interval_ms":1}"#,
            br#"{"relay":"r","sent":1}"#,
            b"nope",
        ] {
            assert_eq!(Hello::parse(bad), None);
        }
    }

    #[test]
    fn hellos_verify_count_losses_and_notice_restarts() {
        let t0 = Instant::now();
        let mut p = LinkState::new(Duration::from_secs(1));
        assert_eq!(p.state(t0), "connecting");
        let hello = |relay: &str, sent| Hello {
            relay: relay.into(),
            sent,
            interval: Duration::from_millis(100),
        };
        // Events before the first hello are covered by its count.
        p.received = 3;
        on_hello(&mut p, "tcp://x:1", hello("a.1", 10), t0);
        assert_eq!((p.state(t0), p.missed), ("verified", 0));
        p.received = 5;
        on_hello(&mut p, "tcp://x:1", hello("a.1", 15), t0);
        assert_eq!(p.missed, 0);
        p.received = 2;
        on_hello(&mut p, "tcp://x:1", hello("a.1", 20), t0);
        assert_eq!(p.missed, 3, "five published, two arrived");
        assert_eq!(p.state(t0 + Duration::from_millis(301)), "stale");
        on_hello(&mut p, "tcp://x:1", hello("a.2", 0), t0);
        assert_eq!(
            (p.restarts, p.missed, p.relay.as_deref()),
            (1, 3, Some("a.2"))
        );
    }
}
