//! HTTP over the harness: requests as Mongrel2 forwards them, responses parsed as a
//! client would parse them (with `httparse`), including streamed chunked responses that
//! arrive over several replies.

use std::collections::VecDeque;

use super::Client;
use crate::harness::{HarnessError, Protocol};

/// The most header lines a response may have.
const MAX_RESPONSE_HEADERS: usize = 128;
/// The largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest response body accepted (bounds what a misbehaving handler can make the
/// test allocate).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// The longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// An HTTP request as a client sends it; Mongrel2 turns it into headers for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    /// A request with this method and target (`/path?query#fragment`).
    pub fn new(method: &str, target: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            version: "HTTP/1.1".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> HttpRequest {
        HttpRequest::new("GET", target)
    }

    /// `HEAD target`.
    pub fn head(target: &str) -> HttpRequest {
        HttpRequest::new("HEAD", target)
    }

    /// `POST target` with a body.
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
        HttpRequest::new("POST", target).body(body)
    }

    /// Adds a header (repeatable; names are lower-cased on the way, as Mongrel2 does).
    /// `Host` defaults to `localhost` and `Content-Length` to the body's length.
    pub fn header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// Sets the protocol version (default `HTTP/1.1`).
    pub fn version(mut self, version: &str) -> HttpRequest {
        self.version = version.to_owned();
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The protocol version.
    pub fn http_version(&self) -> &str {
        &self.version
    }

    /// The headers, as given.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

/// An HTTP response as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked. Empty after [`Client::recv_head`].
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl HttpResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a header (case-insensitive name).
    pub fn header_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8.
    pub fn text(&self) -> Result<&str, HarnessError> {
        std::str::from_utf8(&self.body)
            .map_err(|err| HarnessError::protocol("http", format!("body is not UTF-8: {err}")))
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HarnessError> {
        serde_json::from_slice(&self.body).map_err(|err| {
            HarnessError::protocol("http", format!("body is not the JSON expected: {err}"))
        })
    }

    /// Whether the connection stays open after this response, by HTTP's rules.
    pub fn keeps_alive(&self) -> bool {
        let tokens = || {
            self.header_all("connection")
                .flat_map(|value| value.split(','))
                .map(str::trim)
        };
        if self.minor_version == 0 {
            tokens().any(|token| token.eq_ignore_ascii_case("keep-alive"))
        } else {
            !tokens().any(|token| token.eq_ignore_ascii_case("close"))
        }
    }
}

/// How the body of the response being read is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// So many bytes still to come.
    Length(usize),
    /// Chunked; waiting for a chunk-size line.
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

/// HTTP reading state of one connection.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// For each request sent and not yet answered: whether it was HEAD.
    heads: VecDeque<bool>,
    /// The body being read, between `recv_head` and its end.
    body: Option<Body>,
}

impl Client {
    /// Sends an HTTP request as Mongrel2 forwards it (headers: see the
    /// [harness docs](crate::harness#protocols)).
    pub fn send_http(&mut self, request: &HttpRequest) -> Result<(), HarnessError> {
        self.require(Protocol::Http, "send HTTP requests")?;
        let message = self.encode_http(request.method(), request, &[], request.body_bytes())?;
        self.push(&message)?;
        self.http
            .heads
            .push_back(request.method().eq_ignore_ascii_case("HEAD"));
        Ok(())
    }

    /// Sends the request and reads the whole response.
    pub fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HarnessError> {
        self.send_http(request)?;
        self.recv_response()
    }

    /// `GET target` and the whole response.
    pub fn get(&mut self, target: &str) -> Result<HttpResponse, HarnessError> {
        self.http(&HttpRequest::get(target))
    }

    /// `POST target` with `body` and the whole response.
    pub fn post(
        &mut self,
        target: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<HttpResponse, HarnessError> {
        self.http(&HttpRequest::post(target, body))
    }

    /// Reads one whole response (a streamed one until its last chunk). Fails with
    /// [`HarnessError::Closed`] when the handler closed the connection instead.
    pub fn recv_response(&mut self) -> Result<HttpResponse, HarnessError> {
        let mut response = self.recv_head()?;
        while let Some(piece) = self.recv_body_chunk()? {
            if response.body.len() + piece.len() > MAX_BODY_BYTES {
                return Err(HarnessError::protocol("http", "response body too large"));
            }
            response.body.extend_from_slice(&piece);
        }
        Ok(response)
    }

    /// Reads a response's status line and headers only; read its body with
    /// [`Client::recv_body_chunk`] (for streamed responses, chunk by chunk).
    pub fn recv_head(&mut self) -> Result<HttpResponse, HarnessError> {
        self.require(Protocol::Http, "read HTTP responses")?;
        if self.http.body.is_some() {
            // Finish the previous body first so this reads the next response.
            while self.recv_body_chunk()?.is_some() {}
        }
        let deadline = self.deadline();
        let (response, body) = loop {
            let is_head = self.http.heads.front().copied().unwrap_or(false);
            if let Some((response, body, used)) = parse_head(&self.buffer, is_head)? {
                self.buffer.drain(..used);
                break (response, body);
            }
            if !self.fill(deadline, "an HTTP response")? {
                return Err(if self.buffer.is_empty() {
                    HarnessError::Closed
                } else {
                    HarnessError::protocol("http", "connection closed inside a response head")
                });
            }
        };
        // 1xx responses precede the real one to the same request.
        if response.status >= 200 || response.status == 101 {
            self.http.heads.pop_front();
        }
        self.http.body = body;
        Ok(response)
    }

    /// The next piece of the current response's body: one chunk of a chunked body, or
    /// whatever part of a plain body has arrived. `Ok(None)` once the body is complete.
    pub fn recv_body_chunk(&mut self) -> Result<Option<Vec<u8>>, HarnessError> {
        self.require(Protocol::Http, "read HTTP responses")?;
        let deadline = self.deadline();
        loop {
            let Some(body) = self.http.body else {
                return Ok(None);
            };
            match body {
                Body::Length(0) => {
                    self.http.body = None;
                    return Ok(None);
                }
                Body::Length(left) if !self.buffer.is_empty() => {
                    let take = left.min(self.buffer.len());
                    let piece: Vec<u8> = self.buffer.drain(..take).collect();
                    self.http.body = Some(Body::Length(left - take));
                    return Ok(Some(piece));
                }
                Body::UntilClose if !self.buffer.is_empty() => {
                    return Ok(Some(std::mem::take(&mut self.buffer)));
                }
                Body::Chunked => match next_chunk(&self.buffer)? {
                    Some(Chunk::Data { start, len, used }) => {
                        let piece = self.buffer[start..start + len].to_vec();
                        self.buffer.drain(..used);
                        return Ok(Some(piece));
                    }
                    Some(Chunk::Last { used }) => {
                        self.buffer.drain(..used);
                        self.http.body = None;
                        return Ok(None);
                    }
                    None => {}
                },
                Body::Length(_) | Body::UntilClose => {}
            }
            if !self.fill(deadline, "the rest of an HTTP response body")? {
                if body == Body::UntilClose {
                    self.http.body = None;
                    return Ok(None);
                }
                return Err(HarnessError::protocol(
                    "http",
                    "connection closed before the response body was complete",
                ));
            }
        }
    }

    /// Waits for the handler to close the connection (the empty reply), failing if
    /// anything else arrives first.
    pub fn recv_close(&mut self) -> Result<(), HarnessError> {
        let deadline = self.deadline();
        if !self.buffer.is_empty() {
            return Err(HarnessError::protocol(
                "mongrel2",
                format!("{} unread bytes before the close", self.buffer.len()),
            ));
        }
        if self.fill(deadline, "the connection to close")? {
            return Err(HarnessError::protocol(
                "mongrel2",
                format!("{} more bytes instead of the close", self.buffer.len()),
            ));
        }
        Ok(())
    }

    /// Sends the request as Mongrel2 does for a large body in temp-file mode: first with
    /// `x-mongrel2-upload-start: temp_path` and an empty body.
    ///
    /// A [`Transceiver`](crate::Transceiver) believes the notice only as it would
    /// Mongrel2's: give it [`upload_temp_store`](crate::transceiver::Builder::upload_temp_store),
    /// make `temp_path` that template with its `XXXXXX` filled in, and let `request`
    /// declare its body (the real body, or a `Content-Length` header above zero).
    pub fn upload_start(
        &mut self,
        request: &HttpRequest,
        temp_path: &str,
    ) -> Result<(), HarnessError> {
        self.require(Protocol::Http, "upload")?;
        let extra = [("x-mongrel2-upload-start", temp_path.to_owned())];
        let message = self.encode_http(request.method(), request, &extra, b"")?;
        self.push(&message)
    }

    /// The second upload message: the same request with `x-mongrel2-upload-start` and
    /// `x-mongrel2-upload-done` both naming `temp_path`, empty body. The handler answers
    /// this one.
    pub fn upload_done(
        &mut self,
        request: &HttpRequest,
        temp_path: &str,
    ) -> Result<(), HarnessError> {
        self.require(Protocol::Http, "upload")?;
        let extra = [
            ("x-mongrel2-upload-start", temp_path.to_owned()),
            ("x-mongrel2-upload-done", temp_path.to_owned()),
        ];
        let message = self.encode_http(request.method(), request, &extra, b"")?;
        self.push(&message)?;
        self.http
            .heads
            .push_back(request.method().eq_ignore_ascii_case("HEAD"));
        Ok(())
    }

    /// Streaming upload (`upload.stream`): the request's headers with `UPLOAD_STREAM: 0`
    /// and an empty body. Mongrel2 sends chunks only after the handler grants credits.
    pub fn upload_stream_start(&mut self, request: &HttpRequest) -> Result<(), HarnessError> {
        self.require(Protocol::Http, "upload")?;
        let extra = [("UPLOAD_STREAM", "0".to_owned())];
        let message = self.encode_http(request.method(), request, &extra, b"")?;
        self.push(&message)?;
        self.http
            .heads
            .push_back(request.method().eq_ignore_ascii_case("HEAD"));
        Ok(())
    }

    /// One streamed upload chunk: only `UPLOAD_STREAM: offset` (plus
    /// `UPLOAD_STREAM_DONE: 1` on the last), as Mongrel2 sends them, with `data`.
    pub fn upload_stream_chunk(
        &mut self,
        request: &HttpRequest,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<(), HarnessError> {
        self.require(Protocol::Http, "upload")?;
        let mut table = crate::harness::headers::Table::default();
        table.set("UPLOAD_STREAM", offset.to_string());
        if done {
            table.set("UPLOAD_STREAM_DONE", "1");
        }
        let (path, _, _) = crate::harness::headers::split_target(request.target());
        let message = crate::harness::headers::encode_bare(
            &self.shared.sender,
            self.id,
            path,
            &table,
            data,
            self.header_protocol,
        );
        self.push(&message)
    }
}

/// Runs the response parsers over `buf` the way [`Client::recv_response`] consumes a
/// connection: the head, then the body as the head delimits it (`None` while incomplete).
/// Not API: the fuzz targets need these parsers and they are private.
#[doc(hidden)]
pub fn parse_response_for_fuzzing(
    buf: &[u8],
    is_head: bool,
) -> Result<Option<HttpResponse>, HarnessError> {
    let Some((mut response, body, mut at)) = parse_head(buf, is_head)? else {
        return Ok(None);
    };
    match body {
        None => {}
        Some(Body::Length(len)) => match buf.get(at..).filter(|rest| rest.len() >= len) {
            Some(rest) => response.body = rest[..len].to_vec(),
            None => return Ok(None),
        },
        Some(Body::UntilClose) => response.body = buf[at..].to_vec(),
        Some(Body::Chunked) => loop {
            match next_chunk(&buf[at..])? {
                Some(Chunk::Data { start, len, used }) => {
                    response
                        .body
                        .extend_from_slice(&buf[at + start..at + start + len]);
                    at += used;
                }
                Some(Chunk::Last { .. }) => break,
                None => return Ok(None),
            }
        },
    }
    Ok(Some(response))
}

/// Parses a response head; `None` while incomplete.
fn parse_head(
    buf: &[u8],
    is_head: bool,
) -> Result<Option<(HttpResponse, Option<Body>, usize)>, HarnessError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(HarnessError::protocol("http", "response head too large"));
            }
            return Ok(None);
        }
        Err(err) => {
            let shown = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
            return Err(HarnessError::protocol(
                "http",
                format!("{err} in response {shown:?}"),
            ));
        }
    };
    let status = parsed.code.unwrap_or_default();
    let mut response = HttpResponse {
        minor_version: parsed.version.unwrap_or(1),
        status,
        reason: parsed.reason.unwrap_or_default().to_owned(),
        headers: Vec::with_capacity(parsed.headers.len()),
        body: Vec::new(),
        chunked: false,
    };
    for header in parsed.headers.iter() {
        let value = String::from_utf8_lossy(header.value).into_owned();
        response.headers.push((header.name.to_owned(), value));
    }
    let chunked = response
        .header_all("transfer-encoding")
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .last()
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
    let no_body = is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        None
    } else if chunked {
        response.chunked = true;
        Some(Body::Chunked)
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.trim().parse().map_err(|_| {
            HarnessError::protocol("http", format!("bad Content-Length {length:?}"))
        })?;
        if length > MAX_BODY_BYTES {
            return Err(HarnessError::protocol("http", "response body too large"));
        }
        Some(Body::Length(length))
    } else {
        Some(Body::UntilClose)
    };
    Ok(Some((response, body, used)))
}

enum Chunk {
    Data {
        start: usize,
        len: usize,
        used: usize,
    },
    Last {
        used: usize,
    },
}

/// Decodes the next chunk at the start of `buf`; `None` while incomplete.
fn next_chunk(buf: &[u8]) -> Result<Option<Chunk>, HarnessError> {
    let (start, size) = match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((start, size))) => (start, size),
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_CHUNK_LINE {
                return Err(HarnessError::protocol("http", "chunk-size line too long"));
            }
            return Ok(None);
        }
        Err(_) => return Err(HarnessError::protocol("http", "invalid chunk-size line")),
    };
    if size == 0 {
        // Trailer fields, then an empty line.
        let rest = &buf[start..];
        if rest.starts_with(b"\r\n") {
            return Ok(Some(Chunk::Last { used: start + 2 }));
        }
        return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => Ok(Some(Chunk::Last {
                used: start + at + 4,
            })),
            None if rest.len() > MAX_CHUNK_LINE => {
                Err(HarnessError::protocol("http", "chunked trailer too long"))
            }
            None => Ok(None),
        };
    }
    let len = usize::try_from(size)
        .ok()
        .filter(|len| *len <= MAX_BODY_BYTES)
        .ok_or_else(|| HarnessError::protocol("http", "chunk too large"))?;
    let end = start + len;
    let Some(crlf) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    if crlf != b"\r\n" {
        return Err(HarnessError::protocol(
            "http",
            "chunk data not followed by CRLF",
        ));
    }
    Ok(Some(Chunk::Data {
        start,
        len,
        used: end + 2,
    }))
}

#[cfg(test)]
mod tests;
