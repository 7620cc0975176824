//! A fake Mongrel2 for testing handlers: [`Server`], [`Connector`] and [`Client`].
//!
//! A complete test of an echo handler:
//!
//! ```
//! use mongrel2_transceiver::harness::{spawn_handler, Protocol, Server};
//! use mongrel2_transceiver::http::Response;
//! use mongrel2_transceiver::{Error, Event, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The handler under test, on its own thread, with its control socket on a free port.
//! let handler = spawn_handler("echo", |builder| builder, |handler| loop {
//!     match handler.recv() {
//!         Ok(Event::Http(request)) => {
//!             let echo = Response::ok().body(request.body().to_vec());
//!             handler.reply_http(&request, &echo)?;
//!         }
//!         Ok(Event::Message { conn, message: Message::Text(text) }) => {
//!             handler.send_text(&conn, &text)?;
//!         }
//!         Ok(_) => {}
//!         Err(Error::Interrupted) => return Ok(()),
//!         Err(err) => return Err(err),
//!     }
//! })?;
//!
//! {
//!     // A fake Mongrel2 on free ports. The first client() connects the handler and
//!     // proves the path works both ways before returning.
//!     let mut server = Server::new([handler.control()])?;
//!
//!     let mut http = server.client(Protocol::Http)?;
//!     let response = http.post("/echo", "hello")?;
//!     assert_eq!(response.status, 200);
//!     assert_eq!(response.body, b"hello");
//!
//!     let mut ws = server.client(Protocol::WebSocket)?;
//!     ws.handshake("/echo")?;
//!     ws.send_text("hi")?;
//!     assert_eq!(ws.recv_text()?, "hi");
//! } // Dropping the Server disconnects it from the handler.
//!
//! handler.stop()?; // interrupts the handler and returns what it returned
//! # Ok(())
//! # }
//! ```
//!
//! The harness is behind the `harness` cargo feature; enable it where the tests are:
//!
//! ```toml
//! [dev-dependencies]
//! mongrel2-transceiver = { version = "0.1", features = ["harness"] }
//! ```
//!
//! # What it is
//!
//! Mongrel2 binds a PUSH (requests to handlers) and a SUB (replies from them); handlers
//! connect to both. The [`Server`] does the same on free ports (`tcp://127.0.0.1:*`),
//! so tests run in parallel. Instead of being configured into the handler, it asks each
//! running Transceiver to connect to it through the Transceiver's control socket
//! (a [`Connector`] speaks that protocol, byte for byte as the seed's Python Connector
//! does, so any handler that speaks it can be driven), and then proves the connection
//! works:
//!
//! * replies: a `__ping__` with a fresh GUID is answered through the handler's PUB (to
//!   connection id `-1`), and the GUID must arrive on the Server's SUB (PUB/SUB drops everything published before
//!   the subscription has propagated, so this is the only way to know);
//! * requests: the Server's PUSH must have gained the handler's PULL connection
//!   (ZeroMQ socket monitors report it).
//!
//! By the time [`Server::client`] returns, every handler has passed both checks: no
//! sleeping, and the first request and its reply are not lost. Disconnecting is proven
//! too (see [`Connector`]).
//!
//! A [`Client`] is one connection with its own connection id. Every reply goes through
//! one SUB, so the Server's reader thread sorts replies into per-connection mailboxes:
//! clients never see (or lose) each other's replies.
//!
//! # Protocols
//!
//! * [`Protocol::Mongrel2`]: raw requests ([`Client::send`], [`Client::send_json`],
//!   [`Client::send_request`]) and raw replies ([`Client::recv`]).
//! * [`Protocol::Http`]: requests with the headers Mongrel2 1.12 adds (METHOD, VERSION,
//!   URI, PATH, QUERY, FRAGMENT, PATTERN, URL_SCHEME, REMOTE_ADDR, lower-cased client
//!   headers, x-forwarded-for), responses parsed with `httparse`, streamed chunked
//!   responses read incrementally ([`Client::recv_head`], [`Client::recv_body_chunk`]),
//!   an empty reply read as the connection closing.
//! * [`Protocol::WebSocket`]: the handshake as Mongrel2 forwards it (WEBSOCKET_HANDSHAKE
//!   with the accept value as body), frames as `WEBSOCKET` requests with `FLAGS`,
//!   fragmented messages reassembled the way Mongrel2 does, server frames decoded one by
//!   one from reply bodies that may hold several.
//!
//! Mongrel2-level events work for every protocol: [`Client::disconnect`] (the `@*`
//! notice), [`Client::send_credits`], uploads ([`Client::upload_start`],
//! [`Client::upload_stream_start`]...).
//!
//! # Differences from a real Mongrel2 (intended)
//!
//! The fidelity suite (tests/fidelity.rs) runs the same scenarios against the harness
//! and against a real Mongrel2 with real clients, with the same assertions. Where the
//! harness deliberately differs:
//!
//! * It trusts the test: it does not parse raw HTTP, so a request is what the test
//!   builds. It does refuse what Mongrel2 would never forward (more than five values of
//!   one header, control frames over 125 bytes: [`HarnessError::Unsendable`]), except
//!   through the raw [`Client::send_frame`] and [`Client::send`].
//! * Replies Mongrel2 would drop (malformed, or more than the default 128
//!   `limits.handler_targets` ids) are dropped too, but not silently: they are kept for
//!   [`Server::take_rejected`]. Mongrel2's per-connection limits (16 queued messages,
//!   flow-control credits) are not enforced.
//! * Large bodies are not turned into uploads by size; a test sends upload messages
//!   explicitly.
//! * A reply to a connection id with no Client is kept for [`Server::recv`] rather than
//!   answered with a disconnect notice.
//! * The handler's empty reply marks the Client closed; the harness sends no disconnect
//!   notice then (neither does Mongrel2). A Client dropped while open sends one, as
//!   Mongrel2 does when a browser goes away.
//! * `Host` defaults to `localhost`, `REMOTE_ADDR` and `x-forwarded-for` are
//!   `127.0.0.1`, `PATTERN` is `/` unless [`Client::set_pattern`] says otherwise.

mod client;
mod connector;
mod error;
mod handler_thread;
mod headers;
mod router;
mod server;
#[cfg(test)]
mod tests;

#[doc(hidden)]
pub use client::{parse_handshake_for_fuzzing, parse_response_for_fuzzing};
pub use client::{
    Client, HttpRequest, HttpResponse, WsFrame, DEFAULT_HOST, DEFAULT_PATTERN,
    INITIAL_DOWNLOAD_CREDITS, REMOTE_ADDR,
};
pub use connector::{Connector, DEFAULT_CONTROL_TIMEOUT, QUIET_WINDOW};
pub use error::HarnessError;
pub use handler_thread::{spawn_handler, unbound_endpoint, HandlerThread};
pub use router::{RawReply, Rejected};
pub use server::{
    Server, ServerBuilder, DEFAULT_BIND, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RECV_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
};

/// How a [`Client`] reads replies (and which requests it sends).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Raw Mongrel2 requests and replies.
    #[default]
    Mongrel2,
    /// HTTP requests and responses.
    Http,
    /// A WebSocket: handshake, then frames.
    WebSocket,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Mongrel2 => "mongrel2",
            Protocol::Http => "http",
            Protocol::WebSocket => "websocket",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = HarnessError;

    /// `"mongrel2"`, `"http"` or `"websocket"` (the seed's names).
    fn from_str(name: &str) -> Result<Protocol, HarnessError> {
        match name.to_ascii_lowercase().as_str() {
            "mongrel2" => Ok(Protocol::Mongrel2),
            "http" => Ok(Protocol::Http),
            "websocket" => Ok(Protocol::WebSocket),
            _ => Err(HarnessError::Unsendable(format!(
                "unknown protocol {name:?}"
            ))),
        }
    }
}
