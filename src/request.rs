//! Requests: what Mongrel2 sends a handler.
//!
//! The wire format is `SENDER SP CONN_ID SP PATH SP HEADERS BODY`, where HEADERS
//! is a tnetstring dict (handler `protocol='tnetstring'`) or a netstring holding a
//! JSON object (the default), and BODY is a netstring `LEN:bytes,`.
//! [`Request::parse`] detects the header protocol by itself and borrows from the
//! received buffer; [`Request::into_owned`] detaches a request from it.
//!
//! ```
//! use mongrel2_transceiver::request::{Request, RequestKind};
//!
//! let msg = b"54c6 7 /handler/x 57:6:METHOD,3:GET,4:PATH,10:/handler/x,7:VERSION,8:HTTP/1.0,}0:,";
//! let req = Request::parse(msg).unwrap();
//! assert_eq!(req.conn_id(), 7);
//! assert_eq!(req.method(), Some("GET"));
//! assert!(matches!(req.kind().unwrap(), RequestKind::Http));
//! assert!(req.should_close(), "HTTP/1.0 without keep-alive");
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use crate::websocket::{Flags, FlagsError};

mod encode;
mod error;
mod headers;
mod json_headers;
mod parse;
mod query;
mod sender;
mod tnet_headers;

use self::sender::Sender;

pub use error::RequestError;
pub use headers::{HeaderValue, HeaderValues, Headers};
pub use query::{parse_query, percent_decode};
pub(crate) use tnet_headers::TextView;

/// Default for [`RequestLimits::max_headers`]: Mongrel2 allows 1280 client
/// headers (`limits.header_count`) and adds about a dozen of its own.
pub const DEFAULT_MAX_HEADERS: usize = 1536;

/// Default for [`RequestLimits::max_values_per_header`]: Mongrel2 keeps at
/// most 5 values of a repeated header.
pub const DEFAULT_MAX_VALUES_PER_HEADER: usize = 64;

/// Default for [`RequestLimits::max_size`]: room for the largest WebSocket message the
/// Transceiver accepts by default (16 MiB) plus Mongrel2's headers, and for Mongrel2's own
/// `limits.content_length` (20 MB) bodies.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 64 << 20;

/// Bounds on what [`Request::parse_with_limits`] accepts. Nesting needs no bound of its
/// own: a header value is a string or a list of strings in both header protocols, anything
/// deeper is refused ([`RequestError::InvalidHeaderValue`],
/// [`RequestError::InvalidJsonHeaders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most header names in one request.
    pub max_headers: usize,
    /// Most values of one (repeated) header.
    pub max_values_per_header: usize,
    /// Most bytes in one whole message (sender, id, path, headers and body).
    pub max_size: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_headers: DEFAULT_MAX_HEADERS,
            max_values_per_header: DEFAULT_MAX_VALUES_PER_HEADER,
            max_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}

/// How the headers of a request are encoded (the handler's `protocol` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum HeaderProtocol {
    /// A tnetstring dict (`protocol='tnetstring'`).
    #[default]
    Tnetstring,
    /// A netstring holding a JSON object (Mongrel2's default `protocol='json'`).
    Json,
}

/// What a message from Mongrel2 is, see [`Request::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind<'r> {
    /// An ordinary HTTP request.
    Http,
    /// A websocket upgrade; the handler must answer `101 Switching Protocols`
    /// with this `Sec-WebSocket-Accept` value (Mongrel2 computed it).
    WebSocketHandshake {
        /// The accept key (the message body).
        accept: &'r str,
    },
    /// One websocket frame (reassembled message or control frame); the body is the payload.
    WebSocketFrame {
        /// The frame's first byte from the `FLAGS` header.
        flags: Flags,
    },
    /// A JSON message from a raw socket client (`METHOD` `JSON`).
    Json,
    /// An XML message from a raw socket client (`METHOD` `XML`).
    Xml,
    /// The client went away (or a reply targeted a dead connection).
    Disconnect,
    /// Download flow control: the client has consumed this many bytes.
    Credits {
        /// The `DOWNLOAD_CREDITS` value.
        credits: u64,
    },
    /// A large upload started spooling to this temp file (relative to Mongrel2's chroot).
    UploadStart {
        /// The `x-mongrel2-upload-start` path.
        path: &'r str,
    },
    /// A large upload is complete in this temp file; the handler must delete it.
    UploadDone {
        /// The `x-mongrel2-upload-done` path.
        path: &'r str,
    },
    /// A chunk of a streamed upload; the body is the data. The first message of
    /// a stream is one too (offset 0, full headers, see
    /// [`Request::is_upload_stream_start`]).
    UploadChunk {
        /// Byte offset of this chunk in the upload (`UPLOAD_STREAM`).
        offset: u64,
        /// Whether this is the last chunk (`UPLOAD_STREAM_DONE`).
        done: bool,
    },
}

/// A message from Mongrel2, borrowing from the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    sender: Sender<'a>,
    conn_id: u64,
    path: Cow<'a, str>,
    headers: Headers<'a>,
    body: Cow<'a, [u8]>,
    protocol: HeaderProtocol,
}

/// A request that owns its data (`Request<'static>`), for keeping requests
/// beyond the receive buffer.
pub type OwnedRequest = Request<'static>;

/// Mongrel2's own header names.
mod names {
    pub const METHOD: &str = "METHOD";
    pub const VERSION: &str = "VERSION";
    pub const URI: &str = "URI";
    pub const PATTERN: &str = "PATTERN";
    pub const QUERY: &str = "QUERY";
    pub const FRAGMENT: &str = "FRAGMENT";
    pub const URL_SCHEME: &str = "URL_SCHEME";
    pub const REMOTE_ADDR: &str = "REMOTE_ADDR";
    pub const FLAGS: &str = "FLAGS";
    pub const DOWNLOAD_CREDITS: &str = "DOWNLOAD_CREDITS";
    pub const UPLOAD_STREAM: &str = "UPLOAD_STREAM";
    pub const UPLOAD_STREAM_DONE: &str = "UPLOAD_STREAM_DONE";
    pub const UPLOAD_START: &str = "x-mongrel2-upload-start";
    pub const UPLOAD_DONE: &str = "x-mongrel2-upload-done";
}

/// The message type Mongrel2 puts in `{"type": ...}` bodies at path `@*`.
#[derive(Deserialize)]
struct ControlBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

impl<'a> Request<'a> {
    /// A request to fill in with the `with_*` builders (for tests, harnesses and
    /// handler chaining). `sender` and `path` must not contain spaces.
    pub fn new(
        sender: impl Into<Cow<'a, str>>,
        conn_id: u64,
        path: impl Into<Cow<'a, str>>,
    ) -> Self {
        Request {
            sender: Sender::from(sender.into()),
            conn_id,
            path: path.into(),
            headers: Headers::new(),
            body: Cow::Borrowed(&[]),
            protocol: HeaderProtocol::Tnetstring,
        }
    }

    /// Adds a header value; adding the same name again makes it a list, as
    /// Mongrel2 sends repeated headers.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, str>>,
    ) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Cow<'a, [u8]>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the header protocol [`Request::encode`] uses.
    pub fn with_protocol(mut self, protocol: HeaderProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Mutable access to the headers.
    pub fn headers_mut(&mut self) -> &mut Headers<'a> {
        &mut self.headers
    }

    /// Copies borrowed data so the request outlives the receive buffer.
    pub fn into_owned(self) -> OwnedRequest {
        Request {
            sender: self.sender.into_owned(),
            conn_id: self.conn_id,
            path: Cow::Owned(self.path.into_owned()),
            headers: self.headers.into_owned(),
            body: Cow::Owned(self.body.into_owned()),
            protocol: self.protocol,
        }
    }

    /// The handler's `send_ident` as Mongrel2 reported it.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The sender as an `Arc<str>`: a count more when the request shares it already.
    pub(crate) fn shared_sender(&self) -> Arc<str> {
        self.sender.shared()
    }

    /// Has the request share `sender` (the same text) instead of holding its own copy.
    pub(crate) fn share_sender(&mut self, sender: &Arc<str>) {
        if *self.sender == **sender {
            self.sender = Sender::Shared(sender.clone());
        }
    }

    /// The connection id: reply to it; stable across keep-alive requests.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The request path without the query string (`@*` for Mongrel2's notices).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// All headers.
    pub fn headers(&self) -> &Headers<'a> {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// How the headers arrived (and how [`Request::encode`] writes them).
    pub fn protocol(&self) -> HeaderProtocol {
        self.protocol
    }

    /// First value of a header; exact name first, else ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.first(name)
    }

    /// Every value of a header (a repeated client header arrives as a list).
    pub fn header_all(&self, name: &str) -> HeaderValues<'_, 'a> {
        self.headers.all(name)
    }

    fn mongrel2_header(&self, name: &str) -> Option<&str> {
        self.headers.get_exact(name).and_then(HeaderValue::first)
    }

    /// `METHOD`: the HTTP method, or `JSON`, `XML`, `WEBSOCKET_HANDSHAKE`, `WEBSOCKET`.
    pub fn method(&self) -> Option<&str> {
        self.mongrel2_header(names::METHOD)
    }

    /// `VERSION`, e.g. `HTTP/1.1`.
    pub fn version(&self) -> Option<&str> {
        self.mongrel2_header(names::VERSION)
    }

    /// `URI`: path plus query string as the client sent it.
    pub fn uri(&self) -> Option<&str> {
        self.mongrel2_header(names::URI)
    }

    /// `PATTERN`: the route pattern that matched.
    pub fn pattern(&self) -> Option<&str> {
        self.mongrel2_header(names::PATTERN)
    }

    /// `QUERY`: the raw query string, without `?`.
    pub fn query_string(&self) -> Option<&str> {
        self.mongrel2_header(names::QUERY)
    }

    /// The first value of query parameter `name`, percent-decoded as in
    /// [`parse_query`] (a parameter without `=` has the value `""`). Borrows from the
    /// request when there is nothing to decode.
    ///
    /// ```
    /// use mongrel2_transceiver::request::Request;
    /// let req = Request::new("s", 1, "/search").with_header("QUERY", "q=rust+lang&page=2&q=x");
    /// assert_eq!(req.query("q").as_deref(), Some("rust lang"));
    /// assert_eq!(req.query("page").as_deref(), Some("2"));
    /// assert_eq!(req.query("missing"), None);
    /// ```
    pub fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query::query_value(self.query_string()?, name)
    }

    /// The query string decoded into pairs, see [`parse_query`]. Empty without a query.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query_string().map(parse_query).unwrap_or_default()
    }

    /// `FRAGMENT`: the part after `#`, when the client sent one.
    pub fn fragment(&self) -> Option<&str> {
        self.mongrel2_header(names::FRAGMENT)
    }

    /// `URL_SCHEME`: `http` or `https`.
    pub fn url_scheme(&self) -> Option<&str> {
        self.mongrel2_header(names::URL_SCHEME)
    }

    /// `REMOTE_ADDR`: the client's IP address.
    pub fn remote_addr(&self) -> Option<&str> {
        self.mongrel2_header(names::REMOTE_ADDR)
    }

    /// `FLAGS` of a websocket frame, parsed.
    pub fn flags(&self) -> Option<Result<Flags, FlagsError>> {
        self.mongrel2_header(names::FLAGS).map(Flags::from_header)
    }

    /// `DOWNLOAD_CREDITS` (download flow control), if present and numeric.
    pub fn download_credits(&self) -> Option<u64> {
        self.mongrel2_header(names::DOWNLOAD_CREDITS)
            .and_then(|v| v.parse().ok())
    }

    /// `UPLOAD_STREAM`: byte offset of a streamed upload chunk, if present and numeric.
    pub fn upload_stream(&self) -> Option<u64> {
        self.mongrel2_header(names::UPLOAD_STREAM)
            .and_then(|v| v.parse().ok())
    }

    /// Whether `UPLOAD_STREAM_DONE` marks the last chunk of a streamed upload.
    pub fn upload_stream_done(&self) -> bool {
        self.mongrel2_header(names::UPLOAD_STREAM_DONE)
            .is_some_and(|v| v != "0")
    }

    /// Whether this is the first message of a streamed upload: it carries
    /// UPLOAD_STREAM `0` like the next chunk, but also the full request headers
    /// (METHOD present) and often an empty body. The handler grants credits with
    /// [`crate::reply::ctl_credits`] to receive the rest.
    pub fn is_upload_stream_start(&self) -> bool {
        self.upload_stream().is_some() && self.method().is_some()
    }

    /// `x-mongrel2-upload-start`: temp file of an upload being spooled.
    ///
    /// Mongrel2 passes client headers through, so a client can send this header itself:
    /// only trust the path if it lies inside your `upload.temp_store`. The
    /// [`Transceiver`](crate::Transceiver) checks that for you (see
    /// [`Builder::upload_temp_store`](crate::transceiver::Builder::upload_temp_store)).
    pub fn upload_start(&self) -> Option<&str> {
        self.mongrel2_header(names::UPLOAD_START)
    }

    /// `x-mongrel2-upload-done`: temp file of a completed upload. The same
    /// caution as [`Request::upload_start`] applies: validate the path.
    pub fn upload_done(&self) -> Option<&str> {
        self.mongrel2_header(names::UPLOAD_DONE)
    }

    /// Deserializes the body as JSON (borrowing from it where `T` allows).
    pub fn json<'de, T: Deserialize<'de>>(&'de self) -> Result<T, RequestError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Whether the handler should close the connection after replying:
    /// HTTP/1.0 without `Connection: keep-alive`, or any `Connection: close`.
    pub fn should_close(&self) -> bool {
        let tokens = || {
            self.header_all("connection")
                .flat_map(|v| v.split(','))
                .map(str::trim)
        };
        if tokens().any(|t| t.eq_ignore_ascii_case("close")) {
            return true;
        }
        self.version() == Some("HTTP/1.0")
            && !tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"))
    }

    /// The `type` of a `{"type": ...}` body Mongrel2 sends at path `@*`.
    fn control_type(&self) -> Option<Cow<'_, str>> {
        if self.path != "@*" || self.method() != Some("JSON") {
            return None;
        }
        serde_json::from_slice::<ControlBody<'_>>(&self.body)
            .ok()
            .and_then(|b| b.kind)
    }

    /// Whether this is Mongrel2's disconnect notice (path `@*`, METHOD `JSON`,
    /// body `{"type":"disconnect"}`).
    pub fn is_disconnect(&self) -> bool {
        self.control_type().is_some_and(|t| t == "disconnect")
    }

    /// Classifies the message. Upload headers win over METHOD (uploads are
    /// ordinary HTTP requests otherwise); streamed chunks after the first carry
    /// no METHOD at all.
    pub fn kind(&self) -> Result<RequestKind<'_>, RequestError> {
        if let Some(path) = self.upload_done() {
            return Ok(RequestKind::UploadDone { path });
        }
        if let Some(path) = self.upload_start() {
            return Ok(RequestKind::UploadStart { path });
        }
        if let Some(raw) = self.mongrel2_header(names::UPLOAD_STREAM) {
            let offset = raw.parse().map_err(|_| RequestError::InvalidHeader {
                name: names::UPLOAD_STREAM,
                value: raw.to_owned(),
            })?;
            return Ok(RequestKind::UploadChunk {
                offset,
                done: self.upload_stream_done(),
            });
        }
        let method = self
            .method()
            .ok_or(RequestError::MissingHeader(names::METHOD))?;
        Ok(match method {
            "JSON" => match self.control_type().as_deref() {
                Some("disconnect") => RequestKind::Disconnect,
                Some("credits") => {
                    let raw = self
                        .mongrel2_header(names::DOWNLOAD_CREDITS)
                        .ok_or(RequestError::MissingHeader(names::DOWNLOAD_CREDITS))?;
                    let credits = raw.parse().map_err(|_| RequestError::InvalidHeader {
                        name: names::DOWNLOAD_CREDITS,
                        value: raw.to_owned(),
                    })?;
                    RequestKind::Credits { credits }
                }
                _ => RequestKind::Json,
            },
            "XML" => RequestKind::Xml,
            "WEBSOCKET_HANDSHAKE" => RequestKind::WebSocketHandshake {
                accept: std::str::from_utf8(&self.body).map_err(|_| RequestError::BodyNotUtf8)?,
            },
            "WEBSOCKET" => RequestKind::WebSocketFrame {
                flags: self
                    .flags()
                    .ok_or(RequestError::MissingHeader(names::FLAGS))??,
            },
            _ => RequestKind::Http,
        })
    }
}

#[cfg(test)]
mod tests;
