//! The open WebSocket sessions and their ping bookkeeping.

use std::collections::HashMap;
use std::sync::Arc;

use super::ConnId;

#[derive(Debug, Default)]
struct Session {
    /// Anything arrived from the client since the last ping round.
    heard: bool,
    /// A ping round has included this session (it is owed an answer by the next one).
    pinged: bool,
    /// Rounds in a row that found the session silent (see [`Sessions::set_grace`]).
    missed: u8,
}

/// The sessions of every Mongrel2 server, grouped by sender so fan-out can batch per server.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_sender: HashMap<Arc<str>, HashMap<u64, Session>>,
    len: usize,
    grace: u8,
}

/// What one ping round decided for one Mongrel2 server.
pub(crate) struct PingRound {
    pub(crate) sender: Arc<str>,
    pub(crate) ping: Vec<u64>,
    pub(crate) expired: Vec<u64>,
}

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, conn: &ConnId) -> bool {
        self.by_sender
            .get(&conn.sender)
            .is_some_and(|ids| ids.contains_key(&conn.id))
    }

    /// Returns false when the session already existed.
    pub(crate) fn open(&mut self, conn: &ConnId) -> bool {
        let ids = self.by_sender.entry(conn.sender.clone()).or_default();
        let fresh = ids
            .insert(
                conn.id,
                Session {
                    heard: true,
                    pinged: false,
                    missed: 0,
                },
            )
            .is_none();
        if fresh {
            self.len += 1;
        }
        fresh
    }

    /// Returns false when there was no such session.
    pub(crate) fn close(&mut self, conn: &ConnId) -> bool {
        let Some(ids) = self.by_sender.get_mut(&conn.sender) else {
            return false;
        };
        let removed = ids.remove(&conn.id).is_some();
        if ids.is_empty() {
            self.by_sender.remove(&conn.sender);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Records that the client is alive; returns false for an unknown session.
    pub(crate) fn heard(&mut self, conn: &ConnId) -> bool {
        match self
            .by_sender
            .get_mut(&conn.sender)
            .and_then(|ids| ids.get_mut(&conn.id))
        {
            Some(session) => {
                session.heard = true;
                true
            }
            None => false,
        }
    }

    /// Every sender with open sessions and their ids.
    pub(crate) fn by_sender(&self) -> impl Iterator<Item = (&Arc<str>, Vec<u64>)> {
        self.by_sender
            .iter()
            .map(|(sender, ids)| (sender, ids.keys().copied().collect()))
    }

    /// Every open session.
    pub(crate) fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.by_sender
            .iter()
            .flat_map(|(sender, ids)| ids.keys().map(move |id| ConnId::new(sender.clone(), *id)))
    }

    /// How many silent rounds in a row a session survives (0 by default). In a handler
    /// group a client's pong can be lost with a member killed just after Mongrel2 handed
    /// it over, so there a session expires only after a second silent round.
    pub(crate) fn set_grace(&mut self, rounds: u8) {
        self.grace = rounds;
    }

    /// One ping round: sessions silent since the previous round (for more than the grace
    /// rounds) expire and are removed; every other session is due a ping and must be heard
    /// from before the next round.
    pub(crate) fn ping_round(&mut self) -> Vec<PingRound> {
        let mut rounds = Vec::with_capacity(self.by_sender.len());
        for (sender, ids) in &mut self.by_sender {
            let mut round = PingRound {
                sender: sender.clone(),
                ping: Vec::with_capacity(ids.len()),
                expired: Vec::new(),
            };
            let grace = self.grace;
            ids.retain(|id, session| {
                if session.pinged && !session.heard {
                    if session.missed >= grace {
                        round.expired.push(*id);
                        return false;
                    }
                    session.missed += 1;
                } else {
                    session.missed = 0;
                }
                session.pinged = true;
                session.heard = false;
                round.ping.push(*id);
                true
            });
            self.len -= round.expired.len();
            rounds.push(round);
        }
        self.by_sender.retain(|_, ids| !ids.is_empty());
        rounds
    }

    /// Forgets every session of one sender (its Mongrel2 connection was removed).
    pub(crate) fn remove_sender(&mut self, sender: &str) -> Vec<u64> {
        match self.by_sender.remove(sender) {
            Some(ids) => {
                self.len -= ids.len();
                ids.into_keys().collect()
            }
            None => Vec::new(),
        }
    }

    pub(crate) fn drain(&mut self) -> Vec<(Arc<str>, Vec<u64>)> {
        self.len = 0;
        self.by_sender
            .drain()
            .map(|(sender, ids)| (sender, ids.into_keys().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
