//! The publishing side: events carrying their number and publish time, sent at a steady
//! rate to the relay's PULL socket (ZeroMQ PUSH, so nothing queues behind Mongrel2) or to
//! an nchan publisher location (HTTP POST over one keep-alive connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spacing of the warm-up events (number 0) sent until every subscriber has one.
const WARM_INTERVAL: Duration = Duration::from_millis(20);
/// How long the nchan publisher waits for an answer before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP response head or body the nchan publisher reads.
const MAX_RESPONSE: usize = 64 * 1024;

/// Where events go.
pub enum Target {
    /// The relay's PULL socket, with the exchange and routing key events are published on.
    Relay {
        endpoint: String,
        exchange: String,
        routing_key: String,
    },
    /// An nchan publisher location: host:port and the request path.
    Nchan { address: String, path: String },
}

/// Flags shared between the publisher thread and the subscriber loop.
#[derive(Default)]
pub struct Shared {
    /// Set by the subscriber loop once every subscriber got a warm-up event.
    pub go: AtomicBool,
    /// Set by the publisher after the last measured event.
    pub done: AtomicBool,
    /// Nanoseconds since the epoch of the first and the last measured publish.
    pub first_ns: AtomicU64,
    pub last_ns: AtomicU64,
    /// Set by the subscriber loop to stop a publisher still warming up.
    pub abort: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("HTTP publisher: {0}")]
    Io(#[from] std::io::Error),
    #[error("the HTTP connection was closed")]
    Closed,
    #[error("nchan answered {0:?}")]
    Refused(String),
}

/// Publishes warm-up events until `shared.go`, then `total` measured events at `rate`
/// per second. Timestamps are nanoseconds since `epoch` (the subscriber loop reads the
/// same clock).
pub fn run(
    target: &Target,
    rate: f64,
    total: u64,
    epoch: Instant,
    shared: &Arc<Shared>,
) -> Result<(), PublishError> {
    let mut sink = Sink::open(target)?;
    let now_ns = || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    while !shared.go.load(Ordering::Acquire) {
        if shared.abort.load(Ordering::Acquire) {
            return Ok(());
        }
        sink.send(0, now_ns())?;
        std::thread::sleep(WARM_INTERVAL);
    }
    let start = Instant::now();
    shared.first_ns.store(now_ns(), Ordering::Release);
    for n in 1..=total {
        let due = start + Duration::from_secs_f64((n - 1) as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let ts = now_ns();
        sink.send(n, ts)?;
        shared.last_ns.store(ts, Ordering::Release);
    }
    shared.done.store(true, Ordering::Release);
    Ok(())
}

enum Sink<'a> {
    Relay {
        socket: zmq::Socket,
        exchange: &'a str,
        routing_key: &'a str,
    },
    /// One request at a time on a keep-alive connection. Not pipelined: nchan's publisher
    /// location resets a connection that sends requests ahead under load. So its publish
    /// rate is bound by the round trip (the summary's "sent" rate shows it).
    Nchan {
        stream: BufReader<TcpStream>,
        address: &'a str,
        path: &'a str,
    },
}

impl<'a> Sink<'a> {
    fn open(target: &'a Target) -> Result<Sink<'a>, PublishError> {
        Ok(match target {
            Target::Relay {
                endpoint,
                exchange,
                routing_key,
            } => {
                let socket = zmq::Context::new().socket(zmq::PUSH)?;
                socket.set_linger(1000)?;
                socket.connect(endpoint)?;
                Sink::Relay {
                    socket,
                    exchange,
                    routing_key,
                }
            }
            Target::Nchan { address, path } => Sink::Nchan {
                stream: BufReader::new(http_connect(address)?),
                address,
                path,
            },
        })
    }

    fn send(&mut self, n: u64, ts: u64) -> Result<(), PublishError> {
        let body = format!("{{\"bench_n\":{n},\"bench_t\":{ts}}}");
        match self {
            Sink::Relay {
                socket,
                exchange,
                routing_key,
            } => {
                let event = format!(
                    "{{\"exchange\":\"{exchange}\",\"routing_key\":\"{routing_key}\",\
                     \"event\":\"Tick\",\"payload\":{body}}}"
                );
                socket.send(event.as_bytes(), 0)?;
            }
            Sink::Nchan {
                stream,
                address,
                path,
            } => {
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // A server may end a keep-alive connection after so many requests (nginx:
                // keepalive_requests); then the request goes again on a new one.
                stream.get_mut().write_all(request.as_bytes())?;
                if let Err(PublishError::Closed) = read_response(stream) {
                    *stream = BufReader::new(http_connect(address)?);
                    stream.get_mut().write_all(request.as_bytes())?;
                    read_response(stream)?;
                }
            }
        }
        Ok(())
    }
}

fn http_connect(address: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(stream)
}

/// Reads one HTTP response (Content-Length bodies; nchan's publisher answers that way) and
/// fails unless it is 2xx.
fn read_response(stream: &mut BufReader<TcpStream>) -> Result<(), PublishError> {
    let mut status = String::new();
    if stream.read_line(&mut status)? == 0 {
        return Err(PublishError::Closed);
    }
    let mut length = 0usize;
    let mut head = status.len();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(PublishError::Refused("connection closed".into()));
        }
        head += line.len();
        if head > MAX_RESPONSE {
            return Err(PublishError::Refused("oversized response head".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if length > MAX_RESPONSE {
        return Err(PublishError::Refused("oversized response body".into()));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(PublishError::Refused(status.trim_end().to_owned()))
    }
}
