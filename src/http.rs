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
//!   are dropped since they would contradict it.
//!
//! # Header safety
//!
//! A header name must be an RFC 9110 token and a value (and a custom reason phrase) may
//! not hold CR, LF, NUL or other control characters except horizontal tab, so caller
//! data can never split the response. The `try_*` methods report a violation as an
//! [`HttpError`]; the plain builder methods drop the offending header (or reason) and log
//! a warning instead, so a builder chain stays infallible and never emits it.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// Errors raised while building a response.
#[derive(Debug, thiserror::Error)]
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
    /// Serialising the JSON body failed.
    #[error("JSON serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// The standard reason phrase for `status`.
///
/// Covers every permanent code in the IANA HTTP status code registry (RFC 9110 and its
/// extensions). An unregistered code gets a generic phrase for its class
/// (`"Informational"`, `"Success"`, `"Redirection"`, `"Client Error"`, `"Server Error"`),
/// anything else `"Unknown"`. Use [`Response::reason`] for a custom phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    registered_phrase(status).unwrap_or(match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Unknown",
    })
}

fn registered_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        306 => "Unused",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => return None,
    })
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

/// Which framing-relevant header an entry is; decided once when the header is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    ContentType,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Replaced by a later call (e.g. `json` replacing `Content-Type`); never emitted.
    Removed,
}

impl Kind {
    fn of(name: &str) -> Kind {
        if name.eq_ignore_ascii_case("content-length") {
            Kind::ContentLength
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            Kind::TransferEncoding
        } else if name.eq_ignore_ascii_case("connection") {
            Kind::Connection
        } else if name.eq_ignore_ascii_case("content-type") {
            Kind::ContentType
        } else {
            Kind::Other
        }
    }

    /// Whether `encode` may have to leave this entry out.
    fn filtered(self) -> bool {
        !matches!(self, Kind::Other | Kind::ContentType)
    }
}

/// One header inside `Response::raw`, which holds every header pre-encoded as
/// `Name: value\r\n` so that encoding is mostly a single copy.
#[derive(Debug, Clone)]
struct Entry {
    start: usize,
    name_end: usize,
    end: usize,
    kind: Kind,
}

const HTTP_VERSION: &[u8] = b"HTTP/1.1 ";
const CONTENT_LENGTH: &[u8] = b"Content-Length: ";
const TE_CHUNKED: &[u8] = b"Transfer-Encoding: chunked\r\n";
const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// What `encode` emits, worked out once so that sizing and writing agree.
struct Plan {
    send_body: bool,
    content_length: Option<usize>,
    chunked: bool,
    /// Index of the one caller-set `Content-Length` entry kept, if any.
    keep_cl: Option<usize>,
    /// Index of the one caller-set `Transfer-Encoding` entry kept, if any.
    keep_te: Option<usize>,
}

/// An HTTP/1.1 response with a complete body.
///
/// ```
/// use mongrel2_transceiver::http::Response;
/// let bytes = Response::ok()
///     .header("Content-Type", "text/plain")
///     .body("hello")
///     .encode();
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
/// );
/// ```
///
/// See the [module docs](self) for how `Content-Length`, `Transfer-Encoding` and
/// `Connection` are handled.
#[derive(Clone)]
pub struct Response {
    status: u16,
    reason: Option<Cow<'static, str>>,
    raw: String,
    entries: Vec<Entry>,
    /// Set once an entry that `encode` may filter out is added, to keep the fast
    /// whole-buffer copy for the common case.
    needs_filter: bool,
    body: Vec<u8>,
    head: bool,
    close: bool,
    chunked: bool,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason_text())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("head", &self.head)
            .field("close", &self.close)
            .field("chunked", &self.chunked)
            .finish()
    }
}

impl Response {
    /// A response with `status` and its standard reason phrase.
    ///
    /// A status outside `100..=599` is replaced by 500 (and logged as an error), since
    /// it cannot be sent; use [`Response::try_new`] to get an error instead.
    pub fn new(status: u16) -> Response {
        Response::try_new(status).unwrap_or_else(|err| {
            log::error!("{err}; sending 500 instead");
            Response::with_status(500)
        })
    }

    /// A response with `status`, or [`HttpError::InvalidStatus`] if it is outside
    /// `100..=599`.
    pub fn try_new(status: u16) -> Result<Response, HttpError> {
        if (100..=599).contains(&status) {
            Ok(Response::with_status(status))
        } else {
            Err(HttpError::InvalidStatus(status))
        }
    }

    fn with_status(status: u16) -> Response {
        Response {
            status,
            reason: None,
            raw: String::new(),
            entries: Vec::new(),
            needs_filter: false,
            body: Vec::new(),
            head: false,
            close: false,
            chunked: false,
        }
    }

    /// `200 OK`.
    pub fn ok() -> Response {
        Response::with_status(200)
    }

    /// Replaces the standard reason phrase.
    ///
    /// A phrase with control characters is ignored (the standard one stays) and a
    /// warning is logged; use [`Response::try_reason`] to get an error instead.
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Response {
        let reason = reason.into();
        if is_valid_header_value(&reason) {
            self.reason = Some(reason);
        } else {
            log::warn!(
                "{}; keeping the standard phrase",
                HttpError::InvalidReason(reason.into_owned())
            );
        }
        self
    }

    /// Replaces the standard reason phrase, or fails with [`HttpError::InvalidReason`].
    pub fn try_reason(
        mut self,
        reason: impl Into<Cow<'static, str>>,
    ) -> Result<Response, HttpError> {
        let reason = reason.into();
        if !is_valid_header_value(&reason) {
            return Err(HttpError::InvalidReason(reason.into_owned()));
        }
        self.reason = Some(reason);
        Ok(self)
    }

    /// Appends a header; headers keep their order and may repeat.
    ///
    /// An invalid name or value is dropped (and logged as a warning) so that it can
    /// never split the response; use [`Response::try_header`] to get an error instead.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Response {
        if let Err(err) = self.push_header(name.as_ref(), value.as_ref()) {
            log::warn!("{err}; header dropped");
        }
        self
    }

    /// Appends a header, or fails with [`HttpError::InvalidHeaderName`] /
    /// [`HttpError::InvalidHeaderValue`].
    pub fn try_header(
        mut self,
        name: impl AsRef<str>,
        value: impl AsRef<str>,
    ) -> Result<Response, HttpError> {
        self.push_header(name.as_ref(), value.as_ref())?;
        Ok(self)
    }

    fn push_header(&mut self, name: &str, value: &str) -> Result<(), HttpError> {
        if !is_valid_header_name(name) {
            return Err(HttpError::InvalidHeaderName(name.to_owned()));
        }
        if !is_valid_header_value(value) {
            return Err(HttpError::InvalidHeaderValue {
                name: name.to_owned(),
            });
        }
        let kind = Kind::of(name);
        let start = self.raw.len();
        self.raw.reserve(name.len() + value.len() + 4);
        self.raw.push_str(name);
        let name_end = self.raw.len();
        self.raw.push_str(": ");
        self.raw.push_str(value);
        self.raw.push_str("\r\n");
        self.needs_filter |= kind.filtered();
        self.entries.push(Entry {
            start,
            name_end,
            end: self.raw.len(),
            kind,
        });
        Ok(())
    }

    /// Sets the body (replacing any previous one).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Serialises `value` as the JSON body and sets `Content-Type: application/json`,
    /// replacing any `Content-Type` set before.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Response, HttpError> {
        self.body = serde_json::to_vec(value)?;
        for entry in &mut self.entries {
            if entry.kind == Kind::ContentType {
                entry.kind = Kind::Removed;
                self.needs_filter = true;
            }
        }
        self.push_header("Content-Type", "application/json")?;
        Ok(self)
    }

    /// Marks this as the answer to a HEAD request: the body is not sent, but the
    /// `Content-Length` it would have had is (see the [module docs](self)).
    pub fn head(mut self, head: bool) -> Response {
        self.head = head;
        self
    }

    /// Sets [`head`](Self::head) and [`close`](Self::close) from the request this response
    /// answers: no body for HEAD, `Connection: close` when the request asked to close.
    pub fn for_request(self, request: &crate::request::Request<'_>) -> Response {
        self.head(request.method() == Some("HEAD"))
            .close(request.should_close())
    }

    /// Adds `Connection: close`, for a request that asked to close the connection
    /// (the handler must then also send Mongrel2 an empty reply to close it).
    pub fn close(mut self, close: bool) -> Response {
        self.close = close;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase that will be sent.
    pub fn reason_text(&self) -> &str {
        self.reason
            .as_deref()
            .unwrap_or_else(|| reason_phrase(self.status))
    }

    /// The headers added so far, in order, as `(name, value)` (framing headers the
    /// builder will drop or add are not reflected here).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.kind != Kind::Removed)
            .map(|e| {
                (
                    &self.raw[e.start..e.name_end],
                    &self.raw[e.name_end + 2..e.end - 2],
                )
            })
    }

    /// The body as set (it may not be sent: HEAD, 1xx, 204, 304).
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Whether this status allows a body to follow the head (false for 1xx, 204, 304)
    /// and the request was not HEAD.
    pub fn body_allowed(&self) -> bool {
        !self.head && !status_forbids_body(self.status) && self.status != 304
    }

    fn plan(&self) -> Plan {
        let mut plan = Plan {
            send_body: false,
            content_length: None,
            chunked: false,
            keep_cl: None,
            keep_te: None,
        };
        if status_forbids_body(self.status) {
            return plan;
        }
        if self.chunked {
            plan.chunked = true;
            return plan;
        }
        if self.head || self.status == 304 {
            let first = |kind| self.entries.iter().position(|e| e.kind == kind);
            plan.keep_te = first(Kind::TransferEncoding);
            if plan.keep_te.is_none() {
                plan.keep_cl = first(Kind::ContentLength);
                if plan.keep_cl.is_none() && self.status != 304 {
                    plan.content_length = Some(self.body.len());
                }
            }
            return plan;
        }
        plan.send_body = true;
        plan.content_length = Some(self.body.len());
        plan
    }

    fn keeps(&self, index: usize, entry: &Entry, plan: &Plan) -> bool {
        match entry.kind {
            Kind::Other | Kind::ContentType => true,
            Kind::ContentLength => plan.keep_cl == Some(index),
            Kind::TransferEncoding => plan.keep_te == Some(index),
            Kind::Connection => !self.close,
            Kind::Removed => false,
        }
    }

    fn encoded_len_with(&self, plan: &Plan) -> usize {
        let mut len = HTTP_VERSION.len() + 4 + self.reason_text().len() + 2;
        if self.needs_filter {
            len += self
                .entries
                .iter()
                .enumerate()
                .filter(|(i, e)| self.keeps(*i, e, plan))
                .map(|(_, e)| e.end - e.start)
                .sum::<usize>();
        } else {
            len += self.raw.len();
        }
        if let Some(cl) = plan.content_length {
            len += CONTENT_LENGTH.len() + Digits::new(cl).as_bytes().len() + 2;
        }
        if plan.chunked {
            len += TE_CHUNKED.len();
        }
        if self.close {
            len += CONNECTION_CLOSE.len();
        }
        len += 2;
        if plan.send_body {
            len += self.body.len();
        }
        len
    }

    /// The exact number of bytes [`Response::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_with(&self.plan())
    }

    /// The response bytes, ready to be sent as a Mongrel2 reply body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the response bytes to `out`, growing it at most once.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let plan = self.plan();
        out.reserve(self.encoded_len_with(&plan));
        out.extend_from_slice(HTTP_VERSION);
        // Construction guarantees 100..=599, so the status is exactly three digits.
        out.extend_from_slice(Digits::new(usize::from(self.status)).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.reason_text().as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.needs_filter {
            for (i, e) in self.entries.iter().enumerate() {
                if self.keeps(i, e, &plan) {
                    out.extend_from_slice(&self.raw.as_bytes()[e.start..e.end]);
                }
            }
        } else {
            out.extend_from_slice(self.raw.as_bytes());
        }
        if let Some(cl) = plan.content_length {
            out.extend_from_slice(CONTENT_LENGTH);
            out.extend_from_slice(Digits::new(cl).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if plan.chunked {
            out.extend_from_slice(TE_CHUNKED);
        }
        if self.close {
            out.extend_from_slice(CONNECTION_CLOSE);
        }
        out.extend_from_slice(b"\r\n");
        if plan.send_body {
            out.extend_from_slice(&self.body);
        }
    }
}

fn status_forbids_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204
}

/// Decimal digits of a `usize` on the stack, so numbers need no `String`.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn new(mut n: usize) -> Digits {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Digits { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The head of a response whose body follows as chunked transfer coding.
///
/// Send [`ChunkedResponse::encode`] first, then any number of
/// [`ChunkedResponse::chunk`]s, then [`ChunkedResponse::end`]; each may be a separate
/// Mongrel2 reply, so the connection can stay open for as long as the handler likes.
///
/// ```
/// use mongrel2_transceiver::http::ChunkedResponse;
/// let head = ChunkedResponse::start(200)
///     .header("Content-Type", "text/event-stream")
///     .encode();
/// assert_eq!(
///     head,
///     b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
/// );
/// assert_eq!(ChunkedResponse::chunk(b"data: hi\n\n"), b"a\r\ndata: hi\n\n\r\n");
/// assert_eq!(ChunkedResponse::end(), b"0\r\n\r\n");
/// ```
///
/// For HEAD requests and 1xx/204/304 statuses only the head may be sent (see
/// [`ChunkedResponse::body_allowed`]); 1xx/204 heads carry no `Transfer-Encoding`.
#[derive(Debug, Clone)]
pub struct ChunkedResponse {
    inner: Response,
}

impl ChunkedResponse {
    /// Starts a chunked response with `status` (outside `100..=599` becomes 500, as in
    /// [`Response::new`]).
    pub fn start(status: u16) -> ChunkedResponse {
        let mut inner = Response::new(status);
        inner.chunked = true;
        ChunkedResponse { inner }
    }

    /// Starts a chunked response, or fails with [`HttpError::InvalidStatus`].
    pub fn try_start(status: u16) -> Result<ChunkedResponse, HttpError> {
        let mut inner = Response::try_new(status)?;
        inner.chunked = true;
        Ok(ChunkedResponse { inner })
    }

    /// Replaces the reason phrase; see [`Response::reason`].
    pub fn reason(self, reason: impl Into<Cow<'static, str>>) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.reason(reason),
        }
    }

    /// Replaces the reason phrase; see [`Response::try_reason`].
    pub fn try_reason(
        self,
        reason: impl Into<Cow<'static, str>>,
    ) -> Result<ChunkedResponse, HttpError> {
        Ok(ChunkedResponse {
            inner: self.inner.try_reason(reason)?,
        })
    }

    /// Appends a header; see [`Response::header`].
    pub fn header(self, name: impl AsRef<str>, value: impl AsRef<str>) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.header(name, value),
        }
    }

    /// Appends a header; see [`Response::try_header`].
    pub fn try_header(
        self,
        name: impl AsRef<str>,
        value: impl AsRef<str>,
    ) -> Result<ChunkedResponse, HttpError> {
        Ok(ChunkedResponse {
            inner: self.inner.try_header(name, value)?,
        })
    }

    /// Marks this as the answer to a HEAD request: send the head only.
    pub fn head(self, head: bool) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.head(head),
        }
    }

    /// Adds `Connection: close`; see [`Response::close`].
    pub fn close(self, close: bool) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.close(close),
        }
    }

    /// Sets head and close from the request this stream answers; see [`Response::for_request`].
    pub fn for_request(self, request: &crate::request::Request<'_>) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.for_request(request),
        }
    }

    /// Whether chunks may follow the head (false for HEAD requests and 1xx/204/304).
    pub fn body_allowed(&self) -> bool {
        self.inner.body_allowed()
    }

    /// The head bytes (status line and headers, ending in an empty line).
    pub fn encode(&self) -> Vec<u8> {
        self.inner.encode()
    }

    /// Appends the head bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.inner.encode_into(out)
    }

    /// One chunk carrying `data`: `HEX-LENGTH\r\ndata\r\n`.
    ///
    /// Empty `data` yields an empty `Vec`: a zero-length chunk would end the body, which
    /// only [`ChunkedResponse::end`] may do.
    pub fn chunk(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ChunkedResponse::chunk_into(data, &mut out);
        out
    }

    /// Appends one chunk carrying `data` to `out` (nothing for empty `data`).
    pub fn chunk_into(data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let mut hex = [0u8; 16];
        let mut start = hex.len();
        let mut n = data.len();
        while n > 0 {
            start -= 1;
            hex[start] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
        }
        let hex = &hex[start..];
        out.reserve(hex.len() + data.len() + 4);
        out.extend_from_slice(hex);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }

    /// The last chunk, ending the body: `0\r\n\r\n`.
    pub const fn end() -> &'static [u8] {
        b"0\r\n\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response) -> String {
        String::from_utf8(r.encode()).unwrap()
    }

    #[test]
    fn status_line_and_body() {
        let r = Response::new(404).body("nope");
        assert_eq!(
            text(&r),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
        );
        assert_eq!(r.encoded_len(), r.encode().len());
    }

    #[test]
    fn empty_body_has_zero_length() {
        assert_eq!(
            text(&Response::ok()),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(101), "Switching Protocols");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(422), "Unprocessable Content");
        assert_eq!(reason_phrase(511), "Network Authentication Required");
        assert_eq!(reason_phrase(299), "Success");
        assert_eq!(reason_phrase(499), "Client Error");
        assert_eq!(reason_phrase(599), "Server Error");
        assert_eq!(reason_phrase(42), "Unknown");
        // Every known code has a specific phrase, distinct from the class fallbacks.
        for code in [100, 103, 226, 308, 418, 451, 508] {
            assert!(![
                "Informational",
                "Success",
                "Redirection",
                "Client Error",
                "Server Error"
            ]
            .contains(&reason_phrase(code)));
        }
    }

    #[test]
    fn custom_reason() {
        let r = Response::new(299).reason("Fine Thanks");
        assert!(text(&r).starts_with("HTTP/1.1 299 Fine Thanks\r\n"));
        let r = Response::new(200).reason("");
        assert!(text(&r).starts_with("HTTP/1.1 200 \r\n"));
    }

    #[test]
    fn reason_with_crlf_is_rejected() {
        let err = Response::ok().try_reason("OK\r\nX-Evil: 1").unwrap_err();
        assert!(matches!(err, HttpError::InvalidReason(_)));
        let r = Response::ok().reason("OK\r\nX-Evil: 1");
        assert!(text(&r).starts_with("HTTP/1.1 200 OK\r\nContent-Length"));
    }

    #[test]
    fn invalid_status() {
        assert!(matches!(
            Response::try_new(99),
            Err(HttpError::InvalidStatus(99))
        ));
        assert!(matches!(
            Response::try_new(600),
            Err(HttpError::InvalidStatus(600))
        ));
        assert!(text(&Response::new(1000)).starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(ChunkedResponse::try_start(7).is_err());
    }

    #[test]
    fn repeated_headers_keep_order() {
        let r = Response::ok()
            .header("Set-Cookie", "a=1")
            .header("X-Other", "x")
            .header("Set-Cookie", "b=2")
            .body("hi");
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: x\r\nSet-Cookie: b=2\r\n\
             Content-Length: 2\r\n\r\nhi"
        );
        let headers: Vec<_> = r.headers().collect();
        assert_eq!(
            headers,
            [
                ("Set-Cookie", "a=1"),
                ("X-Other", "x"),
                ("Set-Cookie", "b=2")
            ]
        );
    }

    #[test]
    fn crlf_injection_is_rejected() {
        for (name, value) in [
            ("X-A", "v\r\nSet-Cookie: evil"),
            ("X-A", "v\nx"),
            ("X-A", "v\rx"),
            ("X-A", "v\0x"),
            ("X-A\r\nEvil", "v"),
            ("X-A:", "v"),
            ("X A", "v"),
            ("", "v"),
        ] {
            let err = Response::ok().try_header(name, value).unwrap_err();
            assert!(
                matches!(
                    err,
                    HttpError::InvalidHeaderName(_) | HttpError::InvalidHeaderValue { .. }
                ),
                "{name:?}: {value:?}"
            );
            let r = Response::ok().header(name, value).header("X-Ok", "1");
            assert_eq!(
                text(&r),
                "HTTP/1.1 200 OK\r\nX-Ok: 1\r\nContent-Length: 0\r\n\r\n"
            );
        }
        // Tabs and non-ASCII text are legal in values.
        let r = Response::ok().try_header("X-T", "a\tb é").unwrap();
        assert!(text(&r).contains("X-T: a\tb é\r\n"));
    }

    #[test]
    fn user_content_length_is_replaced_when_body_is_sent() {
        let r = Response::ok()
            .header("content-length", "999")
            .header("Transfer-Encoding", "chunked")
            .header("X-A", "1")
            .body("abc");
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert_eq!(r.encoded_len(), r.encode().len());
    }

    #[test]
    fn head_keeps_length_without_body() {
        let r = Response::ok()
            .header("Content-Type", "text/plain")
            .body("hello")
            .head(true);
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        assert!(!r.body_allowed());
    }

    #[test]
    fn head_keeps_first_user_content_length() {
        let r = Response::ok()
            .header("Content-Length", "1234")
            .header("Content-Length", "5")
            .head(true);
        assert_eq!(text(&r), "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
        let r = Response::ok()
            .header("Content-Length", "1234")
            .header("Transfer-Encoding", "chunked")
            .head(true);
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn no_body_statuses() {
        let r = Response::new(204).header("Content-Length", "3").body("abc");
        assert_eq!(text(&r), "HTTP/1.1 204 No Content\r\n\r\n");
        let r = Response::new(101).header("Upgrade", "websocket").body("x");
        assert_eq!(
            text(&r),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
        let r = Response::new(304).header("ETag", "\"x\"").body("abc");
        assert_eq!(text(&r), "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
        let r = Response::new(304).header("Content-Length", "10");
        assert_eq!(
            text(&r),
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
        );
        let r = Response::new(204).head(true);
        assert_eq!(text(&r), "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn connection_close() {
        let r = Response::ok().body("x").close(true);
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );
        let r = Response::ok()
            .header("Connection", "keep-alive")
            .close(true);
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let r = Response::ok().header("Connection", "keep-alive");
        assert!(text(&r).contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn json_body() {
        #[derive(Serialize)]
        struct Msg {
            a: u32,
        }
        let r = Response::ok()
            .header("Content-Type", "text/plain")
            .json(&Msg { a: 1 })
            .unwrap();
        assert_eq!(
            text(&r),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn encode_into_appends_with_one_allocation() {
        let r = Response::ok()
            .header("Content-Length", "1")
            .header("X", "y")
            .close(true)
            .body(vec![b'z'; 100_000]);
        let mut out = b"prefix".to_vec();
        r.encode_into(&mut out);
        assert!(out.starts_with(b"prefixHTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 100000\r\n"));
        assert_eq!(out.len(), 6 + r.encoded_len());
        // Into an empty Vec the single reservation is exactly the encoded size.
        let mut exact = Vec::new();
        r.encode_into(&mut exact);
        assert_eq!(exact.capacity(), r.encoded_len());
        assert_eq!(exact.len(), r.encoded_len());
    }

    #[test]
    fn chunked_head() {
        let head = ChunkedResponse::start(200)
            .header("Content-Type", "text/event-stream")
            .header("Content-Length", "5")
            .header("Transfer-Encoding", "gzip")
            .close(true)
            .encode();
        assert_eq!(
            head,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let head = ChunkedResponse::start(204).encode();
        assert_eq!(head, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(!ChunkedResponse::start(204).body_allowed());
        assert!(ChunkedResponse::start(200).body_allowed());
        assert!(!ChunkedResponse::start(200).head(true).body_allowed());
    }

    #[test]
    fn chunk_bytes() {
        assert_eq!(ChunkedResponse::chunk(b"hello"), b"5\r\nhello\r\n");
        assert_eq!(ChunkedResponse::chunk(&[b'x'; 255])[..5], *b"ff\r\nx");
        assert_eq!(ChunkedResponse::chunk(&[b'x'; 4096])[..6], *b"1000\r\n");
        assert!(ChunkedResponse::chunk(b"").is_empty());
        assert_eq!(ChunkedResponse::end(), b"0\r\n\r\n");
        let mut out = Vec::new();
        ChunkedResponse::chunk_into(b"ab", &mut out);
        ChunkedResponse::chunk_into(b"", &mut out);
        ChunkedResponse::chunk_into(b"c", &mut out);
        assert_eq!(out, b"2\r\nab\r\n1\r\nc\r\n");
    }

    #[test]
    fn digits() {
        for n in [0usize, 7, 10, 99, 100, 123_456, usize::MAX] {
            assert_eq!(Digits::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
