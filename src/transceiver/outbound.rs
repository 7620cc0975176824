//! The sending methods, defined once for [`Core`](super::Core) (which turns them into
//! replies), [`Transceiver`](super::Transceiver) (which also writes them at once) and
//! [`Handle`](super::Handle) (which queues them for the loop).

/// Expands to the shared sending methods inside an `impl` whose type has
/// `fn submit(&self | &mut self, Outbound) -> Result<(), Error>`; a `mut` one also has
/// `fn submit_http(&mut self, &Request, &Response) -> Result<(), Error>`.
macro_rules! outbound_methods {
    // Shared receivers only queue commands: an HTTP response is encoded before it is queued.
    () => {
        fn submit_http(
            &self,
            request: &$crate::request::Request<'_>,
            response: &$crate::http::Response,
        ) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::http(request, response)?)
        }

        $crate::transceiver::outbound::outbound_methods!(@methods);
    };
    (mut) => {
        $crate::transceiver::outbound::outbound_methods!(@methods mut);
    };
    (@methods $($recv:tt)?) => {
        /// Sends raw bytes to one connection, as they are (an HTTP response, WebSocket frames, ...).
        pub fn reply(&$($recv)? self, conn: &$crate::ConnId, body: impl Into<Vec<u8>>) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Send {
                conn: conn.clone(),
                body: body.into(),
                then_close: false,
            })
        }

        /// Answers an HTTP request. HEAD requests get no body; a request that asked to close
        /// (`Connection: close`, HTTP/1.0 without keep-alive) gets `Connection: close` and the
        /// connection is closed once the response is written.
        pub fn reply_http(&$($recv)? self, request: &$crate::request::Request<'_>, response: &$crate::http::Response) -> Result<(), $crate::Error> {
            self.submit_http(request, response)
        }

        /// Answers an HTTP request with `value` as JSON and the given status.
        pub fn reply_json<T: serde::Serialize + ?Sized>(&$($recv)? self, request: &$crate::request::Request<'_>, status: u16, value: &T) -> Result<(), $crate::Error> {
            let response = $crate::http::Response::new(status).json(value);
            self.reply_http(request, &response)
        }

        /// Closes a connection once what is queued for it is written (an empty reply).
        pub fn close(&$($recv)? self, conn: &$crate::ConnId) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Send {
                conn: conn.clone(),
                body: Vec::new(),
                then_close: false,
            })
        }

        /// Starts a streamed (chunked) HTTP response; follow with
        /// [`stream_chunk`](Self::stream_chunk) and [`stream_end`](Self::stream_end).
        ///
        /// An HTTP/1.0 client knows no chunked coding: its response is
        /// [close-delimited](crate::http::ChunkedResponse::close_delimited) instead (the
        /// chunks go out unframed and `stream_end` closes the connection).
        pub fn stream_start(&$($recv)? self, request: &$crate::request::Request<'_>, head: &$crate::http::ChunkedResponse) -> Result<(), $crate::Error> {
            let close_delimited =
                head.is_close_delimited() || request.version() == Some("HTTP/1.0");
            let head = head.clone().close_delimited(close_delimited);
            self.submit($crate::transceiver::command::Outbound::Stream {
                conn: $crate::ConnId::of(request),
                part: $crate::transceiver::command::StreamPart::Start { close_delimited },
                body: head.encode()?,
            })
        }

        /// Writes one chunk of a streamed response (an empty chunk sends nothing).
        pub fn stream_chunk(&$($recv)? self, conn: &$crate::ConnId, data: &[u8]) -> Result<(), $crate::Error> {
            if data.is_empty() {
                return Ok(());
            }
            self.submit($crate::transceiver::command::Outbound::Stream {
                conn: conn.clone(),
                part: $crate::transceiver::command::StreamPart::Chunk,
                body: data.to_vec(),
            })
        }

        /// Ends a streamed response; with `then_close` the connection is closed after it
        /// (a close-delimited response always closes it: that is what ends its body).
        pub fn stream_end(&$($recv)? self, conn: &$crate::ConnId, then_close: bool) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Stream {
                conn: conn.clone(),
                part: $crate::transceiver::command::StreamPart::End { then_close },
                body: Vec::new(),
            })
        }

        /// Sends a text message to a WebSocket session.
        pub fn send_text(&$($recv)? self, conn: &$crate::ConnId, text: &str) -> Result<(), $crate::Error> {
            self.send_frame(conn, $crate::websocket::Opcode::Text, text.as_bytes())
        }

        /// Sends a binary message to a WebSocket session.
        pub fn send_binary(&$($recv)? self, conn: &$crate::ConnId, data: &[u8]) -> Result<(), $crate::Error> {
            self.send_frame(conn, $crate::websocket::Opcode::Binary, data)
        }

        /// Sends a ping (payload at most 125 bytes) to a WebSocket session.
        pub fn send_ping(&$($recv)? self, conn: &$crate::ConnId, payload: &[u8]) -> Result<(), $crate::Error> {
            if payload.len() > 125 {
                return Err($crate::Error::Config("a ping payload is at most 125 bytes".into()));
            }
            self.send_frame(conn, $crate::websocket::Opcode::Ping, payload)
        }

        /// Sends one unfragmented frame of any opcode to a WebSocket session.
        pub fn send_frame(&$($recv)? self, conn: &$crate::ConnId, opcode: $crate::websocket::Opcode, payload: &[u8]) -> Result<(), $crate::Error> {
            let mut body = Vec::with_capacity(payload.len() + 10);
            $crate::websocket::encode_frame(opcode, payload, &mut body);
            self.reply(conn, body)
        }

        /// Closes a WebSocket session: a close frame with `code` and `reason` (cut to 123
        /// bytes), then the connection; the loop reports
        /// [`CloseReason::Handler`]($crate::CloseReason::Handler).
        pub fn close_session(&$($recv)? self, conn: &$crate::ConnId, code: $crate::websocket::CloseCode, reason: &str) -> Result<(), $crate::Error> {
            let frame = $crate::transceiver::close_frame(code, reason);
            self.submit($crate::transceiver::command::Outbound::CloseSession {
                conn: conn.clone(),
                code,
                frame,
            })
        }

        /// Sends one body to many connections of one Mongrel2 server, in messages of at most
        /// `handler_targets` ids each. The body goes out as it is: for WebSocket sessions it
        /// must already be framed (see [`deliver_text`](Self::deliver_text)).
        pub fn deliver(&$($recv)? self, sender: &str, ids: &[u64], body: impl Into<Vec<u8>>) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Deliver {
                sender: sender.into(),
                ids: ids.to_vec(),
                body: body.into(),
            })
        }

        /// Sends one body to connections of any servers: grouped by sender, then batched.
        /// The body is raw bytes sent as they are: for WebSocket sessions it must already be
        /// a frame (plain text here reaches the client as garbage); use
        /// [`deliver_text`](Self::deliver_text) or [`deliver_binary`](Self::deliver_binary).
        pub fn deliver_to(&$($recv)? self, conns: &[$crate::ConnId], body: impl Into<Vec<u8>>) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::DeliverTo {
                conns: conns.to_vec(),
                body: body.into(),
            })
        }

        /// Sends a text message to many WebSocket sessions of any servers: framed once,
        /// then batched like [`deliver_to`](Self::deliver_to).
        pub fn deliver_text(&$($recv)? self, conns: &[$crate::ConnId], text: &str) -> Result<(), $crate::Error> {
            self.deliver_frame(conns, $crate::websocket::Opcode::Text, text.as_bytes())
        }

        /// Sends a binary message to many WebSocket sessions of any servers: framed once,
        /// then batched like [`deliver_to`](Self::deliver_to).
        pub fn deliver_binary(&$($recv)? self, conns: &[$crate::ConnId], data: &[u8]) -> Result<(), $crate::Error> {
            self.deliver_frame(conns, $crate::websocket::Opcode::Binary, data)
        }

        /// Sends one unfragmented frame of any opcode to many WebSocket sessions.
        pub fn deliver_frame(&$($recv)? self, conns: &[$crate::ConnId], opcode: $crate::websocket::Opcode, payload: &[u8]) -> Result<(), $crate::Error> {
            let mut frame = Vec::with_capacity(payload.len() + 10);
            $crate::websocket::encode_frame(opcode, payload, &mut frame);
            self.deliver_to(conns, frame)
        }

        /// Sends one frame to every open WebSocket session of every Mongrel2 server.
        pub fn broadcast(&$($recv)? self, opcode: $crate::websocket::Opcode, payload: &[u8]) -> Result<(), $crate::Error> {
            let mut frame = Vec::with_capacity(payload.len() + 10);
            $crate::websocket::encode_frame(opcode, payload, &mut frame);
            self.submit($crate::transceiver::command::Outbound::Broadcast { frame })
        }

        /// Sends a text message to every open WebSocket session.
        pub fn broadcast_text(&$($recv)? self, text: &str) -> Result<(), $crate::Error> {
            self.broadcast($crate::websocket::Opcode::Text, text.as_bytes())
        }

        /// Sends a binary message to every open WebSocket session.
        pub fn broadcast_binary(&$($recv)? self, data: &[u8]) -> Result<(), $crate::Error> {
            self.broadcast($crate::websocket::Opcode::Binary, data)
        }

        /// Resets Mongrel2's idle timer for a connection (extended reply `ctl keep-alive`).
        pub fn keep_alive(&$($recv)? self, conn: &$crate::ConnId) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Control {
                conn: conn.clone(),
                control: $crate::transceiver::command::Control::KeepAlive,
            })
        }

        /// Grants upload credits to a streamed upload (extended reply `ctl credits`).
        pub fn grant_credits(&$($recv)? self, conn: &$crate::ConnId, credits: u64) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Control {
                conn: conn.clone(),
                control: $crate::transceiver::command::Control::Credits(credits),
            })
        }

        /// Makes Mongrel2 drop a connection at once (extended reply `ctl cancel`).
        pub fn cancel(&$($recv)? self, conn: &$crate::ConnId) -> Result<(), $crate::Error> {
            self.submit($crate::transceiver::command::Outbound::Control {
                conn: conn.clone(),
                control: $crate::transceiver::command::Control::Cancel,
            })
        }
    };
}

pub(crate) use outbound_methods;
