//! Framing of one Mongrel2 message: `SENDER CONN_ID PATH HEADERS BODY`.

use std::borrow::Cow;

use super::{json_headers, tnet_headers, HeaderProtocol, Request, RequestError, RequestLimits};
use crate::tnetstring::split_element;

impl<'a> Request<'a> {
    /// Parses one message with [`RequestLimits::default`].
    pub fn parse(input: &'a [u8]) -> Result<Request<'a>, RequestError> {
        Request::parse_with_limits(input, &RequestLimits::default())
    }

    /// Parses one message, bounding its size, the header count and list lengths.
    pub fn parse_with_limits(
        input: &'a [u8],
        limits: &RequestLimits,
    ) -> Result<Request<'a>, RequestError> {
        Request::parse_framed(input, limits, false).map(|(request, _)| request)
    }

    /// Parses a control-socket request. The seed's Connector sends connection id `-1`
    /// (which Mongrel2 never does, so [`Request::parse`] keeps refusing it): then the
    /// second value is `None` and the request's own `conn_id` is 0.
    pub(crate) fn parse_control(
        input: &'a [u8],
    ) -> Result<(Request<'a>, Option<u64>), RequestError> {
        Request::parse_framed(input, &RequestLimits::default(), true)
    }

    fn parse_framed(
        input: &'a [u8],
        limits: &RequestLimits,
        control: bool,
    ) -> Result<(Request<'a>, Option<u64>), RequestError> {
        if input.len() > limits.max_size {
            return Err(RequestError::TooLarge {
                size: input.len(),
                max: limits.max_size,
            });
        }
        let mut pos = 0;

        let sender_bytes = field(input, &mut pos, "sender")?;
        let sender = std::str::from_utf8(sender_bytes)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(RequestError::InvalidSender { offset: 0 })?;

        let id_offset = pos;
        let id_text = field(input, &mut pos, "connection id")?;
        let target = match parse_conn_id(id_text) {
            Some(id) => Some(id),
            None if control && id_text == b"-1" => None,
            None => return Err(RequestError::InvalidConnId { offset: id_offset }),
        };
        let conn_id = target.unwrap_or(0);

        let path = String::from_utf8_lossy(field(input, &mut pos, "path")?);

        if pos == input.len() {
            return Err(RequestError::Missing {
                field: "headers",
                offset: pos,
            });
        }
        let header_offset = pos;
        let el = split_element(&input[pos..], pos)?;
        let (headers, protocol) = match el.tag {
            b'}' => (
                tnet_headers::parse(&el, limits)?,
                HeaderProtocol::Tnetstring,
            ),
            b',' if el.payload.first() == Some(&b'{') => (
                json_headers::parse(el.payload, el.payload_offset, limits)?,
                HeaderProtocol::Json,
            ),
            _ => {
                return Err(RequestError::UnknownHeaderFormat {
                    offset: header_offset,
                })
            }
        };
        pos += el.consumed;

        if pos == input.len() {
            return Err(RequestError::Missing {
                field: "body",
                offset: pos,
            });
        }
        let body_el = split_element(&input[pos..], pos)?;
        if body_el.tag != b',' {
            return Err(RequestError::InvalidBody { offset: pos });
        }
        pos += body_el.consumed;
        if pos != input.len() {
            return Err(RequestError::TrailingBytes { offset: pos });
        }

        let request = Request {
            sender: super::Sender::Borrowed(sender),
            conn_id,
            path,
            headers,
            body: Cow::Borrowed(body_el.payload),
            protocol,
        };
        Ok((request, target))
    }
}

/// Takes the bytes up to the next space and steps past it.
fn field<'a>(
    input: &'a [u8],
    pos: &mut usize,
    name: &'static str,
) -> Result<&'a [u8], RequestError> {
    let rest = &input[*pos..];
    let len = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or(RequestError::Missing {
            field: name,
            offset: *pos,
        })?;
    *pos += len + 1;
    Ok(&rest[..len])
}

fn parse_conn_id(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}
