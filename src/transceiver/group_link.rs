//! The ZeroMQ side of a handler group (see the [`group`](super::group) module): the
//! member's bound PULL, a PUSH per other member, and the pumping between the [`Group`]
//! state machine and the loop's [`Core`](super::Core).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::command::Outbound;
use super::core::Core;
use super::group::{Group, GroupTiming, Local};
use super::{ConnId, Error, Event, Transceiver};

/// How many group messages one readable PULL may deliver before the loop's other work.
const PEER_BATCH: usize = 256;
/// How many messages may queue for one member before sends to it are dropped (the
/// forwarder keeps them for re-delivery until the owner acknowledges).
const PEER_HWM: i32 = 100_000;

/// A member's sockets and state.
pub(crate) struct GroupLink {
    pub(crate) group: Group,
    pub(crate) pull: zmq::Socket,
    pushes: HashMap<String, zmq::Socket>,
    context: zmq::Context,
}

impl GroupLink {
    pub(crate) fn open(
        context: &zmq::Context,
        bind: &str,
        peers: &[String],
        timing: GroupTiming,
        now: Instant,
    ) -> Result<GroupLink, Error> {
        let pull = context.socket(zmq::PULL)?;
        pull.set_linger(0)?;
        pull.set_rcvhwm(PEER_HWM)?;
        pull.bind(bind)?;
        // The real port when bound to `:0`; otherwise the endpoint exactly as the peers know it.
        let endpoint = if bind.ends_with(":0") || bind.ends_with(":*") {
            pull.get_last_endpoint()?
                .unwrap_or_else(|_| bind.to_owned())
        } else {
            bind.to_owned()
        };
        let group = Group::new(&endpoint, peers, timing, now);
        log::info!("group member {} bound at {endpoint}", group.name());
        Ok(GroupLink {
            group,
            pull,
            pushes: HashMap::new(),
            context: context.clone(),
        })
    }

    /// Reads what other members sent (one batch).
    pub(crate) fn drain_peers(&mut self, now: Instant) {
        for _ in 0..PEER_BATCH {
            match self.pull.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => self.group.on_peer(&frames, now),
                Err(zmq::Error::EAGAIN) => return,
                Err(err) => {
                    log::warn!("receiving from the group: {err}");
                    return;
                }
            }
        }
    }

    /// Hands the group's local work to the core, collecting the core's events into
    /// `events` (telling the group which sessions opened and closed), then writes what the
    /// group has for other members.
    pub(crate) fn pump(&mut self, core: &mut Core, events: &mut VecDeque<Event>) {
        loop {
            self.collect(core, events, None);
            let Some(local) = self.group.poll_local() else {
                break;
            };
            match local {
                Local::Handle(message) => {
                    core.handle_message("group", &message);
                    self.collect(core, events, Some(&message));
                }
                Local::Notice { conn, message } => {
                    if core.knows(&conn) {
                        core.handle_message("group", &message);
                    }
                }
                Local::Adopt(message) => {
                    core.adopt(&message);
                    self.collect(core, events, Some(&message));
                }
            }
        }
        while let Some((from, body)) = self.group.poll_app() {
            events.push_back(Event::GroupMessage { from, body });
        }
        self.group.send_acks();
        while let Some((endpoint, frames)) = self.group.poll_send() {
            if let Err(err) = self.send(&endpoint, frames) {
                log::debug!("group message to {endpoint} not sent: {err}");
            }
        }
    }

    fn collect(&mut self, core: &mut Core, events: &mut VecDeque<Event>, source: Option<&[u8]>) {
        while let Some(event) = core.poll_event() {
            match &event {
                Event::Opened { conn, .. } => {
                    if let Some(message) = source {
                        self.group.opened(conn.clone(), message);
                    }
                }
                Event::Closed { conn, .. } => self.group.closed(conn),
                _ => {}
            }
            events.push_back(event);
        }
    }

    fn send(&mut self, endpoint: &str, frames: Vec<Vec<u8>>) -> Result<(), Error> {
        if !self.pushes.contains_key(endpoint) {
            let push = self.context.socket(zmq::PUSH)?;
            push.set_linger(0)?;
            push.set_sndhwm(PEER_HWM)?;
            // Nothing queues for a member that is not connected: a dead one must not get a
            // backlog of stale messages when something restarts on its endpoint.
            push.set_immediate(true)?;
            push.connect(endpoint)?;
            self.pushes.insert(endpoint.to_owned(), push);
        }
        let push = &self.pushes[endpoint];
        push.send_multipart(frames, zmq::DONTWAIT)?;
        Ok(())
    }
}

impl Transceiver {
    /// Every open WebSocket session (in a group: the whole group's).
    pub fn sessions(&self) -> impl Iterator<Item = ConnId> + '_ {
        let group = self.group.as_ref().map(|link| link.group.sessions());
        let own = self.group.is_none().then(|| self.core.sessions());
        group.into_iter().flatten().chain(own.into_iter().flatten())
    }

    /// How many WebSocket sessions are open (in a group: the whole group's).
    pub fn session_count(&self) -> usize {
        match &self.group {
            Some(link) => link.group.session_count(),
            None => self.core.session_count(),
        }
    }

    /// How many WebSocket sessions this process owns (in a group, the ones it pings and
    /// whose messages it receives; otherwise all of them).
    pub fn owned_session_count(&self) -> usize {
        self.core.session_count()
    }

    /// How many members of the handler group are alive, this one included (1 without a
    /// group).
    pub fn group_members(&self) -> usize {
        self.group
            .as_ref()
            .map_or(1, |link| link.group.live_members())
    }

    /// This member's name in its handler group (its endpoint, `#`, a per-process nonce), as
    /// [`group_member_names`](Self::group_member_names) and [`Event::GroupMessage`] name it;
    /// `None` without a group.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_ref().map(|link| link.group.name())
    }

    /// The names of the live members of the handler group, this one included, sorted (empty
    /// without a group). Every member computes the same list once heartbeats have settled,
    /// so an application can choose a member for something by hashing over it.
    pub fn group_member_names(&self) -> Vec<String> {
        self.group
            .as_ref()
            .map_or_else(Vec::new, |link| link.group.member_names())
    }

    /// Sends `body` to the live group member named `to`, which receives it as an
    /// [`Event::GroupMessage`]. Messages from one member to another arrive in the order sent
    /// (none arrive after the sender has been declared dead); false when `to` is not a live
    /// member (or there is no group). Written on the next turn of the loop.
    pub fn group_send(&mut self, to: &str, body: Vec<u8>) -> bool {
        self.group
            .as_mut()
            .is_some_and(|link| link.group.send_app(to, body))
    }

    /// Whether `conn` is an open WebSocket session (in a group: of any member).
    pub fn is_session(&self, conn: &ConnId) -> bool {
        match &self.group {
            Some(link) => link.group.is_session(conn),
            None => self.core.is_session(conn),
        }
    }

    /// In a group a broadcast goes to every session of the group: any member may reply to
    /// any connection.
    pub(super) fn group_wide(&self, command: Outbound) -> Outbound {
        match (command, &self.group) {
            (Outbound::Broadcast { frame }, Some(link)) => Outbound::DeliverTo {
                conns: link.group.sessions().collect(),
                body: frame,
            },
            (command, _) => command,
        }
    }
}
