//! Framing of outgoing JSON for each kind of subscriber.
//!
//! Frames are built once per event and shared (`Arc`) by every outbox that queues them,
//! so fan-out costs a pointer copy per session, not an encode.
//!
//! Server-Sent Events: every relay message is one HTTP chunk holding one SSE event,
//! `id: EPOCH/SEQ` (application events only: the event's position on its exchange and the
//! epoch that position belongs to, so the last id a stream saw is the position of its whole
//! subscription, wildcard or not), `event: NAME` (the JSON's `event`),
//! `data: JSON` (the same JSON a WebSocket client gets; compact JSON has no raw newlines, so
//! one `data:` line is always enough). An SSE field cannot hold CR, LF or NUL, so in an id
//! those (and `%`) are percent-encoded, and [`parse_event_id`] decodes them; in an event name
//! they become spaces.

use std::borrow::Cow;
use std::sync::Arc;

use mongrel2_transceiver::http::ChunkedResponse;
use mongrel2_transceiver::websocket::{encode_frame, Opcode};

/// How a subscriber's connection carries relay messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionKind {
    /// A WebSocket session: every message is one text frame.
    WebSocket,
    /// A Server-Sent-Events stream over a chunked HTTP response: every message is one
    /// HTTP chunk holding one SSE event.
    Sse,
}

/// Where an application event sits: its SSE id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId<'a> {
    /// The epoch its position belongs to.
    pub epoch: &'a str,
    /// Its position on its exchange.
    pub seq: u64,
}

/// What an SSE event carries besides its data (ignored for WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The `event:` name.
    pub event: &'a str,
    /// The `id:`, for application events.
    pub id: Option<EventId<'a>>,
}

impl<'a> Meta<'a> {
    /// A reply or notice: a name, no id.
    pub fn named(event: &'a str) -> Meta<'a> {
        Meta { event, id: None }
    }
}

impl SessionKind {
    /// Appends `json` framed for this kind of connection to `out`.
    pub fn frame(self, json: &[u8], meta: &Meta<'_>, out: &mut Vec<u8>) {
        match self {
            SessionKind::WebSocket => text_frame(json, out),
            SessionKind::Sse => ChunkedResponse::chunk_into(&sse_event(json, meta), out),
        }
    }

    /// `json` framed for this kind of connection, ready to share between outboxes.
    pub fn framed(self, json: &[u8], meta: &Meta<'_>) -> Arc<[u8]> {
        let mut out = Vec::with_capacity(json.len() + 16);
        self.frame(json, meta, &mut out);
        out.into()
    }
}

/// Server-to-client WebSocket text frame: FIN, unmasked, shortest length form.
pub fn text_frame(json: &[u8], out: &mut Vec<u8>) {
    encode_frame(Opcode::Text, json, out);
}

/// The `id:` and `event:` lines of an SSE event (each ending in a newline).
pub fn sse_head(meta: &Meta<'_>) -> String {
    let mut head = String::with_capacity(meta.event.len() + 64);
    if let Some(id) = &meta.id {
        head.push_str("id: ");
        head.push_str(&event_id(id));
        head.push('\n');
    }
    head.push_str("event: ");
    head.extend(meta.event.chars().map(|c| {
        if matches!(c, '\r' | '\n' | '\0') {
            ' '
        } else {
            c
        }
    }));
    head.push('\n');
    head
}

/// One SSE event (not yet chunked): the head lines, `data: JSON`, a blank line.
pub fn sse_event(json: &[u8], meta: &Meta<'_>) -> Vec<u8> {
    sse_event_with_head(sse_head(meta).as_bytes(), json)
}

/// One SSE event from a ready head (see [`sse_head`]).
pub fn sse_event_with_head(head: &[u8], json: &[u8]) -> Vec<u8> {
    let mut event = Vec::with_capacity(head.len() + json.len() + 8);
    event.extend_from_slice(head);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    event
}

/// One HTTP chunk holding an SSE comment line (a heartbeat: clients ignore it, proxies see
/// traffic).
pub fn sse_comment_chunk(text: &str) -> Vec<u8> {
    let line: String = text
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect();
    ChunkedResponse::chunk(format!(": {line}\n\n").as_bytes())
}

/// `EPOCH/SEQ`, with `%`, CR, LF and NUL percent-encoded in the epoch.
pub fn event_id(id: &EventId<'_>) -> String {
    format!("{}/{}", escape(id.epoch), id.seq)
}

/// Reads an id made by [`event_id`]: `(epoch, seq)`. The epoch may hold `/`, so the seq is
/// what follows the last one. An id of the older `EXCHANGE/KEY/SEQ` form reads as an epoch
/// no relay has (`EXCHANGE/KEY`), which is what it is: a position that cannot be trusted.
/// `None` if it is not an id at all.
pub fn parse_event_id(id: &str) -> Option<(String, u64)> {
    let (epoch, seq) = id.trim().rsplit_once('/')?;
    let seq = seq.parse().ok()?;
    Some((unescape(epoch)?, seq))
}

fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '\r', '\n', '\0']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        let hex = std::str::from_utf8(&hex).ok()?;
        out.push(u8::from_str_radix(hex, 16).ok()?);
    }
    String::from_utf8(out).ok()
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
        SessionKind::Sse.frame(br#"{"a":1}"#, &Meta::named("Pong"), &mut out);
        assert_eq!(out, b"1b\r\nevent: Pong\ndata: {\"a\":1}\n\n\r\n");
        let id = EventId {
            epoch: "relay.1f",
            seq: 7,
        };
        let meta = Meta {
            event: "Rang",
            id: Some(id),
        };
        assert_eq!(
            sse_event(b"{}", &meta),
            b"id: relay.1f/7\nevent: Rang\ndata: {}\n\n"
        );
    }

    #[test]
    fn ids_round_trip_whatever_the_names_hold() {
        for epoch in ["relay.00ab", "a/b/c", "", "line\nbreak\r\0%41"] {
            let id = event_id(&EventId { epoch, seq: 42 });
            assert!(!id.contains(['\r', '\n', '\0']), "{id:?}");
            assert_eq!(parse_event_id(&id), Some((epoch.to_owned(), 42)), "{id}");
        }
        assert_eq!(
            parse_event_id("calls/q.a/3"),
            Some(("calls/q.a".to_owned(), 3)),
            "an old-style id is a foreign epoch"
        );
        assert_eq!(parse_event_id("calls/k/x"), None);
        assert_eq!(parse_event_id("calls"), None);
        assert_eq!(parse_event_id("%zz/1"), None);
        assert_eq!(parse_event_id("%e9/1"), None, "not UTF-8");
    }

    #[test]
    fn event_names_and_comments_cannot_break_lines() {
        let head = sse_head(&Meta::named("a\nb\rc"));
        assert_eq!(head, "event: a b c\n");
        assert_eq!(sse_comment_chunk("hb\n"), b"6\r\n: hb\n\n\r\n");
    }
}
