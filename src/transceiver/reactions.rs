//! How the [`Core`] reacts to what Mongrel2 sends and to the clock: handshakes, frames,
//! closes, RFC 6455 violations, disconnects and ping rounds.

use std::sync::Arc;
use std::time::Instant;

use super::core::Core;
use super::uploads::Notice;
use super::{close_frame, CloseReason, ConnId, Event, Handshake, Message};
use crate::request::{Request, RequestKind};
use crate::websocket::{self, CloseCode, Flags, Opcode};

impl Core {
    /// One parsed request from the Mongrel2 server `via`: WebSocket control traffic is
    /// answered here (the replies land in [`Core::poll_outgoing`]); what the handler may act
    /// on becomes an [`Event`].
    pub fn handle_request(&mut self, via: &str, mut request: Request<'_>) {
        // Reuse the server's shared id when the request names it (it always should).
        let sender = match self.server(request.sender()) {
            Some(sender) => sender.clone(),
            None => {
                log::debug!("request from {via} names sender {}", request.sender());
                Arc::from(request.sender())
            }
        };
        request.share_sender(&sender);
        let conn = ConnId::new(sender, request.conn_id());
        let kind = match request.kind() {
            Ok(kind) => kind,
            Err(err) => {
                log::warn!("skipping request from {conn}: {err}");
                return;
            }
        };
        let event = match kind {
            RequestKind::Http => Event::Http(request.into_owned()),
            RequestKind::WebSocketHandshake { accept } => {
                let accept = accept.to_owned();
                return self.on_handshake(conn, request, &accept);
            }
            RequestKind::WebSocketFrame { flags } => return self.on_frame(conn, request, flags),
            RequestKind::Json => Event::Json(request.into_owned()),
            RequestKind::Xml => Event::Xml(request.into_owned()),
            RequestKind::Disconnect => return self.on_disconnect(conn),
            RequestKind::Credits { credits } => Event::Credits { conn, credits },
            RequestKind::UploadStart { .. } => {
                return self.on_upload_notice(conn, request, Notice::Start)
            }
            RequestKind::UploadDone { .. } => {
                return self.on_upload_notice(conn, request, Notice::Done)
            }
            // A streamed upload's first message carries the full headers (METHOD among
            // them); its chunks carry only UPLOAD_STREAM.
            RequestKind::UploadChunk { .. } if request.method().is_some() => {
                Event::UploadStarted(request.into_owned())
            }
            RequestKind::UploadChunk { .. } => Event::UploadChunk(request.into_owned()),
        };
        self.events.push_back(event);
    }

    /// A temp-file upload notice becomes an upload event only when it can be genuine (see
    /// the `uploads` module); anything else is the ordinary HTTP request it really is.
    fn on_upload_notice(&mut self, conn: ConnId, request: Request<'_>, notice: Notice) {
        let event = match self.uploads.judge(&conn, notice, &request) {
            Ok(()) => match notice {
                Notice::Start => Event::UploadStarted(request.into_owned()),
                Notice::Done => Event::UploadDone(request.into_owned()),
            },
            Err(why) => {
                log::warn!(
                    "{conn}: upload notice not believed ({why}); handled as an ordinary HTTP request"
                );
                Event::Http(request.into_owned())
            }
        };
        self.events.push_back(event);
    }

    fn on_handshake(&mut self, conn: ConnId, request: Request<'_>, accept: &str) {
        let decision = match &mut self.handshake {
            Some(decide) => decide(&request),
            None => Handshake::Accept,
        };
        let protocol = match decision {
            Handshake::Accept => None,
            Handshake::AcceptProtocol(protocol) => Some(protocol),
            Handshake::Reject(response) => {
                match response.for_request(&request).close(true).encode() {
                    Ok(body) => self.send_logged(&conn, &body),
                    // The handler's rejection is unsendable; closing still refuses the client.
                    Err(err) => log::error!("handshake rejection of {conn:?} not sent: {err}"),
                }
                self.send_logged(&conn, b"");
                return;
            }
        };
        let response = match websocket::handshake_response(accept, protocol.as_deref()) {
            Ok(response) => response,
            Err(err) => {
                log::warn!("cannot answer the handshake of {conn}: {err}");
                self.send_logged(&conn, b"");
                return;
            }
        };
        self.send_logged(&conn, &response);
        if !self.sessions.open(&conn) {
            // A handshake on a conn id we think is open: Mongrel2 restarted (it reuses ids)
            // without telling us; the old session is gone.
            self.events.push_back(Event::Closed {
                conn: conn.clone(),
                reason: CloseReason::Disconnected,
            });
        }
        log::debug!("WebSocket session {conn} opened");
        self.events.push_back(Event::Opened {
            conn,
            request: request.into_owned(),
            adopted: false,
        });
    }

    fn on_frame(&mut self, conn: ConnId, request: Request<'_>, flags: Flags) {
        if !self.sessions.heard(&conn) {
            // Mongrel2 kept this client while the handler restarted: adopt the session.
            // Every frame carries the handshake's headers, so the request is a fair stand-in.
            log::info!("adopting WebSocket session {conn} opened before this handler");
            self.sessions.open(&conn);
            self.events.push_back(Event::Opened {
                conn: conn.clone(),
                request: request.clone().into_owned(),
                adopted: true,
            });
        }
        let payload = request.body();
        if let Err(violation) = websocket::validate(flags, payload, self.max_message_size) {
            self.violation(conn, violation.close_code(), violation.to_string());
            return;
        }
        match flags.opcode() {
            Opcode::Text => match std::str::from_utf8(payload) {
                Ok(text) => self.events.push_back(Event::Message {
                    conn,
                    message: Message::Text(text.to_owned()),
                }),
                Err(_) => self.violation(conn, CloseCode::INVALID_PAYLOAD, "invalid UTF-8".into()),
            },
            Opcode::Binary => self.events.push_back(Event::Message {
                conn,
                message: Message::Binary(payload.to_vec()),
            }),
            Opcode::Ping => {
                let mut pong = Vec::with_capacity(payload.len() + 2);
                websocket::encode_frame(Opcode::Pong, payload, &mut pong);
                self.send_in_order(&conn, &[&pong]);
            }
            Opcode::Pong => {}
            Opcode::Close => self.on_close_frame(conn, payload),
            // Mongrel2 reassembles fragments, so a lone continuation is a broken client.
            Opcode::Continuation | Opcode::Reserved(_) => {
                self.violation(conn, CloseCode::PROTOCOL_ERROR, "unexpected opcode".into())
            }
        }
    }

    fn on_close_frame(&mut self, conn: ConnId, payload: &[u8]) {
        let (code, reason) = match websocket::decode_close(payload) {
            Ok(Some(close)) => (Some(close.code), close.reason.into_owned()),
            Ok(None) => (None, String::new()),
            Err(err) => {
                self.violation(conn, err.close_code(), err.to_string());
                return;
            }
        };
        let mut echo = Vec::with_capacity(4);
        match code {
            Some(code) => websocket::encode_frame(Opcode::Close, &code.0.to_be_bytes(), &mut echo),
            None => websocket::encode_frame(Opcode::Close, b"", &mut echo),
        }
        self.send_in_order(&conn, &[&echo, b""]);
        self.sessions.close(&conn);
        log::debug!("WebSocket session {conn} closed by the client ({code:?})");
        self.events.push_back(Event::Closed {
            conn,
            reason: CloseReason::Client { code, reason },
        });
    }

    fn violation(&mut self, conn: ConnId, code: CloseCode, violation: String) {
        log::info!("closing {conn} with {code}: {violation}");
        let frame = close_frame(code, &violation);
        self.send_in_order(&conn, &[&frame, b""]);
        self.sessions.close(&conn);
        self.events.push_back(Event::Closed {
            conn,
            reason: CloseReason::ProtocolViolation { code, violation },
        });
    }

    fn on_disconnect(&mut self, conn: ConnId) {
        self.streams.remove(&conn);
        self.uploads.forget(&conn);
        if self.sessions.close(&conn) {
            log::debug!("WebSocket session {conn} disconnected");
            self.events.push_back(Event::Closed {
                conn,
                reason: CloseReason::Disconnected,
            });
        } else {
            self.events.push_back(Event::Disconnected(conn));
        }
    }

    pub(super) fn ping_round(&mut self, now: Instant) {
        let (Some(interval), Some(mut next)) = (self.ping_interval, self.next_ping) else {
            return;
        };
        // Advance from the schedule, not from now, so rounds do not drift; skip rounds
        // missed while the caller was busy rather than firing them back to back.
        while next <= now {
            next += interval;
        }
        self.next_ping = Some(next);
        let mut ping = Vec::with_capacity(2);
        websocket::encode_frame(Opcode::Ping, b"", &mut ping);
        let goodbye = close_frame(CloseCode::GOING_AWAY, "ping timeout");
        for round in self.sessions.ping_round() {
            if !round.ping.is_empty() {
                self.deliver_logged(&round.sender, &round.ping, &ping);
            }
            if !round.expired.is_empty() {
                self.deliver_logged(&round.sender, &round.expired, &goodbye);
                self.deliver_logged(&round.sender, &round.expired, b"");
                for id in round.expired {
                    let conn = ConnId::new(round.sender.clone(), id);
                    log::info!("WebSocket session {conn} did not answer the ping");
                    self.events.push_back(Event::Closed {
                        conn,
                        reason: CloseReason::PingTimeout,
                    });
                }
            }
        }
    }
}

impl Core {
    /// Takes over a session another process of a handler group opened: `message` (its
    /// handshake, or any of its frames: they carry the handshake's headers) stands in for it.
    /// The handler sees [`Event::Opened`]; the session is pinged from the next round.
    pub(crate) fn adopt(&mut self, message: &[u8]) {
        let request = match Request::parse(message) {
            Ok(request) => request,
            Err(err) => {
                log::warn!("cannot adopt a session: {err}");
                return;
            }
        };
        let conn = ConnId::of(&request);
        if self.sessions.open(&conn) {
            // Its previous owner may have pinged it up to an interval ago and nobody since
            // the owner died: ping now so the client hears from the group without a gap.
            if self.ping_interval.is_some() {
                let mut ping = Vec::with_capacity(2);
                websocket::encode_frame(Opcode::Ping, b"", &mut ping);
                self.send_logged(&conn, &ping);
            }
            self.events.push_back(Event::Opened {
                conn,
                request: request.into_owned(),
                adopted: true,
            });
        }
    }

    /// Whether anything is kept for `conn` (a session or a streamed response).
    pub(crate) fn knows(&self, conn: &ConnId) -> bool {
        self.sessions.contains(conn) || self.streams.contains_key(conn)
    }
}
