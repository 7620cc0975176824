//! The relay as a member of a group of relays (see the [`group`](crate::group) module for
//! the design and wire format): routing publishes to each exchange's sequencer, keeping the
//! numbered events members send, and the tips exchange (and epoch) after the membership
//! changes.
//! Sans IO: the loop tells the relay the live members and the messages that arrived, and
//! sends what [`Relay::take_group_sends`] returns.

use std::collections::HashMap;

use super::*;
use crate::group::{sequencer, Message, ENVELOPE, MAX_TIPS};
use crate::metrics::GroupStats;

use super::publish::now_ms;

mod acks;

/// Publishes kept while the group is settling (or syncing) before the oldest are dropped.
const MAX_HELD: usize = 100_000;
/// Forwarded publishes kept until their numbered event comes back.
const MAX_UNCONFIRMED: usize = 100_000;
/// How often a publish may be forwarded between members whose views disagree.
const MAX_GROUP_HOPS: u32 = 4;
/// Exchanges remembered from one peer's tips (chunks beyond are dropped: a hostile peer).
const MAX_PEER_TIPS: usize = 1 << 16;

/// A publish on its way to its exchange's sequencer: its exchange, the event (origin and time
/// set), how often members forwarded it, and whether it was published to this member
/// (admitted here, and kept until its numbered event comes back).
struct Pending {
    exchange: Arc<str>,
    input: EventInput,
    hops: u32,
    local: bool,
}

impl Pending {
    fn origin(&self) -> (&str, u64) {
        self.input
            .origin
            .as_ref()
            .map_or(("", 0), |o| (o.relay.as_str(), o.seq))
    }
}

/// What the peer said in its last complete tips: its members, its epoch, and exchange ->
/// newest position.
struct PeerTips {
    members: Vec<String>,
    epoch: String,
    tips: HashMap<String, u64>,
}

impl PeerTips {
    fn has_positions(&self) -> bool {
        self.tips.values().any(|pos| *pos > 0)
    }
}

pub(crate) struct GroupState {
    me: String,
    /// Live members (this one included), sorted, as the library sees them.
    members: Vec<String>,
    /// How many members are configured (this one included): the group has formed once
    /// that many are live, or `settle_until` passed.
    expected: usize,
    settle_until: Instant,
    sync_timeout: Duration,
    /// When numbering may start at the latest, once the group has formed; `None` when synced.
    syncing_until: Option<Instant>,
    partial: HashMap<String, PeerTips>,
    tips: HashMap<String, PeerTips>,
    held: VecDeque<Pending>,
    unconfirmed: VecDeque<Pending>,
    awaiting: VecDeque<acks::Awaiting>,
    /// The latest time the loop gave.
    now: Instant,
    sends: VecDeque<(String, Vec<u8>)>,
    /// This member took its epoch from a peer that had positions (see the group module).
    epoch_from_peer: bool,
    stats: GroupStats,
}

impl<K: SessionKey> Relay<K> {
    /// Makes this relay the member `me` of a group of relays with `expected` members
    /// (itself included) configured. Nothing is numbered until they are all live or
    /// `settle` passed, and after a change of members until they agree (or `sync_timeout`).
    pub fn enable_group(
        &mut self,
        me: &str,
        expected: usize,
        settle: Duration,
        sync_timeout: Duration,
        now: Instant,
    ) {
        self.group = Some(GroupState {
            me: me.to_owned(),
            members: vec![me.to_owned()],
            expected: expected.max(1),
            settle_until: now + settle,
            sync_timeout,
            syncing_until: Some(now + settle + sync_timeout),
            partial: HashMap::new(),
            tips: HashMap::new(),
            held: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            awaiting: VecDeque::new(),
            now,
            sends: VecDeque::new(),
            epoch_from_peer: false,
            stats: GroupStats::default(),
        });
        self.welcome.member = Some(me.to_owned());
    }

    /// The live members as the group sees them now (sorted, this one included).
    pub fn group_members(&mut self, members: Vec<String>, now: Instant) {
        let Some(g) = &mut self.group else {
            return;
        };
        if g.members == members {
            return;
        }
        log::info!("relay group members: {}", members.join(", "));
        g.members = members;
        g.now = g.now.max(now);
        g.stats.membership_changes += 1;
        if g.syncing_until.is_none() {
            g.syncing_until = Some(now + g.sync_timeout);
        }
        self.forget_dead_peers();
        self.send_tips(None, false);
        self.group_tick(now);
    }

    /// Timers: the group forming, the sync timeout.
    pub fn group_tick(&mut self, now: Instant) {
        let Some(g) = &mut self.group else {
            return;
        };
        g.now = g.now.max(now);
        self.release_acked();
        let Some(g) = &mut self.group else {
            return;
        };
        let Some(until) = g.syncing_until else {
            return;
        };
        let formed = g.members.len() >= g.expected || now >= g.settle_until;
        if !formed {
            return;
        }
        // A peer of another epoch (it had positions of its own) has nothing to catch up with.
        let agreed = g.members.iter().filter(|m| **m != g.me).all(|peer| {
            g.tips.get(peer).is_some_and(|t| {
                t.members == g.members
                    && (t.epoch != *self.epoch
                        || t.tips
                            .iter()
                            .all(|(e, pos)| self.history.last_position(e) >= *pos))
            })
        });
        if !agreed && now < until {
            return;
        }
        if !agreed {
            log::warn!("relay group: peers did not agree in time; numbering anyway");
            g.stats.sync_timeouts += 1;
        }
        g.syncing_until = None;
        // What waited goes out in order: forwards that may have been lost first, then the
        // publishes held meanwhile.
        let mut waiting: Vec<Pending> = g.unconfirmed.drain(..).collect();
        g.stats.resent += waiting.len() as u64;
        waiting.extend(g.held.drain(..));
        for pending in waiting {
            self.route(pending);
        }
    }

    /// When [`Relay::group_tick`] must run next.
    pub fn group_deadline(&self) -> Option<Instant> {
        let g = self.group.as_ref()?;
        let sync = g.syncing_until.map(|until| {
            if g.members.len() >= g.expected {
                until
            } else {
                until.min(g.settle_until)
            }
        });
        match (sync, self.awaiting_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Messages for other members: (member, body).
    pub fn take_group_sends(&mut self) -> Vec<(String, Vec<u8>)> {
        self.group
            .as_mut()
            .map_or_else(Vec::new, |g| g.sends.drain(..).collect())
    }

    /// Group counters for status (`None` outside a group).
    pub fn group_stats(&self) -> Option<GroupStats> {
        self.group.as_ref().map(|g| GroupStats {
            member: g.me.clone(),
            members: g.members.clone(),
            synced: g.syncing_until.is_none(),
            held: g.held.len(),
            unconfirmed: g.unconfirmed.len(),
            awaiting: g.awaiting.len(),
            ..g.stats.clone()
        })
    }

    /// A message from the member `from`.
    pub fn group_message(&mut self, from: &str, body: &[u8], now: Instant) {
        let limit = self.config.limits.message_size + LINK_ENVELOPE;
        let max_body = (limit + ENVELOPE).max(MAX_TIPS * (2 * MAX_ROUTING_KEY + 64));
        let message = match Message::decode(body, max_body, limit) {
            Ok(message) => message,
            Err(e) => {
                log::warn!("relay group: skipping a message from {from}: {e}");
                return;
            }
        };
        let Some(g) = &mut self.group else {
            return;
        };
        g.now = g.now.max(now);
        match message {
            Message::Publish { hops, event } => {
                g.stats.received_publishes += 1;
                match self.config.exchange(&event.exchange) {
                    Some((exchange, _)) => {
                        let exchange = exchange.clone();
                        self.route(Pending {
                            exchange,
                            input: event,
                            hops,
                            local: false,
                        });
                    }
                    None => log::warn!("relay group: {from} sent an unknown exchange"),
                }
            }
            Message::Event { seq, event } => self.numbered(from, seq, event),
            Message::Ack { exchange, seq } => self.acked(from, &exchange, seq),
            Message::Tips {
                members,
                epoch,
                tips,
                last,
                reply,
            } => {
                let partial = g.partial.entry(from.to_owned()).or_insert(PeerTips {
                    members: Vec::new(),
                    epoch: String::new(),
                    tips: HashMap::new(),
                });
                partial.members = members;
                partial.epoch = epoch;
                if partial.tips.len() + tips.len() <= MAX_PEER_TIPS {
                    partial.tips.extend(tips);
                }
                if last {
                    if let Some(complete) = g.partial.remove(from) {
                        self.peer_tips(from, complete, reply);
                    }
                }
            }
        }
        self.group_tick(now);
    }

    /// A local publish (admitted, origin set): numbered here when this member is its exchange's
    /// sequencer and the group is settled, otherwise forwarded or held.
    pub(super) fn group_publish(
        &mut self,
        exchange: Arc<str>,
        mut input: EventInput,
        origin: Origin,
    ) -> Published {
        input.ts = Some(input.ts.unwrap_or_else(now_ms));
        input.origin = Some(origin.clone());
        let pending = Pending {
            exchange,
            input,
            hops: 0,
            local: true,
        };
        match self.route(pending) {
            Some((seq, delivered_to)) => Published::Delivered {
                seq,
                delivered_to,
                origin,
            },
            None => Published::Forwarded,
        }
    }

    /// Numbers, forwards or holds a publish; the seq and local deliveries when numbered here.
    fn route(&mut self, pending: Pending) -> Option<(u64, usize)> {
        let g = self.group.as_mut()?;
        let (origin_relay, origin_seq) = pending.origin();
        // Published to this member (now, or before it went round members whose views
        // disagreed): admitted here already.
        let mine = origin_relay == &*self.origin_id;
        if g.syncing_until.is_some() {
            if g.held.len() >= MAX_HELD {
                g.held.pop_front();
                g.stats.dropped += 1;
                log::warn!("relay group: too many publishes held; dropping the oldest");
            }
            g.held.push_back(pending);
            return None;
        }
        let (e, k) = (&*pending.exchange, pending.input.routing_key.as_str());
        let to = sequencer(&g.members, e).map(str::to_owned)?;
        if to == g.me {
            // Our own publishes were admitted already; anyone else's is checked for repeats
            // by its origin.
            let origin = if mine {
                let at = g
                    .unconfirmed
                    .iter()
                    .position(|p| p.origin() == (origin_relay, origin_seq));
                if let Some(at) = at {
                    g.unconfirmed.remove(at);
                }
                pending.input.origin.clone()
            } else {
                match self.admit(&pending.input) {
                    Ok(Some((_, origin))) => Some(origin),
                    Ok(None) => None,
                    Err(e) => {
                        log::warn!("relay group: a forwarded event is refused: {e}");
                        None
                    }
                }
            };
            let origin = origin?;
            // After a sync that timed out this member may lack positions a peer of its
            // epoch has: number past them (a gap resumes as `recovered: false`) rather than
            // give a position twice.
            let epoch = &*self.epoch;
            let floor = self.group.as_ref().and_then(|g| {
                g.tips
                    .values()
                    .filter(|t| t.epoch == epoch)
                    .filter_map(|t| t.tips.get(e))
                    .max()
            });
            let next = self.next_position(e);
            let at = floor
                .filter(|floor| **floor >= next)
                .map_or(next, |floor| floor.saturating_add(1));
            if at > next {
                log::warn!(
                    "relay group: numbering {e} from {at} (key {k}): the positions before are missing here"
                );
            }
            // Stamped now, as `sequence` would, so every member keeps the same time.
            let mut input = pending.input;
            input.ts = Some(input.ts.unwrap_or_else(now_ms));
            let body = Message::Event {
                seq: at,
                event: input.clone(),
            }
            .encode();
            let g = self.group.as_mut()?;
            g.stats.sequenced += 1;
            for peer in g.members.iter().filter(|m| **m != g.me) {
                g.sends.push_back((peer.clone(), body.clone()));
            }
            return self.await_acks(pending.exchange, at, input, origin);
        }
        if pending.hops >= MAX_GROUP_HOPS {
            log::warn!("relay group: a publish went round {MAX_GROUP_HOPS} members; dropped");
            g.stats.dropped += 1;
            return None;
        }
        let body = Message::Publish {
            hops: pending.hops + 1,
            event: pending.input.clone(),
        }
        .encode();
        g.sends.push_back((to, body));
        g.stats.forwarded += 1;
        if pending.local {
            if g.unconfirmed.len() >= MAX_UNCONFIRMED {
                g.unconfirmed.pop_front();
            }
            g.unconfirmed.push_back(pending);
        }
        None
    }

    /// A numbered event from `from` (its sequencer, or a repair): kept and delivered unless
    /// this member is at or past that position already.
    fn numbered(&mut self, from: &str, seq: u64, input: EventInput) {
        let Some(exchange) = self
            .config
            .exchange(&input.exchange)
            .map(|(e, _)| e.clone())
        else {
            log::warn!("relay group: {from} sent an event on an unknown exchange");
            return;
        };
        let Some(origin) = input.origin.clone() else {
            return;
        };
        // Seen now: a forward of it that reaches this member later is a repeat.
        self.dedupe.first_time(&origin.relay, origin.seq);
        let Some(g) = self.group.as_mut() else {
            return;
        };
        if *origin.relay == *self.origin_id {
            let key = (origin.relay.as_str(), origin.seq);
            if let Some(at) = g.unconfirmed.iter().position(|p| p.origin() == key) {
                g.unconfirmed.remove(at);
            }
        }
        // Acked even when a repeat: the sequencer delivers to its own sessions once every
        // peer has the event.
        let ack = Message::Ack {
            exchange: exchange.to_string(),
            seq,
        }
        .encode();
        if let Some(g) = self.group.as_mut() {
            g.sends.push_back((from.to_owned(), ack));
        }
        if self
            .record(&exchange, &input, input.ts, &origin, Some(seq))
            .is_some()
        {
            if let Some(g) = self.group.as_mut() {
                g.stats.received_events += 1;
            }
        }
    }

    /// A peer's complete tips: take its epoch if this member has numbered nothing, send it
    /// what it lacks, and ask for what we lack.
    fn peer_tips(&mut self, from: &str, peer: PeerTips, reply: bool) {
        self.adopt_epoch(from, &peer);
        // Answered whatever they say: our own tips may have reached the peer before it knew
        // this member (and were dropped), and without them it cannot finish its sync. Sent
        // before any repair, so a peer that takes our epoch has it before our events.
        if !reply {
            self.send_tips(Some(from), true);
        }
        // A peer with positions of another epoch keeps them: they are not ours to repair.
        let repairable = peer.epoch == *self.epoch || !peer.has_positions();
        let mut repairs = Vec::new();
        let all = Pattern::Prefix("".into());
        for (e, mine) in self.history.tips().into_iter().filter(|_| repairable) {
            let have = peer.tips.get(&*e).copied().unwrap_or(0);
            if mine > have {
                for (seq, k, encoded) in self.history.since(&e, &all, have).events {
                    if let Some(event) = repaired(&e, &k, &encoded) {
                        repairs.push(Message::Event { seq, event }.encode());
                    }
                }
            }
        }
        let Some(g) = self.group.as_mut() else {
            return;
        };
        g.stats.repairs_sent += repairs.len() as u64;
        for body in repairs {
            g.sends.push_back((from.to_owned(), body));
        }
        g.tips.insert(from.to_owned(), peer);
    }

    /// The group's epoch rule (see the group module): a member with no positions takes the
    /// smallest epoch of the peers that have some, or else the smallest of all.
    fn adopt_epoch(&mut self, from: &str, peer: &PeerTips) {
        if self.history.has_positions() || peer.epoch.is_empty() || peer.epoch == *self.epoch {
            return;
        }
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let take = if peer.has_positions() {
            !g.epoch_from_peer || *peer.epoch < *self.epoch
        } else {
            !g.epoch_from_peer && *peer.epoch < *self.epoch
        };
        if take {
            g.epoch_from_peer |= peer.has_positions();
            log::info!("relay group: epoch {} (from {from})", peer.epoch);
            self.epoch = Arc::from(peer.epoch.as_str());
        }
    }

    /// Sends this member's tips to `to` (every peer when `None`).
    fn send_tips(&mut self, to: Option<&str>, reply: bool) {
        let tips: Vec<(String, u64)> = self
            .history
            .tips()
            .into_iter()
            .map(|(e, pos)| (e.to_string(), pos))
            .collect();
        let epoch = self.epoch.to_string();
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let peers: Vec<String> = match to {
            Some(to) => vec![to.to_owned()],
            None => g.members.iter().filter(|m| **m != g.me).cloned().collect(),
        };
        let chunks: Vec<&[(String, u64)]> = if tips.is_empty() {
            vec![&[]]
        } else {
            tips.chunks(MAX_TIPS).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let body = Message::Tips {
                members: g.members.clone(),
                epoch: epoch.clone(),
                tips: chunk.to_vec(),
                last: i + 1 == chunks.len(),
                reply,
            }
            .encode();
            for peer in &peers {
                g.sends.push_back((peer.clone(), body.clone()));
            }
        }
    }
}

/// The event input a stored event was made from (for a repair), from its client JSON.
fn repaired(exchange: &str, routing_key: &str, encoded: &Encoded) -> Option<EventInput> {
    let Ok(Value::Object(mut json)) = serde_json::from_slice::<Value>(encoded.json()) else {
        return None;
    };
    let (relay, seq) = encoded.origin()?;
    let event = match json.remove("event") {
        Some(Value::String(event)) => event,
        _ => return None,
    };
    let payload = match json.remove("payload") {
        Some(Value::Object(payload)) => payload,
        _ => Map::new(),
    };
    let ts = json
        .get("mq")
        .and_then(|mq| mq.get("ts"))
        .and_then(Value::as_u64);
    Some(EventInput {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        event,
        payload,
        origin: Some(Origin {
            relay: relay.to_string(),
            seq,
            hops: 0,
        }),
        ts: Some(ts.unwrap_or(0)),
    })
}
