//! Mongrel2 handlers in Rust.
//!
//! A [`Transceiver`] connects to one or more [Mongrel2](https://mongrel2.org) servers (a
//! PULL for requests, a PUB for replies) and hands the handler typed [`Event`]s. It answers
//! WebSocket handshakes, pings every session and drops the silent ones, echoes closes,
//! enforces the parts of RFC 6455 that Mongrel2 leaves out, delivers one payload to many
//! connections in as few messages as Mongrel2 allows, takes new Mongrel2 connections at run
//! time over a control socket, and always shuts its ZeroMQ context down without hanging.
//!
//! ```no_run
//! use mongrel2_transceiver::{http::Response, Event, Transceiver};
//!
//! fn main() -> Result<(), mongrel2_transceiver::Error> {
//!     let mut transceiver = Transceiver::builder("75226238-c5fe-4cb0-ac5b-877fd841e97e")
//!         .pull("tcp://127.0.0.1:9989") // Mongrel2's send_spec
//!         .publish("tcp://127.0.0.1:9988") // Mongrel2's recv_spec
//!         .build()?;
//!     loop {
//!         match transceiver.recv()? {
//!             Event::Http(request) => {
//!                 let hello = Response::ok().header("Content-Type", "text/plain").body("hello\n");
//!                 transceiver.reply_http(&request, &hello)?;
//!             }
//!             Event::Message { conn, message } => {
//!                 transceiver.reply(&conn, websocket_echo(message.as_bytes()))?;
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! fn websocket_echo(payload: &[u8]) -> Vec<u8> {
//!     let mut frame = Vec::new();
//!     mongrel2_transceiver::websocket::encode_frame(
//!         mongrel2_transceiver::websocket::Opcode::Binary,
//!         payload,
//!         &mut frame,
//!     );
//!     frame
//! }
//! ```
//!
//! The wire codecs stand on their own and know nothing of sockets:
//! [`tnetstring`] (typed netstrings, with serde), [`request`] (both header protocols),
//! [`reply`] (framing, batching, extended replies), [`http`] (responses, chunked streams)
//! and [`websocket`] (frames, close codes, handshake, validation).
#![deny(missing_docs)]

pub mod harness;
pub mod http;
pub mod reply;
pub mod request;
pub mod tnetstring;
pub mod transceiver;
pub mod websocket;

mod token;

pub use transceiver::{
    Builder, CloseReason, ConnId, Error, Event, Events, Handle, Handshake, Message, Token,
    Transceiver,
};

/// The README's examples, compiled as doctests so they cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
