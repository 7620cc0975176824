//! Typed netstrings (tnetstrings): the header format Mongrel2 speaks.
//!
//! SKELETON: the types below are the agreed public API. Bodies are filled in by the
//! tnetstring work; other modules may rely on every signature here.

use std::borrow::Cow;

/// Deepest nesting [`parse`] accepts before it returns [`Error::TooDeep`].
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// A parsed or constructed tnetstring value.
///
/// Parsing borrows every byte string from the input (`Cow::Borrowed`); call
/// [`Value::into_owned`] to keep a value beyond the input's lifetime.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `,` a byte string (binary-safe; UTF-8 is optional).
    Bytes(Cow<'a, [u8]>),
    /// `#` a signed 64-bit integer.
    Integer(i64),
    /// `^` a finite float.
    Float(f64),
    /// `!` a boolean.
    Bool(bool),
    /// `~` null.
    Null,
    /// `]` a list.
    List(Vec<Value<'a>>),
    /// `}` a dict with byte-string keys, in wire order.
    Dict(Dict<'a>),
}

/// An ordered dict: keys keep the order they had on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict<'a> {
    entries: Vec<(Cow<'a, [u8]>, Value<'a>)>,
}

/// Why a tnetstring could not be parsed or encoded. Parse errors carry the byte offset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Placeholder until the codec lands.
    #[error("invalid tnetstring at byte {offset}")]
    Invalid {
        /// Byte offset into the input.
        offset: usize,
    },
}

/// Parses one value from the front of `input`, returning it and the rest of the input.
pub fn parse(input: &[u8]) -> Result<(Value<'_>, &[u8]), Error> {
    let _ = input;
    Err(Error::Invalid { offset: 0 })
}
