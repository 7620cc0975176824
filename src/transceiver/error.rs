//! The runtime's error type.

use crate::{http, reply, request, tnetstring};

/// What can go wrong when building, driving or sending through a Transceiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A ZeroMQ call failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    /// A socket could not bind or connect to its endpoint (a malformed endpoint, an
    /// address in use, an unknown transport, ...).
    #[error("cannot {action} the {role} socket to {endpoint:?}: {source}")]
    Endpoint {
        /// Which socket: `"pull"` (Mongrel2's send_spec), `"publish"` (its recv_spec) or
        /// `"control"`.
        role: &'static str,
        /// `"bind"` or `"connect"`.
        action: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
    /// A [`Transport::Direct`](super::Transport::Direct) socket could not connect to its
    /// endpoint (a host name that does not resolve, a malformed address, ...). A refused
    /// connection is not an error: it is tried again every 100 ms, as libzmq does.
    #[error("cannot connect the {role} socket to {endpoint:?}: {source}")]
    Connect {
        /// `"pull"` (Mongrel2's send_spec) or `"publish"` (its recv_spec).
        role: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The reply could not be framed (empty target list, bad sender id, ...).
    #[error("reply: {0}")]
    Reply(#[from] reply::ReplyError),
    /// A request could not be parsed.
    #[error("request: {0}")]
    Request(#[from] request::RequestError),
    /// An HTTP response could not be built.
    #[error("http: {0}")]
    Http(#[from] http::HttpError),
    /// A value could not be encoded as a tnetstring.
    #[error("tnetstring: {0}")]
    Tnetstring(#[from] tnetstring::Error),
    /// A value could not be encoded as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// No connection is registered for this sender id.
    #[error("no Mongrel2 connection for sender {0:?}")]
    UnknownSender(String),
    /// A connection with this sender id already exists.
    #[error("a Mongrel2 connection for sender {0:?} already exists")]
    DuplicateSender(String),
    /// The builder was given an invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The Transceiver's loop is gone (dropped or shut down); nothing can be sent through it.
    #[error("the Transceiver is gone")]
    Closed,
    /// The handle's queue stayed full for the whole send timeout.
    #[error("the Transceiver's command queue is full")]
    QueueFull,
    /// The loop was interrupted ([`Handle::interrupt`](super::Handle::interrupt), or a
    /// signal after [`Transceiver::stop_on_signals`](super::Transceiver::stop_on_signals)):
    /// what [`recv`](super::Transceiver::recv) and
    /// [`recv_timeout`](super::Transceiver::recv_timeout) return then.
    #[error("interrupted")]
    Interrupted,
    /// A chunk or end for a connection with no streamed response open.
    #[error("no streamed response is open on {0}")]
    NotStreaming(super::ConnId),
    /// A socket token that is not (or no longer) watched.
    #[error("unknown socket token")]
    UnknownToken,
}
