//! Canonical tnetstring encoding and the integer formatting it shares with replies.

use super::{Error, Value};

/// Appends the tnetstring encoding of `value` to `out`.
///
/// Fails only on a NaN or infinite float ([`Error::NonFiniteFloat`]); `out` is then
/// restored to its previous length.
///
/// Any nesting is written, also deeper than [`DEFAULT_MAX_DEPTH`](super::DEFAULT_MAX_DEPTH),
/// which [`parse`](super::parse) refuses: the depth limit is the reader's policy, so a
/// writer sending deeper values must have its reader use
/// [`parse_with_max_depth`](super::parse_with_max_depth).
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

    pub(crate) fn format_u64(&mut self, n: u64) -> &[u8] {
        let len = decimal_len(n);
        let start = self.bytes.len() - len;
        write_decimal(&mut self.bytes[start..], n);
        &self.bytes[start..]
    }

    /// The sign only ever needs a 20th byte for i64::MIN, whose magnitude has
    /// 19 digits, so 20 bytes suffice.
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

/// Powers of ten up to 10^19, the largest a u64 holds.
const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Number of decimal digits of `n`, without branches on the value: reply ids
/// of mixed widths would defeat branch prediction.
#[inline]
pub(crate) fn decimal_len(n: u64) -> usize {
    let n = n | 1;
    let bits = 64 - n.leading_zeros() as usize;
    // 1233 / 4096 approximates log10(2); `guess` is the digit count or one more.
    let guess = (bits * 1233) >> 12;
    guess + 1 - usize::from(n < POW10[guess])
}

const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` in decimal filling `dst`, which must be `decimal_len(n)` long.
pub(crate) fn write_decimal(dst: &mut [u8], n: u64) {
    write_decimal_backwards(dst, n);
}

/// Writes `n` in decimal so that it ends at the end of `dst`, returning where
/// it starts; `dst` must have room for its digits. Four digits per division,
/// in 32-bit arithmetic once the value fits: reply ids are formatted in bulk.
#[inline]
pub(crate) fn write_decimal_backwards(dst: &mut [u8], mut n: u64) -> usize {
    let mut i = dst.len();
    while n > u64::from(u32::MAX) {
        // The remainder is below 10_000, so it fits a u32.
        write_four(&mut dst[i - 4..i], (n % 10_000) as u32);
        n /= 10_000;
        i -= 4;
    }
    // The loop above leaves at most u32::MAX.
    let mut n = n as u32;
    while n >= 10_000 {
        write_four(&mut dst[i - 4..i], n % 10_000);
        n /= 10_000;
        i -= 4;
    }
    if n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        dst[i - 2..i].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        i -= 2;
    }
    if n >= 10 {
        let pair = n as usize * 2;
        dst[i - 2..i].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        i - 2
    } else {
        dst[i - 1] = b'0' + n as u8;
        i - 1
    }
}

/// Writes exactly four digits (with leading zeros) of `n < 10_000`.
fn write_four(dst: &mut [u8], n: u32) {
    let hi = (n / 100) as usize * 2;
    let lo = (n % 100) as usize * 2;
    dst[..2].copy_from_slice(&DIGIT_PAIRS[hi..hi + 2]);
    dst[2..4].copy_from_slice(&DIGIT_PAIRS[lo..lo + 2]);
}
