//! One Mongrel2 server: a PULL for its requests and a PUB for our replies, through libzmq
//! or spoken directly ([`Transport`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::direct::{self, DirectLink, Role};
use super::waiting::Watch;
use super::{Error, Transport};

/// Replies are worth keeping while Mongrel2 catches up; the default of 1000 drops a burst
/// to a few hundred sessions.
const SEND_HWM: i32 = 100_000;
/// Replies up to this size are copied into ZeroMQ messages (see [`Connection::send`]).
const COPY_REPLIES_UP_TO: usize = 16 * 1024;
/// Mongrel2 restarts should be noticed quickly (the default backs off to 100 ms anyway).
const RECONNECT_IVL_MS: i32 = 100;

/// The sockets of one Mongrel2 server, keyed by its Handler's `send_ident`.
pub(crate) struct Connection {
    pub(crate) sender: Arc<str>,
    pub(crate) pull_endpoint: String,
    pub(crate) publish_endpoint: String,
    sockets: Sockets,
    pub(crate) subscribed: bool,
    /// Since when Mongrel2 has not been subscribed (start, or its unsubscribe).
    unsubscribed_since: Instant,
    /// Whether the current unsubscribed stretch has been warned about.
    warned: bool,
}

// One per Mongrel2 server, made once and never moved about: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Sockets {
    Libzmq {
        pull: zmq::Socket,
        /// An XPUB rather than a PUB: it behaves the same for sending, and it also reports
        /// Mongrel2's SUB subscribing, so we can tell when replies will actually be heard.
        publish: zmq::Socket,
    },
    Direct {
        pull: DirectLink,
        publish: DirectLink,
    },
}

impl Connection {
    pub(crate) fn open(
        context: &zmq::Context,
        transport: Transport,
        max_frame: usize,
        sender: Arc<str>,
        pull_endpoint: &str,
        publish_endpoint: &str,
    ) -> Result<Connection, Error> {
        let direct = transport == Transport::Direct
            && direct::supports(pull_endpoint)
            && direct::supports(publish_endpoint);
        if transport == Transport::Direct && !direct {
            log::info!(
                "Mongrel2 {sender}: {pull_endpoint} / {publish_endpoint} connect through libzmq \
                 (the direct transport speaks tcp://host:port and ipc:// only)"
            );
        }
        let sockets = if direct {
            let link = |endpoint: &str, role, name| {
                DirectLink::open(endpoint, role, max_frame).map_err(|source| Error::Connect {
                    role: name,
                    endpoint: endpoint.to_owned(),
                    source,
                })
            };
            Sockets::Direct {
                pull: link(pull_endpoint, Role::Pull, "pull")?,
                publish: link(publish_endpoint, Role::Publish, "publish")?,
            }
        } else {
            open_libzmq(context, pull_endpoint, publish_endpoint)?
        };
        Ok(Connection {
            sender,
            pull_endpoint: pull_endpoint.to_owned(),
            publish_endpoint: publish_endpoint.to_owned(),
            sockets,
            subscribed: false,
            unsubscribed_since: Instant::now(),
            warned: false,
        })
    }

    /// The PULL and XPUB, when this connection goes through libzmq (the async face polls
    /// their descriptors itself).
    #[cfg(feature = "tokio")]
    pub(crate) fn libzmq(&self) -> Option<(&zmq::Socket, &zmq::Socket)> {
        match &self.sockets {
            Sockets::Libzmq { pull, publish } => Some((pull, publish)),
            Sockets::Direct { .. } => None,
        }
    }

    /// Queues one framed reply. Neither transport ever blocks here.
    ///
    /// Through libzmq a small reply is copied into a ZeroMQ message rather than handed over:
    /// the copy is one allocation, while a handed-over buffer costs a tracking allocation
    /// too (often a shrinking reallocation) and is freed later by ZeroMQ's I/O thread, on
    /// another thread's heap. A large one is handed over: there the copy would cost more.
    /// A copied reply's buffer comes back, for the Core to reuse ([`Core::recycle`]).
    ///
    /// [`Core::recycle`]: super::Core::recycle
    pub(crate) fn send(&mut self, message: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        match &mut self.sockets {
            Sockets::Libzmq { publish, .. } => {
                if message.len() <= COPY_REPLIES_UP_TO {
                    publish.send(&message[..], zmq::DONTWAIT)?;
                } else {
                    publish.send(message, zmq::DONTWAIT)?;
                    return Ok(None);
                }
            }
            // Dropped unless Mongrel2 is subscribed, as a PUB does.
            Sockets::Direct { publish, .. } => {
                publish.queue(&message);
            }
        }
        Ok(Some(message))
    }

    /// Writes what [`send`](Self::send) queued, as far as the socket takes it now (libzmq's
    /// I/O thread does that by itself).
    pub(crate) fn write_queued(&mut self) {
        if let Sockets::Direct { publish, .. } = &mut self.sockets {
            if publish.has_pending() {
                publish.flush();
                self.note_publish_state();
            }
        }
    }

    /// What to wait on: PULL's, then PUB's.
    pub(crate) fn push_watches<'a>(&'a self, watches: &mut Vec<Watch<'a>>) {
        match &self.sockets {
            Sockets::Libzmq { pull, publish } => {
                watches.push(Watch::Socket(pull));
                watches.push(Watch::Socket(publish));
            }
            Sockets::Direct { pull, publish } => {
                watches.push(pull.watch());
                watches.push(publish.watch());
            }
        }
    }

    /// What to wait on for Mongrel2 to subscribe.
    pub(crate) fn subscription_watch(&self) -> Watch<'_> {
        match &self.sockets {
            Sockets::Libzmq { publish, .. } => Watch::Socket(publish),
            Sockets::Direct { publish, .. } => publish.watch(),
        }
    }

    /// Reads requests: at most `batch` through libzmq, one socket read's worth directly.
    pub(crate) fn receive(&mut self, batch: usize, on_message: &mut dyn FnMut(&[u8])) {
        match &mut self.sockets {
            Sockets::Libzmq { pull, .. } => {
                for _ in 0..batch {
                    match pull.recv_msg(zmq::DONTWAIT) {
                        Ok(message) => on_message(&message),
                        Err(zmq::Error::EAGAIN) => return,
                        Err(err) => {
                            log::warn!("receiving from Mongrel2 {}: {err}", self.sender);
                            return;
                        }
                    }
                }
            }
            Sockets::Direct { pull, .. } => {
                if pull.service(on_message) {
                    log::debug!("Mongrel2 {}: requests connected", self.sender);
                }
            }
        }
    }

    /// When a direct link next wants to reconnect.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        match &self.sockets {
            Sockets::Libzmq { .. } => None,
            Sockets::Direct { pull, publish } => {
                match (pull.next_timeout(), publish.next_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Reconnects direct links whose time has come.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Sockets::Direct { pull, publish } = &mut self.sockets {
            pull.handle_timeout(now);
            publish.handle_timeout(now);
        }
    }

    /// Reads Mongrel2's subscription changes (XPUB's notices, or the direct link's own
    /// reading); returns whether any socket activity was seen.
    pub(crate) fn drain_subscriptions(&mut self) -> bool {
        let notices = match &mut self.sockets {
            Sockets::Libzmq { publish, .. } => {
                let mut notices = Vec::new();
                while let Ok(notice) = publish.recv_bytes(zmq::DONTWAIT) {
                    notices.push(notice.first().copied());
                }
                notices
            }
            Sockets::Direct { publish, .. } => {
                publish.service(&mut |_| {});
                return self.note_publish_state();
            }
        };
        for notice in &notices {
            match notice {
                Some(1) => self.now_subscribed(),
                Some(0) => self.lost(),
                _ => log::debug!("ignoring XPUB notice {notice:?}"),
            }
        }
        !notices.is_empty()
    }

    /// Follows a direct publish link's subscription state; true if it changed.
    fn note_publish_state(&mut self) -> bool {
        let Sockets::Direct { publish, .. } = &self.sockets else {
            return false;
        };
        match (self.subscribed, publish.subscribed()) {
            (false, true) => self.now_subscribed(),
            (true, false) => self.lost(),
            _ => return false,
        }
        true
    }

    fn now_subscribed(&mut self) {
        if !self.subscribed && self.warned {
            log::info!(
                "Mongrel2 {} is back: subscribed to publish {} (pull {}); replies \
                 are heard again",
                self.sender,
                self.publish_endpoint,
                self.pull_endpoint
            );
        } else if !self.subscribed {
            log::info!(
                "Mongrel2 {} subscribed ({})",
                self.sender,
                self.publish_endpoint
            );
        }
        self.subscribed = true;
        self.warned = false;
    }

    /// Mongrel2 went away (its SUB closed or unsubscribed): say so at once, replies are lost.
    fn lost(&mut self) {
        if self.subscribed {
            log::warn!(
                "Mongrel2 {} unsubscribed from publish {} (pull {}): it stopped or restarts; \
                 replies are dropped until it subscribes again",
                self.sender,
                self.publish_endpoint,
                self.pull_endpoint
            );
            self.warned = true;
            self.unsubscribed_since = Instant::now();
        }
        self.subscribed = false;
    }

    /// When the current unsubscribed stretch deserves a warning (`None`: subscribed, or
    /// already warned).
    pub(crate) fn warning_due(&self, grace: Duration) -> Option<Instant> {
        (!self.subscribed && !self.warned).then(|| self.unsubscribed_since + grace)
    }

    /// Warns once when Mongrel2 has not subscribed within `grace` of the start.
    pub(crate) fn check_subscribed(&mut self, now: Instant, grace: Duration) {
        if self.warning_due(grace).is_some_and(|due| due <= now) {
            log::warn!(
                "Mongrel2 {} has not subscribed to publish {} within {grace:?} (pull {}): \
                 nothing sent will be heard. Is Mongrel2 running, is pull its Handler's \
                 send_spec and publish its recv_spec (not swapped), and is the sender its \
                 send_ident?",
                self.sender,
                self.publish_endpoint,
                self.pull_endpoint
            );
            self.warned = true;
        }
    }

    /// Lets whatever is still queued drain for at most `linger_ms` once the socket closes
    /// (a direct link drains right here, blocking at most that long).
    pub(crate) fn set_linger(&mut self, linger_ms: i32) {
        match &mut self.sockets {
            Sockets::Libzmq { publish, .. } => {
                if let Err(err) = publish.set_linger(linger_ms) {
                    log::warn!("cannot set linger on {}: {err}", self.sender);
                }
            }
            Sockets::Direct { publish, .. } => {
                let linger = Duration::from_millis(u64::try_from(linger_ms).unwrap_or(0));
                publish.drain(linger);
            }
        }
    }
}

fn open_libzmq(
    context: &zmq::Context,
    pull_endpoint: &str,
    publish_endpoint: &str,
) -> Result<Sockets, Error> {
    let pull = context.socket(zmq::PULL)?;
    pull.set_linger(0)?;
    pull.set_reconnect_ivl(RECONNECT_IVL_MS)?;
    pull.connect(pull_endpoint)
        .map_err(|source| endpoint_error("pull", pull_endpoint, source))?;

    let publish = context.socket(zmq::XPUB)?;
    publish.set_linger(0)?;
    publish.set_sndhwm(SEND_HWM)?;
    // Without VERBOSE, XPUB stays silent about a restarted Mongrel2 subscribing again.
    publish.set_xpub_verbose(true)?;
    publish.set_reconnect_ivl(RECONNECT_IVL_MS)?;
    // A connecting socket normally keeps its pipe across a lost connection, so the
    // XPUB would never say that Mongrel2 went away. IMMEDIATE drops the pipe with the
    // connection: Mongrel2 gone then reads as an unsubscribe, and coming back as a
    // new subscription. (A PUB drops what nobody subscribed to anyway.)
    publish.set_immediate(true)?;
    publish
        .connect(publish_endpoint)
        .map_err(|source| endpoint_error("publish", publish_endpoint, source))?;
    Ok(Sockets::Libzmq { pull, publish })
}

fn endpoint_error(role: &'static str, endpoint: &str, source: zmq::Error) -> Error {
    Error::Endpoint {
        role,
        action: "connect",
        endpoint: endpoint.to_owned(),
        source,
    }
}
