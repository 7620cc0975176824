//! Request headers: an ordered list of names with one or more values.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;

/// The value(s) of one header. Mongrel2 sends a repeated client header as a
/// list (at most 5 values); everything else is a single string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// A single value.
    One(Cow<'a, str>),
    /// A repeated header, values in arrival order.
    Many(Vec<Cow<'a, str>>),
}

impl<'a> HeaderValue<'a> {
    /// The first value (`None` only for an empty list).
    pub fn first(&self) -> Option<&str> {
        match self {
            HeaderValue::One(v) => Some(v),
            HeaderValue::Many(vs) => vs.first().map(|v| v.as_ref()),
        }
    }

    /// Every value in order.
    pub fn iter(&self) -> HeaderValues<'_, 'a> {
        HeaderValues {
            inner: match self {
                HeaderValue::One(v) => std::slice::from_ref(v).iter(),
                HeaderValue::Many(vs) => vs.iter(),
            },
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            HeaderValue::One(_) => 1,
            HeaderValue::Many(vs) => vs.len(),
        }
    }

    /// Whether this is an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a value, turning a single value into a list.
    pub fn push(&mut self, value: Cow<'a, str>) {
        match self {
            HeaderValue::One(first) => {
                let first = std::mem::take(first);
                *self = HeaderValue::Many(vec![first, value]);
            }
            HeaderValue::Many(vs) => vs.push(value),
        }
    }

    /// Copies borrowed text so the value outlives its input.
    pub fn into_owned(self) -> HeaderValue<'static> {
        match self {
            HeaderValue::One(v) => HeaderValue::One(owned_value(v)),
            HeaderValue::Many(vs) => {
                HeaderValue::Many(vs.into_iter().map(|v| Cow::Owned(v.into_owned())).collect())
            }
        }
    }
}

impl<'a> From<&'a str> for HeaderValue<'a> {
    fn from(v: &'a str) -> Self {
        HeaderValue::One(Cow::Borrowed(v))
    }
}

impl<'a> From<Cow<'a, str>> for HeaderValue<'a> {
    fn from(v: Cow<'a, str>) -> Self {
        HeaderValue::One(v)
    }
}

impl From<String> for HeaderValue<'_> {
    fn from(v: String) -> Self {
        HeaderValue::One(Cow::Owned(v))
    }
}

/// Iterator over a header's values, see [`HeaderValue::iter`].
#[derive(Debug, Clone)]
pub struct HeaderValues<'h, 'a> {
    inner: std::slice::Iter<'h, Cow<'a, str>>,
}

impl<'h> Iterator for HeaderValues<'h, '_> {
    type Item = &'h str;

    fn next(&mut self) -> Option<&'h str> {
        self.inner.next().map(|v| v.as_ref())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for HeaderValues<'_, '_> {}

impl DoubleEndedIterator for HeaderValues<'_, '_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|v| v.as_ref())
    }
}

/// Request headers in wire order.
///
/// Mongrel2 lower-cases client header names and adds its own in upper case
/// (`METHOD`, `PATH`, ...). [`Headers::get`] prefers an exact match, then falls
/// back to ignoring ASCII case, so `get("host")` finds the client's `host` and
/// `get("PATH")` finds Mongrel2's `PATH` even when a client sent a `path` header.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    entries: Vec<(Cow<'a, str>, HeaderValue<'a>)>,
    index: NameIndex,
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Headers")
            .field("entries", &self.entries)
            .finish()
    }
}

/// Below this many names a scan beats hashing, and parsed requests never pay for
/// an index they do not use.
const INDEX_FROM: usize = 16;

/// Where each name first occurs, so that [`Headers::push`] and [`Headers::set`] stay
/// O(1) on requests with many headers. Built on the first lookup past
/// [`INDEX_FROM`] names. Keys are name hashes (with a per-map random seed, so a peer
/// cannot aim collisions); a hash whose entry has another name falls back to a scan.
#[derive(Clone, Default)]
struct NameIndex(Option<HashMap<u64, usize>>);

/// The index is derived from the entries, so it never makes two header lists differ.
impl PartialEq for NameIndex {
    fn eq(&self, _: &NameIndex) -> bool {
        true
    }
}

impl Eq for NameIndex {}

impl NameIndex {
    fn hash(map: &HashMap<u64, usize>, name: &str) -> u64 {
        map.hasher().hash_one(name)
    }

    /// Records that `name` was appended at `position`.
    fn appended(&mut self, name: &str, position: usize) {
        if let Some(map) = &mut self.0 {
            let hash = NameIndex::hash(map, name);
            map.entry(hash).or_insert(position);
        }
    }
}

impl<'a> Headers<'a> {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(capacity),
            index: NameIndex::default(),
        }
    }

    /// Position of the first entry named exactly `name`.
    fn position(&mut self, name: &str) -> Option<usize> {
        if self.entries.len() < INDEX_FROM {
            return self.entries.iter().position(|(k, _)| k == name);
        }
        let entries = &self.entries;
        let map = self.index.0.get_or_insert_with(|| {
            let mut map = HashMap::with_capacity(entries.len());
            for (i, (k, _)) in entries.iter().enumerate() {
                let hash = NameIndex::hash(&map, k);
                map.entry(hash).or_insert(i);
            }
            map
        });
        match map.get(&NameIndex::hash(map, name)) {
            Some(&i) if self.entries[i].0 == name => Some(i),
            None => None,
            // A hash collision between different names: rare, and still correct.
            Some(_) => self.entries.iter().position(|(k, _)| k == name),
        }
    }

    fn append(&mut self, name: Cow<'a, str>, value: HeaderValue<'a>) {
        self.index.appended(&name, self.entries.len());
        self.entries.push((name, value));
    }

    /// Number of header names (a repeated header counts once).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The header named exactly `name`, else the first whose name matches
    /// ignoring ASCII case.
    pub fn get(&self, name: &str) -> Option<&HeaderValue<'a>> {
        self.get_exact(name).or_else(|| {
            self.entries
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    /// The header named exactly `name` (case-sensitive), as Mongrel2's own
    /// upper-case headers are looked up.
    pub fn get_exact(&self, name: &str) -> Option<&HeaderValue<'a>> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The first value of [`Headers::get`].
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(HeaderValue::first)
    }

    /// All values of [`Headers::get`] (empty when absent).
    pub fn all(&self, name: &str) -> HeaderValues<'_, 'a> {
        match self.get(name) {
            Some(v) => v.iter(),
            None => HeaderValues { inner: [].iter() },
        }
    }

    /// Adds a value: appended to an existing header of exactly that name (which
    /// then becomes a list, as Mongrel2 sends repeated headers), else a new header.
    pub fn push(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        let name = name.into();
        let value = value.into();
        match self.position(&name) {
            Some(i) => self.entries[i].1.push(value),
            None => self.append(name, HeaderValue::One(value)),
        }
    }

    /// Sets a header, replacing every value of a header with exactly that name.
    pub fn set(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<HeaderValue<'a>>) {
        let name = name.into();
        let value = value.into();
        match self.position(&name) {
            Some(i) => self.entries[i].1 = value,
            None => self.append(name, value),
        }
    }

    /// Appends an entry as parsed, without merging duplicates.
    pub(crate) fn append_raw(&mut self, name: Cow<'a, str>, value: HeaderValue<'a>) {
        self.append(name, value);
    }

    /// Iterates over `(name, value)` in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &HeaderValue<'a>)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Copies borrowed text so the headers outlive their input.
    pub fn into_owned(self) -> Headers<'static> {
        Headers {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (owned_name(k), v.into_owned()))
                .collect(),
            // Names keep their text, so positions and hashes stay valid.
            index: self.index,
        }
    }
}

/// Names nearly every request carries (Mongrel2's own first), borrowed from the program
/// instead of copied: an owned request costs a few allocations fewer. A `match`, so the
/// lookup is a switch on the length and one comparison, not a scan.
fn common_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "PATH" => "PATH",
        "METHOD" => "METHOD",
        "VERSION" => "VERSION",
        "URI" => "URI",
        "QUERY" => "QUERY",
        "PATTERN" => "PATTERN",
        "URL_SCHEME" => "URL_SCHEME",
        "REMOTE_ADDR" => "REMOTE_ADDR",
        "FRAGMENT" => "FRAGMENT",
        "host" => "host",
        "x-forwarded-for" => "x-forwarded-for",
        "user-agent" => "user-agent",
        "accept" => "accept",
        "accept-encoding" => "accept-encoding",
        "accept-language" => "accept-language",
        "connection" => "connection",
        "content-length" => "content-length",
        "content-type" => "content-type",
        "cookie" => "cookie",
        "referer" => "referer",
        "upgrade" => "upgrade",
        "origin" => "origin",
        "sec-websocket-key" => "sec-websocket-key",
        "sec-websocket-version" => "sec-websocket-version",
        "sec-websocket-extensions" => "sec-websocket-extensions",
        "sec-websocket-protocol" => "sec-websocket-protocol",
        "cache-control" => "cache-control",
        "pragma" => "pragma",
        _ => return None,
    })
}

/// Values as common: methods, versions, schemes.
fn common_value(value: &str) -> Option<&'static str> {
    Some(match value {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "HTTP/1.1" => "HTTP/1.1",
        "HTTP/1.0" => "HTTP/1.0",
        "http" => "http",
        "https" => "https",
        "/" => "/",
        "keep-alive" => "keep-alive",
        "close" => "close",
        "Upgrade" => "Upgrade",
        "websocket" => "websocket",
        "13" => "13",
        _ => return None,
    })
}

fn owned_name(name: Cow<'_, str>) -> Cow<'static, str> {
    match common_name(&name) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(name.into_owned()),
    }
}

fn owned_value(value: Cow<'_, str>) -> Cow<'static, str> {
    match common_value(&value) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(value.into_owned()),
    }
}

#[cfg(test)]
mod tests;
