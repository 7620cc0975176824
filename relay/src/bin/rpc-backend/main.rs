//! A small RPC backend for the event relay's forwarded actions: a ZeroMQ ROUTER that answers
//! JSON requests. Methods: `time`, `echo`, `sum`, and `sleep` (for timeout tests).
//!
//! ```text
//! cargo run -p mongrel2-event-relay --bin rpc-backend -- --bind tcp://127.0.0.1:9100
//! ```
//!
//! # Framing
//!
//! The caller connects a DEALER and sends ONE frame, the request JSON; the ROUTER receives
//! `[identity, request]` and answers `[identity, reply]`, so the DEALER receives one frame,
//! the reply JSON. A REQ-style envelope (`[identity, "", request]`, i.e. a DEALER that sends
//! an empty delimiter first, or a REQ socket) is accepted too and answered with the same
//! envelope. Anything else (no request frame, more than one delimiter, > 8 frames) is dropped
//! and logged: there is no well-formed place to put an answer.
//!
//! # Messages
//!
//! Request: `{"id":N,"method":NAME,"params":PAYLOAD,"session":{"id":ID,"auth":NAME-or-null}}`
//! (`params` and `session` optional; `id` a number or string, echoed back verbatim).
//!
//! Reply: `{"id":N,"result":VALUE}` or `{"id":N,"error":{"code":C,"message":TEXT}}`, with
//! JSON-RPC's codes: -32700 not JSON, -32600 not a request (or too large), -32601 unknown
//! method, -32602 bad params, -32000 busy. A request whose id cannot be read is answered
//! with `"id":null`.
//!
//! | method  | params                          | result                               |
//! |---------|---------------------------------|--------------------------------------|
//! | `time`  | ignored                         | `{"unix_ms":N,"utc":"…Z"}`           |
//! | `echo`  | anything                        | the params                           |
//! | `sum`   | `{"numbers":[…]}` or `[…]`      | `{"sum":N}` (integer when exact)     |
//! | `sleep` | `{"ms":N}`, N ≤ 60000           | `{"slept_ms":N}`, answered N ms later |
//!
//! Requests are served on one thread without blocking: `sleep` answers are kept in a timer
//! queue, so thousands of concurrent requests (sleeping or not) are answered independently.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Largest request accepted and answered (bytes); bigger ones get -32600.
const MAX_REQUEST: usize = 64 * 1024;
/// Largest frame the socket takes at all; a bigger one drops the sending peer's connection
/// (ZeroMQ's own guard, so a hostile peer cannot make us buffer gigabytes).
const MAX_FRAME: i64 = 1024 * 1024;
/// Most frames in one message: identity, optional delimiter, request, with room to spare.
const MAX_FRAMES: usize = 8;
/// Most numbers `sum` adds.
const MAX_SUM_ITEMS: usize = 10_000;
/// Longest `sleep`.
const MAX_SLEEP_MS: u64 = 60_000;
/// Most `sleep` answers waiting at once; more are refused as busy.
const MAX_SLEEPING: usize = 10_000;
/// Messages handled per loop turn before timers get a look in.
const BATCH: usize = 1000;
/// How often the loop checks for Ctrl-C when idle.
const IDLE_POLL: Duration = Duration::from_millis(200);

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const BUSY: i64 = -32000;

const USAGE: &str = "usage: rpc-backend [--bind ENDPOINT]   (default tcp://127.0.0.1:9100)";

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Answer now.
    Now(Value),
    /// Answer after the delay (`sleep`).
    After(Duration, Value),
}

/// An error reply's code and message.
#[derive(Debug, Clone, PartialEq)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

fn reply(id: &Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({ "id": id, "result": result }),
        Err(e) => json!({ "id": id, "error": { "code": e.code, "message": e.message } }),
    }
}

/// Handles one request body; `now` is the wall clock for `time`.
fn handle(body: &[u8], now: SystemTime) -> Outcome {
    if body.len() > MAX_REQUEST {
        let e = RpcError::new(INVALID_REQUEST, format!("request over {MAX_REQUEST} bytes"));
        return Outcome::Now(reply(&Value::Null, Err(e)));
    }
    // serde_json limits nesting depth itself, so deep input is an error, not a crash.
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => request,
        Ok(_) => {
            let e = RpcError::new(INVALID_REQUEST, "request is not a JSON object");
            return Outcome::Now(reply(&Value::Null, Err(e)));
        }
        Err(_) => {
            let e = RpcError::new(PARSE_ERROR, "request is not JSON");
            return Outcome::Now(reply(&Value::Null, Err(e)));
        }
    };
    let id = match request.get("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id.clone(),
        _ => {
            let e = RpcError::new(INVALID_REQUEST, "id must be a number or a string");
            return Outcome::Now(reply(&Value::Null, Err(e)));
        }
    };
    let Some(Value::String(method)) = request.get("method") else {
        let e = RpcError::new(INVALID_REQUEST, "method must be a string");
        return Outcome::Now(reply(&id, Err(e)));
    };
    let params = request.get("params").unwrap_or(&Value::Null);
    let result = match method.as_str() {
        "time" => Ok(time(now)),
        "echo" => Ok(params.clone()),
        "sum" => sum(params),
        "sleep" => match sleep_ms(params) {
            Ok(ms) => {
                return Outcome::After(
                    Duration::from_millis(ms),
                    reply(&id, Ok(json!({ "slept_ms": ms }))),
                )
            }
            Err(e) => Err(e),
        },
        _ => Err(RpcError::new(
            METHOD_NOT_FOUND,
            "unknown method (time, echo, sum, sleep)",
        )),
    };
    Outcome::Now(reply(&id, result))
}

fn time(now: SystemTime) -> Value {
    // A clock before 1970 is a broken clock; report the epoch rather than fail.
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    json!({ "unix_ms": ms, "utc": utc_text(ms) })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since 1970 (proleptic Gregorian calendar).
fn utc_text(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01: count whole 400-year eras from
/// 0000-03-01, then years and days within the era, with years starting in March so that
/// the leap day falls at the end.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 719_468 days lie between 0000-03-01 and 1970-01-01; an era has 146_097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

fn sum(params: &Value) -> Result<Value, RpcError> {
    let bad = || RpcError::new(INVALID_PARAMS, "sum wants {\"numbers\":[…]} or […]");
    let numbers = match params {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("numbers") {
            Some(Value::Array(a)) => a,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    if numbers.len() > MAX_SUM_ITEMS {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!("at most {MAX_SUM_ITEMS} numbers"),
        ));
    }
    let mut exact: Option<i64> = Some(0);
    let mut float = 0.0f64;
    for n in numbers {
        let Value::Number(n) = n else {
            return Err(bad());
        };
        exact = match (exact, n.as_i64()) {
            (Some(acc), Some(i)) => acc.checked_add(i),
            _ => None,
        };
        // Every JSON number serde_json parses has an f64 value (integers may round).
        float += n.as_f64().ok_or_else(bad)?;
    }
    match exact {
        Some(total) => Ok(json!({ "sum": total })),
        None if float.is_finite() => Ok(json!({ "sum": float })),
        None => Err(RpcError::new(INVALID_PARAMS, "the sum is out of range")),
    }
}

fn sleep_ms(params: &Value) -> Result<u64, RpcError> {
    match params.get("ms").and_then(Value::as_u64) {
        Some(ms) if ms <= MAX_SLEEP_MS => Ok(ms),
        _ => Err(RpcError::new(
            INVALID_PARAMS,
            format!("sleep wants {{\"ms\":N}} with 0 <= N <= {MAX_SLEEP_MS}"),
        )),
    }
}

/// Splits a ROUTER message into (envelope to answer with, request body).
fn split_envelope(mut frames: Vec<Vec<u8>>) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    match frames.len() {
        // [identity, request]
        2 => {}
        // [identity, "", request]
        3 if frames[1].is_empty() => {}
        _ => return None,
    }
    let body = frames.pop()?;
    Some((frames, body))
}

/// A `sleep` answer waiting for its time.
struct Timer {
    at: Instant,
    order: u64,
    envelope: Vec<Vec<u8>>,
    reply: Vec<u8>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // Reversed: BinaryHeap is a max-heap and the earliest timer must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// The serving loop: a bound ROUTER plus the timer queue.
pub(crate) struct Backend {
    socket: zmq::Socket,
    timers: BinaryHeap<Timer>,
    order: u64,
}

impl Backend {
    pub(crate) fn bind(ctx: &zmq::Context, endpoint: &str) -> Result<Backend, zmq::Error> {
        let socket = ctx.socket(zmq::ROUTER)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(MAX_FRAME)?;
        socket.bind(endpoint)?;
        Ok(Backend {
            socket,
            timers: BinaryHeap::new(),
            order: 0,
        })
    }

    pub(crate) fn endpoint(&self) -> String {
        match self.socket.get_last_endpoint() {
            Ok(Ok(e)) => e,
            _ => String::new(),
        }
    }

    /// Serves until `stop` is set.
    pub(crate) fn run(&mut self, stop: &AtomicBool) -> Result<(), zmq::Error> {
        while !stop.load(Ordering::SeqCst) {
            self.fire_due();
            let wait = self
                .timers
                .peek()
                .map(|t| t.at.saturating_duration_since(Instant::now()))
                .map_or(IDLE_POLL, |d| d.min(IDLE_POLL));
            // Round up so a timer due in 0.4 ms is not polled for 0 ms in a busy loop.
            let wait_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
            match self.socket.poll(zmq::POLLIN, wait_ms) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
            for _ in 0..BATCH {
                match self.recv_frames() {
                    Ok(Some(frames)) => self.on_message(frames),
                    Ok(None) => break,
                    Err(zmq::Error::EINTR) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// One message without blocking, keeping at most [`MAX_FRAMES`] frames (the rest are
    /// read and discarded so the next message starts clean).
    fn recv_frames(&self) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        let first = match self.socket.recv_bytes(zmq::DONTWAIT) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut frames = vec![first];
        let mut too_many = false;
        while self.socket.get_rcvmore()? {
            let frame = self.socket.recv_bytes(0)?;
            if frames.len() < MAX_FRAMES {
                frames.push(frame);
            } else {
                too_many = true;
            }
        }
        if too_many {
            // Keep only the identity: split_envelope rejects it, and it is logged once.
            frames.truncate(1);
        }
        Ok(Some(frames))
    }

    fn on_message(&mut self, frames: Vec<Vec<u8>>) {
        let count = frames.len();
        let Some((envelope, body)) = split_envelope(frames) else {
            log::warn!("dropped a message of {count} frame(s): want [identity, request]");
            return;
        };
        match handle(&body, SystemTime::now()) {
            Outcome::Now(answer) => self.send(&envelope, &answer),
            Outcome::After(delay, answer) => {
                if self.timers.len() >= MAX_SLEEPING {
                    let id = answer.get("id").cloned().unwrap_or(Value::Null);
                    let busy = reply(&id, Err(RpcError::new(BUSY, "too many sleeping requests")));
                    self.send(&envelope, &busy);
                    return;
                }
                self.order += 1;
                self.timers.push(Timer {
                    at: Instant::now() + delay,
                    order: self.order,
                    envelope,
                    reply: answer.to_string().into_bytes(),
                });
            }
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|t| t.at <= now) {
            if let Some(t) = self.timers.pop() {
                self.send_bytes(&t.envelope, &t.reply);
            }
        }
    }

    fn send(&self, envelope: &[Vec<u8>], answer: &Value) {
        self.send_bytes(envelope, answer.to_string().as_bytes());
    }

    fn send_bytes(&self, envelope: &[Vec<u8>], body: &[u8]) {
        let frames: Vec<&[u8]> = envelope
            .iter()
            .map(Vec::as_slice)
            .chain(std::iter::once(body))
            .collect();
        // A ROUTER drops messages for peers that are gone; DONTWAIT also drops them when a
        // peer's queue is full rather than stalling everyone else.
        if let Err(e) = self.socket.send_multipart(frames, zmq::DONTWAIT) {
            log::warn!("reply not sent: {e}");
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<String>, String> {
    let mut bind = "tcp://127.0.0.1:9100".to_owned();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--bind" => bind = args.next().ok_or("--bind needs an endpoint")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Some(bind))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let bind = match parse_args(std::env::args().skip(1)) {
        Ok(Some(bind)) => bind,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rpc-backend: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ctx = zmq::Context::new();
    let mut backend = match Backend::bind(&ctx, &bind) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rpc-backend: cannot bind {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        log::warn!("cannot install the signal handler: {e}");
    }
    log::info!("rpc-backend serving on {}", backend.endpoint());
    match backend.run(&stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
