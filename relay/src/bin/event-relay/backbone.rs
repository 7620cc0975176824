//! The loop's side of the RabbitMQ backbone (see `amqp`): publishing through it, and
//! delivering what it reads back.
//!
//! Acks: an injector or HTTP publisher is answered only once RabbitMQ has confirmed the
//! event (`{"ok":true,"confirmed":true}`), or refused (`BackendUnavailable`) when it could
//! not be, so an acknowledged event is never lost. This first version waits for the confirm
//! inside the loop (at most [`CONFIRM_WAIT`], reading other reports meanwhile); a local
//! broker confirms within milliseconds. PULL publishers get no answer: their failed
//! publishes are counted (`relay_amqp_publishes{outcome="failed"}`) and logged.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mongrel2_transceiver::{ConnId, Token, Transceiver};

use super::amqp::{self, Backbone, Report, Settings};
use super::metrics::AmqpStats;
use super::protocol::{Ack, ErrorName, Source};
use super::relay::{Relay, LINK_ENVELOPE};

/// Longest an injector or HTTP publisher waits for RabbitMQ's confirm.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// Reports handled per readable turn before the loop moves on.
const REPORT_BATCH: usize = 1024;

/// The backbone as the loop sees it.
pub struct Loopside {
    backbone: Backbone,
    token: Token,
    /// Publishes whose confirm nobody waits for (PULL).
    unanswered: HashSet<u64>,
    stats: AmqpStats,
}

impl Loopside {
    /// Starts the backbone threads, reporting to a PULL socket the loop watches, and sets
    /// the relay's epoch to the streams'.
    pub fn start(
        transceiver: &mut Transceiver,
        relay: &mut Relay<ConnId>,
        url: &str,
        max_age: &str,
        max_bytes: u64,
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
            max_age: max_age.to_owned(),
            max_bytes,
            // What the relay itself publishes stays under message_size plus the time stamp.
            max_message: relay.config().limits.message_size + LINK_ENVELOPE,
        };
        let backbone = Backbone::start(settings, push).map_err(|e| e.to_string())?;
        relay.set_epoch(amqp::EPOCH);
        Ok(Loopside {
            backbone,
            token: transceiver.watch(pull),
            unanswered: HashSet::new(),
            stats: AmqpStats::default(),
        })
    }

    /// Whether `token` is the report socket.
    pub fn owns(&self, token: Token) -> bool {
        token == self.token
    }

    /// For `/events/status` and metrics.
    pub fn stats(&self) -> AmqpStats {
        let mut stats = self.stats.clone();
        stats.in_flight = self.unanswered.len();
        stats
    }

    /// Handles the reports that are ready (a bounded batch).
    pub fn on_readable(&mut self, transceiver: &Transceiver, relay: &mut Relay<ConnId>) {
        for _ in 0..REPORT_BATCH {
            match self.next_report(transceiver, 0) {
                Some(report) => self.handle(relay, report),
                None => return,
            }
        }
    }

    /// Publishes an event from `source` into RabbitMQ. With `wait` (a publisher expecting
    /// an answer) returns only once it is confirmed or refused; without, at once.
    pub fn publish(
        &mut self,
        transceiver: &Transceiver,
        relay: &mut Relay<ConnId>,
        source: Source,
        body: &[u8],
        wait: bool,
    ) -> Ack {
        let (exchange, routing_key, json) = match relay.prepare_backbone(source, body) {
            Ok(prepared) => prepared,
            Err(e) => return Ack::Rejected(e),
        };
        if !self.stats.connected {
            self.stats.failed += 1;
            return Ack::Rejected(ErrorName::BackendUnavailable);
        }
        let Some(id) = self.backbone.publish(&exchange, &routing_key, json) else {
            self.stats.failed += 1;
            return Ack::Rejected(ErrorName::BackendUnavailable);
        };
        self.stats.published += 1;
        if !wait {
            self.unanswered.insert(id);
            return Ack::Confirmed;
        }
        let deadline = Instant::now() + CONFIRM_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
            let Some(report) = self.next_report(transceiver, ms) else {
                continue;
            };
            if let Report::Confirmed { id: got, ok } = report {
                if got == id {
                    self.count_confirm(ok);
                    return if ok {
                        Ack::Confirmed
                    } else {
                        Ack::Rejected(ErrorName::BackendUnavailable)
                    };
                }
            }
            self.handle(relay, report);
        }
        // Its confirm may still come; it is then counted, nobody answered.
        self.unanswered.insert(id);
        log::warn!("amqp: no confirm within {CONFIRM_WAIT:?}; publisher told it failed");
        Ack::Rejected(ErrorName::BackendTimeout)
    }

    fn count_confirm(&mut self, ok: bool) {
        if ok {
            self.stats.confirmed += 1;
        } else {
            self.stats.failed += 1;
        }
    }

    fn handle(&mut self, relay: &mut Relay<ConnId>, report: Report) {
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
                if self.unanswered.remove(&id) {
                    self.count_confirm(ok);
                    if !ok {
                        log::warn!("amqp: a PULL event was not stored by RabbitMQ");
                    }
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

    /// The next report, waiting up to `timeout_ms` (0: only one already there).
    fn next_report(&self, transceiver: &Transceiver, timeout_ms: i64) -> Option<Report> {
        let socket = transceiver.socket(self.token).ok()?;
        if timeout_ms > 0 {
            let mut items = [socket.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, timeout_ms).ok()? == 0 {
                return None;
            }
        }
        let parts = socket.recv_multipart(zmq::DONTWAIT).ok()?;
        let report = Report::decode(&parts);
        if report.is_none() {
            log::warn!("amqp: unreadable report ({} parts)", parts.len());
        }
        report
    }
}
