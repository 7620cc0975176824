//! WebSocket over the harness, the way Mongrel2 carries it: the handshake arrives as
//! METHOD `WEBSOCKET_HANDSHAKE` with the computed accept value as body; every frame
//! arrives as METHOD `WEBSOCKET` with the handshake's headers, `FLAGS` (the first frame
//! byte with FIN forced on, `0x81`...) and the unmasked payload; fragmented messages
//! arrive reassembled, with the first frame's flags. Replies carry raw server frames,
//! possibly several in one reply.

use base64::Engine as _;

use super::http::{HttpRequest, HttpResponse, MAX_BODY_BYTES};
use super::Client;
use crate::harness::{HarnessError, Protocol};
use crate::websocket::{self, CloseCode, CloseFrame, Frame, Opcode};

/// The largest server frame payload accepted.
const MAX_FRAME_PAYLOAD: u64 = 64 * 1024 * 1024;
/// Mongrel2 drops control frames with longer payloads (and the connection).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame the handler sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    /// Final fragment.
    pub fin: bool,
    /// The RSV bits, `0..=7`.
    pub rsv: u8,
    /// The opcode.
    pub opcode: Opcode,
    /// The payload.
    pub payload: Vec<u8>,
}

impl WsFrame {
    /// The payload as text, for a text frame with valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        match self.opcode {
            Opcode::Text => std::str::from_utf8(&self.payload).ok(),
            _ => None,
        }
    }

    /// The status code of a close frame that has one.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.get(..2)) {
            (Opcode::Close, Some(code)) => Some(u16::from_be_bytes([code[0], code[1]])),
            _ => None,
        }
    }

    /// The reason of a close frame (empty when there is none or it is not UTF-8).
    pub fn close_reason(&self) -> &str {
        match (self.opcode, self.payload.get(2..)) {
            (Opcode::Close, Some(reason)) => std::str::from_utf8(reason).unwrap_or_default(),
            _ => "",
        }
    }
}

/// WebSocket state of one connection.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The handshake request, whose headers every frame repeats; set once accepted.
    handshake: Option<HttpRequest>,
}

impl Client {
    /// Opens a WebSocket on `target` (e.g. `/chat?room=1`): sends WEBSOCKET_HANDSHAKE
    /// with a random key, checks the `101 Switching Protocols` and its
    /// `Sec-WebSocket-Accept`, and returns the response. A refusal is an error; use
    /// [`Client::try_handshake`] to inspect one.
    pub fn handshake(&mut self, target: &str) -> Result<HttpResponse, HarnessError> {
        let response = self.try_handshake(HttpRequest::get(target))?;
        if response.status != 101 {
            return Err(HarnessError::protocol(
                "websocket",
                format!(
                    "handshake refused with {} {}",
                    response.status, response.reason
                ),
            ));
        }
        Ok(response)
    }

    /// Sends a handshake for `request` (a GET; add `Origin`, `Sec-WebSocket-Protocol`...
    /// as headers; the upgrade headers and key are added) and returns the handler's
    /// response, whatever its status. A 101 is checked as a browser checks it and opens
    /// the session.
    pub fn try_handshake(&mut self, request: HttpRequest) -> Result<HttpResponse, HarnessError> {
        self.require(Protocol::WebSocket, "do a WebSocket handshake")?;
        let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
        let accept = websocket::accept_key(&key);
        let mut request = request;
        for (name, value) in [
            ("host", super::DEFAULT_HOST),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
        ] {
            if !request
                .headers()
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                request = request.header(name, value);
            }
        }
        let request = request.header("sec-websocket-key", &key);
        let message = self.encode_http("WEBSOCKET_HANDSHAKE", &request, &[], accept.as_bytes())?;
        self.push(&message)?;

        let deadline = self.deadline();
        let response = loop {
            if let Some((response, used)) = parse_handshake_response(&self.buffer)? {
                self.buffer.drain(..used);
                break response;
            }
            if !self.fill(deadline, "the WebSocket handshake response")? {
                return Err(HarnessError::Closed);
            }
        };
        if response.status == 101 {
            check_accept(&response, &accept)?;
            self.ws.handshake = Some(request);
        }
        Ok(response)
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), HarnessError> {
        self.send_frame(0x81, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), HarnessError> {
        self.send_frame(0x82, data)
    }

    /// Sends a ping.
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), HarnessError> {
        self.send_control(Opcode::Ping, payload)
    }

    /// Sends a pong.
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), HarnessError> {
        self.send_control(Opcode::Pong, payload)
    }

    /// Sends a close frame, with a status code and reason or (`None`) without a payload.
    pub fn send_close(&mut self, close: Option<(u16, &str)>) -> Result<(), HarnessError> {
        let payload = match close {
            Some((code, reason)) => CloseFrame::new(CloseCode(code), reason).to_payload(),
            None => Vec::new(),
        };
        self.send_control(Opcode::Close, &payload)
    }

    /// Sends a message the client fragmented into `parts`, as Mongrel2 delivers it: one
    /// message, the parts joined, FLAGS of the first frame (`opcode`) with FIN set.
    pub fn send_fragmented(&mut self, opcode: Opcode, parts: &[&[u8]]) -> Result<(), HarnessError> {
        self.send_fragmented_with(opcode, parts, &[])
    }

    /// Like [`Client::send_fragmented`], with control frames the client sent between the
    /// fragments. Mongrel2 forwards those at once and the reassembled message after them,
    /// so they are sent first.
    pub fn send_fragmented_with(
        &mut self,
        opcode: Opcode,
        parts: &[&[u8]],
        controls: &[(Opcode, &[u8])],
    ) -> Result<(), HarnessError> {
        if opcode.is_control() || opcode == Opcode::Continuation {
            return Err(HarnessError::Unsendable(format!(
                "a fragmented message must start with a data opcode, not {opcode:?}"
            )));
        }
        for (control, payload) in controls {
            self.send_control(*control, payload)?;
        }
        let payload = parts.concat();
        self.send_frame(0x80 | opcode.as_u8(), &payload)
    }

    /// Sends one frame with these raw FLAGS (Mongrel2's first-byte-with-FIN value, e.g.
    /// `0x81`, `0xC1` for RSV1) and payload, unchecked: for testing how the handler treats
    /// frames Mongrel2 passes through (RSV bits, reserved opcodes, invalid UTF-8, sizes).
    pub fn send_frame(&mut self, flags: u8, payload: &[u8]) -> Result<(), HarnessError> {
        self.require(Protocol::WebSocket, "send WebSocket frames")?;
        let Some(handshake) = self.ws.handshake.clone() else {
            return Err(HarnessError::NoHandshake);
        };
        let extra = [("FLAGS", format!("0x{:X}", flags | 0x80))];
        let message = self.encode_http("WEBSOCKET", &handshake, &extra, payload)?;
        self.push(&message)
    }

    fn send_control(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), HarnessError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(HarnessError::Unsendable(format!(
                "a {opcode:?} frame with {} payload bytes (Mongrel2 drops the connection)",
                payload.len()
            )));
        }
        self.send_frame(0x80 | opcode.as_u8(), payload)
    }

    /// The next frame from the handler, whatever it is. Fails with
    /// [`HarnessError::Closed`] once the handler closed the connection.
    pub fn recv_frame(&mut self) -> Result<WsFrame, HarnessError> {
        self.require(Protocol::WebSocket, "read WebSocket frames")?;
        let deadline = self.deadline();
        loop {
            if let Some(frame) = self.decode_frame()? {
                return Ok(frame);
            }
            if !self.fill(deadline, "a WebSocket frame")? {
                return Err(if self.buffer.is_empty() {
                    HarnessError::Closed
                } else {
                    HarnessError::protocol("websocket", "connection closed inside a frame")
                });
            }
        }
    }

    /// The next text message, answering pings with pongs (as browsers do) and skipping
    /// pongs. Anything else is an error that describes it.
    pub fn recv_text(&mut self) -> Result<String, HarnessError> {
        let frame = self.recv_data()?;
        match frame.opcode {
            Opcode::Text => String::from_utf8(frame.payload)
                .map_err(|_| HarnessError::protocol("websocket", "text frame is not UTF-8")),
            other => Err(unexpected(other, &frame.payload, "a text message")),
        }
    }

    /// The next binary message, answering pings and skipping pongs.
    pub fn recv_binary(&mut self) -> Result<Vec<u8>, HarnessError> {
        let frame = self.recv_data()?;
        match frame.opcode {
            Opcode::Binary => Ok(frame.payload),
            other => Err(unexpected(other, &frame.payload, "a binary message")),
        }
    }

    /// Waits for the handler's close frame (answering pings, skipping pongs), then for it
    /// to close the connection, as the RFC 6455 closing handshake ends. Returns the close
    /// frame's status code, if it had one.
    pub fn recv_close_frame(&mut self) -> Result<Option<u16>, HarnessError> {
        let frame = self.recv_data()?;
        if frame.opcode != Opcode::Close {
            return Err(unexpected(frame.opcode, &frame.payload, "a close frame"));
        }
        self.recv_close()?;
        Ok(frame.close_code())
    }

    fn recv_data(&mut self) -> Result<WsFrame, HarnessError> {
        loop {
            let frame = self.recv_frame()?;
            match frame.opcode {
                Opcode::Ping => self.send_pong(&frame.payload)?,
                Opcode::Pong => {}
                _ => return Ok(frame),
            }
        }
    }

    fn decode_frame(&mut self) -> Result<Option<WsFrame>, HarnessError> {
        if let Some(second) = self.buffer.get(1) {
            if second & 0x80 != 0 {
                return Err(HarnessError::protocol(
                    "websocket",
                    "the handler sent a masked frame (clients must fail the connection)",
                ));
            }
        }
        let decoded = Frame::decode_with_limit(&self.buffer, MAX_FRAME_PAYLOAD)
            .map_err(|err| HarnessError::protocol("websocket", err.to_string()))?;
        let Some((frame, used)) = decoded else {
            return Ok(None);
        };
        let frame = WsFrame {
            fin: frame.fin,
            rsv: frame.rsv,
            opcode: frame.opcode,
            payload: frame.payload.into_owned(),
        };
        self.buffer.drain(..used);
        Ok(Some(frame))
    }
}

fn unexpected(opcode: Opcode, payload: &[u8], wanted: &str) -> HarnessError {
    let shown = String::from_utf8_lossy(&payload[..payload.len().min(120)]).into_owned();
    HarnessError::protocol(
        "websocket",
        format!("expected {wanted}, got a {opcode:?} frame with {shown:?}"),
    )
}

/// The handshake response parser and the accept check, for the fuzz targets (not API).
#[doc(hidden)]
pub fn parse_handshake_for_fuzzing(
    buf: &[u8],
    accept: &str,
) -> Result<Option<(HttpResponse, usize)>, HarnessError> {
    let parsed = parse_handshake_response(buf)?;
    if let Some((response, _)) = &parsed {
        check_accept(response, accept)?;
    }
    Ok(parsed)
}

/// Parses the handshake response head; `None` while incomplete. Frames may follow it in
/// the same reply and stay in the buffer.
fn parse_handshake_response(buf: &[u8]) -> Result<Option<(HttpResponse, usize)>, HarnessError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() <= 64 * 1024 => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(HarnessError::protocol(
                "websocket",
                "handshake response too large",
            ))
        }
        Err(err) => {
            return Err(HarnessError::protocol(
                "websocket",
                format!("handshake response: {err}"),
            ))
        }
    };
    let mut response = HttpResponse {
        minor_version: parsed.version.unwrap_or(1),
        status: parsed.code.unwrap_or_default(),
        reason: parsed.reason.unwrap_or_default().to_owned(),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        chunked: false,
    };
    let mut used = used;
    if response.status != 101 {
        // A refusal: take its body too when it says how long it is.
        if let Some(length) = response
            .header("content-length")
            .and_then(|l| l.trim().parse::<usize>().ok())
        {
            // The peer sets the length: an absurd one must not overflow or be waited for.
            if length > MAX_BODY_BYTES {
                return Err(HarnessError::protocol(
                    "websocket",
                    "handshake refusal body too large",
                ));
            }
            let Some(body) = buf.get(used..used + length) else {
                return Ok(None);
            };
            response.body = body.to_vec();
            used += length;
        }
    }
    Ok(Some((response, used)))
}

/// Checks a 101 the way RFC 6455 section 4.1 tells clients to.
fn check_accept(response: &HttpResponse, accept: &str) -> Result<(), HarnessError> {
    let fail = |reason: String| Err(HarnessError::protocol("websocket", reason));
    if !response
        .header("upgrade")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
    {
        return fail("101 without Upgrade: websocket".into());
    }
    if !response
        .header_all("connection")
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    {
        return fail("101 without Connection: Upgrade".into());
    }
    match response.header("sec-websocket-accept") {
        Some(value) if value.trim() == accept => Ok(()),
        Some(value) => fail(format!(
            "Sec-WebSocket-Accept {value:?}, expected {accept:?}"
        )),
        None => fail("101 without Sec-WebSocket-Accept".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_expose_code_and_reason() {
        let frame = WsFrame {
            fin: true,
            rsv: 0,
            opcode: Opcode::Close,
            payload: b"\x03\xe8bye".to_vec(),
        };
        assert_eq!(frame.close_code(), Some(1000));
        assert_eq!(frame.close_reason(), "bye");
        assert_eq!(frame.text(), None);
    }

    #[test]
    fn handshake_responses_are_checked_like_a_browser() {
        let accept = websocket::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let mut raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(b"\x81\x02hi");
        let (response, used) = parse_handshake_response(&raw).unwrap().unwrap();
        assert_eq!(
            &raw[used..],
            b"\x81\x02hi",
            "coalesced frames stay buffered"
        );
        check_accept(&response, &accept).unwrap();
        assert!(check_accept(&response, "wrong").is_err());
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
        let (response, used) = parse_handshake_response(refused).unwrap().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice(), used),
            (403, &b"no"[..], refused.len())
        );
    }

    #[test]
    fn a_refusal_with_a_huge_length_is_an_error() {
        // Found by fuzz/fuzz_targets/harness_http_response: `used + length` overflowed.
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert!(parse_handshake_response(refused).is_err());
    }
}
