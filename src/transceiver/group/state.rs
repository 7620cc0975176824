//! The group's sans-IO state machine: membership, owners, forwarding and the shared table.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::PeerMessage;
use crate::request::{Request, RequestKind};
use crate::ConnId;

/// How many forwarded messages wait for one owner's acknowledgement before the oldest are
/// given up (with a warning): bounds memory when an owner is alive but stuck.
const MAX_UNACKED: usize = 1 << 16;
/// How many ended sessions are remembered, so a frame that reaches the owner after the
/// disconnect notice (it went round through another member) does not revive the session.
const MAX_ENDED: usize = 1 << 16;

/// How often members say they are alive, and how long a silent member is still believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTiming {
    /// Interval between heartbeats to every other member.
    pub heartbeat: Duration,
    /// A member not heard from for this long is dead; its sessions get new owners.
    pub dead_after: Duration,
}

impl GroupTiming {
    /// Four heartbeats per ping interval (between 50 ms and 1 s apart), dead after one and a
    /// half ping intervals of silence (or six heartbeats, whichever is longer), so an owner's
    /// death is noticed and its sessions adopted (and pinged) within three ping intervals.
    pub fn for_ping_interval(ping_interval: Option<Duration>) -> GroupTiming {
        let ping = ping_interval.unwrap_or(Duration::from_secs(4));
        let heartbeat = (ping / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        GroupTiming {
            heartbeat,
            dead_after: (ping * 3 / 2).max(heartbeat * 6),
        }
    }
}

/// What the member's own `Core` must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Local {
    /// Handle this Mongrel2 message.
    Handle(Vec<u8>),
    /// A disconnect notice that landed elsewhere; handle it if the core knows `conn`.
    Notice { conn: ConnId, message: Vec<u8> },
    /// This member now owns the session; the message (its handshake) stands in for it.
    Adopt(Arc<[u8]>),
}

#[derive(Debug)]
struct Peer {
    endpoint: String,
    last_heard: Instant,
}

#[derive(Debug)]
struct Entry {
    owner: String,
    message: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct Outbox {
    next_seq: u64,
    /// Sequence, session, whether it is the handshake, the message.
    unacked: VecDeque<(u64, ConnId, bool, Vec<u8>)>,
}

/// One member's view of its group.
#[derive(Debug)]
pub(crate) struct Group {
    name: String,
    endpoint: String,
    configured: Vec<String>,
    timing: GroupTiming,
    peers: HashMap<String, Peer>,
    /// Highest forward sequence received from each member (acknowledged in heartbeats).
    received: HashMap<String, u64>,
    /// Members whose forwards arrived since the last acknowledgement to them.
    ack_due: Vec<String>,
    /// Sessions whose disconnect notice this member saw, oldest first (bounded).
    ended: VecDeque<ConnId>,
    ended_set: std::collections::HashSet<ConnId>,
    table: HashMap<ConnId, Entry>,
    outboxes: HashMap<String, Outbox>,
    local: VecDeque<Local>,
    /// Application messages from other members: sender's name, body.
    app: VecDeque<(String, Vec<u8>)>,
    sends: VecDeque<(String, Vec<Vec<u8>>)>,
    next_heartbeat: Instant,
}

impl Group {
    /// A member bound at `endpoint` (the address the others reach it at), given the other
    /// members' endpoints (its own among them is skipped).
    pub(crate) fn new(
        endpoint: &str,
        peers: &[String],
        timing: GroupTiming,
        now: Instant,
    ) -> Group {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default();
        let mut configured: Vec<String> = peers
            .iter()
            .filter(|peer| *peer != endpoint)
            .cloned()
            .collect();
        configured.dedup();
        Group {
            name: format!("{endpoint}#{}-{nonce}", std::process::id()),
            endpoint: endpoint.to_owned(),
            configured,
            timing,
            peers: HashMap::new(),
            received: HashMap::new(),
            ack_due: Vec::new(),
            ended: VecDeque::new(),
            ended_set: std::collections::HashSet::new(),
            table: HashMap::new(),
            outboxes: HashMap::new(),
            local: VecDeque::new(),
            app: VecDeque::new(),
            sends: VecDeque::new(),
            next_heartbeat: now,
        }
    }

    /// This member's name on the wire.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Every session of the group.
    pub(crate) fn sessions(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.table.keys().cloned()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_session(&self, conn: &ConnId) -> bool {
        self.table.contains_key(conn)
    }

    /// How many members are alive, this one included.
    pub(crate) fn live_members(&self) -> usize {
        self.peers.len() + 1
    }

    /// The live members' names (this one included), sorted.
    pub(crate) fn member_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.peers.keys().cloned().collect();
        names.push(self.name.clone());
        names.sort();
        names
    }

    /// Queues an application message for the live member `to`; false when it is not one.
    pub(crate) fn send_app(&mut self, to: &str, body: Vec<u8>) -> bool {
        let Some(peer) = self.peers.get(to) else {
            return false;
        };
        let message = PeerMessage::App {
            from: self.name.clone(),
            body,
        };
        self.sends
            .push_back((peer.endpoint.clone(), message.encode()));
        true
    }

    /// The next application message from another member: its name and the body.
    pub(crate) fn poll_app(&mut self) -> Option<(String, Vec<u8>)> {
        self.app.pop_front()
    }

    pub(crate) fn poll_local(&mut self) -> Option<Local> {
        self.local.pop_front()
    }

    /// The next message for another member: its endpoint and frames.
    pub(crate) fn poll_send(&mut self) -> Option<(String, Vec<Vec<u8>>)> {
        self.sends.pop_front()
    }

    pub(crate) fn next_timeout(&self) -> Instant {
        self.next_heartbeat
    }

    /// One message Mongrel2 handed to this member.
    pub(crate) fn on_mongrel2(&mut self, message: Vec<u8>) {
        let routed = match Request::parse(&message) {
            Ok(request) => match request.kind() {
                Ok(RequestKind::WebSocketHandshake { .. }) => {
                    Some((ConnId::of(&request), Some(true)))
                }
                Ok(RequestKind::WebSocketFrame { .. }) => Some((ConnId::of(&request), Some(false))),
                Ok(RequestKind::Disconnect) => Some((ConnId::of(&request), None)),
                _ => None,
            },
            Err(_) => None,
        };
        match routed {
            None => self.local.push_back(Local::Handle(message)),
            // The table entry goes when the owner's core closes the session and says so:
            // only the owner's announcements are ordered after its `open`.
            Some((conn, None)) => {
                self.ended(conn.clone());
                let notice = PeerMessage::Disconnect {
                    from: self.name.clone(),
                    message: message.clone(),
                }
                .encode();
                self.send_to_every_peer(&notice);
                self.local.push_back(Local::Handle(message));
            }
            Some((conn, Some(handshake))) => self.route(conn, handshake, message),
        }
    }

    /// The owner's `Core` opened (or adopted) `conn` on `message`: tell every member.
    pub(crate) fn opened(&mut self, conn: ConnId, message: &[u8]) {
        let message: Arc<[u8]> = Arc::from(message);
        let announce = PeerMessage::Open {
            from: self.name.clone(),
            owner: self.name.clone(),
            message: message.to_vec(),
        }
        .encode();
        self.send_to_every_peer(&announce);
        self.table.insert(
            conn,
            Entry {
                owner: self.name.clone(),
                message,
            },
        );
    }

    /// The owner's `Core` closed `conn`: every member forgets it.
    pub(crate) fn closed(&mut self, conn: &ConnId) {
        if self.table.remove(conn).is_some() {
            let announce = PeerMessage::Close {
                from: self.name.clone(),
                sender: conn.sender.to_string(),
                id: conn.id,
            }
            .encode();
            self.send_to_every_peer(&announce);
        }
    }

    /// One message from another member.
    pub(crate) fn on_peer(&mut self, frames: &[Vec<u8>], now: Instant) {
        let message = match PeerMessage::decode(frames) {
            Ok(message) => message,
            Err(err) => {
                log::warn!("skipping group message: {err}");
                return;
            }
        };
        match message {
            PeerMessage::Heartbeat {
                from,
                endpoint,
                acked,
                to,
            } => {
                if from == self.name {
                    return;
                }
                self.heard_heartbeat(&from, endpoint, now);
                if to == self.name {
                    if let Some(outbox) = self.outboxes.get_mut(&from) {
                        while outbox
                            .unacked
                            .front()
                            .is_some_and(|(seq, ..)| *seq <= acked)
                        {
                            outbox.unacked.pop_front();
                        }
                    }
                }
            }
            PeerMessage::Forward { from, seq, message } => {
                self.heard(&from, now);
                let received = self.received.entry(from.clone()).or_default();
                *received = (*received).max(seq);
                if !self.ack_due.contains(&from) {
                    self.ack_due.push(from);
                }
                self.handle_owned(message);
            }
            PeerMessage::Disconnect { from, message } => {
                self.heard(&from, now);
                let Ok(request) = Request::parse(&message) else {
                    return;
                };
                let conn = ConnId::of(&request);
                self.ended(conn.clone());
                self.local.push_back(Local::Notice { conn, message });
            }
            PeerMessage::Open {
                from,
                owner,
                message,
            } => {
                self.heard(&from, now);
                let Ok(request) = Request::parse(&message) else {
                    return;
                };
                let conn = ConnId::of(&request);
                let message = Arc::from(message);
                self.table.insert(conn, Entry { owner, message });
            }
            PeerMessage::Close { from, sender, id } => {
                self.heard(&from, now);
                self.table.remove(&ConnId::new(sender, id));
            }
            // Only from members this one knows: a message from one it has not heard a
            // heartbeat from (or has declared dead) has no place in the application's view.
            PeerMessage::App { from, body } if self.peers.contains_key(&from) => {
                self.heard(&from, now);
                self.app.push_back((from, body));
            }
            PeerMessage::App { from, .. } => {
                log::debug!("skipping an application message from unknown member {from}");
            }
        }
    }

    /// Heartbeats when due, and the deaths of members silent too long.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.next_heartbeat <= now {
            self.next_heartbeat = now + self.timing.heartbeat;
            self.send_heartbeats();
        }
        let dead: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| {
                now.saturating_duration_since(peer.last_heard) > self.timing.dead_after
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in dead {
            log::warn!("group member {name} is silent: taking over its sessions");
            self.remove_member(&name);
        }
    }

    /// Acknowledges at once the forwards received since the last call, so a forwarder
    /// keeps (and after a death re-delivers) as little as possible.
    pub(crate) fn send_acks(&mut self) {
        for name in std::mem::take(&mut self.ack_due) {
            let Some(peer) = self.peers.get(&name) else {
                continue;
            };
            let beat = PeerMessage::Heartbeat {
                from: self.name.clone(),
                endpoint: self.endpoint.clone(),
                acked: self.received.get(&name).copied().unwrap_or(0),
                to: name,
            };
            self.sends.push_back((peer.endpoint.clone(), beat.encode()));
        }
    }

    fn send_heartbeats(&mut self) {
        let mut targets: Vec<(String, String)> = self
            .peers
            .iter()
            .map(|(name, peer)| (peer.endpoint.clone(), name.clone()))
            .collect();
        for endpoint in &self.configured {
            if !targets.iter().any(|(known, _)| known == endpoint) {
                targets.push((endpoint.clone(), String::new()));
            }
        }
        for (endpoint, to) in targets {
            let acked = self.received.get(&to).copied().unwrap_or(0);
            let beat = PeerMessage::Heartbeat {
                from: self.name.clone(),
                endpoint: self.endpoint.clone(),
                acked,
                to,
            };
            self.sends.push_back((endpoint, beat.encode()));
        }
    }

    fn heard(&mut self, from: &str, now: Instant) {
        if let Some(peer) = self.peers.get_mut(from) {
            peer.last_heard = now;
        }
    }

    fn heard_heartbeat(&mut self, from: &str, endpoint: String, now: Instant) {
        if let Some(peer) = self.peers.get_mut(from) {
            peer.last_heard = now;
            return;
        }
        // A member restarted on the same endpoint: its previous life is over.
        let previous: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.endpoint == endpoint)
            .map(|(name, _)| name.clone())
            .collect();
        for name in previous {
            self.remove_member(&name);
        }
        log::info!("group member {from} joined at {endpoint}");
        self.peers.insert(
            from.to_owned(),
            Peer {
                endpoint: endpoint.clone(),
                last_heard: now,
            },
        );
        // A newcomer learns the sessions this member owns (each owner tells its own).
        let owned: Vec<Vec<Vec<u8>>> = self
            .table
            .values()
            .filter(|entry| entry.owner == self.name)
            .map(|entry| {
                PeerMessage::Open {
                    from: self.name.clone(),
                    owner: self.name.clone(),
                    message: entry.message.to_vec(),
                }
                .encode()
            })
            .collect();
        for announce in owned {
            self.sends.push_back((endpoint.clone(), announce));
        }
        // Answer at once so the newcomer need not wait a heartbeat to route to us.
        self.next_heartbeat = now;
    }

    fn remove_member(&mut self, name: &str) {
        self.peers.remove(name);
        self.received.remove(name);
        let orphans: Vec<ConnId> = self
            .table
            .iter()
            .filter(|(_, entry)| entry.owner == name)
            .map(|(conn, _)| conn.clone())
            .collect();
        for conn in orphans {
            let owner = self.rendezvous(&conn);
            let Some(entry) = self.table.get_mut(&conn) else {
                continue;
            };
            entry.owner = owner.clone();
            if owner == self.name {
                if self.ended_set.contains(&conn) {
                    self.closed(&conn);
                    continue;
                }
                log::info!("adopting session {conn} from {name}");
                self.local.push_back(Local::Adopt(entry.message.clone()));
            }
        }
        // Whatever the dead owner had not acknowledged goes to the sessions' new owners.
        if let Some(outbox) = self.outboxes.remove(name) {
            for (_, conn, handshake, message) in outbox.unacked {
                // An announced session's handshake was answered: answering it twice would
                // put a second `101` in the client's stream.
                if handshake && self.table.contains_key(&conn) {
                    continue;
                }
                log::debug!("re-delivering {conn}'s message that {name} had not acknowledged");
                self.route(conn, handshake, message);
            }
        }
    }

    /// The session's owner: the recorded one while it lives, else the rendezvous choice.
    fn owner_of(&self, conn: &ConnId) -> String {
        match self.table.get(conn) {
            Some(entry) if entry.owner == self.name || self.peers.contains_key(&entry.owner) => {
                entry.owner.clone()
            }
            _ => self.rendezvous(conn),
        }
    }

    fn route(&mut self, conn: ConnId, handshake: bool, message: Vec<u8>) {
        let owner = self.owner_of(&conn);
        if owner == self.name {
            self.handle_owned(message);
            return;
        }
        let Some(endpoint) = self.peers.get(&owner).map(|peer| peer.endpoint.clone()) else {
            self.local.push_back(Local::Handle(message));
            return;
        };
        let outbox = self.outboxes.entry(owner.clone()).or_default();
        outbox.next_seq += 1;
        let seq = outbox.next_seq;
        if outbox.unacked.len() >= MAX_UNACKED {
            outbox.unacked.pop_front();
            log::warn!(
                "group member {owner} is not acknowledging; dropping the oldest retained forward"
            );
        }
        if handshake {
            log::debug!("handshake of {conn} goes to its owner {owner} (forward {seq})");
        }
        outbox
            .unacked
            .push_back((seq, conn, handshake, message.clone()));
        let forward = PeerMessage::Forward {
            from: self.name.clone(),
            seq,
            message,
        };
        self.sends.push_back((endpoint, forward.encode()));
    }

    /// A session message this member owns goes to its core, unless the session ended (a
    /// handshake starts it anew: Mongrel2 reuses connection ids).
    fn handle_owned(&mut self, message: Vec<u8>) {
        if !self.ended_set.is_empty() {
            if let Ok(request) = Request::parse(&message) {
                let conn = ConnId::of(&request);
                if self.ended_set.contains(&conn) {
                    if matches!(request.kind(), Ok(RequestKind::WebSocketHandshake { .. })) {
                        self.ended_set.remove(&conn);
                    } else {
                        log::debug!("dropping a late frame of ended session {conn}");
                        return;
                    }
                }
            }
        }
        self.local.push_back(Local::Handle(message));
    }

    fn ended(&mut self, conn: ConnId) {
        if self.ended_set.insert(conn.clone()) {
            self.ended.push_back(conn);
        }
        while self.ended.len() > MAX_ENDED {
            if let Some(old) = self.ended.pop_front() {
                self.ended_set.remove(&old);
            }
        }
    }

    fn send_to_every_peer(&mut self, frames: &[Vec<u8>]) {
        for peer in self.peers.values() {
            self.sends
                .push_back((peer.endpoint.clone(), frames.to_vec()));
        }
    }

    /// Rendezvous (highest random weight) hashing over the live members.
    fn rendezvous(&self, conn: &ConnId) -> String {
        let mut best = (score(&self.name, conn), &self.name);
        for name in self.peers.keys() {
            let candidate = (score(name, conn), name);
            if candidate > best {
                best = candidate;
            }
        }
        best.1.clone()
    }
}

/// Nearby conn ids must spread: [`stable_hash`](super::stable_hash) finalises its FNV-1a.
fn score(member: &str, conn: &ConnId) -> u64 {
    let id = conn.id.to_be_bytes();
    super::stable_hash(&[member.as_bytes(), &[0], conn.sender.as_bytes(), &id])
}

#[cfg(test)]
mod tests;
