//! mongrel2-transceiver: Mongrel2 handlers in Rust.
#![deny(missing_docs)]

pub mod harness;
pub mod http;
pub mod reply;
pub mod request;
pub mod tnetstring;
pub mod websocket;
