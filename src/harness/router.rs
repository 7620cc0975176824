//! The Server's shared state: the PUSH that sends requests, and a reader thread that owns
//! the SUB and sorts every reply into the mailbox of the connection it is addressed to.
//!
//! Mongrel2 multiplexes all of its clients over one SUB; so does the harness. A client
//! that waits for its own reply must not swallow (or lose) a reply meant for another
//! client, so routing happens in one place and each client reads its own queue.
//!
//! The reader also watches both sockets' transport connections (ZeroMQ socket monitors),
//! which is how the Server proves that a handler's sockets really connected to it, and
//! later really went away.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::HarnessError;
use crate::reply::Reply;

/// Replies kept per connection before the oldest are dropped (with a warning): a test
/// that never reads a chatty connection must not exhaust memory.
const MAILBOX_LIMIT: usize = 65_536;
/// Malformed replies kept for [`Server::take_rejected`](super::Server::take_rejected).
const REJECTED_LIMIT: usize = 1_024;
/// How long the reader sleeps in one poll; bounds how stale "a full pass happened" gets.
const READER_TICK_MS: i64 = 20;
/// Messages read from the SUB in one pass before the monitors get a turn.
const DRAIN_BATCH: usize = 4_096;

/// One reply as the handler sent it, after Mongrel2-style parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The sender id the reply names (the Server's).
    pub sender: String,
    /// The connection ids it is addressed to.
    pub ids: Vec<u64>,
    /// Whether it is an extended reply (`X` ids, a tnetstring `[key, value]` body).
    pub extended: bool,
    /// The body exactly as it would reach the client (or the extended payload).
    pub body: Vec<u8>,
}

impl RawReply {
    /// Whether this is the empty reply that tells Mongrel2 to close the connection.
    pub fn is_close(&self) -> bool {
        !self.extended && self.body.is_empty()
    }

    /// The body as UTF-8, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// A message on the SUB that Mongrel2 would have dropped as malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The message as received.
    pub message: Vec<u8>,
    /// Why it is not a valid reply.
    pub reason: String,
}

/// Which of the Server's two sockets a transport connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Push = 0,
    Sub = 1,
}

/// The transport connections open on each socket, as serial numbers (file descriptors
/// are reused, serials are not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Peers {
    pub(crate) push: BTreeSet<u64>,
    pub(crate) sub: BTreeSet<u64>,
}

#[derive(Default)]
struct State {
    mailboxes: HashMap<u64, VecDeque<RawReply>>,
    unclaimed: VecDeque<RawReply>,
    /// Bodies of replies to connection id `-1`: answers to control `__ping__`s.
    control_replies: VecDeque<Vec<u8>>,
    rejected: VecDeque<Rejected>,
    /// fd -> serial of each live transport connection, per socket.
    live: [HashMap<i32, u64>; 2],
    next_serial: u64,
    /// Completed passes in which the reader drained the SUB until it was empty.
    passes: u64,
    /// Why the reader stopped, once it has.
    stopped: Option<String>,
}

/// What the Server, its Clients and Connectors share.
pub(crate) struct Shared {
    pub(crate) sender: String,
    pub(crate) push_endpoint: String,
    pub(crate) sub_endpoint: String,
    pub(crate) context: zmq::Context,
    push: Mutex<zmq::Socket>,
    state: Mutex<State>,
    changed: Condvar,
    next_id: AtomicU64,
}

/// The sockets the reader thread owns.
pub(crate) struct ReaderSockets {
    pub(crate) sub: zmq::Socket,
    pub(crate) push_monitor: zmq::Socket,
    pub(crate) sub_monitor: zmq::Socket,
    pub(crate) stop: zmq::Socket,
}

impl Shared {
    pub(crate) fn new(
        sender: String,
        push_endpoint: String,
        sub_endpoint: String,
        context: zmq::Context,
        push: zmq::Socket,
    ) -> Shared {
        Shared {
            sender,
            push_endpoint,
            sub_endpoint,
            context,
            push: Mutex::new(push),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh connection id with its own mailbox.
    pub(crate) fn register(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().mailboxes.insert(id, VecDeque::new());
        id
    }

    /// Forgets a connection id; later replies to it count as unclaimed.
    pub(crate) fn unregister(&self, id: u64) {
        self.lock().mailboxes.remove(&id);
    }

    /// Sends one request through the PUSH, waiting at most `timeout` for a handler to
    /// take it. PUSH blocks (rather than drops) while no handler is connected, so a
    /// timeout here means nobody is listening.
    pub(crate) fn send(&self, message: &[u8], timeout: Duration) -> Result<(), HarnessError> {
        let push = self.push.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + timeout;
        loop {
            match push.send(message, zmq::DONTWAIT) {
                Ok(()) => return Ok(()),
                Err(zmq::Error::EAGAIN) => {}
                Err(err) => return Err(err.into()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HarnessError::SendTimeout(timeout));
            }
            match push.poll(zmq::POLLOUT, millis(left)) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Waits until `check` returns something, the deadline passes (`Ok(None)`), or the
    /// reader stops (an error).
    fn wait<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<Option<T>, HarnessError> {
        let mut state = self.lock();
        loop {
            if let Some(found) = check(&mut state) {
                return Ok(Some(found));
            }
            if state.stopped.is_some() {
                return Err(HarnessError::ServerGone);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next reply addressed to `id`, waiting until `deadline`.
    pub(crate) fn next_for(
        &self,
        id: u64,
        deadline: Instant,
    ) -> Result<Option<RawReply>, HarnessError> {
        self.wait(deadline, |state| {
            state.mailboxes.get_mut(&id).and_then(VecDeque::pop_front)
        })
    }

    /// The next reply addressed to no registered connection, waiting until `deadline`.
    pub(crate) fn next_unclaimed(
        &self,
        deadline: Instant,
    ) -> Result<Option<RawReply>, HarnessError> {
        self.wait(deadline, |state| state.unclaimed.pop_front())
    }

    /// Waits until a reply to connection id `-1` with exactly this body has arrived (and
    /// takes it), or `deadline` passes.
    pub(crate) fn wait_control_reply(
        &self,
        body: &[u8],
        deadline: Instant,
    ) -> Result<bool, HarnessError> {
        let found = self.wait(deadline, |state| {
            let at = state.control_replies.iter().position(|b| b == body)?;
            state.control_replies.remove(at)
        })?;
        Ok(found.is_some())
    }

    /// Every malformed reply seen so far (and forgets them).
    pub(crate) fn take_rejected(&self) -> Vec<Rejected> {
        self.lock().rejected.drain(..).collect()
    }

    /// The transport connections open right now.
    pub(crate) fn peers(&self) -> Peers {
        let state = self.lock();
        peers_of(&state)
    }

    /// Waits until `check` approves of the open transport connections.
    pub(crate) fn wait_peers(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&Peers) -> bool,
    ) -> Result<Option<Peers>, HarnessError> {
        self.wait(deadline, |state| {
            let peers = peers_of(state);
            check(&peers).then_some(peers)
        })
    }

    /// Waits until the reader has completed a full drain of the SUB that started after
    /// this call: every reply that had reached the SUB by now is then in a mailbox.
    pub(crate) fn sync(&self, deadline: Instant) -> Result<bool, HarnessError> {
        let start = self.lock().passes;
        // The pass running now may have started before the call, so wait for the next.
        Ok(self
            .wait(deadline, |state| (state.passes >= start + 2).then_some(()))?
            .is_some())
    }

    /// Tells waiters that the reader is gone.
    pub(crate) fn mark_stopped(&self, why: String) {
        self.lock().stopped = Some(why);
        self.changed.notify_all();
    }

    fn deliver(&self, state: &mut State, message: &[u8]) {
        // The seed's control replies go to connection id `-1`, which Mongrel2 never uses.
        let control_prefix = format!("{} 2:-1, ", self.sender);
        if let Some(body) = message.strip_prefix(control_prefix.as_bytes()) {
            if state.control_replies.len() >= REJECTED_LIMIT {
                state.control_replies.pop_front();
            }
            state.control_replies.push_back(body.to_vec());
            return;
        }
        let reply = match Reply::parse(message) {
            Ok(reply) => RawReply {
                sender: reply.sender.to_owned(),
                ids: reply.ids.clone(),
                extended: reply.extended,
                body: reply.body.to_vec(),
            },
            Err(err) => {
                log::warn!("handler sent a malformed reply (Mongrel2 would drop it): {err}");
                if state.rejected.len() >= REJECTED_LIMIT {
                    state.rejected.pop_front();
                }
                state.rejected.push_back(Rejected {
                    message: message.to_vec(),
                    reason: err.to_string(),
                });
                return;
            }
        };
        if reply.sender != self.sender {
            // The subscription is on "SENDER ", so this cannot happen; be loud if it does.
            log::warn!(
                "reply for sender {:?} on {:?}'s SUB",
                reply.sender,
                self.sender
            );
        }
        let mut unclaimed = false;
        for id in &reply.ids {
            match state.mailboxes.get_mut(id) {
                Some(mailbox) => {
                    if mailbox.len() >= MAILBOX_LIMIT {
                        log::warn!("mailbox of connection {id} is full; dropping its oldest reply");
                        mailbox.pop_front();
                    }
                    mailbox.push_back(reply.clone());
                }
                None => unclaimed = true,
            }
        }
        if unclaimed {
            if state.unclaimed.len() >= MAILBOX_LIMIT {
                log::warn!("unclaimed reply queue is full; dropping its oldest reply");
                state.unclaimed.pop_front();
            }
            state.unclaimed.push_back(reply);
        }
    }

    fn on_monitor_event(&self, state: &mut State, side: Side, event: &[u8]) {
        // libzmq's monitor frame: u16 event id and u32 value in native byte order.
        let (Some(id), Some(value)) = (event.get(0..2), event.get(2..6)) else {
            return;
        };
        let id = u16::from_ne_bytes([id[0], id[1]]);
        let fd = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
        let live = &mut state.live[side as usize];
        if id == zmq::SocketEvent::ACCEPTED.to_raw() {
            state.next_serial += 1;
            live.insert(fd, state.next_serial);
            log::debug!(
                "{side:?} accepted connection #{} (fd {fd})",
                state.next_serial
            );
        } else if id == zmq::SocketEvent::DISCONNECTED.to_raw() {
            if let Some(serial) = live.remove(&fd) {
                log::debug!("{side:?} connection #{serial} (fd {fd}) went away");
            }
        }
    }

    /// The reader thread: routes replies and tracks connections until told to stop.
    pub(crate) fn run_reader(self: Arc<Self>, sockets: ReaderSockets) {
        let why = match self.reader_loop(&sockets) {
            Ok(()) => "stopped".to_owned(),
            Err(err) => {
                log::warn!("harness reader failed: {err}");
                err.to_string()
            }
        };
        self.mark_stopped(why);
    }

    fn reader_loop(&self, sockets: &ReaderSockets) -> Result<(), zmq::Error> {
        loop {
            let mut items = [
                sockets.sub.as_poll_item(zmq::POLLIN),
                sockets.push_monitor.as_poll_item(zmq::POLLIN),
                sockets.sub_monitor.as_poll_item(zmq::POLLIN),
                sockets.stop.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, READER_TICK_MS) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(err) => return Err(err),
            }
            let stop = items[3].is_readable();
            // Replies first, monitors second: a disconnect seen in this pass is always
            // followed by a full drain in the next, which is what `sync` relies on.
            let mut drained = true;
            let mut received = Vec::new();
            for _ in 0..DRAIN_BATCH {
                match sockets.sub.recv_bytes(zmq::DONTWAIT) {
                    Ok(message) => received.push(message),
                    Err(zmq::Error::EAGAIN) => break,
                    Err(zmq::Error::EINTR) => continue,
                    Err(err) => return Err(err),
                }
            }
            if received.len() == DRAIN_BATCH {
                drained = false;
            }
            let mut events = Vec::new();
            for (side, socket) in [
                (Side::Push, &sockets.push_monitor),
                (Side::Sub, &sockets.sub_monitor),
            ] {
                while let Ok(parts) = socket.recv_multipart(zmq::DONTWAIT) {
                    if let Some(first) = parts.into_iter().next() {
                        events.push((side, first));
                    }
                }
            }
            {
                let mut state = self.lock();
                for message in &received {
                    self.deliver(&mut state, message);
                }
                for (side, event) in &events {
                    self.on_monitor_event(&mut state, *side, event);
                }
                if drained {
                    state.passes += 1;
                }
            }
            self.changed.notify_all();
            if stop {
                return Ok(());
            }
        }
    }
}

fn peers_of(state: &State) -> Peers {
    Peers {
        push: state.live[Side::Push as usize].values().copied().collect(),
        sub: state.live[Side::Sub as usize].values().copied().collect(),
    }
}

/// A Duration as zmq_poll milliseconds, rounded up so short waits do not spin.
pub(crate) fn millis(wait: Duration) -> i64 {
    let whole = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    if wait.subsec_nanos().is_multiple_of(1_000_000) {
        whole
    } else {
        whole.saturating_add(1)
    }
}
