//! Building a [`Transceiver`].

use std::time::Duration;

use super::{Error, Handshake, Transceiver, Transport};
use crate::reply::DEFAULT_HANDLER_TARGETS;
use crate::request::Request;

/// Where a handler's PULL connects by default (Mongrel2's `send_spec`).
pub const DEFAULT_PULL: &str = "tcp://127.0.0.1:9999";
/// Where a handler's PUB connects by default (Mongrel2's `recv_spec`).
pub const DEFAULT_PUBLISH: &str = "tcp://127.0.0.1:9998";
/// A conventional endpoint for [`Builder::control`]: loopback, so no other host can make
/// the handler connect somewhere. Nothing binds it unless asked: the control socket is
/// opt-in.
pub const DEFAULT_CONTROL: &str = "tcp://127.0.0.1:9997";
/// How long a Mongrel2 connection may go unsubscribed after start before a warning is
/// logged, by default (see [`Builder::subscription_timeout`]).
pub const DEFAULT_SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every WebSocket session is pinged by default.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// The largest WebSocket message accepted by default (larger ones are closed with 1009).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

pub(crate) type HandshakeFn = Box<dyn FnMut(&Request<'_>) -> Handshake + Send>;

/// Configures a [`Transceiver`]; start with [`Transceiver::builder`].
pub struct Builder {
    pub(crate) sender: String,
    pub(crate) pull: String,
    pub(crate) publish: String,
    pub(crate) control: Option<String>,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) max_message_size: usize,
    pub(crate) handler_targets: usize,
    pub(crate) context: Option<zmq::Context>,
    pub(crate) handshake: Option<HandshakeFn>,
    pub(crate) queue_capacity: usize,
    pub(crate) send_timeout: Duration,
    pub(crate) upload_temp_store: Option<String>,
    pub(crate) subscription_timeout: Option<Duration>,
    pub(crate) group: Option<(String, Vec<String>)>,
    pub(crate) group_timing: Option<super::GroupTiming>,
    pub(crate) transport: Transport,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("sender", &self.sender)
            .field("pull", &self.pull)
            .field("publish", &self.publish)
            .field("control", &self.control)
            .field("ping_interval", &self.ping_interval)
            .field("max_message_size", &self.max_message_size)
            .field("handler_targets", &self.handler_targets)
            .field("subscription_timeout", &self.subscription_timeout)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(crate) fn new(sender: &str) -> Builder {
        Builder {
            sender: sender.to_owned(),
            pull: DEFAULT_PULL.to_owned(),
            publish: DEFAULT_PUBLISH.to_owned(),
            control: None,
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handler_targets: DEFAULT_HANDLER_TARGETS,
            context: None,
            handshake: None,
            queue_capacity: 4096,
            send_timeout: Duration::from_secs(1),
            upload_temp_store: None,
            subscription_timeout: Some(DEFAULT_SUBSCRIPTION_TIMEOUT),
            group: None,
            group_timing: None,
            transport: Transport::default(),
        }
    }

    /// The endpoint the PULL socket connects to: Mongrel2's `send_spec`.
    ///
    /// To start without a real Mongrel2 (connections come later, over the control socket),
    /// give an endpoint nothing binds, such as the harness's `unbound_endpoint()`, but not an
    /// `inproc://` one: libzmq 4.3.4 can crash ending a context with such a connect pending.
    pub fn pull(mut self, endpoint: &str) -> Builder {
        self.pull = endpoint.to_owned();
        self
    }

    /// The endpoint the PUB socket connects to: Mongrel2's `recv_spec`.
    pub fn publish(mut self, endpoint: &str) -> Builder {
        self.publish = endpoint.to_owned();
        self
    }

    /// How Mongrel2's sockets are spoken: [`Transport::Direct`] (the default) by the loop's
    /// own thread, or [`Transport::Libzmq`] through libzmq's sockets. Connections added
    /// later (over the control socket too) use the same. Either way the control socket,
    /// the group's sockets and watched sockets are libzmq's, and the async face (feature
    /// `tokio`) always waits on libzmq's sockets.
    pub fn transport(mut self, transport: Transport) -> Builder {
        self.transport = transport;
        self
    }

    /// Where the control socket binds (e.g. [`DEFAULT_CONTROL`]); `None`, the default, binds
    /// no control socket. It lets a harness `Connector` (or the seed's Python one) add and
    /// remove Mongrel2 connections at run time, so keep it on loopback.
    pub fn control(mut self, endpoint: Option<&str>) -> Builder {
        self.control = endpoint.map(str::to_owned);
        self
    }

    /// How often every WebSocket session is pinged; a session silent for a whole interval
    /// after a ping is closed (1001 "ping timeout"). `None` turns pings off: sessions then
    /// live until the client or Mongrel2 ends them. Takes a `Duration` or an `Option`.
    pub fn ping_interval(mut self, interval: impl Into<Option<Duration>>) -> Builder {
        self.ping_interval = interval.into();
        self
    }

    /// The largest WebSocket message accepted; larger ones close the session with 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Builder {
        self.max_message_size = bytes;
        self
    }

    /// Mongrel2's `limits.handler_targets`: the most connection ids one reply may carry.
    pub fn handler_targets(mut self, targets: usize) -> Builder {
        self.handler_targets = targets;
        self
    }

    /// Uses an existing ZeroMQ context instead of creating one. The Transceiver then closes
    /// its sockets on shutdown but leaves the context to its owner.
    pub fn context(mut self, context: zmq::Context) -> Builder {
        self.context = Some(context);
        self
    }

    /// Decides each WebSocket handshake: accept (optionally with a subprotocol) or reject with
    /// an HTTP response. Without it every handshake is accepted.
    pub fn on_handshake(
        mut self,
        decide: impl FnMut(&Request<'_>) -> Handshake + Send + 'static,
    ) -> Builder {
        self.handshake = Some(Box::new(decide));
        self
    }

    /// How many commands [`Handle`](super::Handle)s may queue before they wait (default 4096).
    pub fn queue_capacity(mut self, capacity: usize) -> Builder {
        self.queue_capacity = capacity;
        self
    }

    /// How long a [`Handle`](super::Handle) waits for room in a full queue before it returns
    /// [`Error::QueueFull`] (default 1 s).
    pub fn send_timeout(mut self, timeout: Duration) -> Builder {
        self.send_timeout = timeout;
        self
    }

    /// Makes this process a member of a handler group: processes serving the same Mongrel2
    /// route that act as one handler (each WebSocket session has one owner that receives
    /// all its messages and pings it; `sessions()` and `broadcast` cover the whole group).
    /// `bind` is this member's endpoint as the others reach it (e.g.
    /// `tcp://10.0.0.5:7000`); `peers` are the others' (this member's own may be among
    /// them, so every member can be given the same list). See the
    /// [`group`](super::group) module for how it works and its wire format.
    pub fn group<S: AsRef<str>>(mut self, bind: &str, peers: &[S]) -> Builder {
        let peers = peers.iter().map(|peer| peer.as_ref().to_owned()).collect();
        self.group = Some((bind.to_owned(), peers));
        self
    }

    /// The group's heartbeat and death timeout (default:
    /// [`GroupTiming::for_ping_interval`](super::GroupTiming::for_ping_interval)).
    pub fn group_timing(mut self, timing: super::GroupTiming) -> Builder {
        self.group_timing = Some(timing);
        self
    }

    /// Connects to Mongrel2 and binds the control socket (if one was asked for). An
    /// endpoint that cannot be used fails with [`Error::Endpoint`], naming it.
    pub fn build(self) -> Result<Transceiver, Error> {
        if self
            .ping_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return Err(Error::Config(
                "ping interval must be positive (None turns pings off)".into(),
            ));
        }
        if self.handler_targets == 0 {
            return Err(Error::Config("handler_targets must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue capacity must be at least 1".into()));
        }
        if self
            .subscription_timeout
            .is_some_and(|after| after.is_zero())
        {
            return Err(Error::Config(
                "subscription timeout must be positive (None turns the warning off)".into(),
            ));
        }
        Transceiver::from_builder(self)
    }

    /// Mongrel2's `upload.temp_store` setting, exactly as written in its configuration
    /// (e.g. `"/tmp/upload.XXXXXX"`; it must end in `XXXXXX`).
    ///
    /// Clients can send `X-Mongrel2-Upload-Start` / `-Done` headers themselves, so without
    /// this setting no request becomes [`Event::UploadStarted`](super::Event::UploadStarted)
    /// or [`Event::UploadDone`](super::Event::UploadDone): such notices arrive as
    /// [`Event::Http`](super::Event::Http) with a warning. With it, a notice is believed
    /// only when its path is this template with the `XXXXXX` filled in, both headers agree,
    /// the request took Mongrel2's upload path (empty body although one was declared), and
    /// no other path was announced to this process for the connection. Streamed uploads
    /// (`upload.stream`) do not need this setting.
    ///
    /// The paths in the notices are the template with the `XXXXXX` replaced, so they are
    /// relative to Mongrel2's chroot (the directory of its `chroot` setting when it runs as
    /// root): join the two to open the file.
    pub fn upload_temp_store(mut self, template: &str) -> Builder {
        self.upload_temp_store = Some(template.to_owned());
        self
    }

    /// How long a Mongrel2 connection may go without Mongrel2 subscribed to its PUB after
    /// start (default [`DEFAULT_SUBSCRIPTION_TIMEOUT`]) before one `warn!` naming the sender
    /// and both endpoints is logged: wrong or swapped endpoints, or no Mongrel2 running,
    /// otherwise look just like a quiet site. A Mongrel2 that unsubscribes (stops) is
    /// warned about at once, and an `info!` follows when it subscribes again. `None` turns
    /// the start-up warning off. Checked while the loop runs.
    pub fn subscription_timeout(mut self, after: impl Into<Option<Duration>>) -> Builder {
        self.subscription_timeout = after.into();
        self
    }
}
