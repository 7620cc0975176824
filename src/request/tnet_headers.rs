//! Reading a tnetstring header dict straight from the wire.

use std::borrow::Cow;

use crate::tnetstring::{self, split_element, Element};

use super::{HeaderValue, Headers, RequestError, RequestLimits};

/// Turns slices of one buffer into header text. The buffer is checked for
/// UTF-8 once, so each header costs a slice instead of its own validation;
/// invalid bytes (HTTP allows obs-text, which Mongrel2 passes through) become
/// U+FFFD in the headers that hold them.
#[derive(Clone, Copy)]
pub(crate) struct TextView<'a> {
    whole: Option<&'a str>,
    base: usize,
}

impl<'a> TextView<'a> {
    /// A view of `buf`, which starts at `base` in the message.
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        TextView {
            whole: std::str::from_utf8(buf).ok(),
            base,
        }
    }

    /// The text of `bytes`, a slice of the buffer starting at `offset` in the message.
    #[inline]
    pub(crate) fn text(&self, bytes: &'a [u8], offset: usize) -> Cow<'a, str> {
        let start = offset.wrapping_sub(self.base);
        self.whole
            .and_then(|s| s.get(start..start.checked_add(bytes.len())?))
            .map(Cow::Borrowed)
            .unwrap_or_else(|| String::from_utf8_lossy(bytes))
    }
}

/// The text of a scalar header element (strings, and the wire text of numbers
/// and booleans), checked like the tnetstring parser would.
#[inline]
fn scalar_text<'a>(el: &Element<'a>, view: &TextView<'a>) -> Result<Cow<'a, str>, RequestError> {
    match el.tag {
        b',' => {}
        b'#' => {
            tnetstring::parse_integer(el.payload, el.payload_offset)?;
        }
        b'^' => {
            tnetstring::parse_float(el.payload, el.payload_offset)?;
        }
        b'!' => {
            tnetstring::parse_bool(el.payload, el.payload_offset)?;
        }
        b'~' => tnetstring::parse_null(el.payload, el.payload_offset)?,
        b']' | b'}' => return Err(RequestError::InvalidHeaderValue { offset: el.start }),
        tag => {
            return Err(tnetstring::Error::UnknownTag {
                offset: el.payload_offset + el.payload.len(),
                tag,
            }
            .into())
        }
    }
    Ok(view.text(el.payload, el.payload_offset))
}

/// Reads a tnetstring header dict straight from the wire, without building a
/// generic value tree first.
pub(crate) fn parse<'a>(
    dict: &Element<'a>,
    limits: &RequestLimits,
) -> Result<Headers<'a>, RequestError> {
    let payload = dict.payload;
    let base = dict.payload_offset;
    let view = TextView::new(payload, base);
    let mut headers = Headers::with_capacity(16);
    let mut pos = 0;
    while pos < payload.len() {
        let key_offset = base + pos;
        if headers.len() == limits.max_headers {
            return Err(RequestError::TooManyHeaders {
                max: limits.max_headers,
                offset: key_offset,
            });
        }
        let key = split_element(&payload[pos..], key_offset)?;
        if key.tag != b',' {
            return Err(tnetstring::Error::NonStringKey { offset: key_offset }.into());
        }
        pos += key.consumed;
        if pos == payload.len() {
            return Err(tnetstring::Error::MissingValue { offset: base + pos }.into());
        }
        let value = split_element(&payload[pos..], base + pos)?;
        pos += value.consumed;
        let value = if value.tag == b']' {
            let mut values = Vec::new();
            let mut at = 0;
            while at < value.payload.len() {
                if values.len() == limits.max_values_per_header {
                    return Err(RequestError::TooManyValues {
                        max: limits.max_values_per_header,
                        offset: value.start,
                    });
                }
                let item = split_element(&value.payload[at..], value.payload_offset + at)?;
                values.push(scalar_text(&item, &view)?);
                at += item.consumed;
            }
            HeaderValue::Many(values)
        } else {
            HeaderValue::One(scalar_text(&value, &view)?)
        };
        headers.append_raw(view.text(key.payload, key.payload_offset), value);
    }
    Ok(headers)
}
