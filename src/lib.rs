//! Mongrel2 handlers in Rust.
//!
//! A [`Transceiver`] connects to one or more [Mongrel2](https://mongrel2.org) servers (a
//! PULL for requests, a PUB for replies) and hands the handler typed [`Event`]s. It answers
//! WebSocket handshakes, pings every session and drops the silent ones, echoes closes,
//! enforces the parts of RFC 6455 that Mongrel2 leaves out, delivers one payload to many
//! connections in as few messages as Mongrel2 allows, takes new Mongrel2 connections at run
//! time over an opt-in control socket, and always shuts its ZeroMQ context down without hanging.
//!
//! ```no_run
//! use mongrel2_transceiver::{http::Response, Error, Event, Message, Transceiver};
//!
//! fn main() -> Result<(), Error> {
//!     let mut transceiver = Transceiver::builder("75226238-c5fe-4cb0-ac5b-877fd841e97e")
//!         .pull("tcp://127.0.0.1:9989") // Mongrel2's send_spec
//!         .publish("tcp://127.0.0.1:9988") // Mongrel2's recv_spec
//!         .build()?;
//!     // SIGINT/SIGTERM make recv() return Error::Interrupted; dropping the Transceiver
//!     // then closes every WebSocket session with 1001.
//!     transceiver.stop_on_signals()?;
//!     loop {
//!         match transceiver.recv() {
//!             Ok(Event::Http(request)) => {
//!                 let hello = Response::ok().header("Content-Type", "text/plain").body("hello\n");
//!                 transceiver.reply_http(&request, &hello)?;
//!             }
//!             // A chat room: every text message goes to every session, framed once and
//!             // sent in as few Mongrel2 messages as its handler_targets allows.
//!             Ok(Event::Message { message: Message::Text(text), .. }) => {
//!                 let everyone: Vec<_> = transceiver.sessions().collect();
//!                 transceiver.deliver_text(&everyone, &text)?;
//!             }
//!             // Binary messages are echoed to their sender.
//!             Ok(Event::Message { conn, message }) => {
//!                 transceiver.send_binary(&conn, message.as_bytes())?;
//!             }
//!             Ok(Event::Closed { conn, reason }) => eprintln!("{conn}: {reason}"),
//!             Ok(_) => {}
//!             Err(Error::Interrupted) => return Ok(()),
//!             Err(err) => return Err(err),
//!         }
//!     }
//! }
//! ```
//!
//! The protocol work is done by [`Core`], a state machine without sockets (Mongrel2
//! messages and the time in, events and replies out); the [`Transceiver`] is the ZeroMQ
//! loop around it; with the `tokio` feature, `asynchronous` drives the same core from a
//! tokio runtime (a `Stream` of events, async sending methods). The test harness
//! (`harness`, behind the `harness` feature) plays Mongrel2's part in tests.
//!
//! The wire codecs stand on their own and know nothing of sockets:
//! [`tnetstring`] (typed netstrings, with serde), [`request`] (both header protocols),
//! [`reply`] (framing, batching, extended replies), [`http`] (responses, chunked streams)
//! and [`websocket`] (frames, close codes, handshake, validation).
#![deny(missing_docs)]

/// The ZeroMQ binding whose `Context` and `Socket` appear in this crate's API.
pub use zmq;

#[cfg(feature = "tokio")]
pub mod asynchronous;
#[cfg(feature = "config")]
pub mod config;
pub mod control_port;
#[cfg(feature = "harness")]
pub mod harness;
pub mod http;
pub mod reply;
pub mod request;
pub mod tnetstring;
pub mod transceiver;
pub mod websocket;
pub mod zmtp;

mod token;

pub use transceiver::{
    Builder, CloseReason, ConnId, Core, Error, Event, Events, Handle, Handshake, Message, Outgoing,
    Token, Transceiver, Transport,
};
pub use websocket::CloseCode;

/// The README's examples, compiled as doctests so they cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
