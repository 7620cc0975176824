//! What the loop hands to the handler: events, connection ids, close reasons.

use std::fmt;
use std::sync::Arc;

use crate::request::{OwnedRequest, Request};
use crate::websocket::CloseCode;

/// One client connection of one Mongrel2 server.
///
/// Mongrel2 numbers connections per server, so two servers can hand out the same number:
/// the sender (the Handler's `send_ident`) is part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The Mongrel2 Handler's `send_ident` that the connection arrived through.
    pub sender: Arc<str>,
    /// Mongrel2's connection number.
    pub id: u64,
}

impl ConnId {
    /// A connection id from its parts.
    pub fn new(sender: impl Into<Arc<str>>, id: u64) -> ConnId {
        ConnId {
            sender: sender.into(),
            id,
        }
    }

    /// The connection a request arrived on.
    pub fn of(request: &Request<'_>) -> ConnId {
        ConnId::new(request.shared_sender(), request.conn_id())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.sender, self.id)
    }
}

/// A complete, validated WebSocket data message.
/// Not `non_exhaustive`: RFC 6455 has exactly these two kinds of data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; its UTF-8 was checked.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The message's payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }
}

/// Why a WebSocket session ended. By the time the handler sees it, the session is forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close frame; it was echoed with the same code.
    Client {
        /// The client's close code, if it sent one.
        code: Option<CloseCode>,
        /// The client's reason text.
        reason: String,
    },
    /// Mongrel2 reported that the connection is gone.
    Disconnected,
    /// The client did not answer a ping (or send anything) within one ping interval.
    PingTimeout,
    /// The client broke RFC 6455; the session was closed with `code`.
    ProtocolViolation {
        /// The close code that was sent (1002, 1007, 1009).
        code: CloseCode,
        /// What the client did wrong.
        violation: String,
    },
    /// The handler closed the session.
    Handler {
        /// The close code the handler sent (1006 when it closed the connection without a
        /// close frame).
        code: CloseCode,
    },
    /// The Transceiver shut down (close 1001 was sent).
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Client { code: None, .. } => f.write_str("closed by the client"),
            CloseReason::Client {
                code: Some(code),
                reason,
            } if reason.is_empty() => write!(f, "closed by the client ({code})"),
            CloseReason::Client {
                code: Some(code),
                reason,
            } => write!(f, "closed by the client ({code} {reason:?})"),
            CloseReason::Disconnected => f.write_str("disconnected"),
            CloseReason::PingTimeout => f.write_str("ping timeout"),
            CloseReason::ProtocolViolation { code, violation } => {
                write!(f, "protocol violation ({code}): {violation}")
            }
            CloseReason::Handler { code } => write!(f, "closed by the handler ({code})"),
            CloseReason::Shutdown => f.write_str("shut down"),
        }
    }
}

/// Identifies a socket the handler registered with [`Transceiver::watch`](super::Transceiver::watch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) usize);

/// Something that happened, as the Transceiver's loop reports it.
///
/// WebSocket handshakes, pings, pongs and closes are answered before the event is returned;
/// events only tell the handler what it may want to act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An HTTP request; answer it with [`Transceiver::reply_http`](super::Transceiver::reply_http).
    Http(OwnedRequest),
    /// A WebSocket session opened: the `101 Switching Protocols` was already sent.
    Opened {
        /// The session.
        conn: ConnId,
        /// The handshake request (its headers stay available for the session).
        request: OwnedRequest,
        /// True when this process took over a session that was opened elsewhere: another
        /// member of its handler group, which died, or a previous run of this handler
        /// (Mongrel2 kept the client). The handshake was answered then; whatever the
        /// application knew about the session is gone, so it may rebuild or close it.
        adopted: bool,
    },
    /// A complete text or binary WebSocket message.
    Message {
        /// The session it arrived on.
        conn: ConnId,
        /// The message.
        message: Message,
    },
    /// A WebSocket session ended and was forgotten.
    Closed {
        /// The session.
        conn: ConnId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A JSON message from a Mongrel2 raw socket (`@path {json}\0`).
    Json(OwnedRequest),
    /// An XML message from a Mongrel2 raw socket.
    Xml(OwnedRequest),
    /// A large upload started: Mongrel2 is spooling it to a temp file
    /// (`x-mongrel2-upload-start`), or streaming it (`UPLOAD_STREAM` with the full headers;
    /// grant credits to receive the chunks).
    ///
    /// Temp-file notices are believed only with
    /// [`Builder::upload_temp_store`](super::Builder::upload_temp_store) set and only when
    /// they can be Mongrel2's own; a client's forged `X-Mongrel2-Upload-*` headers arrive
    /// as [`Event::Http`].
    UploadStarted(OwnedRequest),
    /// The upload's temp file is complete (`x-mongrel2-upload-done`); the handler must delete
    /// it. Its path is relative to Mongrel2's chroot. Believed under the same conditions as
    /// [`Event::UploadStarted`].
    UploadDone(OwnedRequest),
    /// A chunk of a streamed upload (`UPLOAD_STREAM`).
    UploadChunk(OwnedRequest),
    /// Mongrel2 reports bytes written to a flow-controlled download.
    Credits {
        /// The connection.
        conn: ConnId,
        /// Bytes Mongrel2 reports as written (`DOWNLOAD_CREDITS`).
        credits: u64,
    },
    /// A connection that was not a WebSocket session closed (any streamed response was forgotten).
    Disconnected(ConnId),
    /// A socket registered with [`Transceiver::watch`](super::Transceiver::watch) is readable.
    Readable(Token),
    /// A message another member of the handler group sent with
    /// [`Transceiver::group_send`](super::Transceiver::group_send).
    GroupMessage {
        /// The sending member's name.
        from: String,
        /// What it sent.
        body: Vec<u8>,
    },
}

impl Event {
    /// Whether the event is about `conn` (the Core keeps each connection's replies in the
    /// order of its events).
    pub(crate) fn concerns(&self, conn: &ConnId) -> bool {
        match self {
            Event::Opened { conn: c, .. }
            | Event::Message { conn: c, .. }
            | Event::Closed { conn: c, .. }
            | Event::Credits { conn: c, .. }
            | Event::Disconnected(c) => c == conn,
            Event::Http(request)
            | Event::Json(request)
            | Event::Xml(request)
            | Event::UploadStarted(request)
            | Event::UploadDone(request)
            | Event::UploadChunk(request) => {
                request.conn_id() == conn.id && request.sender() == &*conn.sender
            }
            Event::Readable(_) | Event::GroupMessage { .. } => false,
        }
    }
}
