//! Frame coding: opcodes, headers, masking, and whole frames in either direction.

use std::borrow::Cow;

use super::{CloseCode, Flags};

/// Largest payload [`Frame::decode`] accepts (16 MiB); see [`Frame::decode_with_limit`].
pub const DEFAULT_MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// Largest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

pub(super) const FIN: u8 = 0x80;
pub(super) const RSV_MASK: u8 = 0x70;
pub(super) const OPCODE_MASK: u8 = 0x0f;
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
pub(super) fn apply_mask(data: &mut [u8], key: [u8; 4]) {
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
#[non_exhaustive]
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
    /// bytes); RSV bits, reserved opcodes and UTF-8 are left to [`validate`](super::validate()).
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
