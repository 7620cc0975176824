//! The loop's side of the RabbitMQ backbone (see `amqp`): publishing through it, and
//! delivering what it reads back.
//!
//! Acks: an injector or HTTP publisher is answered only once RabbitMQ has confirmed the
//! event (`{"ok":true,"confirmed":true}`), or refused (`BackendUnavailable`) when it could
//! not be, or `BackendTimeout` after [`CONFIRM_WAIT`], so an acknowledged event is never
//! lost. The loop does not wait: the injector socket is a ROUTER in this mode (REQ clients
//! cannot tell), so each request's answer goes back to its sender when its confirm comes,
//! and an HTTP publish is answered then too. PULL publishers get no answer: their failed
//! publishes are counted (`relay_amqp_publishes{outcome="failed"}`) and logged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mongrel2_transceiver::request::OwnedRequest;
use mongrel2_transceiver::{ConnId, Token, Transceiver};

use super::amqp::{self, Backbone, Report, Settings};
use super::http_api;
use super::metrics::AmqpStats;
use super::protocol::{Ack, ErrorName, Source};
use super::relay::{Relay, LINK_ENVELOPE};
use super::sources;

/// Longest an injector or HTTP publisher waits for RabbitMQ's confirm.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// Reports handled per readable turn before the loop moves on.
const REPORT_BATCH: usize = 1024;

/// Injector requests and HTTP publishes waiting for their confirm, at most; more are
/// refused at once (`BackendUnavailable`).
const WAITING_MAX: usize = 10_000;
/// Longest injector identity kept (ZeroMQ makes 5-byte ones).
const MAX_IDENTITY: usize = 256;

/// Who hears about a publish once RabbitMQ has confirmed it.
enum Waiter {
    /// Nobody (PULL): only counted.
    Nobody,
    /// The injector ROUTER peer with this identity.
    Inject(Vec<u8>),
    /// The HTTP publisher.
    Http(Box<OwnedRequest>),
}

/// The backbone as the loop sees it.
pub struct Loopside {
    backbone: Backbone,
    token: Token,
    /// The injector ROUTER, for the answers.
    inject: Option<Token>,
    /// Publish id -> who waits for it and until when.
    waiting: HashMap<u64, (Waiter, Instant)>,
    /// Deadline -> publish ids, for expiry.
    deadlines: BTreeMap<Instant, Vec<u64>>,
    stats: AmqpStats,
}

impl Loopside {
    /// Starts the backbone threads, reporting to a PULL socket the loop watches, and sets
    /// the relay's epoch to the streams'.
    pub fn start(
        transceiver: &mut Transceiver,
        relay: &mut Relay<ConnId>,
        url: &str,
    ) -> Result<Loopside, String> {
        let endpoint = format!("inproc://event-relay-amqp-{}", relay.origin_id());
        let context = transceiver.context().clone();
        let pull = context.socket(zmq::PULL).map_err(|e| e.to_string())?;
        pull.bind(&endpoint).map_err(|e| e.to_string())?;
        let push = context.socket(zmq::PUSH).map_err(|e| e.to_string())?;
        push.connect(&endpoint).map_err(|e| e.to_string())?;
        let settings = Settings {
            url: url.to_owned(),
            exchanges: relay
                .config()
                .exchanges
                .keys()
                .map(ToString::to_string)
                .collect(),
            max_age: relay.config().stream.max_age.clone(),
            max_bytes: relay.config().stream.max_bytes,
            // What the relay itself publishes stays under message_size plus the time stamp.
            max_message: relay.config().limits.message_size + LINK_ENVELOPE,
        };
        let backbone = Backbone::start(settings, push).map_err(|e| e.to_string())?;
        relay.set_epoch(amqp::EPOCH);
        Ok(Loopside {
            backbone,
            token: transceiver.watch(pull),
            inject: None,
            waiting: HashMap::new(),
            deadlines: BTreeMap::new(),
            stats: AmqpStats::default(),
        })
    }

    /// Answers injector requests on this ROUTER socket from now on.
    pub fn set_injector(&mut self, token: Option<Token>) {
        self.inject = token;
    }

    /// Whether `token` is the report socket.
    pub fn owns(&self, token: Token) -> bool {
        token == self.token
    }

    /// For `/events/status` and metrics.
    pub fn stats(&self) -> AmqpStats {
        let mut stats = self.stats.clone();
        stats.in_flight = self.waiting.len();
        stats
    }

    /// Handles the reports that are ready (a bounded batch).
    pub fn on_readable(&mut self, transceiver: &mut Transceiver, relay: &mut Relay<ConnId>) {
        for _ in 0..REPORT_BATCH {
            match self.next_report(transceiver) {
                Some(report) => self.handle(transceiver, relay, report),
                None => return,
            }
        }
    }

    /// Publishes an event from `source` into RabbitMQ for `waiter`, who hears the outcome
    /// when the confirm comes (see [`Loopside::on_readable`]). `Err` is the refusal to give
    /// now instead (the waiter is handed back).
    fn submit(
        &mut self,
        relay: &mut Relay<ConnId>,
        source: Source,
        body: &[u8],
        waiter: Waiter,
    ) -> Result<(), (Waiter, Ack)> {
        let (exchange, routing_key, json) = match relay.prepare_backbone(source, body) {
            Ok(prepared) => prepared,
            Err(e) => return Err((waiter, Ack::Rejected(e))),
        };
        let unavailable = Ack::Rejected(ErrorName::BackendUnavailable);
        if !self.stats.connected || self.waiting.len() >= WAITING_MAX {
            self.stats.failed += 1;
            return Err((waiter, unavailable));
        }
        let Some(id) = self.backbone.publish(&exchange, &routing_key, json) else {
            self.stats.failed += 1;
            return Err((waiter, unavailable));
        };
        self.stats.published += 1;
        let deadline = Instant::now() + CONFIRM_WAIT;
        self.waiting.insert(id, (waiter, deadline));
        self.deadlines.entry(deadline).or_default().push(id);
        Ok(())
    }

    /// A PULL message: published, its outcome only counted.
    pub fn publish_pull(&mut self, relay: &mut Relay<ConnId>, body: &[u8]) -> Ack {
        match self.submit(relay, Source::Pull, body, Waiter::Nobody) {
            Ok(()) => Ack::Confirmed,
            Err((_, ack)) => ack,
        }
    }

    /// `POST /events/publish` with the publish token: answered now if refused, else when
    /// RabbitMQ confirms.
    pub fn publish_http(
        &mut self,
        transceiver: &mut Transceiver,
        relay: &mut Relay<ConnId>,
        request: OwnedRequest,
    ) {
        let body = request.body().to_vec();
        if let Err((waiter, ack)) =
            self.submit(relay, Source::Http, &body, Waiter::Http(Box::new(request)))
        {
            self.answer(transceiver, waiter, &ack);
        }
    }

    /// Reads up to [`sources::INJECT_BATCH`] injector requests from the ROUTER: each is
    /// answered now if refused, else when RabbitMQ confirms.
    pub fn serve_inject(&mut self, transceiver: &Transceiver, relay: &mut Relay<ConnId>) {
        let Some(socket) = self.inject.and_then(|t| transceiver.socket(t).ok()) else {
            return;
        };
        for _ in 0..sources::INJECT_BATCH {
            let parts = match socket.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    log::warn!("injector socket: {e}");
                    return;
                }
            };
            // A REQ peer's request: [identity, empty delimiter, body].
            let (identity, ack) = match parts.as_slice() {
                [identity, empty, body] if empty.is_empty() && identity.len() <= MAX_IDENTITY => {
                    let waiter = Waiter::Inject(identity.clone());
                    let refused = self.submit(relay, Source::Inject, body, waiter).err();
                    (identity, refused.map(|(_, ack)| ack))
                }
                [identity, ..] => {
                    let refused = relay.reject(Source::Inject, ErrorName::InvalidPayload);
                    (identity, Some(refused))
                }
                [] => continue,
            };
            if let Some(ack) = ack {
                answer_inject(socket, identity, &ack);
            }
        }
    }

    /// When the next unanswered publish times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().copied()
    }

    /// Answers `BackendTimeout` to publishers whose confirm has not come by now (it may
    /// still come: then it is only counted).
    pub fn expire(&mut self, transceiver: &mut Transceiver, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry() {
            if *entry.key() > now {
                return;
            }
            for id in entry.remove() {
                if let Some((waiter, _)) = self.waiting.remove(&id) {
                    log::warn!("amqp: no confirm within {CONFIRM_WAIT:?}; publisher told");
                    self.stats.failed += 1;
                    self.answer(
                        transceiver,
                        waiter,
                        &Ack::Rejected(ErrorName::BackendTimeout),
                    );
                }
            }
        }
    }

    fn answer(&self, transceiver: &mut Transceiver, waiter: Waiter, ack: &Ack) {
        match waiter {
            Waiter::Nobody => {}
            Waiter::Inject(identity) => {
                if let Some(socket) = self.inject.and_then(|t| transceiver.socket(t).ok()) {
                    answer_inject(socket, &identity, ack);
                }
            }
            Waiter::Http(request) => answer_http(transceiver, &request, ack),
        }
    }

    fn count_confirm(&mut self, ok: bool) {
        if ok {
            self.stats.confirmed += 1;
        } else {
            self.stats.failed += 1;
        }
    }

    fn handle(&mut self, transceiver: &mut Transceiver, relay: &mut Relay<ConnId>, report: Report) {
        match report {
            Report::Event {
                exchange,
                routing_key,
                position,
                body,
            } => {
                if let Err(e) = relay.publish_at(&exchange, &routing_key, &body, position) {
                    log::warn!("amqp: message at {exchange}/{position} is not an event: {e}");
                }
            }
            Report::Confirmed { id, ok } => {
                // Not waiting any more (timed out): the publisher was told already.
                if let Some((waiter, deadline)) = self.waiting.remove(&id) {
                    if let Some(ids) = self.deadlines.get_mut(&deadline) {
                        ids.retain(|&i| i != id);
                        if ids.is_empty() {
                            self.deadlines.remove(&deadline);
                        }
                    }
                    self.count_confirm(ok);
                    if !ok && matches!(waiter, Waiter::Nobody) {
                        log::warn!("amqp: a PULL event was not stored by RabbitMQ");
                    }
                    let ack = if ok {
                        Ack::Confirmed
                    } else {
                        Ack::Rejected(ErrorName::BackendUnavailable)
                    };
                    self.answer(transceiver, waiter, &ack);
                }
            }
            Report::Up => {
                self.stats.connected = true;
            }
            Report::Down(why) => {
                self.stats.connected = false;
                self.stats.outages += 1;
                self.stats.last_error = Some(why);
            }
        }
    }

    /// The next report already there.
    fn next_report(&self, transceiver: &Transceiver) -> Option<Report> {
        let socket = transceiver.socket(self.token).ok()?;
        let parts = socket.recv_multipart(zmq::DONTWAIT).ok()?;
        let report = Report::decode(&parts);
        if report.is_none() {
            log::warn!("amqp: unreadable report ({} parts)", parts.len());
        }
        report
    }
}

/// Sends `ack` to the REQ peer `identity` through the injector ROUTER (dropped by ZeroMQ if
/// that peer is gone).
fn answer_inject(socket: &zmq::Socket, identity: &[u8], ack: &Ack) {
    let reply = [identity, b"", &ack.to_json()];
    if let Err(e) = socket.send_multipart(reply, zmq::DONTWAIT) {
        log::warn!("injector reply: {e}");
    }
}

fn answer_http(transceiver: &mut Transceiver, request: &OwnedRequest, ack: &Ack) {
    let response = http_api::publish_response(ack);
    if let Err(e) = transceiver.reply_http(request, &response) {
        log::warn!("HTTP publish reply: {e}");
    }
}
