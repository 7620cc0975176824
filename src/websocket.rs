//! WebSocket support.
//!
//! MINIMAL STAND-IN written by the codec work so `request` can parse Mongrel2's
//! `FLAGS` header: only [`Opcode`], [`Flags`] and [`FlagsError`] per the API
//! contract. The full websocket module replaces this file at merge.

use std::fmt;

/// A WebSocket frame opcode (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
    /// Any other (reserved) 4-bit value.
    Reserved(u8),
}

impl Opcode {
    /// The opcode for the low four bits of `b`.
    pub fn from_u8(b: u8) -> Opcode {
        match b & 0x0F {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
            Opcode::Reserved(b) => b & 0x0F,
        }
    }

    /// Whether this is a control opcode (close, ping, pong, reserved 0xB-0xF).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x08 != 0
    }
}

/// The first byte of a frame as Mongrel2 reports it in the `FLAGS` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

/// A `FLAGS` header that is not a byte value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid websocket FLAGS header {0:?}")]
pub struct FlagsError(pub String);

impl Flags {
    /// Parses Mongrel2's `0x81` form (hex, either case), or plain decimal.
    pub fn from_header(s: &str) -> Result<Flags, FlagsError> {
        let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) if !hex.is_empty() && hex.len() <= 2 => u8::from_str_radix(hex, 16).ok(),
            Some(_) => None,
            None if !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u8>().ok()
            }
            None => None,
        };
        parsed.map(Flags).ok_or_else(|| FlagsError(s.to_owned()))
    }

    /// FIN bit: last frame of a message.
    pub fn fin(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// RSV1 bit.
    pub fn rsv1(self) -> bool {
        self.0 & 0x40 != 0
    }

    /// RSV2 bit.
    pub fn rsv2(self) -> bool {
        self.0 & 0x20 != 0
    }

    /// RSV3 bit.
    pub fn rsv3(self) -> bool {
        self.0 & 0x10 != 0
    }

    /// The three RSV bits as a number 0..=7 (RSV1 highest).
    pub fn rsv(self) -> u8 {
        (self.0 >> 4) & 0x07
    }

    /// The frame's opcode.
    pub fn opcode(self) -> Opcode {
        Opcode::from_u8(self.0)
    }

    /// Mongrel2's header form, e.g. `0x81`.
    pub fn to_header(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:X}", self.0)
    }
}
