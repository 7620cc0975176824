//! The subscribing side: N WebSocket clients on one thread (mio), each reading every
//! frame, timing events that carry `bench_n`/`bench_t` and tracking their order.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::stats::{Histogram, Sequence};

/// Largest frame (or handshake answer) a subscriber buffers; a peer sending more is broken.
const MAX_BUFFER: usize = 16 << 20;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// Where one subscriber connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Handshake,
    Open,
    Closed,
}

struct Sub {
    stream: TcpStream,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    seq: Sequence,
    warm: bool,
}

/// Everything the subscribers saw.
pub struct Tally {
    pub latency: Histogram,
    pub distinct: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub frames: u64,
    /// Subscribers the peer closed or that failed after opening.
    pub dropped: usize,
    /// Nanoseconds since the epoch of the last measured event received.
    pub last_receive_ns: u64,
}

pub struct Subscribers {
    poll: Poll,
    events: Events,
    subs: Vec<Sub>,
    /// Text sent once the handshake is answered (the relay's Subscribe), if any.
    subscribe: Option<Vec<u8>>,
    pub warm: usize,
    pub open: usize,
    /// Subscribers that could not connect, were refused, or were closed since.
    pub failed: usize,
    pub tally: Tally,
    epoch: Instant,
    buf: Vec<u8>,
}

impl Subscribers {
    /// Starts connecting `count` subscribers, spread round-robin over `endpoints`.
    pub fn connect(
        endpoints: &[Endpoint],
        count: usize,
        subscribe: Option<String>,
        total: u64,
        epoch: Instant,
    ) -> std::io::Result<Subscribers> {
        let poll = Poll::new()?;
        let mut subs = Vec::with_capacity(count);
        for i in 0..count {
            let endpoint = &endpoints[i % endpoints.len()];
            let mut stream = TcpStream::connect(endpoint.addr)?;
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            // The handshake is written once the connection is up.
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                endpoint.path, endpoint.host
            );
            subs.push(Sub {
                stream,
                state: State::Connecting,
                input: Vec::new(),
                output: request.into_bytes(),
                seq: Sequence::new(total),
                warm: false,
            });
        }
        Ok(Subscribers {
            poll,
            events: Events::with_capacity(1024),
            subs,
            subscribe: subscribe.map(|text| masked_frame(0x1, text.as_bytes())),
            warm: 0,
            open: 0,
            failed: 0,
            tally: Tally {
                latency: Histogram::new(),
                distinct: 0,
                duplicates: 0,
                out_of_order: 0,
                frames: 0,
                dropped: 0,
                last_receive_ns: 0,
            },
            epoch,
            buf: vec![0; READ_CHUNK],
        })
    }

    /// Waits up to `timeout` for readiness and serves every ready subscriber.
    pub fn turn(&mut self, timeout: std::time::Duration) -> std::io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| (e.token().0, e.is_readable(), e.is_writable()))
            .collect();
        for (i, readable, writable) in ready {
            if writable {
                self.on_writable(i);
            }
            if readable {
                self.on_readable(i);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Subscribers that have every measured event.
    pub fn complete(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.state == State::Open && s.seq.distinct == self.total())
            .count()
    }

    fn total(&self) -> u64 {
        self.subs.first().map_or(0, |s| s.seq.total())
    }

    /// Folds the per-subscriber counts into the tally.
    pub fn finish(&mut self) {
        for s in &self.subs {
            self.tally.distinct += s.seq.distinct;
            self.tally.duplicates += s.seq.duplicates;
            self.tally.out_of_order += s.seq.out_of_order;
        }
    }

    fn on_writable(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        if sub.state == State::Connecting {
            match sub.stream.take_error() {
                Ok(None) if sub.stream.peer_addr().is_ok() => {
                    let _ = sub.stream.set_nodelay(true);
                    sub.state = State::Handshake;
                }
                Ok(None) => return, // not connected yet
                _ => {
                    sub.state = State::Closed;
                    self.failed += 1;
                    return;
                }
            }
        }
        flush_output(sub);
    }

    fn on_readable(&mut self, i: usize) {
        loop {
            let sub = &mut self.subs[i];
            if sub.state == State::Closed || sub.state == State::Connecting {
                return;
            }
            match sub.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.lose(i);
                    return;
                }
                Ok(n) => {
                    sub.input.extend_from_slice(&self.buf[..n]);
                    if sub.input.len() > MAX_BUFFER {
                        self.lose(i);
                        return;
                    }
                    self.parse(i);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.lose(i);
                    return;
                }
            }
        }
    }

    fn lose(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        if sub.state == State::Open {
            self.open -= 1;
            self.tally.dropped += 1;
        }
        if sub.state != State::Closed {
            self.failed += 1;
        }
        sub.state = State::Closed;
        let _ = self.poll.registry().deregister(&mut sub.stream);
    }

    /// Reads every complete frame `i` has buffered.
    fn parse(&mut self, i: usize) {
        if !self.parse_frames(i) {
            self.lose(i);
        }
    }

    /// False when the subscriber is finished (refused handshake, close frame).
    fn parse_frames(&mut self, i: usize) -> bool {
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let sub = &mut self.subs[i];
        let tally = &mut self.tally;
        let mut at = 0;
        if sub.state == State::Handshake {
            let Some(end) = find(&sub.input, b"\r\n\r\n") else {
                return true;
            };
            if !sub.input.starts_with(b"HTTP/1.1 101") {
                return false;
            }
            at = end + 4;
            sub.state = State::Open;
            self.open += 1;
            if let Some(frame) = &self.subscribe {
                sub.output.extend_from_slice(frame);
            }
        }
        let mut open = true;
        while let Some((opcode, start, end)) = frame_at(&sub.input[at..]) {
            let payload = &sub.input[at + start..at + end];
            match opcode {
                0x1 | 0x2 => {
                    tally.frames += 1;
                    let n = number_after(payload, b"\"bench_n\":");
                    let t = number_after(payload, b"\"bench_t\":");
                    if let (Some(n), Some(t)) = (n, t) {
                        if n == 0 {
                            if !sub.warm {
                                sub.warm = true;
                                self.warm += 1;
                            }
                        } else if sub.seq.note(n) {
                            tally.latency.record(now_ns.saturating_sub(t));
                            tally.last_receive_ns = now_ns;
                        }
                    }
                }
                0x8 => open = false,
                0x9 => {
                    let pong = masked_frame(0xA, payload);
                    sub.output.extend_from_slice(&pong);
                }
                _ => {}
            }
            at += end;
        }
        sub.input.drain(..at);
        flush_output(sub);
        open
    }
}

fn flush_output(sub: &mut Sub) {
    while !sub.output.is_empty() {
        match sub.stream.write(&sub.output) {
            Ok(n) => {
                sub.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // WouldBlock: the next writable event carries on; other errors show up on read.
            Err(_) => return,
        }
    }
}

/// The frame at the start of `input`: (opcode, payload start, payload end), or `None`
/// when it is not complete yet. Server frames are unmasked.
fn frame_at(input: &[u8]) -> Option<(u8, usize, usize)> {
    if input.len() < 2 {
        return None;
    }
    let opcode = input[0] & 0x0F;
    let (len, head) = match input[1] & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes([*input.get(2)?, *input.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(input.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let end = head + usize::try_from(len).ok()?;
    (input.len() >= end).then_some((opcode, head, end))
}

/// A client frame (masked with a zero key: the bench measures delivery, not masking).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The decimal number right after `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fields() {
        let mut wire = vec![0x81, 5];
        wire.extend_from_slice(b"hello");
        assert_eq!(frame_at(&wire), Some((1, 2, 7)));
        assert_eq!(frame_at(&wire[..4]), None);
        let text = br#"{"event":"Tick","payload":{"bench_n":12,"bench_t":3456},"mq":{}}"#;
        assert_eq!(number_after(text, b"\"bench_n\":"), Some(12));
        assert_eq!(number_after(text, b"\"bench_t\":"), Some(3456));
        assert_eq!(masked_frame(0xA, b"")[..2], [0x8A, 0x80]);
    }
}
