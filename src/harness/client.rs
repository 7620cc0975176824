//! The Client: one connection as Mongrel2 would forward it to a handler.

mod http;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use http::{HttpRequest, HttpResponse};
pub use websocket::WsFrame;
#[doc(hidden)]
pub use {http::parse_response_for_fuzzing, websocket::parse_handshake_for_fuzzing};

use super::headers::{self, Line, Table};
use super::router::{RawReply, Shared};
use super::{HarnessError, Protocol};
use crate::request::{HeaderProtocol, Request};

/// The `REMOTE_ADDR` (and `x-forwarded-for`) Mongrel2 reports for harness clients.
pub const REMOTE_ADDR: &str = "127.0.0.1";
/// The `Host` header harness clients send unless told otherwise.
pub const DEFAULT_HOST: &str = "localhost";
/// The `PATTERN` (the matched route) reported unless set with [`Client::set_pattern`].
pub const DEFAULT_PATTERN: &str = "/";
/// Mongrel2's initial download credits when `download.flow_control` is on.
pub const INITIAL_DOWNLOAD_CREDITS: u64 = 102_400;

/// One client connection to the handlers behind a [`Server`](super::Server), with its own
/// connection id.
///
/// Every protocol sends Mongrel2-encoded requests; the protocol decides how replies are
/// read: raw ([`Client::recv`]), as HTTP responses ([`Client::recv_response`]) or as
/// WebSocket frames ([`Client::recv_frame`]). Mongrel2-level methods (`send`, `recv`,
/// `disconnect`, credits) work for every protocol; HTTP and WebSocket methods only for
/// their own.
///
/// Dropping a Client that the handler has not closed sends the `@*` disconnect notice,
/// as Mongrel2 does when a client goes away.
pub struct Client {
    shared: Arc<Shared>,
    id: u64,
    protocol: Protocol,
    header_protocol: HeaderProtocol,
    send_timeout: Duration,
    recv_timeout: Duration,
    pattern: String,
    flow_control: bool,
    /// Reply bytes not yet consumed as HTTP or WebSocket data.
    buffer: Vec<u8>,
    /// The handler sent the empty reply: the connection is closed.
    closed: bool,
    /// The test sent the disconnect notice.
    disconnected: bool,
    /// At least one request reached a handler (Mongrel2 only reports disconnects then).
    sent_any: bool,
    /// Extended (control) replies addressed to this connection.
    controls: Vec<RawReply>,
    http: http::State,
    ws: websocket::State,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .field("header_protocol", &self.header_protocol)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(
        shared: Arc<Shared>,
        protocol: Protocol,
        header_protocol: HeaderProtocol,
        send_timeout: Duration,
        recv_timeout: Duration,
    ) -> Client {
        let id = shared.register();
        Client {
            shared,
            id,
            protocol,
            header_protocol,
            send_timeout,
            recv_timeout,
            pattern: DEFAULT_PATTERN.to_owned(),
            flow_control: false,
            buffer: Vec::new(),
            closed: false,
            disconnected: false,
            sent_any: false,
            controls: Vec::new(),
            http: http::State::default(),
            ws: websocket::State::default(),
        }
    }

    /// This connection's id (Mongrel2's CONN_ID).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The Server's sender id, which every request carries.
    pub fn sender_id(&self) -> &str {
        &self.shared.sender
    }

    /// How replies are interpreted.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The header encoding of this client's requests.
    pub fn header_protocol(&self) -> HeaderProtocol {
        self.header_protocol
    }

    /// Switches the header encoding (tnetstring or JSON, Mongrel2's handler `protocol`).
    pub fn set_header_protocol(&mut self, protocol: HeaderProtocol) -> &mut Client {
        self.header_protocol = protocol;
        self
    }

    /// The `PATTERN` header: the route Mongrel2 matched (default `/`).
    pub fn set_pattern(&mut self, pattern: &str) -> &mut Client {
        self.pattern = pattern.to_owned();
        self
    }

    /// Behave like Mongrel2 with `download.flow_control` on: the first request carries
    /// `DOWNLOAD_CREDITS: 102400`.
    pub fn set_flow_control(&mut self, on: bool) -> &mut Client {
        self.flow_control = on;
        self
    }

    /// How long receiving waits (default: the Server's receive timeout).
    pub fn set_recv_timeout(&mut self, timeout: Duration) -> &mut Client {
        self.recv_timeout = timeout;
        self
    }

    /// How long sending waits for a handler to take the request.
    pub fn set_send_timeout(&mut self, timeout: Duration) -> &mut Client {
        self.send_timeout = timeout;
        self
    }

    /// Whether the handler closed this connection (sent the empty reply).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Extended replies (`ctl` keep-alive, credits, cancel) addressed to this connection,
    /// which Mongrel2 consumes instead of forwarding; takes them out. HTTP and WebSocket
    /// reading set them aside here.
    pub fn take_controls(&mut self) -> Vec<RawReply> {
        std::mem::take(&mut self.controls)
    }

    // ----- Mongrel2 level: every protocol -----

    /// Sends a request for `path` with exactly these headers (in this order) and body.
    pub fn send(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HarnessError> {
        let mut request = Request::new(self.shared.sender.as_str(), self.id, path)
            .with_protocol(self.header_protocol);
        for (name, value) in headers {
            request = request.with_header(*name, *value);
        }
        let message = request.with_body(body.to_vec()).encode();
        self.push(&message)
    }

    /// Sends a message as Mongrel2 forwards one from a JSON socket client (`@path {json}`):
    /// METHOD `JSON`, the PATH, PATTERN, URL_SCHEME, REMOTE_ADDR and x-forwarded-for.
    pub fn send_json(&mut self, path: &str, json: &str) -> Result<(), HarnessError> {
        let mut table = Table::default();
        match self.header_protocol {
            HeaderProtocol::Json => {
                table.set("PATH", path);
                table.set("x-forwarded-for", REMOTE_ADDR);
                table.set("METHOD", "JSON");
                table.set("PATTERN", &self.pattern);
                table.set("URL_SCHEME", "http");
                table.set("REMOTE_ADDR", REMOTE_ADDR);
            }
            HeaderProtocol::Tnetstring => {
                table.set("x-forwarded-for", REMOTE_ADDR);
                table.set("PATH", path);
                table.set("PATTERN", &self.pattern);
                table.set("URL_SCHEME", "http");
                table.set("METHOD", "JSON");
                table.set("REMOTE_ADDR", REMOTE_ADDR);
            }
        }
        // encode_bare writes tnetstring tables back to front, as Mongrel2 does.
        let message = headers::encode_bare(
            &self.shared.sender,
            self.id,
            path,
            &table,
            json.as_bytes(),
            self.header_protocol,
        );
        self.push(&message)
    }

    /// Sends a request built by the test, as is (its sender and connection id included).
    pub fn send_request(&mut self, request: &Request<'_>) -> Result<(), HarnessError> {
        self.push(&request.encode())
    }

    /// The next raw reply to this connection, waiting at most the receive timeout.
    ///
    /// This bypasses HTTP and WebSocket decoding; do not mix it with
    /// [`Client::recv_response`] or [`Client::recv_frame`] on one connection.
    pub fn recv(&mut self) -> Result<RawReply, HarnessError> {
        let timeout = self.recv_timeout;
        self.recv_timeout(timeout)?.ok_or_else(|| {
            HarnessError::timeout(format!("a reply to connection {}", self.id), timeout)
        })
    }

    /// Like [`Client::recv`] with an explicit timeout; `Ok(None)` when nothing came, which
    /// is how a test asserts that a handler stays silent.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<RawReply>, HarnessError> {
        let reply = self.shared.next_for(self.id, Instant::now() + timeout)?;
        if let Some(reply) = &reply {
            if reply.is_close() {
                self.closed = true;
            }
        }
        Ok(reply)
    }

    /// Sends the notice Mongrel2 sends when this client goes away: PATH `@*`, METHOD
    /// `JSON`, body `{"type":"disconnect"}`.
    pub fn disconnect(&mut self) -> Result<(), HarnessError> {
        let message = self.disconnect_notice();
        self.push(&message)?;
        self.disconnected = true;
        Ok(())
    }

    /// Sends the notice Mongrel2 sends when this client has read `credits` more bytes
    /// (with `download.flow_control`): PATH `@*`, METHOD `JSON`, `DOWNLOAD_CREDITS`, body
    /// `{"type":"credits"}`.
    pub fn send_credits(&mut self, credits: u64) -> Result<(), HarnessError> {
        let mut table = Table::default();
        table.set("METHOD", "JSON");
        table.set("DOWNLOAD_CREDITS", credits.to_string());
        let message = headers::encode_bare(
            &self.shared.sender,
            self.id,
            "@*",
            &table,
            br#"{"type":"credits"}"#,
            self.header_protocol,
        );
        self.push(&message)
    }

    fn disconnect_notice(&self) -> Vec<u8> {
        let mut table = Table::default();
        table.set("METHOD", "JSON");
        headers::encode_bare(
            &self.shared.sender,
            self.id,
            "@*",
            &table,
            br#"{"type":"disconnect"}"#,
            self.header_protocol,
        )
    }

    fn push(&mut self, message: &[u8]) -> Result<(), HarnessError> {
        self.shared.send(message, self.send_timeout)?;
        self.sent_any = true;
        Ok(())
    }

    fn require(&self, protocol: Protocol, operation: &'static str) -> Result<(), HarnessError> {
        if self.protocol == protocol {
            Ok(())
        } else {
            Err(HarnessError::WrongProtocol {
                protocol: self.protocol,
                operation,
            })
        }
    }

    /// Encodes an HTTP-style request from this connection with Mongrel2's headers.
    fn encode_http(
        &mut self,
        method: &str,
        request: &HttpRequest,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<u8>, HarnessError> {
        let (path, query, fragment) = headers::split_target(request.target());
        let mut table = Table::default();
        for (name, value) in request.headers() {
            table.add_client(name, value)?;
        }
        if !table.contains("host") && request.http_version() != "HTTP/1.0" {
            table.add_client("host", DEFAULT_HOST)?;
        }
        if !request.body_bytes().is_empty() && !table.contains("content-length") {
            table.add_client("content-length", &request.body_bytes().len().to_string())?;
        }
        // Mongrel2 overwrites whatever the client claimed.
        table.set("x-forwarded-for", REMOTE_ADDR);
        if self.flow_control && !self.sent_any {
            table.set("DOWNLOAD_CREDITS", INITIAL_DOWNLOAD_CREDITS.to_string());
        }
        for (name, value) in extra {
            table.set(name, value.clone());
        }
        let line = Line {
            method,
            version: request.http_version(),
            path,
            query,
            fragment,
            pattern: &self.pattern,
            remote_addr: REMOTE_ADDR,
        };
        Ok(headers::encode_http(
            &self.shared.sender,
            self.id,
            &line,
            &table,
            body,
            self.header_protocol,
        ))
    }

    /// Waits for the next non-extended reply and appends its body to the buffer.
    /// Returns false when it was the empty reply (the connection is closed).
    fn fill(&mut self, deadline: Instant, what: &str) -> Result<bool, HarnessError> {
        if self.closed {
            return Ok(false);
        }
        loop {
            let Some(reply) = self.shared.next_for(self.id, deadline)? else {
                return Err(HarnessError::timeout(
                    format!("{what} on connection {}", self.id),
                    self.recv_timeout,
                ));
            };
            if reply.extended {
                self.controls.push(reply);
                continue;
            }
            if reply.body.is_empty() {
                self.closed = true;
                return Ok(false);
            }
            self.buffer.extend_from_slice(&reply.body);
            return Ok(true);
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.recv_timeout
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.unregister(self.id);
        if self.sent_any && !self.closed && !self.disconnected {
            // Best effort and never blocking: the handler may be gone already.
            let notice = self.disconnect_notice();
            if let Err(err) = self.shared.send(&notice, Duration::ZERO) {
                log::debug!(
                    "disconnect notice for connection {} not sent: {err}",
                    self.id
                );
            }
        }
    }
}
