//! Linked relays: every relay re-publishes the events it accepts to the relays subscribed to
//! it, so a network of relays shares one event stream with nothing in between but ZeroMQ.
//!
//! Sockets: an XPUB bound at `--link-bind` (the publisher) and one SUB per `--link` (to
//! another relay's publisher). Messages are `[topic, body]`, plus a signature frame when a
//! link secret is configured (see [`auth`]):
//!
//! | topic   | body                                                   |
//! |---------|--------------------------------------------------------|
//! | `ev`    | event input JSON with `origin {relay, seq, hops}`      |
//! | `hello` | `{"relay":ID,"sent":N,"interval_ms":MS}`               |
//!
//! Loops and repeats are the core's business (dedupe by origin relay + seq, hop limit); this
//! module moves bytes, admits subscribers and keeps the link state.
//!
//! # Admitting subscribers (and the slow joiner)
//!
//! The XPUB runs in ZeroMQ's manual mode: what a subscriber subscribes to is reported to
//! us and takes effect only when we apply it to that connection. A subscriber is admitted
//! when it has proved it holds the link secret ([`auth`]), or, on a relay without one,
//! when it subscribes to `id/RELAY_ID`; only then do we apply `ev` and `hello` to its
//! connection. So a plain SUB with an empty filter receives nothing, and since we apply
//! the subscriptions ourselves, the hello we send right after admitting reaches the new
//! subscriber for certain (no slow-joiner guess). From the first hello on, the link is
//! **verified**: every event the peer publishes afterwards reaches us, in order (one TCP
//! connection, ZeroMQ's FIFO). A hello goes out every `timing.link_heartbeat_ms` too. With
//! a secret, a link still unverified after [`RECHALLENGE`] asks for a new challenge, so a
//! lost or late answer does not leave it stuck until the next reconnect.
//!
//! Hellos carry the peer's run id and how many events it has published (`sent`); between
//! two hellos the SUB counts the events it got, so events lost anyway (the peer's send
//! queue overflowed, the connection dropped and came back) show up as `missed` in status.
//! A changed run id is a restart: counting starts again. A peer whose hello is three of its
//! intervals overdue is `stale`. The XPUB side lists the relays subscribed to it.
//!
//! # Queues in bytes
//!
//! ZeroMQ bounds a socket's queue per connection in messages. Both link sockets get
//! `limits.link_queue_messages()`, computed from `limits.link_queue_bytes` and the largest
//! event, so a subscriber that never reads holds at most about `link_queue_bytes` of this
//! relay's memory (plus the kernel's socket buffers); beyond that it misses events, which
//! its next hello count reports.

mod admit;
mod auth;
mod sockets;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mongrel2_transceiver::{ConnId, Token, Transceiver};

use super::config::LinkSecret;
use super::metrics::{LinkStats, PeerStats};
use super::protocol::{Ack, Source};
use super::relay::Relay;
use admit::admit;
use auth::{Auth, TOPIC_CHALLENGE};
pub use sockets::check_exposure;
use sockets::{sub, xpub};
use state::{on_hello, Hello, LinkState};

/// Topic of event messages.
pub const TOPIC_EVENT: &[u8] = b"ev";
/// Topic of hello messages.
pub const TOPIC_HELLO: &[u8] = b"hello";
/// Prefix of the topic a subscriber announces itself with on a relay without a secret.
pub const TOPIC_ID: &[u8] = b"id/";
/// Messages read per readable socket before the loop moves on.
const BATCH: usize = 1024;
/// How long a link with a secret may stay unverified before it asks for a new challenge
/// (a lost or late answer must not leave it stuck until the next reconnect).
const RECHALLENGE: Duration = Duration::from_secs(5);
/// Subscribers remembered by name (a bound against hostile peers; the XPUB itself serves
/// any number).
const MAX_SUBSCRIBERS: usize = 4096;

struct Publisher {
    endpoint: String,
    token: Token,
    /// Admitting subscription topic -> the subscriber's relay id.
    admitted: BTreeMap<Vec<u8>, String>,
    sent: u64,
    /// Subscribers refused (wrong proof, or no secret where one is required).
    refused: u64,
}

struct Peer {
    endpoint: String,
    token: Token,
    link: LinkState,
    /// Our challenge nonce on this link (with a secret), and when we asked with it.
    nonce: String,
    asked: Instant,
    /// The answer subscription in place (with a secret).
    answer: Option<Vec<u8>>,
    /// Messages dropped because they were not signed with the secret.
    refused: u64,
}

/// The link sockets and what is known about each peer.
pub struct Links {
    relay_id: String,
    heartbeat: Duration,
    next_hello: Instant,
    auth: Option<Auth>,
    publisher: Option<Publisher>,
    peers: Vec<Peer>,
}

/// What the link sockets are set up from.
pub struct LinkOptions<'a> {
    /// This run's id on the link network.
    pub relay_id: &'a str,
    /// Where to bind the publisher (`None`: no publisher).
    pub bind: Option<&'a str>,
    /// Publishers to subscribe to.
    pub peers: &'a [String],
    /// The hello interval.
    pub heartbeat: Duration,
    /// Largest frame read from a peer.
    pub max_frame: usize,
    /// Messages queued per connection (see the module docs).
    pub queue: i32,
    /// The shared secret (`None`: links are not authenticated).
    pub secret: Option<LinkSecret>,
}

/// Why the link sockets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket could not be made, bound or connected.
    #[error("{endpoint}: {source}")]
    Socket {
        /// The address.
        endpoint: String,
        /// The cause.
        source: zmq::Error,
    },
    /// No randomness for the authentication keys.
    #[error("no system randomness for link authentication: {0}")]
    Random(getrandom::Error),
}

impl Links {
    /// Binds the publisher and subscribes to each peer, as `options` say.
    pub fn start(
        transceiver: &mut Transceiver,
        options: LinkOptions<'_>,
    ) -> Result<Links, LinkError> {
        let failed = |endpoint: &str| {
            let endpoint = endpoint.to_owned();
            move |source| LinkError::Socket { endpoint, source }
        };
        let mut auth = options
            .secret
            .clone()
            .map(Auth::new)
            .transpose()
            .map_err(LinkError::Random)?;
        let publisher = match options.bind {
            Some(endpoint) => {
                let socket = xpub(transceiver.context(), endpoint, options.queue)
                    .map_err(failed(endpoint))?;
                log::info!(
                    "publishing to linked relays on {endpoint} ({})",
                    if auth.is_some() {
                        "subscribers must prove the link secret"
                    } else {
                        "no link secret: subscribers are not authenticated"
                    }
                );
                Some(Publisher {
                    endpoint: endpoint.to_owned(),
                    token: transceiver.watch(socket),
                    admitted: BTreeMap::new(),
                    sent: 0,
                    refused: 0,
                })
            }
            None => None,
        };
        let mut subscribed = Vec::with_capacity(options.peers.len());
        for endpoint in options.peers {
            let nonce = auth.as_mut().map(Auth::nonce).unwrap_or_default();
            let socket =
                sub(transceiver.context(), endpoint, &options, &nonce).map_err(failed(endpoint))?;
            log::info!("subscribing to linked relay {endpoint}");
            subscribed.push(Peer {
                endpoint: endpoint.clone(),
                token: transceiver.watch(socket),
                link: LinkState::new(options.heartbeat),
                nonce,
                asked: Instant::now(),
                answer: None,
                refused: 0,
            });
        }
        Ok(Links {
            relay_id: options.relay_id.to_owned(),
            heartbeat: options.heartbeat,
            next_hello: Instant::now(),
            auth,
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
            self.on_subscriptions(socket, now);
        } else if let Some(peer) = self.peers.iter_mut().find(|p| p.token == token) {
            on_peer_messages(peer, self.auth.as_ref(), &self.relay_id, socket, relay, now);
        }
    }

    fn on_subscriptions(&mut self, socket: &zmq::Socket, now: Instant) {
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
            match message.split_first() {
                // Whatever this connection asks, it gets only what `admit` applies.
                Some((1, topic)) => {
                    greet |= admit(
                        publisher,
                        self.auth.as_ref(),
                        &self.relay_id,
                        socket,
                        topic,
                        now,
                    );
                }
                Some((0, topic)) => {
                    // A connection's subscriptions are reported as cancelled when it goes.
                    if let Some(name) = publisher.admitted.remove(topic) {
                        log::info!("linked relay {name} unsubscribed");
                    }
                }
                _ => {}
            }
        }
        if greet {
            // The new subscriber's subscriptions are in place: tell it so.
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
        if let Err(e) = send(socket, self.auth.as_ref(), TOPIC_HELLO, &hello.to_json()) {
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
            match send(socket, self.auth.as_ref(), TOPIC_EVENT, &event) {
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
            if let Some(auth) = self.auth.as_mut() {
                if peer.link.state(now) == "verified" {
                    peer.asked = now;
                } else if now >= peer.asked + RECHALLENGE {
                    ask_again(peer, auth, transceiver, now);
                }
            }
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
        let hello = self.publisher.as_ref().map(|_| self.next_hello);
        let ask = self
            .auth
            .as_ref()
            .and_then(|_| self.peers.iter().map(|p| p.asked + RECHALLENGE).min());
        hello.into_iter().chain(ask).min()
    }

    /// Link state for status.
    pub fn stats(&self, now: Instant) -> LinkStats {
        let publisher = self.publisher.as_ref();
        LinkStats {
            relay: self.relay_id.clone(),
            authenticated: self.auth.is_some(),
            bind: publisher.map(|p| p.endpoint.clone()),
            subscribers: publisher
                .map(|p| {
                    let names: BTreeSet<&String> = p.admitted.values().collect();
                    names.into_iter().cloned().collect()
                })
                .unwrap_or_default(),
            published: publisher.map_or(0, |p| p.sent),
            refused: publisher.map_or(0, |p| p.refused),
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
                        refused: p.refused,
                    }
                })
                .collect(),
        }
    }
}

/// Sends `[topic, body]`, signed when there is a secret.
fn send(socket: &zmq::Socket, auth: Option<&Auth>, topic: &[u8], body: &[u8]) -> zmq::Result<()> {
    match auth {
        Some(auth) => {
            let tag = auth.sign(topic, body);
            socket.send_multipart([topic, body, &tag[..]], zmq::DONTWAIT)
        }
        None => socket.send_multipart([topic, body], zmq::DONTWAIT),
    }
}

fn on_peer_messages(
    peer: &mut Peer,
    auth: Option<&Auth>,
    relay_id: &str,
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
        let (topic, body) = match (auth, frames.as_slice()) {
            (Some(auth), [topic, body]) if topic.starts_with(TOPIC_CHALLENGE) => {
                on_challenge(peer, auth, relay_id, socket, topic, body);
                continue;
            }
            (Some(auth), [topic, body, tag]) if auth.verify(topic, body, tag) => (topic, body),
            (None, [topic, body]) => (topic, body),
            _ => {
                refuse(peer, "not signed with the link secret");
                continue;
            }
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

/// A challenge from the publisher we subscribe to: answer it if it proves the secret.
fn on_challenge(
    peer: &mut Peer,
    auth: &Auth,
    relay_id: &str,
    socket: &zmq::Socket,
    topic: &[u8],
    body: &[u8],
) {
    if topic != Auth::challenge_topic(&peer.nonce) {
        return;
    }
    match auth.answer(&peer.nonce, relay_id, body) {
        Ok((publisher, answer)) => {
            if let Err(e) = socket.set_subscribe(&answer) {
                log::warn!("linked relay {}: {e}", peer.endpoint);
                return;
            }
            // The answer just given replaces the last one (sent again on every reconnect).
            if let Some(old) = peer.answer.replace(answer) {
                let _ = socket.set_unsubscribe(&old);
            }
            log::info!(
                "linked relay {} ({publisher}) proved the link secret",
                peer.endpoint
            );
        }
        Err(e) => refuse(peer, &format!("its challenge failed: {e}")),
    }
}

/// Replaces the challenge subscription with a new one, which the publisher answers with a
/// new challenge on the connection as it is.
fn ask_again(peer: &mut Peer, auth: &mut Auth, transceiver: &Transceiver, now: Instant) {
    peer.asked = now;
    let Ok(socket) = transceiver.socket(peer.token) else {
        return;
    };
    let nonce = auth.nonce();
    if let Err(e) = socket.set_subscribe(&Auth::challenge_topic(&nonce)) {
        log::warn!("linked relay {}: {e}", peer.endpoint);
        return;
    }
    log::debug!("linked relay {}: asking for a new challenge", peer.endpoint);
    let old = std::mem::replace(&mut peer.nonce, nonce);
    // Not fatal: a challenge for the old nonce is ignored anyway.
    let _ = socket.set_unsubscribe(&Auth::challenge_topic(&old));
}

fn refuse(peer: &mut Peer, why: &str) {
    peer.refused += 1;
    // As for subscribers (see `refuse_subscriber`).
    if peer.refused.is_power_of_two() {
        log::warn!(
            "linked relay {}: message refused, {why} ({} refused so far)",
            peer.endpoint,
            peer.refused
        );
    }
}
