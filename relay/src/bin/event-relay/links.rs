//! Linked relays: every relay re-publishes the events it accepts to the relays subscribed to
//! it, so a network of relays shares one event stream with nothing in between but ZeroMQ.
//!
//! Sockets: an XPUB bound at `--link-bind` (the publisher) and one SUB per `--link` (to
//! another relay's publisher). Messages are two frames, `[topic, body]`:
//!
//! | topic   | body                                                   |
//! |---------|--------------------------------------------------------|
//! | `ev`    | event input JSON with `origin {relay, seq, hops}`      |
//! | `hello` | `{"relay":ID,"sent":N,"interval_ms":MS}`               |
//!
//! Loops and repeats are the core's business (dedupe by origin relay + seq, hop limit); this
//! module moves bytes and keeps the link state.
//!
//! # Knowing a subscription is live (the slow joiner)
//!
//! A fresh SUB hears nothing its publisher sends before the subscription has reached it,
//! and nothing says when that is. So each SUB subscribes to `ev`, then `hello`, then a topic
//! of its own, `id/RELAY_ID`, that carries nothing: it tells the XPUB who subscribed. The
//! XPUB sees that subscription arrive and answers it with a hello at once (and sends one
//! every `timing.link_heartbeat_ms` anyway). A SUB sends its subscriptions on every
//! (re)connect in lexical order (libzmq walks its subscription trie), and `ev` < `hello` <
//! `id/`, so when the `id/` one is in, `ev` is too; a hello that reaches the SUB went
//! through that very subscription. From the first hello on, the link is **verified**: every event the peer
//! publishes afterwards reaches us, in order (one TCP connection, ZeroMQ's FIFO).
//!
//! Hellos carry the peer's run id and how many events it has published (`sent`); between
//! two hellos the SUB counts the events it got, so events lost anyway (the peer's send
//! queue overflowed, the connection dropped and came back) show up as `missed` in status.
//! A changed run id is a restart: counting starts again. A peer whose hello is three of its
//! intervals overdue is `stale`. The XPUB side lists the relays subscribed to it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mongrel2_transceiver::{ConnId, Token, Transceiver};
use serde_json::{json, Value};

use super::metrics::{LinkStats, PeerStats};
use super::protocol::{Ack, Source, MAX_ROUTING_KEY};
use super::relay::Relay;

/// Topic of event messages.
pub const TOPIC_EVENT: &[u8] = b"ev";
/// Topic of hello messages.
pub const TOPIC_HELLO: &[u8] = b"hello";
/// Prefix of the topic each subscriber announces itself with.
pub const TOPIC_ID: &[u8] = b"id/";
/// Messages queued per link socket before ZeroMQ drops (publisher) or stops reading
/// (subscriber); bounds memory when a peer is slow.
const HWM: i32 = 100_000;
/// Messages read per readable socket before the loop moves on.
const BATCH: usize = 1024;
/// Subscribers remembered by name (a bound against hostile peers; the XPUB itself serves
/// any number).
const MAX_SUBSCRIBERS: usize = 4096;
/// A peer is stale when its hello is this many of its intervals overdue.
const STALE_AFTER: u32 = 3;
/// Hello intervals accepted from peers.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

struct Publisher {
    endpoint: String,
    token: Token,
    subscribers: BTreeSet<String>,
    sent: u64,
}

struct Peer {
    endpoint: String,
    token: Token,
    link: LinkState,
}

/// What the hellos and events of one peer have shown.
struct LinkState {
    /// The peer's run id, from its last hello.
    relay: Option<String>,
    last_heard: Option<Instant>,
    interval: Duration,
    reported_stale: bool,
    /// The peer's `sent` at its last hello, and events received since.
    base: u64,
    received: u64,
    events: u64,
    missed: u64,
    restarts: u64,
}

impl LinkState {
    fn new(interval: Duration) -> LinkState {
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

    fn state(&self, now: Instant) -> &'static str {
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

/// The link sockets and what is known about each peer.
pub struct Links {
    relay_id: String,
    heartbeat: Duration,
    next_hello: Instant,
    publisher: Option<Publisher>,
    peers: Vec<Peer>,
}

impl Links {
    /// Binds the publisher at `bind` (if any) and subscribes to each of `peers`, as the
    /// relay whose run id is `relay_id`; frames over `max_frame` bytes are refused. On
    /// failure: the address and the cause.
    pub fn start(
        transceiver: &mut Transceiver,
        relay_id: &str,
        bind: Option<&str>,
        peers: &[String],
        heartbeat: Duration,
        max_frame: usize,
    ) -> Result<Links, (String, zmq::Error)> {
        let failed = |endpoint: &str| {
            let endpoint = endpoint.to_owned();
            move |source| (endpoint, source)
        };
        let publisher = match bind {
            Some(endpoint) => {
                let socket = xpub(transceiver.context(), endpoint).map_err(failed(endpoint))?;
                log::info!("publishing to linked relays on {endpoint}");
                Some(Publisher {
                    endpoint: endpoint.to_owned(),
                    token: transceiver.watch(socket),
                    subscribers: BTreeSet::new(),
                    sent: 0,
                })
            }
            None => None,
        };
        let mut subscribed = Vec::with_capacity(peers.len());
        for endpoint in peers {
            let socket = sub(transceiver.context(), endpoint, relay_id, max_frame)
                .map_err(failed(endpoint))?;
            log::info!("subscribing to linked relay {endpoint}");
            subscribed.push(Peer {
                endpoint: endpoint.clone(),
                token: transceiver.watch(socket),
                link: LinkState::new(heartbeat),
            });
        }
        Ok(Links {
            relay_id: relay_id.to_owned(),
            heartbeat,
            next_hello: Instant::now(),
            publisher,
            peers: subscribed,
        })
    }

    /// Does this relay publish to linked relays (so the core should queue forwards)?
    pub fn publishes(&self) -> bool {
        self.publisher.is_some()
    }

    /// Is `token` one of the link sockets?
    pub fn owns(&self, token: Token) -> bool {
        self.publisher.as_ref().is_some_and(|p| p.token == token)
            || self.peers.iter().any(|p| p.token == token)
    }

    /// Handles a readable link socket: subscriptions on the publisher, events and hellos
    /// on a subscriber.
    pub fn on_readable(
        &mut self,
        transceiver: &Transceiver,
        token: Token,
        relay: &mut Relay<ConnId>,
        now: Instant,
    ) {
        let Ok(socket) = transceiver.socket(token) else {
            return;
        };
        if self.publisher.as_ref().is_some_and(|p| p.token == token) {
            self.on_subscriptions(socket);
        } else if let Some(peer) = self.peers.iter_mut().find(|p| p.token == token) {
            on_peer_messages(peer, socket, relay, now);
        }
    }

    fn on_subscriptions(&mut self, socket: &zmq::Socket) {
        let mut greet = false;
        for _ in 0..BATCH {
            let message = match socket.recv_bytes(zmq::DONTWAIT) {
                Ok(message) => message,
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    log::warn!("link publisher: {e}");
                    break;
                }
            };
            let Some(publisher) = &mut self.publisher else {
                return;
            };
            let (subscribe, topic) = match message.split_first() {
                Some((1, topic)) => (true, topic),
                Some((0, topic)) => (false, topic),
                _ => continue,
            };
            let Some(name) = topic.strip_prefix(TOPIC_ID) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            if subscribe {
                log::info!("linked relay {name} subscribed");
                if publisher.subscribers.len() < MAX_SUBSCRIBERS {
                    publisher.subscribers.insert(name);
                }
                greet = true;
            } else {
                log::info!("linked relay {name} unsubscribed");
                publisher.subscribers.remove(&name);
            }
        }
        if greet {
            // The new subscriber's subscriptions are all in place: tell it so.
            self.send_hello(socket);
        }
    }

    fn send_hello(&self, socket: &zmq::Socket) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let hello = Hello {
            relay: self.relay_id.clone(),
            sent: publisher.sent,
            interval: self.heartbeat,
        };
        if let Err(e) = socket.send_multipart([TOPIC_HELLO, &hello.to_json()], zmq::DONTWAIT) {
            log::warn!("link hello: {e}");
        }
    }

    /// Publishes events the core accepted to every subscribed relay.
    pub fn publish(&mut self, transceiver: &Transceiver, events: Vec<Vec<u8>>) {
        let Some(publisher) = &mut self.publisher else {
            return;
        };
        let Ok(socket) = transceiver.socket(publisher.token) else {
            return;
        };
        for event in events {
            // An XPUB never blocks: a subscriber whose queue is full misses the message
            // (and learns so from the next hello's count).
            match socket.send_multipart([TOPIC_EVENT, &event], zmq::DONTWAIT) {
                Ok(()) => publisher.sent += 1,
                Err(e) => log::warn!("link publish: {e}"),
            }
        }
    }

    /// Sends the periodic hello when due and notes peers that went stale.
    pub fn tick(&mut self, transceiver: &Transceiver, now: Instant) {
        if now >= self.next_hello {
            self.next_hello = now + self.heartbeat;
            if let Some(socket) = self
                .publisher
                .as_ref()
                .and_then(|p| transceiver.socket(p.token).ok())
            {
                self.send_hello(socket);
            }
        }
        for peer in &mut self.peers {
            let link = &mut peer.link;
            if link.state(now) == "stale" && !link.reported_stale {
                link.reported_stale = true;
                log::warn!(
                    "linked relay {} ({}) has gone quiet",
                    peer.endpoint,
                    link.relay.as_deref().unwrap_or("?")
                );
            }
        }
    }

    /// When [`Links::tick`] next has work.
    pub fn next_tick(&self) -> Option<Instant> {
        self.publisher.as_ref().map(|_| self.next_hello)
    }

    /// Link state for status.
    pub fn stats(&self, now: Instant) -> LinkStats {
        LinkStats {
            relay: self.relay_id.clone(),
            bind: self.publisher.as_ref().map(|p| p.endpoint.clone()),
            subscribers: self
                .publisher
                .as_ref()
                .map(|p| p.subscribers.iter().cloned().collect())
                .unwrap_or_default(),
            published: self.publisher.as_ref().map_or(0, |p| p.sent),
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let state = p.link.state(now);
                    PeerStats {
                        endpoint: p.endpoint.clone(),
                        relay: p.link.relay.clone(),
                        state,
                        verified: state == "verified",
                        events: p.link.events,
                        missed: p.link.missed,
                        restarts: p.link.restarts,
                    }
                })
                .collect(),
        }
    }
}

fn on_peer_messages(
    peer: &mut Peer,
    socket: &zmq::Socket,
    relay: &mut Relay<ConnId>,
    now: Instant,
) {
    for _ in 0..BATCH {
        let frames = match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => return,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                log::warn!("linked relay {}: {e}", peer.endpoint);
                return;
            }
        };
        let [topic, body] = frames.as_slice() else {
            log::debug!("{}-frame link message dropped", frames.len());
            continue;
        };
        match topic.as_slice() {
            TOPIC_EVENT => {
                peer.link.received += 1;
                peer.link.events += 1;
                let ack = relay.publish_json(Source::Link, body);
                if let Ack::Rejected(e) = ack {
                    log::debug!("event from {} refused: {e}", peer.endpoint);
                }
            }
            TOPIC_HELLO => match Hello::parse(body) {
                Some(hello) => on_hello(&mut peer.link, &peer.endpoint, hello, now),
                None => log::debug!("unreadable hello from {}", peer.endpoint),
            },
            _ => {}
        }
    }
}

fn on_hello(peer: &mut LinkState, endpoint: &str, hello: Hello, now: Instant) {
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

fn xpub(context: &zmq::Context, endpoint: &str) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    socket.set_sndhwm(HWM)?;
    // Subscription messages are a few bytes; nothing big is ever read from this socket.
    socket.set_maxmsgsize(1024)?;
    socket.bind(endpoint)?;
    Ok(socket)
}

fn sub(
    context: &zmq::Context,
    endpoint: &str,
    relay_id: &str,
    max_frame: usize,
) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::SUB)?;
    socket.set_linger(0)?;
    socket.set_rcvhwm(HWM)?;
    socket.set_maxmsgsize(i64::try_from(max_frame).unwrap_or(i64::MAX))?;
    // The publisher greets the `id/` subscription, which reaches it last: subscriptions go
    // out in lexical order, and `ev` < `hello` < `id/` (see the module docs).
    socket.set_subscribe(TOPIC_EVENT)?;
    socket.set_subscribe(TOPIC_HELLO)?;
    socket.set_subscribe(&[TOPIC_ID, relay_id.as_bytes()].concat())?;
    socket.connect(endpoint)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_topic_sorts_last_so_its_greeting_proves_the_others() {
        assert!(TOPIC_EVENT < TOPIC_HELLO && TOPIC_HELLO < TOPIC_ID);
    }

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
