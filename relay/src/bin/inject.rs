//! Sends one event to the event relay's injector socket and prints the relay's ack.
//!
//! ```text
//! cargo run -p mongrel2-event-relay --bin inject -- --to tcp://127.0.0.1:9996 --exchange calls \
//!     --routing-key queue.sales --event CallOffered caller=555-1234 agent=7
//! {"delivered_to":2,"ok":true,"seq":14}
//! ```
//!
//! Payload fields are `key=value` pairs, and values stay strings (`agent=7` sends `"7"`):
//! ids and phone numbers such as `007` or `555-1234` must arrive exactly as typed. For
//! another JSON type write `key:=JSON`, e.g. `count:=3`, `vip:=true`, `tags:='["a","b"]'`.
//!
//! Exit status: 0 when the relay accepted the event, 1 when it refused it (`"ok":false`;
//! the ack is printed all the same), 2 for bad arguments, 3 when no ack came within the
//! timeout (default 5 s) or ZeroMQ failed. It never waits longer than the timeout: the REQ
//! socket has linger 0 and both send and receive are bounded.

use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value};

/// Where the relay's injector listens by default (the relay's `--inject` default).
const DEFAULT_TO: &str = "tcp://127.0.0.1:9996";
/// How long to wait for the ack by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit status for a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit status when the relay refused the event.
const EXIT_REFUSED: u8 = 1;
/// Exit status when no ack arrived in time (or ZeroMQ failed).
const EXIT_NO_ACK: u8 = 3;

const USAGE: &str = "\
inject: send one event to the event relay's injector and print its ack

USAGE: inject [--to ADDR] --exchange NAME [--routing-key KEY] --event NAME
              [--timeout SECS] [key=value | key:=JSON ...]

  --to ADDR          the relay's injector REP socket [RELAY_INJECT; tcp://127.0.0.1:9996]
  --exchange NAME    exchange to publish on
  --routing-key KEY  routing key (default: empty)
  --event NAME       event name clients receive
  --timeout SECS     how long to wait for the ack (default 5)
  key=value          payload field with a string value (values are never converted)
  key:=JSON          payload field with any JSON value (number, bool, object, ...)

Exit status: 0 accepted, 1 refused by the relay, 2 bad arguments, 3 no ack in time.
";

/// What to send, parsed from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The relay's injector endpoint.
    pub to: String,
    /// How long to wait for the ack.
    pub timeout: Duration,
    /// The event-input JSON to send.
    pub request: Value,
}

/// Why the arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `--help` was asked for.
    #[error("help requested")]
    Help,
    /// A flag that does not exist, or a bare word that is not `key=value`.
    #[error("unexpected argument {0:?} (see --help)")]
    Unexpected(String),
    /// A flag without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A required flag was not given.
    #[error("{0} is required")]
    Required(&'static str),
    /// A value that does not parse.
    #[error("{0}")]
    Invalid(String),
}

/// Parses the arguments (without the program name); `env` supplies `RELAY_INJECT`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Injection, UsageError> {
    let mut to = env("RELAY_INJECT").unwrap_or_else(|| DEFAULT_TO.to_owned());
    let (mut exchange, mut routing_key, mut event) = (None, String::new(), None);
    let mut timeout = DEFAULT_TIMEOUT;
    let mut payload = Map::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(UsageError::Help);
        }
        if arg.starts_with("--") {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| UsageError::MissingValue(name.clone()))?,
            };
            match name.as_str() {
                "--to" => to = value,
                "--exchange" => exchange = Some(value),
                "--routing-key" => routing_key = value,
                "--event" => event = Some(value),
                "--timeout" => {
                    timeout = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| {
                            UsageError::Invalid(format!(
                                "--timeout wants seconds in (0, 3600], not {value:?}"
                            ))
                        })?
                }
                _ => return Err(UsageError::Unexpected(arg)),
            }
            continue;
        }
        let (key, value) = field(&arg)?;
        payload.insert(key, value);
    }
    let exchange = exchange.ok_or(UsageError::Required("--exchange"))?;
    let event = event.ok_or(UsageError::Required("--event"))?;
    Ok(Injection {
        to,
        timeout,
        request: serde_json::json!({
            "exchange": exchange,
            "routing_key": routing_key,
            "event": event,
            "payload": payload,
        }),
    })
}

/// One payload field: `key:=JSON` or `key=string`.
fn field(arg: &str) -> Result<(String, Value), UsageError> {
    // `:=` is checked first: in `a:=1` the first `=` belongs to it.
    if let Some((key, json)) = arg.split_once(":=") {
        if !key.is_empty() && !key.contains('=') {
            let value = serde_json::from_str(json).map_err(|e| {
                UsageError::Invalid(format!("{arg:?}: the value after := is not JSON ({e})"))
            })?;
            return Ok((key.to_owned(), value));
        }
    }
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => {
            Ok((key.to_owned(), Value::String(value.to_owned())))
        }
        _ => Err(UsageError::Unexpected(arg.to_owned())),
    }
}

/// Why no ack came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing within the timeout.
    #[error("no answer from {to} within {timeout:?}")]
    Timeout {
        /// The endpoint.
        to: String,
        /// The timeout.
        timeout: Duration,
    },
    /// ZeroMQ refused (bad endpoint, ...).
    #[error("{0}")]
    Zmq(#[from] zmq::Error),
}

/// Sends the request and waits for the ack, at most `injection.timeout` in all.
pub fn send(injection: &Injection) -> Result<Vec<u8>, SendError> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REQ)?;
    // Nothing may keep the process alive once we give up.
    socket.set_linger(0)?;
    let millis = i32::try_from(injection.timeout.as_millis()).unwrap_or(i32::MAX);
    socket.set_sndtimeo(millis)?;
    socket.connect(&injection.to)?;
    let timeout = || SendError::Timeout {
        to: injection.to.clone(),
        timeout: injection.timeout,
    };
    match socket.send(injection.request.to_string().as_bytes(), 0) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Err(timeout()),
        Err(e) => return Err(e.into()),
    }
    if socket.poll(zmq::POLLIN, i64::from(millis))? == 0 {
        return Err(timeout());
    }
    Ok(socket.recv_bytes(zmq::DONTWAIT)?)
}

/// The whole program: parses `args`, sends, prints the ack to `out` and problems to `err`;
/// returns the exit status.
pub fn run(
    args: impl IntoIterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let injection = match parse(args, env) {
        Ok(i) => i,
        Err(UsageError::Help) => {
            let _ = write!(out, "{USAGE}");
            return 0;
        }
        Err(e) => {
            let _ = writeln!(err, "inject: {e}");
            return EXIT_USAGE;
        }
    };
    let ack = match send(&injection) {
        Ok(ack) => ack,
        Err(e) => {
            let _ = writeln!(err, "inject: {e}");
            return EXIT_NO_ACK;
        }
    };
    let _ = writeln!(out, "{}", String::from_utf8_lossy(&ack));
    let accepted = serde_json::from_slice::<Value>(&ack)
        .ok()
        .and_then(|v| v.get("ok").and_then(Value::as_bool))
        == Some(true);
    if accepted {
        0
    } else {
        EXIT_REFUSED
    }
}

fn main() -> std::process::ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let code = run(
        std::env::args().skip(1),
        &env,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn key_values_stay_strings_and_colon_equals_is_json() {
        let i = parse(
            args(&[
                "--exchange",
                "calls",
                "--routing-key=queue.sales",
                "--event",
                "CallOffered",
                "caller=555-1234",
                "agent=007",
                "n:=7",
                "vip:=true",
                "eq=a=b",
                "url=x:=y",
            ]),
            &no_env,
        )
        .unwrap();
        assert_eq!(i.to, DEFAULT_TO);
        assert_eq!(i.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            i.request,
            json!({"exchange":"calls","routing_key":"queue.sales","event":"CallOffered",
                   "payload":{"caller":"555-1234","agent":"007","n":7,"vip":true,"eq":"a=b","url":"x:=y"}})
        );
    }

    #[test]
    fn env_flags_and_errors() {
        let env = |n: &str| (n == "RELAY_INJECT").then(|| "tcp://env:1".to_owned());
        let i = parse(args(&["--exchange", "x", "--event", "E"]), &env).unwrap();
        assert_eq!(i.to, "tcp://env:1");
        assert_eq!(i.request["routing_key"], "");
        let i = parse(
            args(&[
                "--to",
                "tcp://h:2",
                "--exchange",
                "x",
                "--event",
                "E",
                "--timeout",
                "0.5",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(
            (i.to.as_str(), i.timeout),
            ("tcp://h:2", Duration::from_millis(500))
        );
        for (bad, want) in [
            (vec!["--event", "E"], UsageError::Required("--exchange")),
            (vec!["--exchange", "x"], UsageError::Required("--event")),
            (
                vec!["--exchange"],
                UsageError::MissingValue("--exchange".into()),
            ),
            (vec!["--nope", "1"], UsageError::Unexpected("--nope".into())),
            (vec!["bare"], UsageError::Unexpected("bare".into())),
            (vec!["=v"], UsageError::Unexpected("=v".into())),
        ] {
            assert_eq!(parse(args(&bad), &no_env).unwrap_err(), want, "{bad:?}");
        }
        assert!(matches!(
            parse(args(&["--exchange", "x", "--event", "E", "n:={"]), &no_env),
            Err(UsageError::Invalid(_))
        ));
        assert!(matches!(
            parse(
                args(&["--exchange", "x", "--event", "E", "--timeout", "0"]),
                &no_env
            ),
            Err(UsageError::Invalid(_))
        ));
        assert_eq!(parse(args(&["-h"]), &no_env), Err(UsageError::Help));
    }
}
