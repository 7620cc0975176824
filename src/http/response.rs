//! [`Response`]: the builder and its framing-aware encoder.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use super::date::{self, DATE_LEN};
use super::status::{reason_phrase, status_forbids_body};
use super::{is_valid_header_name, is_valid_header_value, HttpError};

/// Which framing-relevant header an entry is; decided once when the header is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    ContentType,
    ContentLength,
    TransferEncoding,
    Connection,
    /// A caller-set `Date`: it replaces the automatic one.
    Date,
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
        } else if name.eq_ignore_ascii_case("date") {
            Kind::Date
        } else {
            Kind::Other
        }
    }

    /// Whether `encode` may have to leave this entry out.
    fn filtered(self) -> bool {
        !matches!(self, Kind::Other | Kind::ContentType | Kind::Date)
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
const CONNECTION_KEEP_ALIVE: &[u8] = b"Connection: keep-alive\r\n";
const DATE: &[u8] = b"Date: ";

/// What `encode` emits, worked out once so that sizing and writing agree.
struct Plan {
    send_body: bool,
    content_length: Option<usize>,
    chunked: bool,
    /// Index of the one caller-set `Content-Length` entry kept, if any.
    keep_cl: Option<usize>,
    /// Index of the one caller-set `Transfer-Encoding` entry kept, if any.
    keep_te: Option<usize>,
    /// The automatic `Date` value, unless turned off or set by the caller.
    date: Option<[u8; DATE_LEN]>,
    /// The `Connection` header written, replacing caller-set ones.
    connection: Option<&'static [u8]>,
}

/// The settings a request decides ([`Response::for_request`]), apart from the response so
/// that a shared response can be encoded for many requests without a copy.
#[derive(Clone, Copy)]
struct Framing {
    head: bool,
    close: bool,
    keep_alive: bool,
}

impl Framing {
    fn of(request: &crate::request::Request<'_>) -> Framing {
        let close = request.should_close();
        Framing {
            head: request.method() == Some("HEAD"),
            close,
            keep_alive: !close && request.version() == Some("HTTP/1.0"),
        }
    }
}

/// An HTTP/1.1 response with a complete body.
///
/// ```
/// use mongrel2_transceiver::http::Response;
/// let bytes = Response::ok()
///     .header("Content-Type", "text/plain")
///     .body("hello")
///     .date(false) // on by default; off here to show exact bytes
///     .encode()
///     .unwrap();
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
/// );
/// ```
///
/// See the [module docs](crate::http) for how `Content-Length`, `Transfer-Encoding` and
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
    keep_alive: bool,
    /// Whether `Date` is added (unless the caller set one).
    date: bool,
    has_date: bool,
    pub(super) chunked: bool,
    /// A streamed body that ends when the connection closes (HTTP/1.0 clients).
    pub(super) close_delimited: bool,
    /// The first invalid input given to the builder; `encode` reports it.
    error: Option<HttpError>,
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
            .field("close_delimited", &self.close_delimited)
            .field("keep_alive", &self.keep_alive)
            .field("date", &self.date)
            .field("error", &self.error)
            .finish()
    }
}

impl Response {
    /// A response with `status` and its standard reason phrase.
    ///
    /// A status outside `100..=599` (RFC 9110 §15) cannot be sent:
    /// [`encode`](Response::encode) then fails with [`HttpError::InvalidStatus`].
    pub fn new(status: u16) -> Response {
        let mut response = Response::with_status(status);
        if !(100..=599).contains(&status) {
            response.fail(HttpError::InvalidStatus(status));
        }
        response
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
            keep_alive: false,
            date: true,
            has_date: false,
            chunked: false,
            close_delimited: false,
            error: None,
        }
    }

    /// Keeps the first error only: it names the call that went wrong first.
    fn fail(&mut self, error: HttpError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// `200 OK`.
    pub fn ok() -> Response {
        Response::with_status(200)
    }

    /// Replaces the standard reason phrase.
    ///
    /// A phrase with control characters makes [`encode`](Response::encode) fail with
    /// [`HttpError::InvalidReason`].
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Response {
        let reason = reason.into();
        if is_valid_header_value(&reason) {
            self.reason = Some(reason);
        } else {
            self.fail(HttpError::InvalidReason(reason.into_owned()));
        }
        self
    }

    /// Appends a header; headers keep their order and may repeat.
    ///
    /// An invalid name or value is never written: [`encode`](Response::encode) fails with
    /// [`HttpError::InvalidHeaderName`] or [`HttpError::InvalidHeaderValue`] instead.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Response {
        if let Err(err) = self.push_header(name.as_ref(), value.as_ref()) {
            self.fail(err);
        }
        self
    }

    /// The first invalid input given to this builder, which [`encode`](Response::encode)
    /// will report.
    pub fn error(&self) -> Option<&HttpError> {
        self.error.as_ref()
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
        self.has_date |= kind == Kind::Date;
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
    /// replacing any `Content-Type` set before. If serialisation fails,
    /// [`encode`](Response::encode) fails with [`HttpError::Json`].
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => self.body = body,
            Err(err) => {
                self.fail(err.into());
                return self;
            }
        }
        for entry in &mut self.entries {
            if entry.kind == Kind::ContentType {
                entry.kind = Kind::Removed;
                self.needs_filter = true;
            }
        }
        self.header("Content-Type", "application/json")
    }

    /// Marks this as the answer to a HEAD request: the body is not sent, but the
    /// `Content-Length` it would have had is (see the [module docs](crate::http)).
    pub fn head(mut self, head: bool) -> Response {
        self.head = head;
        self
    }

    /// Sets [`head`](Self::head), [`close`](Self::close) and
    /// [`keep_alive`](Self::keep_alive) from the request this response answers: no body
    /// for HEAD, `Connection: close` when the request asked to close, and
    /// `Connection: keep-alive` for an HTTP/1.0 request that asked to keep the connection
    /// (HTTP/1.0 closes by default, so its clients wait for that answer).
    pub fn for_request(self, request: &crate::request::Request<'_>) -> Response {
        let framing = Framing::of(request);
        self.head(framing.head)
            .close(framing.close)
            .keep_alive(framing.keep_alive)
    }

    /// The same bytes as `self.clone().for_request(request).encode()`, without the copy:
    /// one response built once answers every request.
    pub fn encode_for(&self, request: &crate::request::Request<'_>) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.encode_framed(Framing::of(request), &mut out)?;
        Ok(out)
    }

    /// Appends [`encode_for`](Self::encode_for)'s bytes to `out`, growing it at most once;
    /// on error nothing is appended.
    pub fn encode_for_into(
        &self,
        request: &crate::request::Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), HttpError> {
        self.encode_closing(request, out).map(drop)
    }

    /// [`encode_for_into`](Self::encode_for_into), and whether the response closes the
    /// connection (the request asked to): the request's headers are read once for both.
    pub(crate) fn encode_closing(
        &self,
        request: &crate::request::Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, HttpError> {
        let framing = Framing::of(request);
        self.encode_framed(framing, out)?;
        Ok(framing.close)
    }

    fn framing(&self) -> Framing {
        Framing {
            head: self.head,
            close: self.close,
            keep_alive: self.keep_alive,
        }
    }

    /// Adds `Connection: keep-alive` (unless [`close`](Self::close) is set), replacing any
    /// caller-set `Connection` header: what an HTTP/1.0 client needs to keep the connection.
    pub fn keep_alive(mut self, keep_alive: bool) -> Response {
        self.keep_alive = keep_alive;
        self
    }

    /// Whether a `Date` header with the current time is added (the default, as RFC 9110
    /// §6.6.1 asks of a server with a clock). A `Date` set with [`header`](Self::header)
    /// replaces it. The value is formatted at most once per second per thread.
    pub fn date(mut self, date: bool) -> Response {
        self.date = date;
        self
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

    /// The `Connection` header `encode` writes, replacing caller-set ones: close when asked
    /// for or needed to end the body.
    fn connection(&self, framing: Framing) -> Option<&'static [u8]> {
        if framing.close || self.close_delimited {
            Some(CONNECTION_CLOSE)
        } else if framing.keep_alive {
            Some(CONNECTION_KEEP_ALIVE)
        } else {
            None
        }
    }

    fn plan(&self, framing: Framing) -> Plan {
        let mut plan = Plan {
            connection: self.connection(framing),
            send_body: false,
            content_length: None,
            chunked: false,
            keep_cl: None,
            keep_te: None,
            date: if self.date && !self.has_date {
                date::now()
            } else {
                None
            },
        };
        if status_forbids_body(self.status) {
            return plan;
        }
        if self.close_delimited {
            // The body is whatever comes before the close: no length, no coding.
            return plan;
        }
        if self.chunked {
            plan.chunked = true;
            return plan;
        }
        if framing.head || self.status == 304 {
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
            Kind::Other | Kind::ContentType | Kind::Date => true,
            Kind::ContentLength => plan.keep_cl == Some(index),
            Kind::TransferEncoding => plan.keep_te == Some(index),
            Kind::Connection => plan.connection.is_none(),
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
        if let Some(connection) = plan.connection {
            len += connection.len();
        }
        if plan.date.is_some() {
            len += DATE.len() + DATE_LEN + 2;
        }
        len += 2;
        if plan.send_body {
            len += self.body.len();
        }
        len
    }

    /// The exact number of bytes a successful [`Response::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_with(&self.plan(self.framing()))
    }

    /// The response bytes, ready to be sent as a Mongrel2 reply body, or the first
    /// invalid input the builder was given.
    pub fn encode(&self) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the response bytes to `out`, growing it at most once; on error nothing
    /// is appended.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), HttpError> {
        self.encode_framed(self.framing(), out)
    }

    fn encode_framed(&self, framing: Framing, out: &mut Vec<u8>) -> Result<(), HttpError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let plan = self.plan(framing);
        out.reserve(self.encoded_len_with(&plan));
        out.extend_from_slice(HTTP_VERSION);
        // No error means the status is within 100..=599: exactly three digits.
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
        if let Some(connection) = plan.connection {
            out.extend_from_slice(connection);
        }
        if let Some(date) = &plan.date {
            out.extend_from_slice(DATE);
            out.extend_from_slice(date);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if plan.send_body {
            out.extend_from_slice(&self.body);
        }
        Ok(())
    }
}

/// Decimal digits of a `usize` on the stack, so numbers need no `String`.
pub(super) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(super) fn new(mut n: usize) -> Digits {
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

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}
