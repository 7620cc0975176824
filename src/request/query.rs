//! `application/x-www-form-urlencoded` decoding for query strings and form bodies.

use std::borrow::Cow;

/// Splits a query string (without `?`) into decoded `(key, value)` pairs, in
/// order, repeated keys kept. `+` decodes to a space, `%XX` to its byte; an
/// invalid escape stays as it was. A pair without `=` has an empty value; empty
/// segments (`a=1&&b=2`) are skipped. Decoded bytes that are not UTF-8 become U+FFFD.
///
/// ```
/// use mongrel2_transceiver::request::parse_query;
/// assert_eq!(
///     parse_query("a=1&b=x+y%21&a=%zz&flag"),
///     vec![
///         ("a".to_owned(), "1".to_owned()),
///         ("b".to_owned(), "x y!".to_owned()),
///         ("a".to_owned(), "%zz".to_owned()),
///         ("flag".to_owned(), String::new()),
///     ]
/// );
/// ```
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            (
                percent_decode(key).into_owned(),
                percent_decode(value).into_owned(),
            )
        })
        .collect()
}

/// Decodes one form-encoded component (`+` as space, `%XX` escapes); borrows
/// when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let hi = (h[0] as char).to_digit(16)?;
                    let lo = (h[1] as char).to_digit(16)?;
                    // Two hex digits are at most 0xFF.
                    Some((hi * 16 + lo) as u8)
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The first value of parameter `name` in `query`, decoded; names are compared after
/// decoding. See [`Request::query`](super::Request::query).
pub(crate) fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .find_map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
}

#[cfg(test)]
mod tests;
