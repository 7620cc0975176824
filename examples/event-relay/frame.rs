//! Framing of outgoing JSON for each kind of subscriber.
//!
//! Frames are built once per event and shared (`Arc`) by every outbox that queues them,
//! so fan-out costs a pointer copy per session, not an encode.

use mongrel2_transceiver::http::ChunkedResponse;
use mongrel2_transceiver::websocket::{encode_frame, Opcode};

/// How a subscriber's connection carries relay messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionKind {
    /// A WebSocket session: every message is one text frame.
    WebSocket,
    /// A Server-Sent-Events stream over a chunked HTTP response: every message is one
    /// HTTP chunk holding one `data:` event. (Not wired yet; the framing is ready.)
    Sse,
}

impl SessionKind {
    /// Appends `json` framed for this kind of connection to `out`.
    pub fn frame(self, json: &[u8], out: &mut Vec<u8>) {
        match self {
            SessionKind::WebSocket => text_frame(json, out),
            SessionKind::Sse => sse_chunk(json, out),
        }
    }

    /// `json` framed for this kind of connection, ready to share between outboxes.
    pub fn framed(self, json: &[u8]) -> std::sync::Arc<[u8]> {
        let mut out = Vec::with_capacity(json.len() + 16);
        self.frame(json, &mut out);
        out.into()
    }
}

/// Server-to-client WebSocket text frame: FIN, unmasked, shortest length form.
pub fn text_frame(json: &[u8], out: &mut Vec<u8>) {
    encode_frame(Opcode::Text, json, out);
}

/// One HTTP/1.1 chunk carrying one SSE event whose data is `json` (compact JSON has no
/// raw newlines, so a single `data:` line is always enough).
pub fn sse_chunk(json: &[u8], out: &mut Vec<u8>) {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    ChunkedResponse::chunk_into(&event, out);
}

/// Test helper: splits concatenated server text frames back into their payloads.
#[cfg(test)]
pub fn split_text_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(bytes[0], 0x81, "FIN|text expected");
        let (len, header) = match bytes[1] {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        frames.push(bytes[header..header + len].to_vec());
        bytes = &bytes[header + len..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frame_uses_the_shortest_length_form() {
        for (len, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let json = vec![b'x'; len];
            let mut out = Vec::new();
            text_frame(&json, &mut out);
            assert_eq!(out.len(), header + len, "len {len}");
            assert_eq!(out[0], 0x81);
            assert_eq!(split_text_frames(&out), vec![json]);
        }
    }

    #[test]
    fn text_frame_header_bytes() {
        let mut out = Vec::new();
        text_frame(b"hi", &mut out);
        assert_eq!(out, b"\x81\x02hi");
        out.clear();
        text_frame(&[b'a'; 300], &mut out);
        assert_eq!(&out[..4], &[0x81, 126, 0x01, 0x2c]);
    }

    #[test]
    fn sse_chunk_is_one_http_chunk_with_one_event() {
        let mut out = Vec::new();
        sse_chunk(br#"{"a":1}"#, &mut out);
        assert_eq!(out, b"f\r\ndata: {\"a\":1}\n\n\r\n");
    }
}
