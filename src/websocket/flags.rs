//! The `FLAGS` header Mongrel2 attaches to every WebSocket message.

use std::fmt;
use std::str::FromStr;

use super::frame::{FIN, RSV_MASK};
use super::Opcode;

/// Why a `FLAGS` header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
