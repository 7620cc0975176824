//! HTTP/1.1 responses written by a handler.
//!
//! Mongrel2 forwards a handler's reply body to the client byte for byte, so the handler
//! writes the complete HTTP response itself. [`Response`] builds one with a known body;
//! [`ChunkedResponse`] starts a response whose body is streamed later with chunked
//! transfer coding (long polling, Server-Sent Events).
//!
//! # Framing rules
//!
//! The builder owns message framing, because a wrong `Content-Length` or a duplicated
//! `Transfer-Encoding` desynchronises the client's connection:
//!
//! * **1xx and 204**: no body, and neither `Content-Length` nor `Transfer-Encoding`
//!   (RFC 9110 §8.6, RFC 9112 §6.1); any the caller set are dropped.
//! * **Body sent** (any other status, not HEAD, not 304): `Content-Length` is always
//!   computed from the body; any `Content-Length` or `Transfer-Encoding` the caller set
//!   is dropped.
//! * **HEAD and 304** (body suppressed): a caller-set `Transfer-Encoding` or
//!   `Content-Length` describes the response a GET would have produced, so the first
//!   one is kept (only `Transfer-Encoding` if both were set) and the rest are dropped.
//!   Without one, a HEAD response gets the `Content-Length` of the body it would have
//!   sent, and a 304 gets none (its representation length is unknown here).
//! * **Chunked** ([`ChunkedResponse`]): `Transfer-Encoding: chunked` replaces any
//!   caller-set `Content-Length` or `Transfer-Encoding` (except for 1xx/204).
//! * **`close(true)`**: exactly one `Connection: close`; caller-set `Connection` headers
//!   are dropped since they would contradict it. **`keep_alive(true)`** (set by
//!   `for_request` for an HTTP/1.0 request that asked for it) likewise writes exactly one
//!   `Connection: keep-alive`, unless the response closes.
//! * **Close-delimited** ([`ChunkedResponse::close_delimited`], chosen for HTTP/1.0
//!   clients, which know no chunked coding): neither `Content-Length` nor
//!   `Transfer-Encoding`, and `Connection: close`; the body ends when the connection does.
//!
//! # Date
//!
//! Every response carries `Date` (RFC 9110 §6.6.1: a server with a clock must send it)
//! unless `date(false)` turns it off or the caller set its own `Date` header. The value is
//! an IMF-fixdate formatted by the `httpdate` crate at most once per second per thread,
//! not per response.
//!
//! # Header safety
//!
//! A header name must be an RFC 9110 token and a value (and a custom reason phrase) may
//! not hold CR, LF, NUL or other control characters except horizontal tab, so caller
//! data can never split the response. The builders fail in one place: each records the
//! first invalid input (status, reason, header, JSON body) and `encode` returns it as an
//! [`HttpError`] instead of writing anything.

use std::sync::Arc;

mod chunked;
mod date;
mod response;
mod status;

pub use chunked::ChunkedResponse;
pub use response::Response;
pub use status::reason_phrase;

/// Errors raised while building a response.
///
/// A builder records the first of these and its `encode` returns it, so a chain of
/// builder calls stays plain and a bad value is never written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The status code is outside `100..=599` (RFC 9110 §15).
    #[error("invalid HTTP status code {0}: must be within 100..=599")]
    InvalidStatus(u16),
    /// The header name is empty or holds a character outside the RFC 9110 token set.
    #[error("invalid header name {0:?}: must be a non-empty token")]
    InvalidHeaderName(String),
    /// The header value holds CR, LF, NUL or another forbidden control character.
    #[error(
        "invalid value for header {name:?}: control characters (CR, LF, NUL, ...) are not allowed"
    )]
    InvalidHeaderValue {
        /// Name of the header whose value was rejected.
        name: String,
    },
    /// The custom reason phrase holds a forbidden control character.
    #[error("invalid reason phrase {0:?}: control characters (CR, LF, NUL, ...) are not allowed")]
    InvalidReason(String),
    /// Serialising the JSON body failed. Shared, so that a builder can report it from
    /// every `encode`.
    #[error("JSON serialisation failed: {0}")]
    Json(#[source] Arc<serde_json::Error>),
}

impl From<serde_json::Error> for HttpError {
    fn from(err: serde_json::Error) -> Self {
        HttpError::Json(Arc::new(err))
    }
}

/// Whether `name` is a valid header field name (a non-empty RFC 9110 token).
pub fn is_valid_header_name(name: &str) -> bool {
    crate::token::is_token(name)
}

/// Whether `value` may be sent as a header field value (or reason phrase): no control
/// characters other than horizontal tab, so in particular no CR, LF or NUL.
pub fn is_valid_header_value(value: &str) -> bool {
    crate::token::is_field_value(value)
}

#[cfg(test)]
mod tests;
