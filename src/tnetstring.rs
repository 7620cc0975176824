//! Typed netstrings (tnetstrings): the header format Mongrel2 speaks.
//!
//! A tnetstring is `LENGTH:PAYLOAD` followed by a one-byte type tag:
//! `,` bytes, `#` integer, `^` float, `!` boolean, `~` null, `]` list, `}` dict.
//! Byte strings are binary-safe; [`Value::as_str`] is only a UTF-8 view of them.
//!
//! Parsing borrows: every byte string in a parsed [`Value`] points into the input,
//! so parsing a received message copies no payloads. Hostile input yields a typed
//! [`Error`] carrying the byte offset of the problem; the parser never allocates
//! from a peer-supplied count and bounds nesting (see [`parse_with_max_depth`]).
//!
//! ```
//! use mongrel2_transceiver::tnetstring::{self, Value};
//!
//! let (value, rest) = tnetstring::parse(b"16:6:METHOD,4:JSON,}tail").unwrap();
//! assert_eq!(rest, b"tail");
//! let dict = value.as_dict().unwrap();
//! assert_eq!(dict.get("METHOD").and_then(Value::as_str), Some("JSON"));
//! assert_eq!(value.to_bytes().unwrap(), b"16:6:METHOD,4:JSON,}");
//! ```

use std::borrow::Cow;

mod de;
mod encode;
mod ser;
mod value;

pub use de::from_slice;
pub use encode::encode;
pub(crate) use encode::{
    close_container, decimal_len, write_bytes, write_decimal, write_decimal_backwards, write_float,
    write_integer, write_len_prefix, DecimalBuf,
};
pub use ser::to_vec;
pub use value::{Dict, DictIter, IntoKey, Value};

/// Deepest nesting [`parse`] accepts before it returns [`Error::TooDeep`].
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// A length prefix may have at most this many digits (lengths stay below 10^9).
const MAX_LENGTH_DIGITS: usize = 9;

/// Why a tnetstring could not be parsed or encoded. Parse errors carry the byte offset
/// (from the start of the input) where the problem was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A length prefix had more than 9 digits.
    #[error("tnetstring length prefix longer than 9 digits at byte {offset}")]
    LengthTooLong {
        /// Start of the length prefix.
        offset: usize,
    },
    /// The length digits were not followed by `:`.
    #[error("tnetstring length not followed by ':' at byte {offset}")]
    MissingColon {
        /// The byte that should have been `:`.
        offset: usize,
    },
    /// The length prefix was empty or not a decimal number.
    #[error("invalid tnetstring length at byte {offset}")]
    BadLength {
        /// The offending byte.
        offset: usize,
    },
    /// The input ended before the element did (including a length past the end).
    #[error("tnetstring truncated: element at byte {offset} runs past the end of the input")]
    Truncated {
        /// Start of the incomplete element.
        offset: usize,
    },
    /// The payload ended exactly at the end of the input, with no type tag.
    #[error("tnetstring type tag missing at byte {offset}")]
    MissingTag {
        /// Where the tag should have been.
        offset: usize,
    },
    /// The type tag is not one of `, # ^ ! ~ ] }`.
    #[error("unknown tnetstring type tag {tag:#04x} at byte {offset}")]
    UnknownTag {
        /// Position of the tag.
        offset: usize,
        /// The tag byte found.
        tag: u8,
    },
    /// A dict key was not a `,` string.
    #[error("tnetstring dict key at byte {offset} is not a string")]
    NonStringKey {
        /// Start of the key element.
        offset: usize,
    },
    /// A dict held a key without a value.
    #[error("tnetstring dict key without a value at byte {offset}")]
    MissingValue {
        /// Where the value should have started.
        offset: usize,
    },
    /// Lists/dicts were nested deeper than allowed.
    #[error("tnetstring nested deeper than {max_depth} at byte {offset}")]
    TooDeep {
        /// Start of the container that went too deep.
        offset: usize,
        /// The depth limit in force.
        max_depth: usize,
    },
    /// An integer does not fit in an i64.
    #[error("tnetstring integer out of i64 range at byte {offset}")]
    IntegerOverflow {
        /// Start of the integer payload.
        offset: usize,
    },
    /// An integer payload is not `-?[0-9]+`.
    #[error("invalid tnetstring integer at byte {offset}")]
    InvalidInteger {
        /// Start of the integer payload.
        offset: usize,
    },
    /// A float payload is not a finite decimal number.
    #[error("invalid tnetstring float at byte {offset}")]
    InvalidFloat {
        /// Start of the float payload.
        offset: usize,
    },
    /// A boolean payload is neither `true` nor `false`.
    #[error("invalid tnetstring boolean at byte {offset}")]
    InvalidBool {
        /// Start of the boolean payload.
        offset: usize,
    },
    /// A null had a non-empty payload.
    #[error("invalid tnetstring null at byte {offset}")]
    InvalidNull {
        /// Start of the null payload.
        offset: usize,
    },
    /// Bytes followed a complete value where none were allowed.
    #[error("trailing bytes after tnetstring at byte {offset}")]
    TrailingBytes {
        /// First trailing byte.
        offset: usize,
    },
    /// A NaN or infinite float cannot be encoded.
    #[error("cannot encode a non-finite float")]
    NonFiniteFloat,
    /// A serde (de)serialization error, e.g. a type mismatch.
    #[error("{0}")]
    Message(String),
}

/// Parses one value from the front of `input`, returning it and the rest of the input.
///
/// Nesting is limited to [`DEFAULT_MAX_DEPTH`] containers.
pub fn parse(input: &[u8]) -> Result<(Value<'_>, &[u8]), Error> {
    parse_with_max_depth(input, DEFAULT_MAX_DEPTH)
}

/// Like [`parse`], allowing at most `max_depth` nested lists/dicts
/// (0 accepts scalars only).
///
/// Parsing and dropping do not recurse, so a raised limit costs heap, not stack.
/// [`Value`]'s `Clone`, `PartialEq`, `Debug` and [`Value::encode`] do recurse per
/// level; keep the limit to what those uses can take.
pub fn parse_with_max_depth(input: &[u8], max_depth: usize) -> Result<(Value<'_>, &[u8]), Error> {
    let (value, end) = parse_value(input, max_depth)?;
    Ok((value, &input[end..]))
}

/// Parses exactly one value: trailing bytes are an [`Error::TrailingBytes`].
pub fn parse_complete(input: &[u8]) -> Result<Value<'_>, Error> {
    let (value, rest) = parse(input)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Error::TrailingBytes {
            offset: input.len() - rest.len(),
        })
    }
}

/// One framed element: tag and payload, not yet interpreted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Element<'a> {
    /// Offset of the element's first byte in the caller's coordinates.
    pub(crate) start: usize,
    /// The type tag byte.
    pub(crate) tag: u8,
    /// The payload between `:` and the tag.
    pub(crate) payload: &'a [u8],
    /// Offset of the payload in the caller's coordinates.
    pub(crate) payload_offset: usize,
    /// Bytes taken from the input, tag included.
    pub(crate) consumed: usize,
}

/// Splits the element at the front of `input` (which starts at `base` in the
/// caller's coordinates) without looking inside the payload.
#[inline]
pub(crate) fn split_element(input: &[u8], base: usize) -> Result<Element<'_>, Error> {
    let mut len: usize = 0;
    let mut i = 0;
    loop {
        let Some(&b) = input.get(i) else {
            return Err(Error::Truncated { offset: base });
        };
        match b {
            b':' if i > 0 => break,
            b'0'..=b'9' => {
                if i == MAX_LENGTH_DIGITS {
                    return Err(Error::LengthTooLong { offset: base });
                }
                // At most 9 digits, so this stays below 10^9 on every platform.
                len = len * 10 + usize::from(b - b'0');
            }
            _ if i == 0 => return Err(Error::BadLength { offset: base }),
            _ => return Err(Error::MissingColon { offset: base + i }),
        }
        i += 1;
    }
    let start = i + 1;
    let tag_at = start + len;
    match input.get(tag_at) {
        Some(&tag) => Ok(Element {
            start: base,
            tag,
            payload: &input[start..tag_at],
            payload_offset: base + start,
            consumed: tag_at + 1,
        }),
        None if tag_at == input.len() => Err(Error::MissingTag {
            offset: base + tag_at,
        }),
        None => Err(Error::Truncated { offset: base }),
    }
}

/// Parses a `#` payload (`-?[0-9]+`) without intermediate strings.
pub(crate) fn parse_integer(payload: &[u8], offset: usize) -> Result<i64, Error> {
    let (negative, digits) = match payload.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, payload),
    };
    if digits.is_empty() {
        return Err(Error::InvalidInteger { offset });
    }
    // Accumulate on the negative side so i64::MIN parses too.
    let mut acc: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(Error::InvalidInteger { offset });
        }
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_sub(i64::from(b - b'0')))
            .ok_or(Error::IntegerOverflow { offset })?;
    }
    if negative {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or(Error::IntegerOverflow { offset })
    }
}

/// Whether `s` is `[+-]? (D+ (. D*)? | . D+) ([eE] [+-]? D+)?`: the decimal
/// grammar, so `nan`, `inf` and hex forms that `str::parse` knows are refused.
fn is_decimal_float(s: &[u8]) -> bool {
    fn digits(s: &[u8], i: &mut usize) -> usize {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    }
    let mut i = 0;
    if matches!(s.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut mantissa = digits(s, &mut i);
    if s.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(s, &mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(s, &mut i) == 0 {
            return false;
        }
    }
    i == s.len()
}

/// Parses a `^` payload into a finite f64.
pub(crate) fn parse_float(payload: &[u8], offset: usize) -> Result<f64, Error> {
    if !is_decimal_float(payload) {
        return Err(Error::InvalidFloat { offset });
    }
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .ok_or(Error::InvalidFloat { offset })
}

pub(crate) fn parse_bool(payload: &[u8], offset: usize) -> Result<bool, Error> {
    match payload {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(Error::InvalidBool { offset }),
    }
}

pub(crate) fn parse_null(payload: &[u8], offset: usize) -> Result<(), Error> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidNull { offset })
    }
}

/// A list or dict whose payload is still being parsed.
struct Open<'a> {
    payload: &'a [u8],
    /// Offset of `payload` in the caller's input.
    offset: usize,
    /// How far into `payload` parsing has got.
    pos: usize,
    /// Bytes the whole element takes in its parent, tag included.
    consumed: usize,
    items: Items<'a>,
}

enum Items<'a> {
    List(Vec<Value<'a>>),
    /// The dict so far and the key whose value is being parsed.
    Dict(Dict<'a>, Option<&'a [u8]>),
}

/// Parses with an explicit stack of open containers instead of recursion, so the
/// depth a caller allows is bounded by memory, never by the thread's stack.
fn parse_value(input: &[u8], max_depth: usize) -> Result<(Value<'_>, usize), Error> {
    let mut open: Vec<Open<'_>> = Vec::new();
    let (mut next, mut base) = (input, 0);
    loop {
        let el = split_element(next, base)?;
        let mut finished = match el.tag {
            b',' => Some(Value::Bytes(Cow::Borrowed(el.payload))),
            b'#' => Some(Value::Integer(parse_integer(
                el.payload,
                el.payload_offset,
            )?)),
            b'^' => Some(Value::Float(parse_float(el.payload, el.payload_offset)?)),
            b'!' => Some(Value::Bool(parse_bool(el.payload, el.payload_offset)?)),
            b'~' => {
                parse_null(el.payload, el.payload_offset)?;
                Some(Value::Null)
            }
            b']' | b'}' => {
                if open.len() >= max_depth {
                    return Err(Error::TooDeep {
                        offset: el.start,
                        max_depth,
                    });
                }
                open.push(Open {
                    payload: el.payload,
                    offset: el.payload_offset,
                    pos: 0,
                    consumed: el.consumed,
                    // No capacity from the wire: grow as items actually parse.
                    items: if el.tag == b']' {
                        Items::List(Vec::new())
                    } else {
                        Items::Dict(Dict::new(), None)
                    },
                });
                None
            }
            tag => {
                return Err(Error::UnknownTag {
                    offset: el.payload_offset + el.payload.len(),
                    tag,
                })
            }
        };
        let mut used = el.consumed;
        // Hand the finished value to its container; close every container it completes.
        loop {
            let Some(top) = open.last_mut() else {
                // Only a finished value can leave the stack empty.
                return Ok((finished.unwrap_or(Value::Null), used));
            };
            if let Some(value) = finished.take() {
                top.pos += used;
                match &mut top.items {
                    Items::List(items) => items.push(value),
                    Items::Dict(dict, key) => dict.push(key.take().unwrap_or_default(), value),
                }
            }
            if top.pos < top.payload.len() {
                if let Items::Dict(_, key) = &mut top.items {
                    let key_offset = top.offset + top.pos;
                    let k = split_element(&top.payload[top.pos..], key_offset)?;
                    if k.tag != b',' {
                        return Err(Error::NonStringKey { offset: key_offset });
                    }
                    top.pos += k.consumed;
                    if top.pos == top.payload.len() {
                        return Err(Error::MissingValue {
                            offset: top.offset + top.pos,
                        });
                    }
                    *key = Some(k.payload);
                }
                next = &top.payload[top.pos..];
                base = top.offset + top.pos;
                break;
            }
            if let Some(done) = open.pop() {
                used = done.consumed;
                finished = Some(match done.items {
                    Items::List(items) => Value::List(items),
                    Items::Dict(dict, _) => Value::Dict(dict),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
