//! What RFC 6455 requires of a message and Mongrel2 does not check.

use super::{CloseCode, Flags, Opcode, MAX_CONTROL_PAYLOAD};

/// A message Mongrel2 forwarded although RFC 6455 requires failing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A text message is not valid UTF-8 (1007).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// RSV bits are set although no extension was negotiated (1002).
    #[error("RSV bits set without a negotiated extension")]
    ReservedBits,
    /// A reserved opcode was used (1002).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A continuation opcode arrived as a message of its own (1002). Mongrel2
    /// reassembles fragments, so a handler should never see one.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A control frame carries more than 125 bytes (1002).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(usize),
    /// The message exceeds the configured maximum (1009).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    MessageTooBig {
        /// Size of the message.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
}

impl Violation {
    /// The close code to fail the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Violation::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Violation::MessageTooBig { .. } => CloseCode::TOO_BIG,
            Violation::ReservedBits
            | Violation::ReservedOpcode(_)
            | Violation::UnexpectedContinuation
            | Violation::ControlTooLong(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Checks a message from Mongrel2 for what Mongrel2 does not: RSV bits (no extensions
/// are supported), reserved opcodes, a stray continuation, control payload length, size
/// above `max_message_size`, and UTF-8 of text messages (checked last, as the only
/// step that reads the payload).
///
/// A close message's code and reason are checked separately by [`decode_close`](super::decode_close).
pub fn validate(flags: Flags, payload: &[u8], max_message_size: usize) -> Result<(), Violation> {
    if flags.rsv() != 0 {
        return Err(Violation::ReservedBits);
    }
    let opcode = flags.opcode();
    match opcode {
        Opcode::Reserved(bits) => return Err(Violation::ReservedOpcode(bits)),
        Opcode::Continuation => return Err(Violation::UnexpectedContinuation),
        _ => {}
    }
    if opcode.is_control() && payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(Violation::ControlTooLong(payload.len()));
    }
    if payload.len() > max_message_size {
        return Err(Violation::MessageTooBig {
            size: payload.len(),
            max: max_message_size,
        });
    }
    if opcode == Opcode::Text && std::str::from_utf8(payload).is_err() {
        return Err(Violation::InvalidUtf8);
    }
    Ok(())
}
