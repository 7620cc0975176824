//! ZMTP 3.0, the wire format of ZeroMQ sockets, as far as a handler needs it to talk to
//! Mongrel2's PUSH and SUB without libzmq: the greeting with the NULL mechanism, the READY
//! handshake, frames, and the subscriptions a SUB sends.
//!
//! Sans-IO: [`Decoder`] takes the bytes read so far and hands back what they complete; the
//! `write_*` functions append to a buffer the caller writes. Used by
//! [`Transport::Direct`](crate::transceiver::Transport::Direct).
//!
//! ```
//! use mongrel2_transceiver::zmtp::{self, Decoder, Item};
//! # fn main() -> Result<(), zmtp::ZmtpError> {
//!
//! // What a PUSH peer sends: its greeting, READY, then one message.
//! let mut wire = zmtp::greeting().to_vec();
//! zmtp::write_ready(&mut wire, "PUSH");
//! zmtp::write_message(&mut wire, b"hello");
//!
//! let mut decoder = Decoder::new(1 << 20);
//! let mut at = 0;
//! let mut seen = Vec::new();
//! while let Some((item, used)) = decoder.decode(&wire[at..])? {
//!     at += used;
//!     seen.push(match item {
//!         Item::Greeting => "greeting".to_owned(),
//!         Item::Command { name, body } => {
//!             let kind = zmtp::socket_type(body)?.unwrap_or_default();
//!             format!("{} {}", String::from_utf8_lossy(name), String::from_utf8_lossy(kind))
//!         }
//!         Item::Message { body, .. } => String::from_utf8_lossy(body).into_owned(),
//!     });
//! }
//! assert_eq!(seen, ["greeting", "READY PUSH", "hello"]);
//! # Ok(())
//! # }
//! ```

/// The greeting's length: signature, version, mechanism, as-server, filler.
pub const GREETING_LEN: usize = 64;

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;
/// READY carries a handful of properties; a peer sending more is not a ZeroMQ socket.
const MAX_PROPERTIES: usize = 32;

/// What a peer sent that ZMTP 3.0 with the NULL mechanism does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZmtpError {
    /// The first bytes are not a ZMTP signature (not a ZeroMQ peer).
    #[error("not a ZMTP greeting (signature bytes {0:02x?})")]
    Signature([u8; 2]),
    /// A ZMTP 1.0 or 2.0 peer (libzmq before 4.0).
    #[error("the peer speaks ZMTP {0}.x; 3.0 or later is needed (or use the libzmq transport)")]
    Version(u8),
    /// A security mechanism other than NULL (CURVE, PLAIN).
    #[error("the peer asks for the {0:?} mechanism; only NULL is supported")]
    Mechanism(String),
    /// Reserved flag bits were set.
    #[error("frame flags {0:#04x} set reserved bits")]
    Flags(u8),
    /// A frame longer than the decoder accepts.
    #[error("a {size}-byte frame is over the {max}-byte limit")]
    TooLarge {
        /// The length the frame declared.
        size: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// A command frame whose name or properties do not fit in it.
    #[error("malformed command frame")]
    Command,
}

/// One thing decoded from the stream (all ZMTP 3 has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// The peer's greeting, checked (ZMTP 3.x, NULL mechanism).
    Greeting,
    /// A command frame (`READY`, `PING`, `SUBSCRIBE`, ...): its name and the rest of it.
    Command {
        /// The command name.
        name: &'a [u8],
        /// The bytes after the name.
        body: &'a [u8],
    },
    /// A message frame; `more` when further frames of the same message follow.
    Message {
        /// The frame's bytes.
        body: &'a [u8],
        /// Whether more frames of this message follow.
        more: bool,
    },
}

/// Decodes a peer's stream: the greeting first, then frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: usize,
    greeted: bool,
}

impl Decoder {
    /// A decoder refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            max_frame,
            greeted: false,
        }
    }

    /// Whether the peer's greeting has been decoded.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// The next item at the start of `bytes` and how many bytes it took; `None` when `bytes`
    /// holds only part of it. After an error the stream cannot be resynchronised: drop the
    /// connection.
    pub fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<(Item<'a>, usize)>, ZmtpError> {
        if !self.greeted {
            return self.decode_greeting(bytes);
        }
        let Some(&flags) = bytes.first() else {
            return Ok(None);
        };
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            return Err(ZmtpError::Flags(flags));
        }
        let (size, header): (u64, usize) = if flags & FLAG_LONG != 0 {
            let Some(field) = bytes.get(1..9) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(field);
            (u64::from_be_bytes(be), 9)
        } else {
            let Some(&size) = bytes.get(1) else {
                return Ok(None);
            };
            (u64::from(size), 2)
        };
        let size = match usize::try_from(size) {
            Ok(size) if size <= self.max_frame => size,
            _ => {
                return Err(ZmtpError::TooLarge {
                    size,
                    max: self.max_frame,
                })
            }
        };
        let Some(body) = header
            .checked_add(size)
            .and_then(|end| bytes.get(header..end))
        else {
            return Ok(None);
        };
        let item = if flags & FLAG_COMMAND != 0 {
            let (&name_len, rest) = body.split_first().ok_or(ZmtpError::Command)?;
            let name_len = usize::from(name_len);
            if rest.len() < name_len {
                return Err(ZmtpError::Command);
            }
            let (name, body) = rest.split_at(name_len);
            Item::Command { name, body }
        } else {
            Item::Message {
                body,
                more: flags & FLAG_MORE != 0,
            }
        };
        Ok(Some((item, header + size)))
    }

    /// Checks a greeting as soon as its parts are in: a peer that is not ZMTP 3 is refused on
    /// its first bytes rather than after 64 of them.
    fn decode_greeting<'a>(
        &mut self,
        bytes: &'a [u8],
    ) -> Result<Option<(Item<'a>, usize)>, ZmtpError> {
        if let (Some(&first), Some(&last)) = (bytes.first(), bytes.get(9)) {
            if first != 0xff || last & 1 != 1 {
                return Err(ZmtpError::Signature([first, last]));
            }
        }
        if let Some(&major) = bytes.get(10) {
            if major < 3 {
                return Err(ZmtpError::Version(major));
            }
        }
        let Some(mechanism) = bytes.get(12..32) else {
            return Ok(None);
        };
        let end = mechanism
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(mechanism.len());
        if &mechanism[..end] != b"NULL" {
            return Err(ZmtpError::Mechanism(
                String::from_utf8_lossy(&mechanism[..end]).into_owned(),
            ));
        }
        if bytes.len() < GREETING_LEN {
            return Ok(None);
        }
        self.greeted = true;
        Ok(Some((Item::Greeting, GREETING_LEN)))
    }
}

/// Our greeting: ZMTP 3.0, NULL mechanism, client. Saying 3.0 rather than 3.1 has a libzmq
/// peer send subscriptions as messages, the form every 3.x peer understands.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut greeting = [0u8; GREETING_LEN];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    greeting
}

/// Appends a frame header for `size` bytes.
fn write_header(out: &mut Vec<u8>, flags: u8, size: usize) {
    match u8::try_from(size) {
        Ok(short) => out.extend_from_slice(&[flags, short]),
        Err(_) => {
            out.push(flags | FLAG_LONG);
            out.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
}

/// Appends a one-frame message.
pub fn write_message(out: &mut Vec<u8>, body: &[u8]) {
    write_header(out, 0, body.len());
    out.extend_from_slice(body);
}

/// Appends the READY command announcing our socket type (`"PULL"`, `"PUB"`, ...).
pub fn write_ready(out: &mut Vec<u8>, socket_type: &str) {
    const NAME: &[u8] = b"READY";
    const PROPERTY: &[u8] = b"Socket-Type";
    let size = 1 + NAME.len() + 1 + PROPERTY.len() + 4 + socket_type.len();
    write_header(out, FLAG_COMMAND, size);
    out.push(NAME.len() as u8);
    out.extend_from_slice(NAME);
    out.push(PROPERTY.len() as u8);
    out.extend_from_slice(PROPERTY);
    out.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    out.extend_from_slice(socket_type.as_bytes());
}

/// The `Socket-Type` property of a READY command's body, if it has one.
pub fn socket_type(body: &[u8]) -> Result<Option<&[u8]>, ZmtpError> {
    let mut rest = body;
    for _ in 0..MAX_PROPERTIES {
        let Some((&name_len, after)) = rest.split_first() else {
            return Ok(None);
        };
        let name = after
            .get(..usize::from(name_len))
            .ok_or(ZmtpError::Command)?;
        let after = &after[usize::from(name_len)..];
        let len_bytes = after.get(..4).ok_or(ZmtpError::Command)?;
        let value_len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let value_len = usize::try_from(value_len).map_err(|_| ZmtpError::Command)?;
        let end = value_len.checked_add(4).ok_or(ZmtpError::Command)?;
        let value = after.get(4..end).ok_or(ZmtpError::Command)?;
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            return Ok(Some(value));
        }
        rest = &after[end..];
    }
    if rest.is_empty() {
        return Ok(None);
    }
    Err(ZmtpError::Command)
}

/// A subscription change a SUB sent: as a message (ZMTP 3.0: first byte 1 subscribes, 0
/// cancels) or as a SUBSCRIBE / CANCEL command (3.1). `None` for anything else.
pub fn subscription<'a>(item: &Item<'a>) -> Option<(bool, &'a [u8])> {
    match *item {
        Item::Message { body, more: false } => match body.split_first() {
            Some((1, prefix)) => Some((true, prefix)),
            Some((0, prefix)) => Some((false, prefix)),
            _ => None,
        },
        Item::Command { name, body } if name == b"SUBSCRIBE" => Some((true, body)),
        Item::Command { name, body } if name == b"CANCEL" => Some((false, body)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
