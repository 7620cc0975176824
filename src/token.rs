//! HTTP tokens and field values (RFC 9110 §5.6.2, §5.5), shared by every codec that
//! writes or checks header text. A leaf module: it imports nothing from the crate.

/// Whether `s` is a non-empty RFC 9110 token (a valid header name, subprotocol, ...).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Whether `value` may be sent as a header field value (or reason phrase): no control
/// characters other than horizontal tab, so in particular no CR, LF or NUL.
pub(crate) fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
