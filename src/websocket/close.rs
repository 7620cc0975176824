//! Close codes and close-frame payloads.

use std::borrow::Cow;
use std::fmt;

use super::frame::FIN;
use super::{Opcode, MAX_CONTROL_PAYLOAD};

/// Longest close reason in bytes: a control payload minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page left).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: message data inconsistent with its type (e.g. invalid UTF-8 text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: unexpected server condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the server is restarting; the client may reconnect (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS: CloseCode = CloseCode(1015);

    /// Whether the code may appear in a close frame: the RFC 6455 codes 1000-1003 and
    /// 1007-1011, and the registered/private ranges 3000-4999. Everything else
    /// (including 1004-1006, 1012-1015 and 0-999) fails the connection with 1002.
    pub const fn is_valid(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }

    /// Whether this endpoint may send the code in a close frame: [`CloseCode::is_valid`]'s
    /// set plus 1012-1014, which the IANA registry added after RFC 6455 (service restart, try
    /// again later, bad gateway) and clients act on, e.g. by reconnecting. Received, they
    /// still fail the connection (the strict RFC reading Autobahn checks). 1005, 1006 and
    /// 1015 only describe a closure locally.
    pub const fn is_sendable(self) -> bool {
        self.is_valid() || matches!(self.0, 1012..=1014)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a close payload is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// One byte: too short for a status code.
    #[error("close payload of 1 byte")]
    Truncated,
    /// Longer than a control frame may be.
    #[error("close payload of {0} bytes exceeds 125")]
    TooLong(usize),
    /// The status code may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCode(CloseCode),
    /// The reason is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidUtf8,
}

impl CloseError {
    /// The close code to fail the connection with: 1007 for a non-UTF-8 reason, else
    /// 1002.
    pub fn close_code(&self) -> CloseCode {
        match self {
            CloseError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The payload of a close frame: a status code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// Status code.
    pub code: CloseCode,
    /// Reason text (at most [`MAX_CLOSE_REASON`] bytes are sent).
    pub reason: Cow<'a, str>,
}

impl<'a> CloseFrame<'a> {
    /// A close payload with `code` and `reason`.
    pub fn new(code: CloseCode, reason: impl Into<Cow<'a, str>>) -> CloseFrame<'a> {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// The reason as sent: cut to at most [`MAX_CLOSE_REASON`] bytes at a character
    /// boundary, so it stays valid UTF-8 and the frame a valid control frame.
    pub fn sent_reason(&self) -> &str {
        truncate_at_char(&self.reason, MAX_CLOSE_REASON)
    }

    /// Appends the close payload (code, then reason) to `out`.
    ///
    /// The reason is truncated as in [`CloseFrame::sent_reason`]. [`CloseCode::NO_STATUS`]
    /// yields an empty payload, which is how "no status" is expressed on the wire; any
    /// other unsendable code is replaced by [`CloseCode::INTERNAL_ERROR`] (and logged),
    /// since the peer would fail the connection over it.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        if self.code == CloseCode::NO_STATUS {
            return;
        }
        let code = if self.code.is_sendable() {
            self.code
        } else {
            log::warn!(
                "close code {} may not be sent; sending {} instead",
                self.code,
                CloseCode::INTERNAL_ERROR
            );
            CloseCode::INTERNAL_ERROR
        };
        let reason = self.sent_reason();
        out.reserve(2 + reason.len());
        out.extend_from_slice(&code.0.to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
    }

    /// The close payload as a new `Vec`; see [`CloseFrame::encode_payload`].
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_payload(&mut out);
        out
    }

    /// Appends a complete server close frame carrying this payload to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(2 + MAX_CONTROL_PAYLOAD);
        out.extend_from_slice(&[FIN | Opcode::Close.as_u8(), 0]);
        self.encode_payload(out);
        // encode_payload writes at most 2 + MAX_CLOSE_REASON = 125 bytes, which fits
        // the 7-bit length patched in here.
        out[start + 1] = (out.len() - start - 2) as u8;
    }

    /// A copy that owns its reason.
    pub fn into_owned(self) -> CloseFrame<'static> {
        CloseFrame {
            code: self.code,
            reason: Cow::Owned(self.reason.into_owned()),
        }
    }
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // Index 0 is always a boundary, so this stops.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes a close frame's payload: `Ok(None)` for an empty one (no status code),
/// else the code and the reason, borrowed from `payload`.
pub fn decode_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, CloseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseError::Truncated),
        _ if payload.len() > MAX_CONTROL_PAYLOAD => Err(CloseError::TooLong(payload.len())),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid() {
                return Err(CloseError::InvalidCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::InvalidUtf8)?;
            Ok(Some(CloseFrame::new(code, reason)))
        }
    }
}
