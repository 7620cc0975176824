//! [`ChunkedResponse`]: a response head whose body is streamed in chunks.

use std::borrow::Cow;

use super::{HttpError, Response};

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
///     .date(false) // on by default; off here to show exact bytes
///     .encode()
///     .unwrap();
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
    /// Starts a chunked response with `status` (outside `100..=599`,
    /// [`encode`](ChunkedResponse::encode) fails as for [`Response::new`]).
    pub fn start(status: u16) -> ChunkedResponse {
        let mut inner = Response::new(status);
        inner.chunked = true;
        ChunkedResponse { inner }
    }

    /// Replaces the reason phrase; see [`Response::reason`].
    pub fn reason(self, reason: impl Into<Cow<'static, str>>) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.reason(reason),
        }
    }

    /// Appends a header; see [`Response::header`].
    pub fn header(self, name: impl AsRef<str>, value: impl AsRef<str>) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.header(name, value),
        }
    }

    /// The first invalid input given to this builder; see [`Response::error`].
    pub fn error(&self) -> Option<&HttpError> {
        self.inner.error()
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

    /// Sets head and close from the request this stream answers (see
    /// [`Response::for_request`]), and for an HTTP/1.0 request, which knows no chunked
    /// coding, [`close_delimited`](Self::close_delimited).
    pub fn for_request(self, request: &crate::request::Request<'_>) -> ChunkedResponse {
        let http10 = request.version() == Some("HTTP/1.0");
        let mut inner = self.inner.for_request(request);
        inner.close_delimited = http10;
        ChunkedResponse { inner }
    }

    /// Ends the body by closing the connection instead of with chunked coding: the head
    /// gets `Connection: close` and neither `Transfer-Encoding` nor `Content-Length`, and
    /// the data goes out unframed. The only way to stream to an HTTP/1.0 client (RFC 9112
    /// §6.3); [`Transceiver::stream_start`](crate::Transceiver::stream_start) chooses it
    /// by itself for HTTP/1.0 requests.
    pub fn close_delimited(mut self, close_delimited: bool) -> ChunkedResponse {
        self.inner.close_delimited = close_delimited;
        self
    }

    /// Whether the body ends with the connection (see [`close_delimited`](Self::close_delimited)).
    pub fn is_close_delimited(&self) -> bool {
        self.inner.close_delimited
    }

    /// Whether the head carries a `Date`; see [`Response::date`].
    pub fn date(self, date: bool) -> ChunkedResponse {
        ChunkedResponse {
            inner: self.inner.date(date),
        }
    }

    /// Whether chunks may follow the head (false for HEAD requests and 1xx/204/304).
    pub fn body_allowed(&self) -> bool {
        self.inner.body_allowed()
    }

    /// The head bytes (status line and headers, ending in an empty line), or the first
    /// invalid input the builder was given.
    pub fn encode(&self) -> Result<Vec<u8>, HttpError> {
        self.inner.encode()
    }

    /// Appends the head bytes to `out`; on error nothing is appended.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), HttpError> {
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
