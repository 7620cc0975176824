//! One Mongrel2 server: a PULL for its requests and an XPUB for our replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Error;

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
    pub(crate) pull: zmq::Socket,
    /// An XPUB rather than a PUB: it behaves the same for sending, and it also reports
    /// Mongrel2's SUB subscribing, so we can tell when replies will actually be heard.
    pub(crate) publish: zmq::Socket,
    pub(crate) subscribed: bool,
    /// Since when Mongrel2 has not been subscribed (start, or its unsubscribe).
    unsubscribed_since: Instant,
    /// Whether the current unsubscribed stretch has been warned about.
    warned: bool,
}

impl Connection {
    pub(crate) fn open(
        context: &zmq::Context,
        sender: Arc<str>,
        pull_endpoint: &str,
        publish_endpoint: &str,
    ) -> Result<Connection, Error> {
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

        Ok(Connection {
            sender,
            pull_endpoint: pull_endpoint.to_owned(),
            publish_endpoint: publish_endpoint.to_owned(),
            pull,
            publish,
            subscribed: false,
            unsubscribed_since: Instant::now(),
            warned: false,
        })
    }

    /// Sends one framed reply. PUB never blocks; DONTWAIT makes that explicit.
    ///
    /// A small reply is copied into a ZeroMQ message rather than handed over: the copy is one
    /// allocation, while a handed-over buffer costs a tracking allocation too (often a
    /// shrinking reallocation) and is freed later by ZeroMQ's I/O thread, on another
    /// thread's heap. A large one is handed over: there the copy would cost more.
    pub(crate) fn send(&self, message: Vec<u8>) -> Result<(), Error> {
        if message.len() <= COPY_REPLIES_UP_TO {
            self.publish.send(&message[..], zmq::DONTWAIT)?;
        } else {
            self.publish.send(message, zmq::DONTWAIT)?;
        }
        Ok(())
    }

    /// Reads the subscription notices XPUB queued; returns whether any arrived.
    pub(crate) fn drain_subscriptions(&mut self) -> bool {
        let mut seen = false;
        while let Ok(notice) = self.publish.recv_bytes(zmq::DONTWAIT) {
            seen = true;
            match notice.first() {
                Some(1) => {
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
                Some(0) => self.lost(),
                _ => log::debug!("ignoring XPUB notice {notice:?}"),
            }
        }
        seen
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

    /// Lets whatever is still queued drain for at most `linger_ms` once the socket closes.
    pub(crate) fn set_linger(&self, linger_ms: i32) {
        if let Err(err) = self.publish.set_linger(linger_ms) {
            log::warn!("cannot set linger on {}: {err}", self.sender);
        }
    }
}

fn endpoint_error(role: &'static str, endpoint: &str, source: zmq::Error) -> Error {
    Error::Endpoint {
        role,
        action: "connect",
        endpoint: endpoint.to_owned(),
        source,
    }
}
