//! The handler runtime: one loop over every Mongrel2 server, doing what Mongrel2 leaves to
//! handlers (WebSocket handshakes, pings, closes, RFC 6455 checks, batched delivery, runtime
//! connections, clean shutdown) and handing the rest to the caller as [`Event`]s.

mod builder;
pub(crate) mod command;
pub(crate) mod connection;
pub(crate) mod control;
mod core;
mod direct;
mod error;
mod event;
mod event_loop;
pub mod group;
mod group_link;
pub(crate) mod handle;
pub(crate) mod outbound;
mod reactions;
mod session;
pub(crate) mod signals;
mod uploads;
pub(crate) mod waiting;

pub use self::core::{Core, Outgoing};
pub use builder::{
    Builder, DEFAULT_CONTROL, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PING_INTERVAL, DEFAULT_PUBLISH,
    DEFAULT_PULL, DEFAULT_SUBSCRIPTION_TIMEOUT,
};
pub use error::Error;
pub use event::{CloseReason, ConnId, Event, Message, Token};
pub use event_loop::{Events, Transceiver};
pub use group::GroupTiming;
pub use handle::Handle;

use crate::http::Response;
use crate::request::Request;
use crate::websocket::{self, CloseCode};

/// How a [`Transceiver`] talks to Mongrel2's sockets ([`Builder::transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// The loop's own thread reads and writes Mongrel2's sockets, speaking ZeroMQ's wire
    /// format (ZMTP 3) itself. There is no hand-off to libzmq's I/O thread per request and
    /// reply, which costs about a third of the CPU per request. For `tcp://host:port` and
    /// `ipc://` endpoints; others (`inproc://`, a source address, ...) go through libzmq
    /// anyway. Mongrel2 must be linked with libzmq 4 or later (ZMTP 3, as every current
    /// build is): an older peer is hung up on with a warning that says to use `Libzmq`.
    #[default]
    Direct,
    /// libzmq's PULL and XPUB sockets, as every other Mongrel2 handler library uses them.
    Libzmq,
}

/// The answer to a WebSocket handshake, from [`Builder::on_handshake`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Handshake {
    /// Accept (`101 Switching Protocols`), without a subprotocol.
    Accept,
    /// Accept with this subprotocol (it should be one the client offered).
    AcceptProtocol(String),
    /// Refuse with this HTTP response; the connection is closed after it.
    Reject(Response),
}

impl Handshake {
    /// Accepts with the first of `supported` (the handler's order of preference) that the
    /// client offered in `Sec-WebSocket-Protocol`, or plainly when it offered none of them.
    pub fn choose_protocol(request: &Request<'_>, supported: &[&str]) -> Handshake {
        let offered: Vec<&str> = request
            .header_all("sec-websocket-protocol")
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let chosen = supported.iter().find(|protocol| offered.contains(protocol));
        match chosen {
            Some(protocol) => Handshake::AcceptProtocol((*protocol).to_owned()),
            None => Handshake::Accept,
        }
    }
}

/// A close frame carrying `code` and `reason` (cut to the 123 bytes a control frame allows).
pub(crate) fn close_frame(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(reason.len().min(123) + 4);
    websocket::CloseFrame::new(code, reason).encode_frame(&mut frame);
    frame
}
