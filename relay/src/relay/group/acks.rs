//! The sequencer's own sessions get an event only once every live peer has it (`ack`), or
//! the sync timeout passed: a sequencer killed right after numbering must not have shown
//! its clients positions the survivors never got, since the next sequencer goes on from
//! what the survivors have and would give those positions to other events.

use super::*;

/// Events numbered here that wait for acks before this member's sessions get them.
const MAX_AWAITING: usize = 100_000;

/// An event numbered here, sent to the peers, waiting for their acks.
pub(super) struct Awaiting {
    exchange: Arc<str>,
    pos: u64,
    input: EventInput,
    origin: Origin,
    /// Peers that have not acked it yet.
    peers: Vec<String>,
    /// When it was numbered.
    at: Instant,
}

impl<K: SessionKey> Relay<K> {
    /// The next position to give on `exchange`, past the events still waiting for acks.
    pub(super) fn next_position(&self, exchange: &str) -> u64 {
        let waiting = self.group.as_ref().and_then(|g| {
            g.awaiting
                .iter()
                .rev()
                .find(|a| &*a.exchange == exchange)
                .map(|a| a.pos)
        });
        waiting
            .unwrap_or(0)
            .max(self.history.last_position(exchange))
            .saturating_add(1)
    }

    /// Keeps an event numbered `pos` here until the peers it was sent to ack it; at once
    /// when there are none. Its position and local deliveries when delivered now.
    pub(super) fn await_acks(
        &mut self,
        exchange: Arc<str>,
        pos: u64,
        input: EventInput,
        origin: Origin,
    ) -> Option<(u64, usize)> {
        let g = self.group.as_mut()?;
        let peers: Vec<String> = g.members.iter().filter(|m| **m != g.me).cloned().collect();
        if peers.is_empty() && g.awaiting.is_empty() {
            return self.sequence(&exchange, &input, &origin, Some(pos));
        }
        if g.awaiting.len() >= MAX_AWAITING {
            log::warn!("relay group: too many events wait for acks; delivering the oldest");
            if let Some(front) = g.awaiting.front_mut() {
                front.peers.clear();
            }
        }
        let at = g.now;
        g.awaiting.push_back(Awaiting {
            exchange,
            pos,
            input,
            origin,
            peers,
            at,
        });
        self.release_acked();
        Some((pos, 0))
    }

    /// `from` has `exchange` up to `pos`.
    pub(super) fn acked(&mut self, from: &str, exchange: &str, pos: u64) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        for a in g
            .awaiting
            .iter_mut()
            .filter(|a| &*a.exchange == exchange && a.pos <= pos)
        {
            a.peers.retain(|p| p != from);
        }
        self.release_acked();
    }

    /// After the members changed: dead peers ack nothing.
    pub(super) fn forget_dead_peers(&mut self) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let members = &g.members;
        for a in &mut g.awaiting {
            a.peers.retain(|p| members.contains(p));
        }
        self.release_acked();
    }

    /// Delivers here, in order, the events every peer has (or that waited `sync_timeout`).
    pub(super) fn release_acked(&mut self) {
        loop {
            let Some(g) = self.group.as_mut() else {
                return;
            };
            let timeout = g.sync_timeout;
            let now = g.now;
            let ready = g
                .awaiting
                .front()
                .is_some_and(|a| a.peers.is_empty() || now >= a.at + timeout);
            if !ready {
                return;
            }
            let Some(a) = g.awaiting.pop_front() else {
                return;
            };
            if !a.peers.is_empty() {
                g.stats.ack_timeouts += 1;
                log::warn!(
                    "relay group: {} did not ack {}/{}; delivering anyway",
                    a.peers.join(", "),
                    a.exchange,
                    a.pos
                );
            }
            self.sequence(&a.exchange, &a.input, &a.origin, Some(a.pos));
        }
    }

    /// When the oldest event waiting for acks is delivered anyway.
    pub(super) fn awaiting_deadline(&self) -> Option<Instant> {
        let g = self.group.as_ref()?;
        g.awaiting.front().map(|a| a.at + g.sync_timeout)
    }
}
