//! [`RequestError`]: everything that can be wrong with a message from Mongrel2.

use crate::tnetstring;
use crate::websocket::FlagsError;

/// Why a request could not be parsed or interpreted. Offsets count from the
/// start of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The message ended (or a space was missing) before a field.
    #[error("request has no {field} at byte {offset}")]
    Missing {
        /// The field that was expected: "sender", "connection id", "path", "headers", "body".
        field: &'static str,
        /// Where it was expected.
        offset: usize,
    },
    /// The sender is empty or not UTF-8.
    #[error("invalid sender at byte {offset}")]
    InvalidSender {
        /// Start of the sender.
        offset: usize,
    },
    /// The connection id is not a decimal u64.
    #[error("invalid connection id at byte {offset}")]
    InvalidConnId {
        /// Start of the connection id.
        offset: usize,
    },
    /// The headers are neither a tnetstring dict nor a netstring holding `{...}`.
    #[error("headers at byte {offset} are neither a tnetstring dict nor a JSON netstring")]
    UnknownHeaderFormat {
        /// Start of the headers.
        offset: usize,
    },
    /// Malformed tnetstring/netstring framing.
    #[error(transparent)]
    Tnetstring(#[from] tnetstring::Error),
    /// Malformed JSON header object.
    #[error("invalid JSON headers at byte {offset}: {reason}")]
    InvalidJsonHeaders {
        /// Where the problem is.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A tnetstring header value is a dict, or a list holding something other than strings.
    #[error("header value at byte {offset} is not a string or a list of strings")]
    InvalidHeaderValue {
        /// Start of the value.
        offset: usize,
    },
    /// More headers than [`RequestLimits::max_headers`](super::RequestLimits::max_headers).
    #[error("more than {max} headers (at byte {offset})")]
    TooManyHeaders {
        /// The limit.
        max: usize,
        /// Where the first header over the limit starts.
        offset: usize,
    },
    /// A header with more values than [`RequestLimits::max_values_per_header`](super::RequestLimits::max_values_per_header).
    #[error("header at byte {offset} has more than {max} values")]
    TooManyValues {
        /// The limit.
        max: usize,
        /// Start of the list.
        offset: usize,
    },
    /// The whole message is larger than [`RequestLimits::max_size`](super::RequestLimits::max_size).
    #[error("request of {size} bytes is larger than {max}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a `,` netstring.
    #[error("body at byte {offset} is not a netstring")]
    InvalidBody {
        /// Start of the body.
        offset: usize,
    },
    /// Bytes after the body.
    #[error("trailing bytes after the body at byte {offset}")]
    TrailingBytes {
        /// First trailing byte.
        offset: usize,
    },
    /// A header needed to interpret the request is absent.
    #[error("request has no {0} header")]
    MissingHeader(&'static str),
    /// A Mongrel2 header holds something unexpected (e.g. a non-numeric count).
    #[error("header {name} has an invalid value {value:?}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The websocket `FLAGS` header is not a byte.
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// The body had to be text (e.g. a websocket accept key) but is not UTF-8.
    #[error("request body is not UTF-8")]
    BodyNotUtf8,
    /// [`Request::json`](super::Request::json) failed.
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
}
