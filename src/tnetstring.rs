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
mod ser;

pub use de::from_slice;
pub use ser::to_vec;

/// Deepest nesting [`parse`] accepts before it returns [`Error::TooDeep`].
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// A length prefix may have at most this many digits (lengths stay below 10^9).
const MAX_LENGTH_DIGITS: usize = 9;

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
///
/// Lookups are linear scans, which beat hashing for the dozen or so keys a
/// Mongrel2 header dict holds. A parsed dict keeps duplicate keys as they came;
/// [`Dict::get`] returns the first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict<'a> {
    entries: Vec<(Cow<'a, [u8]>, Value<'a>)>,
}

/// Anything usable as a dict key: string and byte-string types.
pub trait IntoKey<'a> {
    /// Converts into the key's byte form.
    fn into_key(self) -> Cow<'a, [u8]>;
}

impl<'a> IntoKey<'a> for &'a str {
    fn into_key(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> IntoKey<'a> for &'a [u8] {
    fn into_key(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a, const N: usize> IntoKey<'a> for &'a [u8; N] {
    fn into_key(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a> IntoKey<'a> for String {
    fn into_key(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}

impl<'a> IntoKey<'a> for Vec<u8> {
    fn into_key(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}

impl<'a> IntoKey<'a> for Cow<'a, [u8]> {
    fn into_key(self) -> Cow<'a, [u8]> {
        self
    }
}

impl<'a> IntoKey<'a> for Cow<'a, str> {
    fn into_key(self) -> Cow<'a, [u8]> {
        match self {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }
    }
}

impl<'a> Dict<'a> {
    /// An empty dict.
    pub fn new() -> Self {
        Dict {
            entries: Vec::new(),
        }
    }

    /// An empty dict with room for `capacity` entries (for locally built dicts only;
    /// the parser never sizes from wire counts).
    pub fn with_capacity(capacity: usize) -> Self {
        Dict {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Sets `key` to `value`: replaces the first entry with that key, or appends.
    pub fn insert(&mut self, key: impl IntoKey<'a>, value: impl Into<Value<'a>>) {
        let key = key.into_key();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends an entry without looking for an existing key.
    pub fn push(&mut self, key: impl IntoKey<'a>, value: impl Into<Value<'a>>) {
        self.entries.push((key.into_key(), value.into()));
    }

    /// The value of the first entry whose key equals `key` byte for byte.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Value<'a>> {
        let key = key.as_ref();
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// The value of the first entry whose key equals `key` ignoring ASCII case.
    pub fn get_ignore_ascii_case(&self, key: impl AsRef<[u8]>) -> Option<&Value<'a>> {
        let key = key.as_ref();
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// Iterates over `(key, value)` in order.
    pub fn iter(&self) -> DictIter<'_, 'a> {
        DictIter {
            inner: self.entries.iter(),
        }
    }

    /// Number of entries (duplicates included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the dict has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies every borrowed byte string so the dict outlives its input.
    pub fn into_owned(self) -> Dict<'static> {
        Dict {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
        }
    }
}

/// Iterator over a [`Dict`]'s `(key, value)` pairs, see [`Dict::iter`].
#[derive(Debug, Clone)]
pub struct DictIter<'d, 'a> {
    inner: std::slice::Iter<'d, (Cow<'a, [u8]>, Value<'a>)>,
}

impl<'d, 'a> Iterator for DictIter<'d, 'a> {
    type Item = (&'d [u8], &'d Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k.as_ref(), v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for DictIter<'_, '_> {}

impl<'d, 'a> IntoIterator for &'d Dict<'a> {
    type Item = (&'d [u8], &'d Value<'a>);
    type IntoIter = DictIter<'d, 'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for Dict<'a> {
    type Item = (Cow<'a, [u8]>, Value<'a>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, [u8]>, Value<'a>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Collects pairs in order, keeping duplicates (like [`Dict::push`]).
impl<'a, K: IntoKey<'a>, V: Into<Value<'a>>> FromIterator<(K, V)> for Dict<'a> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Dict {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into_key(), v.into()))
                .collect(),
        }
    }
}

impl<'a> Value<'a> {
    /// The bytes of a `,` string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A `,` string viewed as UTF-8; `None` for other types or invalid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The value of a `#` integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The value of a `^` float, or of a `#` integer converted to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value of a `!` boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a `]` list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries of a `}` dict.
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Whether this is `~` null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Copies every borrowed byte string so the value outlives its input.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Integer(i) => Value::Integer(i),
            Value::Float(f) => Value::Float(f),
            Value::Bool(b) => Value::Bool(b),
            Value::Null => Value::Null,
            Value::List(l) => Value::List(l.into_iter().map(Value::into_owned).collect()),
            Value::Dict(d) => Value::Dict(d.into_owned()),
        }
    }

    /// Appends the encoding of this value to `out`. See [`encode`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        encode(self, out)
    }

    /// The encoding of this value as a new buffer. Fails only on a non-finite float.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        encode(self, &mut out)?;
        Ok(out)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Bytes(Cow::Borrowed(s.as_bytes()))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(b: &'a [u8]) -> Self {
        Value::Bytes(Cow::Borrowed(b))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Bytes(Cow::Owned(s.into_bytes()))
    }
}

impl From<Vec<u8>> for Value<'_> {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(Cow::Owned(b))
    }
}

impl<'a> From<Cow<'a, [u8]>> for Value<'a> {
    fn from(b: Cow<'a, [u8]>) -> Self {
        Value::Bytes(b)
    }
}

impl<'a> From<Cow<'a, str>> for Value<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        Value::Bytes(s.into_key())
    }
}

impl From<i64> for Value<'_> {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<i32> for Value<'_> {
    fn from(i: i32) -> Self {
        Value::Integer(i64::from(i))
    }
}

impl From<u32> for Value<'_> {
    fn from(i: u32) -> Self {
        Value::Integer(i64::from(i))
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value<'_> {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl<'a> From<Dict<'a>> for Value<'a> {
    fn from(d: Dict<'a>) -> Self {
        Value::Dict(d)
    }
}

impl<'a> From<Vec<Value<'a>>> for Value<'a> {
    fn from(l: Vec<Value<'a>>) -> Self {
        Value::List(l)
    }
}

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
pub fn parse_with_max_depth(input: &[u8], max_depth: usize) -> Result<(Value<'_>, &[u8]), Error> {
    let parser = Parser { max_depth };
    let (value, end) = parser.value(input, 0, 0)?;
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

struct Parser {
    max_depth: usize,
}

impl Parser {
    /// Parses the value at the front of `input` (at `base`), `depth` containers deep.
    /// Returns the value and the bytes consumed.
    fn value<'a>(
        &self,
        input: &'a [u8],
        base: usize,
        depth: usize,
    ) -> Result<(Value<'a>, usize), Error> {
        let el = split_element(input, base)?;
        let value = match el.tag {
            b',' => Value::Bytes(Cow::Borrowed(el.payload)),
            b'#' => Value::Integer(parse_integer(el.payload, el.payload_offset)?),
            b'^' => Value::Float(parse_float(el.payload, el.payload_offset)?),
            b'!' => Value::Bool(parse_bool(el.payload, el.payload_offset)?),
            b'~' => {
                parse_null(el.payload, el.payload_offset)?;
                Value::Null
            }
            b']' => {
                self.check_depth(depth, base)?;
                // No capacity from the wire: grow as items actually parse.
                let mut items = Vec::new();
                let mut pos = 0;
                while pos < el.payload.len() {
                    let (item, used) =
                        self.value(&el.payload[pos..], el.payload_offset + pos, depth + 1)?;
                    items.push(item);
                    pos += used;
                }
                Value::List(items)
            }
            b'}' => {
                self.check_depth(depth, base)?;
                let mut dict = Dict::new();
                let mut pos = 0;
                while pos < el.payload.len() {
                    let key_offset = el.payload_offset + pos;
                    let key = split_element(&el.payload[pos..], key_offset)?;
                    if key.tag != b',' {
                        return Err(Error::NonStringKey { offset: key_offset });
                    }
                    pos += key.consumed;
                    if pos == el.payload.len() {
                        return Err(Error::MissingValue {
                            offset: el.payload_offset + pos,
                        });
                    }
                    let (value, used) =
                        self.value(&el.payload[pos..], el.payload_offset + pos, depth + 1)?;
                    dict.push(key.payload, value);
                    pos += used;
                }
                Value::Dict(dict)
            }
            tag => {
                return Err(Error::UnknownTag {
                    offset: el.payload_offset + el.payload.len(),
                    tag,
                })
            }
        };
        Ok((value, el.consumed))
    }

    fn check_depth(&self, depth: usize, offset: usize) -> Result<(), Error> {
        if depth >= self.max_depth {
            Err(Error::TooDeep {
                offset,
                max_depth: self.max_depth,
            })
        } else {
            Ok(())
        }
    }
}

/// Appends the tnetstring encoding of `value` to `out`.
///
/// Fails only on a NaN or infinite float ([`Error::NonFiniteFloat`]); `out` is then
/// restored to its previous length.
pub fn encode(value: &Value<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    let result = encode_value(value, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_value(value: &Value<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
    match value {
        Value::Bytes(b) => write_bytes(out, b),
        Value::Integer(i) => write_integer(out, *i),
        Value::Float(f) => write_float(out, *f)?,
        Value::Bool(true) => out.extend_from_slice(b"4:true!"),
        Value::Bool(false) => out.extend_from_slice(b"5:false!"),
        Value::Null => out.extend_from_slice(b"0:~"),
        Value::List(items) => {
            let start = out.len();
            for item in items {
                encode_value(item, out)?;
            }
            close_container(out, start, b']');
        }
        Value::Dict(dict) => {
            let start = out.len();
            for (k, v) in dict {
                write_bytes(out, k);
                encode_value(v, out)?;
            }
            close_container(out, start, b'}');
        }
    }
    Ok(())
}

/// Turns the payload written since `start` into an element: inserts the
/// length prefix in front of it and appends the tag. Shifting the payload once per
/// container is cheaper than measuring every subtree twice.
pub(crate) fn close_container(out: &mut Vec<u8>, start: usize, tag: u8) {
    let len = out.len() - start;
    let mut digits = DecimalBuf::new();
    let prefix = digits.format_u64(len as u64);
    let plen = prefix.len() + 1;
    let end = out.len();
    out.resize(end + plen, 0);
    out.copy_within(start..end, start + plen);
    out[start..start + plen - 1].copy_from_slice(prefix);
    out[start + plen - 1] = b':';
    out.push(tag);
}

/// Appends `LEN:bytes,`.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_len_prefix(out, bytes.len());
    out.extend_from_slice(bytes);
    out.push(b',');
}

/// Appends `LEN:`.
pub(crate) fn write_len_prefix(out: &mut Vec<u8>, len: usize) {
    let mut digits = DecimalBuf::new();
    out.extend_from_slice(digits.format_u64(len as u64));
    out.push(b':');
}

pub(crate) fn write_integer(out: &mut Vec<u8>, i: i64) {
    let mut digits = DecimalBuf::new();
    let text = digits.format_i64(i);
    write_len_prefix(out, text.len());
    out.extend_from_slice(text);
    out.push(b'#');
}

/// Appends a `^` float in Rust's shortest round-trip form (`{:?}`), which
/// always matches the decimal grammar the parser accepts.
pub(crate) fn write_float(out: &mut Vec<u8>, f: f64) -> Result<(), Error> {
    if !f.is_finite() {
        return Err(Error::NonFiniteFloat);
    }
    let mut buf = FloatBuf::default();
    // FloatBuf holds any f64 `{:?}` output (at most 24 bytes); a failure here
    // would only mean it overflowed, which the size rules out.
    if std::fmt::Write::write_fmt(&mut buf, format_args!("{f:?}")).is_err() {
        return Err(Error::NonFiniteFloat);
    }
    let text = &buf.bytes[..buf.len];
    write_len_prefix(out, text.len());
    out.extend_from_slice(text);
    out.push(b'^');
    Ok(())
}

#[derive(Default)]
struct FloatBuf {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Write for FloatBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Formats integers on the stack (no allocation, no `fmt` machinery).
pub(crate) struct DecimalBuf {
    bytes: [u8; 20],
}

impl DecimalBuf {
    pub(crate) fn new() -> Self {
        DecimalBuf { bytes: [0; 20] }
    }

    pub(crate) fn format_u64(&mut self, mut n: u64) -> &[u8] {
        let mut i = self.bytes.len();
        loop {
            i -= 1;
            self.bytes[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        &self.bytes[i..]
    }

    /// Needs one byte more than u64's 20 digits only for the sign of i64::MIN,
    /// whose magnitude has 19 digits, so 20 bytes suffice.
    pub(crate) fn format_i64(&mut self, n: i64) -> &[u8] {
        let len = self.format_u64(n.unsigned_abs()).len();
        let mut start = self.bytes.len() - len;
        if n < 0 {
            start -= 1;
            self.bytes[start] = b'-';
        }
        &self.bytes[start..]
    }
}

#[cfg(test)]
mod tests;
