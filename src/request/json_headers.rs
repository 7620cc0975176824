//! The JSON header object of Mongrel2's default (non-tnetstring) protocol.
//!
//! Mongrel2 builds this object by hand and escapes only `"` and `\`, so header
//! values may carry raw tabs, CR/LF (folded headers) and non-UTF-8 bytes, which a
//! strict JSON parser rejects. This small parser accepts exactly that flat shape:
//! an object of strings or arrays of strings (other scalars are kept as their
//! text). Unescaped strings are borrowed; only strings with escapes are copied.
//! Invalid UTF-8 is replaced with U+FFFD.

use std::borrow::Cow;

use super::headers::{HeaderValue, Headers};
use super::{RequestError, RequestLimits, TextView};

/// Parses the object in `input`, which sits at `base` in the whole message.
pub(crate) fn parse<'a>(
    input: &'a [u8],
    base: usize,
    limits: &RequestLimits,
) -> Result<Headers<'a>, RequestError> {
    let mut p = Cursor {
        input,
        pos: 0,
        base,
        view: TextView::new(input, base),
    };
    let mut headers = Headers::with_capacity(16);
    p.skip_ws();
    p.expect(b'{', "expected '{'")?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            if headers.len() == limits.max_headers {
                return Err(RequestError::TooManyHeaders {
                    max: limits.max_headers,
                    offset: p.offset(),
                });
            }
            let name = p.string()?;
            p.skip_ws();
            p.expect(b':', "expected ':'")?;
            p.skip_ws();
            let value = p.value(limits)?;
            headers.append_raw(name, value);
            p.skip_ws();
            match p.next() {
                Some(b',') => p.skip_ws(),
                Some(b'}') => break,
                _ => return Err(p.error_before("expected ',' or '}'")),
            }
        }
    }
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error("trailing bytes after the header object"));
    }
    Ok(headers)
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
    base: usize,
    view: TextView<'a>,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn error(&self, reason: &'static str) -> RequestError {
        RequestError::InvalidJsonHeaders {
            offset: self.offset(),
            reason,
        }
    }

    /// An error about the byte just consumed.
    fn error_before(&self, reason: &'static str) -> RequestError {
        RequestError::InvalidJsonHeaders {
            offset: self.offset().saturating_sub(1),
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), RequestError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(reason))
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, limits: &RequestLimits) -> Result<HeaderValue<'a>, RequestError> {
        if self.peek() != Some(b'[') {
            return self.scalar().map(HeaderValue::One);
        }
        let list_offset = self.offset();
        self.pos += 1;
        self.skip_ws();
        let mut values = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(HeaderValue::Many(values));
        }
        loop {
            if values.len() == limits.max_values_per_header {
                return Err(RequestError::TooManyValues {
                    max: limits.max_values_per_header,
                    offset: list_offset,
                });
            }
            values.push(self.scalar()?);
            self.skip_ws();
            match self.next() {
                Some(b',') => self.skip_ws(),
                Some(b']') => return Ok(HeaderValue::Many(values)),
                _ => return Err(self.error_before("expected ',' or ']'")),
            }
        }
    }

    /// A string, or the text of a number / `true` / `false` / `null`.
    fn scalar(&mut self) -> Result<Cow<'a, str>, RequestError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => {
                Ok(self.literal(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')))
            }
            Some(b't' | b'f' | b'n') => {
                let start = self.pos;
                let text = self.literal(|b| b.is_ascii_lowercase());
                match text.as_ref() {
                    "true" | "false" | "null" => Ok(text),
                    _ => Err(RequestError::InvalidJsonHeaders {
                        offset: self.base + start,
                        reason: "unknown literal",
                    }),
                }
            }
            Some(b'[' | b'{') => Err(self.error("nested header values are not supported")),
            _ => Err(self.error("expected a header value")),
        }
    }

    fn literal(&mut self, accept: impl Fn(u8) -> bool) -> Cow<'a, str> {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        self.view
            .text(&self.input[start..self.pos], self.base + start)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, RequestError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        loop {
            match self.next() {
                Some(b'"') => {
                    let raw = &self.input[start..self.pos - 1];
                    return Ok(self.view.text(raw, self.base + start));
                }
                Some(b'\\') => break,
                Some(_) => {}
                None => return Err(self.error("unterminated string")),
            }
        }
        // Escapes present: decode into an owned buffer.
        let mut out = self.input[start..self.pos - 1].to_vec();
        self.pos -= 1;
        loop {
            match self.next() {
                Some(b'"') => {
                    return Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(b) => out.push(b),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), RequestError> {
        let simple = match self.next() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0C,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let c = self.unicode_escape()?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(self.error_before("invalid escape")),
        };
        out.push(simple);
        Ok(())
    }

    /// After `\u`: one code unit, or a surrogate pair; lone surrogates become U+FFFD.
    fn unicode_escape(&mut self) -> Result<char, RequestError> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return Ok(char::from_u32(u32::from(first)).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let save = self.pos;
        self.pos += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            // Not a low surrogate: emit U+FFFD and decode the second escape on its own.
            self.pos = save;
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let code = 0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00);
        Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn hex4(&mut self) -> Result<u16, RequestError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let mut v: u16 = 0;
        for &d in digits {
            let n = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            // Four hex digits fit in 16 bits.
            v = (v << 4) | n as u16;
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
