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

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload [`Frame::decode`] accepts (16 MiB); see [`Frame::decode_with_limit`].
pub const DEFAULT_MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// Largest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest close reason in bytes: a control payload minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

const FIN: u8 = 0x80;
const RSV_MASK: u8 = 0x70;
const OPCODE_MASK: u8 = 0x0f;
const MASK_BIT: u8 = 0x80;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `0x0`: continues a fragmented message.
    Continuation,
    /// `0x1`: a UTF-8 text message.
    Text,
    /// `0x2`: a binary message.
    Binary,
    /// `0x8`: closes the connection.
    Close,
    /// `0x9`: ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// `0xA`: pong.
    Pong,
    /// `0x3`-`0x7` (data) or `0xB`-`0xF` (control), undefined without an extension.
    /// Only the low four bits are sent.
    Reserved(u8),
}

impl Opcode {
    /// The opcode in the low four bits of `bits` (higher bits are ignored).
    pub const fn from_u8(bits: u8) -> Opcode {
        match bits & OPCODE_MASK {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xa => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    /// The 4-bit wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
            Opcode::Reserved(bits) => bits & OPCODE_MASK,
        }
    }

    /// Whether this is a control opcode (`0x8`-`0xF`): close, ping, pong or reserved.
    pub const fn is_control(self) -> bool {
        self.as_u8() & 0x08 != 0
    }

    /// Whether this opcode is reserved (`0x3`-`0x7`, `0xB`-`0xF`).
    pub const fn is_reserved(self) -> bool {
        matches!(Opcode::from_u8(self.as_u8()), Opcode::Reserved(_))
    }
}

/// Why a `FLAGS` header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// The value is empty (or `0x` with no digits).
    #[error("empty FLAGS value")]
    Empty,
    /// The value is not a hexadecimal (`0x..`) or decimal number.
    #[error("FLAGS value is not a number")]
    InvalidDigit,
    /// The number does not fit in a byte.
    #[error("FLAGS value exceeds 0xFF")]
    OutOfRange,
}

/// The first byte of a WebSocket frame, as Mongrel2 reports it in the `FLAGS` header.
///
/// Mongrel2 sends `0x%X` of the first byte with FIN forced on (for a reassembled
/// message, the first fragment's byte): text `0x81`, binary `0x82`, close `0x88`,
/// ping `0x89`, pong `0x8A`; RSV bits pass through (`0xC1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// Flags for a complete message: FIN set, no RSV bits.
    pub const fn new(opcode: Opcode) -> Flags {
        Flags(FIN | opcode.as_u8())
    }

    /// Parses a `FLAGS` header value: `0x` or `0X` followed by hex digits (either
    /// case), or a plain decimal number. Surrounding ASCII whitespace is ignored;
    /// signs, other prefixes and values above `0xFF` are rejected.
    pub fn from_header(value: &str) -> Result<Flags, FlagsError> {
        let value = value.trim_ascii();
        let (digits, radix) = match value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
        {
            Some(hex) => (hex, 16),
            None => (value, 10),
        };
        if digits.is_empty() {
            return Err(FlagsError::Empty);
        }
        let mut n: u32 = 0;
        for c in digits.chars() {
            let d = c.to_digit(radix).ok_or(FlagsError::InvalidDigit)?;
            // Checked after every digit, so `n` never exceeds 0xFF * 16 + 15.
            n = n * radix + d;
            if n > 0xff {
                return Err(FlagsError::OutOfRange);
            }
        }
        u8::try_from(n)
            .map(Flags)
            .map_err(|_| FlagsError::OutOfRange)
    }

    /// The FIN bit (always set by Mongrel2).
    pub const fn fin(self) -> bool {
        self.0 & FIN != 0
    }

    /// The RSV1 bit (e.g. permessage-deflate).
    pub const fn rsv1(self) -> bool {
        self.0 & 0x40 != 0
    }

    /// The RSV2 bit.
    pub const fn rsv2(self) -> bool {
        self.0 & 0x20 != 0
    }

    /// The RSV3 bit.
    pub const fn rsv3(self) -> bool {
        self.0 & 0x10 != 0
    }

    /// The three RSV bits as a number `0..=7` (RSV1 is the highest).
    pub const fn rsv(self) -> u8 {
        (self.0 & RSV_MASK) >> 4
    }

    /// The opcode.
    pub const fn opcode(self) -> Opcode {
        Opcode::from_u8(self.0)
    }

    /// The header form Mongrel2 uses, e.g. `0x81` (uppercase hex, no padding).
    pub fn to_header(self) -> String {
        format!("0x{:X}", self.0)
    }
}

impl FromStr for Flags {
    type Err = FlagsError;

    fn from_str(s: &str) -> Result<Flags, FlagsError> {
        Flags::from_header(s)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:X}", self.0)
    }
}

/// Writes a frame header for a payload of `len` bytes, using the shortest length form.
fn write_header(first: u8, mask_bit: u8, len: usize, out: &mut Vec<u8>) {
    if len < 126 {
        // `len < 126` fits in the 7-bit length field.
        out.extend_from_slice(&[first, mask_bit | len as u8]);
    } else if let Ok(len16) = u16::try_from(len) {
        let l = len16.to_be_bytes();
        out.extend_from_slice(&[first, mask_bit | 126, l[0], l[1]]);
    } else {
        // usize is at most 64 bits on every supported target.
        let l = (len as u64).to_be_bytes();
        out.extend_from_slice(&[first, mask_bit | 127]);
        out.extend_from_slice(&l);
    }
}

/// Appends a complete, unmasked, final frame (server to client) to `out`.
///
/// The caller keeps control payloads (close, ping, pong) within
/// [`MAX_CONTROL_PAYLOAD`] bytes; clients fail the connection otherwise.
///
/// ```
/// use mongrel2_transceiver::websocket::{encode_frame, Opcode};
/// let mut out = Vec::new();
/// encode_frame(Opcode::Text, b"hi", &mut out);
/// assert_eq!(out, b"\x81\x02hi");
/// ```
#[inline]
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 10);
    write_header(FIN | opcode.as_u8(), 0, payload.len(), out);
    out.extend_from_slice(payload);
}

/// XORs `data` with the repeating 4-byte `key`, eight bytes at a time.
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key restarts at index 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared payload length exceeds the configured maximum.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The 64-bit payload length has its most significant bit set.
    #[error("64-bit frame length has its most significant bit set")]
    LengthHighBit,
    /// The payload length is not encoded in the shortest form.
    #[error("frame length {0} is not minimally encoded")]
    NonMinimalLength(u64),
    /// A control frame carries more than 125 bytes.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    /// A control frame has FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
}

impl FrameError {
    /// The close code to fail the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::PayloadTooLarge { .. } => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// One WebSocket frame.
///
/// Decoding borrows an unmasked payload from the input and owns an unmasked copy of a
/// masked one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Final fragment of a message.
    pub fin: bool,
    /// The RSV1-3 bits as a number `0..=7` (RSV1 highest); higher bits are ignored.
    pub rsv: u8,
    /// The opcode.
    pub opcode: Opcode,
    /// The payload, unmasked.
    pub payload: Cow<'a, [u8]>,
}

impl<'a> Frame<'a> {
    /// A final frame with no RSV bits.
    pub fn new(opcode: Opcode, payload: impl Into<Cow<'a, [u8]>>) -> Frame<'a> {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
        }
    }

    /// The frame's first byte as [`Flags`].
    pub fn flags(&self) -> Flags {
        Flags(self.first_byte())
    }

    fn first_byte(&self) -> u8 {
        (if self.fin { FIN } else { 0 }) | ((self.rsv << 4) & RSV_MASK) | self.opcode.as_u8()
    }

    /// Appends the frame to `out`, masked with `mask` if given (clients must mask,
    /// servers must not).
    ///
    /// Nothing is validated: this also writes fragments (`fin: false`, then
    /// [`Opcode::Continuation`]) and deliberately broken frames for tests.
    pub fn encode(&self, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
        let len = self.payload.len();
        out.reserve(len + 14);
        let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
        write_header(self.first_byte(), mask_bit, len, out);
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                let start = out.len();
                out.extend_from_slice(&self.payload);
                apply_mask(&mut out[start..], key);
            }
            None => out.extend_from_slice(&self.payload),
        }
    }

    /// Decodes one frame from the start of `buf`, accepting payloads up to
    /// [`DEFAULT_MAX_PAYLOAD`].
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame, else the frame and
    /// the number of bytes it took.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        Frame::decode_with_limit(buf, DEFAULT_MAX_PAYLOAD)
    }

    /// Like [`Frame::decode`] with a payload limit of `max_payload` bytes.
    ///
    /// The length is checked as soon as the header is complete, so an oversized frame
    /// fails before its payload arrives and nothing is allocated for it. Framing rules
    /// are enforced (minimal length encoding, control frames final and at most 125
    /// bytes); RSV bits, reserved opcodes and UTF-8 are left to [`validate`].
    pub fn decode_with_limit(
        buf: &'a [u8],
        max_payload: u64,
    ) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        let fin = first & FIN != 0;
        let opcode = Opcode::from_u8(first);
        let masked = second & MASK_BIT != 0;
        let (len, mut pos) = match second & 0x7f {
            126 => {
                let Some(&[a, b]) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes([a, b]));
                if len < 126 {
                    return Err(FrameError::NonMinimalLength(len));
                }
                (len, 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                let len = u64::from_be_bytes(word);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthHighBit);
                }
                if len <= 0xffff {
                    return Err(FrameError::NonMinimalLength(len));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(FrameError::ControlTooLong(len));
            }
        }
        let too_large = FrameError::PayloadTooLarge {
            len,
            max: max_payload,
        };
        if len > max_payload {
            return Err(too_large);
        }
        let len = usize::try_from(len).map_err(|_| too_large.clone())?;
        let key = if masked {
            let Some(bytes) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            let mut key = [0u8; 4];
            key.copy_from_slice(bytes);
            Some(key)
        } else {
            None
        };
        let end = pos.checked_add(len).ok_or(too_large)?;
        let Some(payload) = buf.get(pos..end) else {
            return Ok(None);
        };
        let payload = match key {
            Some(key) => {
                let mut owned = payload.to_vec();
                apply_mask(&mut owned, key);
                Cow::Owned(owned)
            }
            None => Cow::Borrowed(payload),
        };
        let frame = Frame {
            fin,
            rsv: (first & RSV_MASK) >> 4,
            opcode,
            payload,
        };
        Ok(Some((frame, end)))
    }

    /// A copy that owns its payload.
    pub fn into_owned(self) -> Frame<'static> {
        Frame {
            fin: self.fin,
            rsv: self.rsv,
            opcode: self.opcode,
            payload: Cow::Owned(self.payload.into_owned()),
        }
    }
}

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
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS: CloseCode = CloseCode(1015);

    /// Whether the code may appear in a close frame: the RFC 6455 codes 1000-1003 and
    /// 1007-1011, and the registered/private ranges 3000-4999. Everything else
    /// (including 1004-1006, 1012-1015 and 0-999) fails the connection with 1002.
    pub const fn is_valid(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }

    /// Whether this endpoint may send the code in a close frame. Same set as
    /// [`CloseCode::is_valid`]: 1005, 1006 and 1015 only describe a closure locally.
    pub const fn is_sendable(self) -> bool {
        self.is_valid()
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
pub enum CloseError {
    /// One byte: too short for a status code.
    #[error("close payload of 1 byte")]
    Truncated,
    /// Longer than a control frame may be.
    #[error("close payload of {0} bytes exceeds 125")]
    TooLong(usize),
    /// The status code may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCode(u16),
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
                return Err(CloseError::InvalidCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::InvalidUtf8)?;
            Ok(Some(CloseFrame::new(code, reason)))
        }
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key + [`WEBSOCKET_GUID`])). Surrounding whitespace of `key` is ignored.
///
/// Mongrel2 already computes this and sends it as the body of the
/// `WEBSOCKET_HANDSHAKE` request; this is for checking it and for test clients.
///
/// ```
/// use mongrel2_transceiver::websocket::accept_key;
/// assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key.trim_ascii().as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

/// Why a handshake response could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The accept value is not a 28-character base64 SHA-1 digest.
    #[error("invalid Sec-WebSocket-Accept value {0:?}")]
    InvalidAccept(String),
    /// The subprotocol is not a non-empty token.
    #[error("invalid Sec-WebSocket-Protocol value {0:?}")]
    InvalidProtocol(String),
}

fn is_accept_value(accept: &str) -> bool {
    let bytes = accept.as_bytes();
    bytes.len() == 28
        && bytes[27] == b'='
        && bytes[..27]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// The `101 Switching Protocols` response completing the handshake, ending in an
/// empty line.
///
/// `accept` is the `Sec-WebSocket-Accept` value (the body Mongrel2 sends with
/// `WEBSOCKET_HANDSHAKE`, or [`accept_key`]); `protocol` is the chosen subprotocol, if
/// any. Both are checked (base64 digest, token) so that neither can inject headers.
///
/// ```
/// use mongrel2_transceiver::websocket::handshake_response;
/// let bytes = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None).unwrap();
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
/// ```
pub fn handshake_response(accept: &str, protocol: Option<&str>) -> Result<Vec<u8>, HandshakeError> {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    const PROTOCOL: &[u8] = b"\r\nSec-WebSocket-Protocol: ";
    if !is_accept_value(accept) {
        return Err(HandshakeError::InvalidAccept(accept.to_owned()));
    }
    if let Some(p) = protocol {
        if !crate::http::is_valid_header_name(p) {
            return Err(HandshakeError::InvalidProtocol(p.to_owned()));
        }
    }
    let protocol_len = protocol.map_or(0, |p| PROTOCOL.len() + p.len());
    let mut out = Vec::with_capacity(HEAD.len() + accept.len() + protocol_len + 4);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    Ok(out)
}

/// A message Mongrel2 forwarded although RFC 6455 requires failing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
/// A close message's code and reason are checked separately by [`decode_close`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key_sample() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(" dGhlIHNhbXBsZSBub25jZQ== "),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn flags_from_mongrel2() {
        let cases = [
            ("0x81", Opcode::Text, 0),
            ("0x82", Opcode::Binary, 0),
            ("0x88", Opcode::Close, 0),
            ("0x89", Opcode::Ping, 0),
            ("0x8A", Opcode::Pong, 0),
            ("0x8a", Opcode::Pong, 0),
            ("0XC1", Opcode::Text, 4),
        ];
        for (header, opcode, rsv) in cases {
            let flags = Flags::from_header(header).unwrap();
            assert!(flags.fin(), "{header}");
            assert_eq!(flags.opcode(), opcode, "{header}");
            assert_eq!(flags.rsv(), rsv, "{header}");
        }
        let rsv1 = Flags::from_header("0xC1").unwrap();
        assert!(rsv1.rsv1() && !rsv1.rsv2() && !rsv1.rsv3());
        assert_eq!(Flags::from_header("129"), Ok(Flags(0x81)));
        assert_eq!(Flags::from_header("0x0081"), Ok(Flags(0x81)));
        assert_eq!(Flags::from_header(" 0x81 "), Ok(Flags(0x81)));
        assert_eq!(Flags(0x8a).to_header(), "0x8A");
        assert_eq!(Flags::new(Opcode::Ping), Flags(0x89));
        assert_eq!("0x82".parse::<Flags>(), Ok(Flags(0x82)));
    }

    #[test]
    fn flags_rejects_garbage() {
        assert_eq!(Flags::from_header(""), Err(FlagsError::Empty));
        assert_eq!(Flags::from_header("0x"), Err(FlagsError::Empty));
        assert_eq!(Flags::from_header("0x100"), Err(FlagsError::OutOfRange));
        assert_eq!(Flags::from_header("256"), Err(FlagsError::OutOfRange));
        assert_eq!(
            Flags::from_header("99999999999999999999999"),
            Err(FlagsError::OutOfRange)
        );
        for bad in [
            "0x+81", "+129", "-1", "0xg1", "81h", "0b1", "0x 81", "0x８１",
        ] {
            assert_eq!(
                Flags::from_header(bad),
                Err(FlagsError::InvalidDigit),
                "{bad}"
            );
        }
    }

    #[test]
    fn opcodes() {
        for bits in 0..16u8 {
            let op = Opcode::from_u8(bits);
            assert_eq!(op.as_u8(), bits);
            assert_eq!(op.is_control(), bits >= 8);
            assert_eq!(op.is_reserved(), matches!(bits, 3..=7 | 11..=15));
        }
        assert_eq!(Opcode::from_u8(0x81), Opcode::Text);
    }

    fn encoded(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(Opcode::Binary, &vec![7u8; len], &mut out);
        out
    }

    #[test]
    fn frame_length_boundaries() {
        assert_eq!(encoded(0), [0x82, 0]);
        assert_eq!(encoded(125)[..2], [0x82, 125]);
        assert_eq!(encoded(125).len(), 2 + 125);
        assert_eq!(encoded(126)[..4], [0x82, 126, 0, 126]);
        assert_eq!(encoded(126).len(), 4 + 126);
        assert_eq!(encoded(65535)[..4], [0x82, 126, 0xff, 0xff]);
        assert_eq!(encoded(65535).len(), 4 + 65535);
        assert_eq!(encoded(65536)[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(encoded(65536).len(), 10 + 65536);
        for len in [0, 125, 126, 65535, 65536] {
            let bytes = encoded(len);
            let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(frame.payload.len(), len);
            assert!(matches!(frame.payload, Cow::Borrowed(_)));
            assert!(frame.fin);
            assert_eq!(frame.opcode, Opcode::Binary);
        }
    }

    #[test]
    fn decode_needs_more_bytes() {
        let bytes = encoded(65536);
        for cut in [0, 1, 2, 5, 9, 10, 100, bytes.len() - 1] {
            assert_eq!(Frame::decode(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        // Trailing bytes of the next frame are left alone.
        let mut two = encoded(3);
        two.extend_from_slice(&encoded(1));
        let (frame, used) = Frame::decode(&two).unwrap().unwrap();
        assert_eq!((frame.payload.len(), used), (3, 5));
    }

    #[test]
    fn masked_decode() {
        // RFC 6455 5.7: a masked "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.opcode, Opcode::Text);
        assert_eq!(&*frame.payload, b"Hello");
        assert!(matches!(frame.payload, Cow::Owned(_)));
        let mut again = Vec::new();
        frame.encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut again);
        assert_eq!(again, bytes);
        // Masked header incomplete.
        assert_eq!(Frame::decode(&bytes[..5]), Ok(None));
    }

    #[test]
    fn masked_long_round_trip() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let frame = Frame::new(Opcode::Binary, &payload[..]);
        let mut out = Vec::new();
        frame.encode(Some([1, 2, 3, 4]), &mut out);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(out[8] ^ 1, payload[0]);
        let (back, _) = Frame::decode(&out).unwrap().unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn fragments() {
        let mut out = Vec::new();
        let first = Frame {
            fin: false,
            rsv: 0,
            opcode: Opcode::Text,
            payload: Cow::Borrowed(b"Hel"),
        };
        let last = Frame::new(Opcode::Continuation, &b"lo"[..]);
        first.encode(None, &mut out);
        last.encode(Some([9, 9, 9, 9]), &mut out);
        assert_eq!(&out[..5], b"\x01\x03Hel");
        let (a, n) = Frame::decode(&out).unwrap().unwrap();
        let (b, m) = Frame::decode(&out[n..]).unwrap().unwrap();
        assert_eq!((a, b), (first, last));
        assert_eq!(n + m, out.len());
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            Frame::decode(&[0x82, 126, 0, 125]),
            Err(FrameError::NonMinimalLength(125))
        );
        assert_eq!(
            Frame::decode(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(FrameError::NonMinimalLength(0xffff))
        );
        assert_eq!(
            Frame::decode(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthHighBit)
        );
        // A huge declared length fails at once, without waiting for (or allocating) it.
        let err = Frame::decode(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err();
        assert!(matches!(err, FrameError::PayloadTooLarge { .. }));
        assert_eq!(err.close_code(), CloseCode::TOO_BIG);
        assert_eq!(
            Frame::decode_with_limit(&encoded(11), 10),
            Err(FrameError::PayloadTooLarge { len: 11, max: 10 })
        );
        assert!(Frame::decode_with_limit(&encoded(10), 10)
            .unwrap()
            .is_some());
        assert_eq!(
            Frame::decode(&[0x09, 0]),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            Frame::decode(&[0x89, 126, 0, 126]),
            Err(FrameError::ControlTooLong(126))
        );
        assert_eq!(
            FrameError::ControlTooLong(126).close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        // RSV bits and reserved opcodes are framing-valid; validate() judges them.
        let (frame, _) = Frame::decode(&[0xf3, 0]).unwrap().unwrap();
        assert_eq!((frame.rsv, frame.opcode), (7, Opcode::Reserved(3)));
        assert_eq!(frame.flags(), Flags(0xf3));
    }

    #[test]
    fn close_codes() {
        for valid in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(CloseCode(valid).is_valid(), "{valid}");
            assert!(CloseCode(valid).is_sendable(), "{valid}");
        }
        for invalid in [
            0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(invalid).is_valid(), "{invalid}");
            assert!(!CloseCode(invalid).is_sendable(), "{invalid}");
        }
    }

    #[test]
    fn close_payload_round_trip() {
        let close = CloseFrame::new(CloseCode::GOING_AWAY, "bye");
        let payload = close.to_payload();
        assert_eq!(payload, b"\x03\xe9bye");
        assert_eq!(decode_close(&payload), Ok(Some(close.clone())));
        let mut frame = Vec::new();
        close.encode_frame(&mut frame);
        assert_eq!(frame, b"\x88\x05\x03\xe9bye");
        assert_eq!(decode_close(b""), Ok(None));
        assert_eq!(
            decode_close(b"\x0f\xa0"),
            Ok(Some(CloseFrame::new(CloseCode(4000), "")))
        );
    }

    #[test]
    fn close_payload_errors() {
        let cases: [(&[u8], CloseError, u16); 5] = [
            (b"\x03", CloseError::Truncated, 1002),
            (b"\x03\xed", CloseError::InvalidCode(1005), 1002),
            (b"\x00\x00", CloseError::InvalidCode(0), 1002),
            (b"\x03\xe8\xff\xfe", CloseError::InvalidUtf8, 1007),
            (&[b'a'; 126], CloseError::TooLong(126), 1002),
        ];
        for (payload, err, code) in cases {
            assert_eq!(decode_close(payload), Err(err.clone()));
            assert_eq!(err.close_code(), CloseCode(code));
        }
    }

    #[test]
    fn close_reason_truncated_at_char_boundary() {
        // 61 two-byte characters = 122 bytes; one more would cross 123.
        let reason = "é".repeat(70);
        let close = CloseFrame::new(CloseCode::NORMAL, reason);
        assert_eq!(close.sent_reason().len(), 122);
        let payload = close.to_payload();
        assert_eq!(payload.len(), 124);
        let back = decode_close(&payload).unwrap().unwrap();
        assert_eq!(back.reason, "é".repeat(61));
        let ascii = CloseFrame::new(CloseCode::NORMAL, "x".repeat(200));
        assert_eq!(ascii.to_payload().len(), 125);
        let mut frame = Vec::new();
        ascii.encode_frame(&mut frame);
        assert_eq!(frame[..2], [0x88, 125]);
    }

    #[test]
    fn unsendable_close_codes() {
        assert!(CloseFrame::new(CloseCode::NO_STATUS, "x")
            .to_payload()
            .is_empty());
        let mut frame = Vec::new();
        CloseFrame::new(CloseCode::NO_STATUS, "").encode_frame(&mut frame);
        assert_eq!(frame, [0x88, 0]);
        assert_eq!(
            CloseFrame::new(CloseCode::ABNORMAL, "x").to_payload(),
            b"\x03\xf3x"
        );
    }

    #[test]
    fn handshake() {
        let bytes = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat.v2")).unwrap();
        assert_eq!(
            bytes,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat.v2\r\n\r\n"
        );
        assert!(matches!(
            handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("a\r\nX: y")),
            Err(HandshakeError::InvalidProtocol(_))
        ));
        assert!(handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("")).is_err());
        assert!(handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xO\r\n", None).is_err());
        assert!(handshake_response("short=", None).is_err());
    }

    #[test]
    fn validation() {
        let max = 1024;
        assert_eq!(validate(Flags(0x81), "héllo".as_bytes(), max), Ok(()));
        assert_eq!(validate(Flags(0x82), &[0xff, 0xfe], max), Ok(()));
        assert_eq!(validate(Flags(0x88), &[0x03, 0xe8], max), Ok(()));
        assert_eq!(validate(Flags(0x89), &[0; 125], max), Ok(()));

        let cases = [
            (Flags(0x81), vec![0xff], Violation::InvalidUtf8, 1007),
            (Flags(0xc1), b"x".to_vec(), Violation::ReservedBits, 1002),
            (Flags(0x92), vec![], Violation::ReservedBits, 1002),
            (Flags(0x83), vec![], Violation::ReservedOpcode(3), 1002),
            (Flags(0x8b), vec![], Violation::ReservedOpcode(11), 1002),
            (Flags(0x8f), vec![], Violation::ReservedOpcode(15), 1002),
            (Flags(0x80), vec![], Violation::UnexpectedContinuation, 1002),
            (
                Flags(0x89),
                vec![0; 126],
                Violation::ControlTooLong(126),
                1002,
            ),
            (
                Flags(0x82),
                vec![0; 1025],
                Violation::MessageTooBig {
                    size: 1025,
                    max: 1024,
                },
                1009,
            ),
        ];
        for (flags, payload, violation, code) in cases {
            assert_eq!(validate(flags, &payload, max), Err(violation.clone()));
            assert_eq!(violation.close_code(), CloseCode(code));
        }
        // Size is judged before UTF-8, so an oversized text message is never scanned.
        assert!(matches!(
            validate(Flags(0x81), &[0xff; 2000], max),
            Err(Violation::MessageTooBig { .. })
        ));
    }

    #[test]
    fn mask_matches_bytewise_xor() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let key = [0xde, 0xad, 0xbe, 0xef];
            let mut fast = data.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
