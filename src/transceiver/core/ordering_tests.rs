//! Each connection's replies keep the order of its frames: the pongs and close frames the
//! Core writes itself wait until the handler was handed the events read before them, so a
//! handler's answer to a message is never overtaken by the close that followed the message.

use std::time::Instant;

use super::tests::{close_frame_bytes, core, frame, opened, replies};
use super::*;
use crate::websocket::CloseCode;
use crate::{CloseReason, Event, Message};

const TEXT: u8 = 0x81;
const PING: u8 = 0x89;
const CLOSE: u8 = 0x88;

/// A handler that echoes every text message; returns the events it was handed.
fn echo_all(core: &mut Core) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Some(event) = core.poll_event() {
        if let Event::Message {
            conn,
            message: Message::Text(text),
        } = &event
        {
            core.send_text(conn, text).unwrap();
        }
        seen.push(event);
    }
    seen
}

fn bodies(core: &mut Core) -> Vec<Vec<u8>> {
    replies(core).into_iter().map(|reply| reply.2).collect()
}

fn text_frame(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::websocket::encode_frame(crate::websocket::Opcode::Text, text, &mut out);
    out
}

#[test]
fn a_close_after_a_message_waits_for_the_answer_to_the_message() {
    let mut core = core(Instant::now());
    opened(&mut core, 1);
    core.handle_message("s1", &frame("s1", 1, TEXT, b"hello"));
    core.handle_message("s1", &frame("s1", 1, CLOSE, &1000u16.to_be_bytes()));
    assert!(
        !core.has_outgoing(),
        "the close waits: the handler has not seen the message yet"
    );
    let events = echo_all(&mut core);
    assert!(matches!(
        &events[..],
        [
            Event::Message { .. },
            Event::Closed {
                reason: CloseReason::Client { .. },
                ..
            }
        ]
    ));
    assert_eq!(
        bodies(&mut core),
        vec![
            text_frame(b"hello"),
            vec![0x88, 0x02, 0x03, 0xE8],
            Vec::new()
        ]
    );
}

#[test]
fn a_violation_after_a_message_closes_after_the_answer() {
    let mut core = core(Instant::now());
    opened(&mut core, 2);
    core.handle_message("s1", &frame("s1", 2, TEXT, b"first"));
    core.handle_message("s1", &frame("s1", 2, TEXT, &[0xff, 0xfe]));
    assert!(!core.has_outgoing());
    echo_all(&mut core);
    let out = bodies(&mut core);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], text_frame(b"first"));
    assert_eq!(out[1][0], 0x88, "then the close frame");
    assert_eq!(&out[1][2..4], &CloseCode::INVALID_PAYLOAD.0.to_be_bytes());
    assert!(out[2].is_empty(), "then the empty reply that closes");
}

#[test]
fn a_pong_follows_the_answers_to_the_messages_before_its_ping() {
    let mut core = core(Instant::now());
    opened(&mut core, 3);
    core.handle_message("s1", &frame("s1", 3, TEXT, b"a"));
    core.handle_message("s1", &frame("s1", 3, PING, b"p"));
    core.handle_message("s1", &frame("s1", 3, TEXT, b"b"));
    echo_all(&mut core);
    assert_eq!(
        bodies(&mut core),
        vec![text_frame(b"a"), vec![0x8A, 0x01, b'p'], text_frame(b"b")]
    );
}

#[test]
fn with_nothing_earlier_for_the_connection_the_reply_goes_at_once() {
    let mut core = core(Instant::now());
    opened(&mut core, 4);
    opened(&mut core, 5);
    // A message of another connection is waiting; it does not hold connection 4 back.
    core.handle_message("s1", &frame("s1", 5, TEXT, b"other"));
    core.handle_message("s1", &frame("s1", 4, PING, b""));
    assert_eq!(bodies(&mut core), vec![vec![0x8A, 0x00]]);
    core.handle_message("s1", &frame("s1", 4, CLOSE, b""));
    assert_eq!(bodies(&mut core), vec![vec![0x88, 0x00], Vec::new()]);
}

#[test]
fn held_replies_keep_their_order_among_themselves() {
    let mut core = core(Instant::now());
    opened(&mut core, 6);
    core.handle_message("s1", &frame("s1", 6, TEXT, b"m"));
    core.handle_message("s1", &frame("s1", 6, PING, b"1"));
    core.handle_message("s1", &frame("s1", 6, PING, b"2"));
    core.handle_message("s1", &frame("s1", 6, CLOSE, b""));
    echo_all(&mut core);
    assert_eq!(
        bodies(&mut core),
        vec![
            text_frame(b"m"),
            vec![0x8A, 0x01, b'1'],
            vec![0x8A, 0x01, b'2'],
            vec![0x88, 0x00],
            Vec::new()
        ]
    );
}

#[test]
fn shutdown_writes_held_replies_before_the_goodbyes() {
    let mut core = core(Instant::now());
    opened(&mut core, 7);
    core.handle_message("s1", &frame("s1", 7, TEXT, b"m"));
    core.handle_message("s1", &frame("s1", 7, PING, b""));
    core.shutdown();
    assert_eq!(
        bodies(&mut core),
        vec![
            vec![0x8A, 0x00],
            close_frame_bytes(CloseCode::GOING_AWAY, "shutting down"),
            Vec::new()
        ]
    );
}

#[test]
fn removing_a_server_drops_its_held_replies() {
    let mut core = core(Instant::now());
    opened(&mut core, 8);
    core.handle_message("s1", &frame("s1", 8, TEXT, b"m"));
    core.handle_message("s1", &frame("s1", 8, PING, b""));
    core.remove_server("s1").unwrap();
    while core.poll_event().is_some() {}
    assert!(!core.has_outgoing());
}
