//! The tnetstring value tree: [`Value`] and the ordered [`Dict`].

use std::borrow::Cow;

use super::{encode, Error};

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

impl Default for Value<'_> {
    /// [`Value::Null`].
    fn default() -> Self {
        Value::Null
    }
}

/// Drops nested containers through a heap stack: the derived drop would recurse once
/// per level and overflow the thread's stack on a deep (e.g. hostile) value.
impl Drop for Value<'_> {
    fn drop(&mut self) {
        let mut stack = match self {
            Value::List(items) if !items.is_empty() => std::mem::take(items),
            Value::Dict(dict) if !dict.is_empty() => std::mem::take(&mut dict.entries)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            _ => return,
        };
        while let Some(mut value) = stack.pop() {
            match &mut value {
                Value::List(items) => stack.append(items),
                Value::Dict(dict) => stack.extend(dict.entries.drain(..).map(|(_, v)| v)),
                _ => {}
            }
            // `value` now holds no children, so dropping it here does not recurse.
        }
    }
}

fn take_bytes(b: &mut Cow<'_, [u8]>) -> Vec<u8> {
    match std::mem::take(b) {
        Cow::Borrowed(b) => b.to_vec(),
        Cow::Owned(b) => b,
    }
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
        match &mut Value::Dict(self).into_owned() {
            Value::Dict(dict) => std::mem::take(dict),
            _ => Dict::new(),
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
    ///
    /// Works through nested containers with a heap stack, so depth costs no stack.
    pub fn into_owned(mut self) -> Value<'static> {
        /// Pending work: a value to copy, or a container whose copied children are the
        /// last entries of `done`.
        enum Step<'a> {
            Copy(Value<'a>),
            List(usize),
            Dict(Vec<Cow<'static, [u8]>>),
        }
        let mut todo = vec![Step::Copy(self.take())];
        let mut done: Vec<Value<'static>> = Vec::new();
        while let Some(step) = todo.pop() {
            match step {
                Step::Copy(mut value) => match &mut value {
                    Value::Bytes(b) => done.push(Value::Bytes(Cow::Owned(take_bytes(b)))),
                    Value::Integer(i) => done.push(Value::Integer(*i)),
                    Value::Float(f) => done.push(Value::Float(*f)),
                    Value::Bool(b) => done.push(Value::Bool(*b)),
                    Value::Null => done.push(Value::Null),
                    Value::List(items) => {
                        todo.push(Step::List(items.len()));
                        todo.extend(std::mem::take(items).into_iter().rev().map(Step::Copy));
                    }
                    Value::Dict(dict) => {
                        let entries = std::mem::take(&mut dict.entries);
                        let mut keys = Vec::with_capacity(entries.len());
                        let mut values = Vec::with_capacity(entries.len());
                        for (k, v) in entries {
                            keys.push(Cow::Owned(k.into_owned()));
                            values.push(Step::Copy(v));
                        }
                        todo.push(Step::Dict(keys));
                        todo.extend(values.into_iter().rev());
                    }
                },
                Step::List(len) => {
                    let items = done.split_off(done.len() - len);
                    done.push(Value::List(items));
                }
                Step::Dict(keys) => {
                    let values = done.split_off(done.len() - keys.len());
                    let entries = keys.into_iter().zip(values).collect();
                    done.push(Value::Dict(Dict { entries }));
                }
            }
        }
        done.pop().unwrap_or_default()
    }

    /// Moves the value out, leaving [`Value::Null`]: the way to take a value apart,
    /// since `Value` has a `Drop` (see there) and cannot be destructured by move.
    pub fn take(&mut self) -> Value<'a> {
        std::mem::take(self)
    }

    /// Appends the encoding of this value to `out`. See [`encode`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        encode(self, out)
    }

    /// The encoding of this value as a new buffer. Fails only on a non-finite float; any
    /// depth is written, also one the default parser refuses (see [`encode`]).
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

#[cfg(test)]
mod tests;
