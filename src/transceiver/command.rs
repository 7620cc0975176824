//! What the handler asks the [`Core`] to send, and how the core turns it into replies.

use std::sync::Arc;

use super::core::Core;
use super::{CloseReason, ConnId, Error, Event};
use crate::http::ChunkedResponse;
use crate::reply;
use crate::websocket::CloseCode;

/// One sending request, from the outbound methods of `Core`, `Transceiver` or `Handle`.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Bytes for one connection; `then_close` follows them with an empty reply.
    Send {
        conn: ConnId,
        body: Vec<u8>,
        then_close: bool,
    },
    /// One body to many connections of one server.
    Deliver {
        sender: Arc<str>,
        ids: Vec<u64>,
        body: Vec<u8>,
    },
    /// One body to connections of any servers.
    DeliverTo { conns: Vec<ConnId>, body: Vec<u8> },
    /// One WebSocket frame to every open session.
    Broadcast { frame: Vec<u8> },
    /// Close frame, then close the connection and forget the session.
    CloseSession {
        conn: ConnId,
        code: CloseCode,
        frame: Vec<u8>,
    },
    /// A streamed HTTP response: its head, a chunk's data (framed by the core), or its end.
    Stream {
        conn: ConnId,
        part: StreamPart,
        body: Vec<u8>,
    },
    /// An extended (`X`) reply.
    Control { conn: ConnId, control: Control },
}

/// Where a streamed response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamPart {
    /// The head; a close-delimited body is written unframed and ends with the connection.
    Start {
        close_delimited: bool,
    },
    Chunk,
    End {
        then_close: bool,
    },
}

/// The `ctl` extended replies Mongrel2 understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    KeepAlive,
    Credits(u64),
    Cancel,
}

impl Outbound {
    /// An HTTP response for the connection of `request`.
    pub(crate) fn http(
        request: &crate::request::Request<'_>,
        response: &crate::http::Response,
    ) -> Result<Outbound, Error> {
        let mut body = Vec::new();
        let then_close = response.encode_closing(request, &mut body)?;
        Ok(Outbound::Send {
            conn: ConnId::of(request),
            body,
            then_close,
        })
    }
}

impl Core {
    pub(super) fn apply(&mut self, command: Outbound) -> Result<(), Error> {
        match command {
            Outbound::Send {
                conn,
                body,
                then_close,
            } => {
                self.send_to(&conn, &body)?;
                if then_close || body.is_empty() {
                    if then_close {
                        self.send_to(&conn, b"")?;
                    }
                    self.forget(&conn, CloseCode::ABNORMAL);
                }
                Ok(())
            }
            Outbound::Deliver { sender, ids, body } => self.deliver_now(&sender, &ids, &body),
            Outbound::DeliverTo { conns, body } => self.deliver_grouped(&conns, &body),
            Outbound::Broadcast { frame } => {
                let groups: Vec<(Arc<str>, Vec<u64>)> = self
                    .sessions
                    .by_sender()
                    .map(|(sender, ids)| (sender.clone(), ids))
                    .collect();
                for (sender, ids) in groups {
                    self.deliver_now(&sender, &ids, &frame)?;
                }
                Ok(())
            }
            Outbound::CloseSession { conn, code, frame } => {
                self.send_to(&conn, &frame)?;
                self.send_to(&conn, b"")?;
                self.forget(&conn, code);
                Ok(())
            }
            Outbound::Stream { conn, part, body } => match part {
                StreamPart::Start { close_delimited } => {
                    self.send_to(&conn, &body)?;
                    self.streams.insert(conn, close_delimited);
                    Ok(())
                }
                StreamPart::Chunk => match self.streams.get(&conn) {
                    Some(true) => self.send_to(&conn, &body),
                    Some(false) => self.send_to(&conn, &ChunkedResponse::chunk(&body)),
                    None => Err(Error::NotStreaming(conn)),
                },
                StreamPart::End { then_close } => match self.streams.remove(&conn) {
                    // The close is what ends the body.
                    Some(true) => self.send_to(&conn, b""),
                    Some(false) => {
                        self.send_to(&conn, ChunkedResponse::end())?;
                        if then_close {
                            self.send_to(&conn, b"")?;
                        }
                        Ok(())
                    }
                    None => Err(Error::NotStreaming(conn)),
                },
            },
            Outbound::Control { conn, control } => {
                let sender = self.server_of(&conn.sender)?;
                let message = match control {
                    Control::KeepAlive => reply::ctl_keep_alive(&conn.sender, &[conn.id])?,
                    Control::Credits(credits) => {
                        reply::ctl_credits(&conn.sender, &[conn.id], credits)?
                    }
                    Control::Cancel => reply::ctl_cancel(&conn.sender, &[conn.id])?,
                };
                self.outgoing
                    .push_back(super::core::Outgoing { sender, message });
                Ok(())
            }
        }
    }

    /// The connection was closed from our side: forget whatever we kept for it.
    pub(super) fn forget(&mut self, conn: &ConnId, code: CloseCode) {
        self.streams.remove(conn);
        if self.sessions.close(conn) {
            self.events.push_back(Event::Closed {
                conn: conn.clone(),
                reason: CloseReason::Handler { code },
            });
        }
    }
}
