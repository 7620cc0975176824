//! WebSocket (RFC 6455) pieces a Mongrel2 handler needs.
//!
//! Mongrel2 parses client frames, unmasks and reassembles them, and hands each message
//! to the handler with a `FLAGS` header ([`Flags`]). In the other direction the handler
//! writes raw frame bytes ([`encode_frame`]), including its own `101 Switching Protocols`
//! answer to the handshake ([`handshake_response`]).
//!
//! Mongrel2 does not check RSV bits, reserved opcodes, the UTF-8 of text messages or
//! message sizes; [`validate`] does, and [`Violation::close_code`] says which close code
//! to fail the connection with. Close payloads are checked by [`decode_close`].
//!
//! [`Frame`] encodes and decodes complete frames in either direction (masked or not),
//! which is what a test client needs.

mod close;
mod flags;
mod frame;
mod handshake;
mod validate;

pub use close::{decode_close, CloseCode, CloseError, CloseFrame, MAX_CLOSE_REASON};
pub use flags::{Flags, FlagsError};
pub use frame::{
    encode_frame, Frame, FrameError, Opcode, DEFAULT_MAX_PAYLOAD, MAX_CONTROL_PAYLOAD,
};
pub use handshake::{accept_key, handshake_response, HandshakeError, WEBSOCKET_GUID};
pub use validate::{validate, Violation};

#[cfg(test)]
mod tests;
