//! Command-line flags, each also settable from a `RELAY_…` environment variable
//! (flag > environment > default). Hand-written: a dozen flags do not justify a dependency.

use std::path::PathBuf;
use std::time::Duration;

/// Default Mongrel2 handler sender id (`send_ident`) when neither `--sender-id` nor
/// `RELAY_SENDER_ID` is given.
pub const RELAY_SENDER_ID: &str = "b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61";

/// Largest `--ping-interval` accepted (one day).
const MAX_PING_INTERVAL_SECS: u64 = 86_400;

/// Usage text.
pub const USAGE: &str = "\
event-relay: relay events from ZeroMQ, HTTP and linked relays to WebSocket and SSE
subscribers through Mongrel2, and forward configured actions to RPC backends

USAGE: event-relay [FLAGS]

Every flag may also be given as an environment variable (flag wins), e.g. RELAY_PULL.
Endpoints marked (off-able) accept `off` to disable them.

  --sender-id UUID      Mongrel2 handler send_ident   [RELAY_SENDER_ID; b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61]
  --pull ADDR           Mongrel2 send_spec (we PULL)   [RELAY_PULL; tcp://127.0.0.1:9999]
  --pub ADDR            Mongrel2 recv_spec (we PUB)    [RELAY_PUB; tcp://127.0.0.1:9998]
  --control ADDR        control REP socket (off-able)  [RELAY_CONTROL; tcp://127.0.0.1:9997]
  --inject ADDR         event injector REP (off-able)  [RELAY_INJECT; tcp://127.0.0.1:9996]
  --pull-events ADDR    event PULL socket (off-able)   [RELAY_PULL_EVENTS; tcp://127.0.0.1:9995]
  --config FILE         JSON config (exchanges, tokens, limits, actions, timing) [RELAY_CONFIG; built-in]
  --ping-interval SECS  WebSocket ping interval, 0 = off [RELAY_PING_INTERVAL; 30]
  --link-bind ADDR      XPUB re-publishing every accepted event to linked relays (off-able)
                        [RELAY_LINK_BIND; tcp://127.0.0.1:9994]
  --link ADDR           another relay's --link-bind to subscribe to, repeatable
                        [RELAY_LINK, comma-separated]
  -h, --help            this text

Secrets come from the config file or the environment only:
  RELAY_TOKENS=name:token[,name:token...]   tokens for the Authenticate action
  RELAY_PUBLISH_TOKEN=token                 bearer token for POST /events/publish
";

/// Why the flags could not be parsed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// A flag that does not exist.
    #[error("unknown flag {0} (see --help)")]
    Unknown(String),
    /// A flag given without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value that does not parse (`origin` is the flag or the env var).
    #[error("{origin}: {reason}: {value:?}")]
    Invalid {
        /// Flag or environment variable name.
        origin: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Effective options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Options {
    /// Mongrel2 handler send_ident.
    pub sender_id: String,
    /// Mongrel2 send_spec, connected with PULL.
    pub pull: String,
    /// Mongrel2 recv_spec, connected with PUB.
    pub publish: String,
    /// Transceiver control REP socket.
    pub control: Option<String>,
    /// Event injector REP socket (bound).
    pub inject: Option<String>,
    /// Event PULL socket (bound).
    pub pull_events: Option<String>,
    /// Config file.
    pub config: Option<PathBuf>,
    /// WebSocket ping interval (`None` = off).
    #[serde(rename = "ping_interval_secs", serialize_with = "as_secs")]
    pub ping_interval: Option<Duration>,
    /// Linked-relay listener.
    pub link_bind: Option<String>,
    /// Linked relays to connect to.
    pub links: Vec<String>,
}

/// Result of parsing: options, or a request for help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Run with these options.
    Run(Box<Options>),
    /// Print [`USAGE`] and exit.
    Help,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Required endpoint.
    Endpoint,
    /// Endpoint that `off` disables.
    OptionalEndpoint,
    Path,
    Secs,
    Uuid,
    /// Repeatable endpoint (env: comma-separated).
    Repeated,
}

struct Spec {
    flag: &'static str,
    env: &'static str,
    default: Option<&'static str>,
    kind: Kind,
}

// Positions in SPECS (checked by a test).
const SENDER_ID: usize = 0;
const PULL: usize = 1;
const PUB: usize = 2;
const CONTROL: usize = 3;
const INJECT: usize = 4;
const PULL_EVENTS: usize = 5;
const CONFIG: usize = 6;
const PING_INTERVAL: usize = 7;
const LINK_BIND: usize = 8;
const LINK: usize = 9;

const SPECS: [Spec; 10] = [
    Spec {
        flag: "--sender-id",
        env: "RELAY_SENDER_ID",
        default: Some(RELAY_SENDER_ID),
        kind: Kind::Uuid,
    },
    Spec {
        flag: "--pull",
        env: "RELAY_PULL",
        default: Some("tcp://127.0.0.1:9999"),
        kind: Kind::Endpoint,
    },
    Spec {
        flag: "--pub",
        env: "RELAY_PUB",
        default: Some("tcp://127.0.0.1:9998"),
        kind: Kind::Endpoint,
    },
    Spec {
        flag: "--control",
        env: "RELAY_CONTROL",
        default: Some("tcp://127.0.0.1:9997"),
        kind: Kind::OptionalEndpoint,
    },
    Spec {
        flag: "--inject",
        env: "RELAY_INJECT",
        default: Some("tcp://127.0.0.1:9996"),
        kind: Kind::OptionalEndpoint,
    },
    Spec {
        flag: "--pull-events",
        env: "RELAY_PULL_EVENTS",
        default: Some("tcp://127.0.0.1:9995"),
        kind: Kind::OptionalEndpoint,
    },
    Spec {
        flag: "--config",
        env: "RELAY_CONFIG",
        default: None,
        kind: Kind::Path,
    },
    Spec {
        flag: "--ping-interval",
        env: "RELAY_PING_INTERVAL",
        default: Some("30"),
        kind: Kind::Secs,
    },
    Spec {
        flag: "--link-bind",
        env: "RELAY_LINK_BIND",
        default: Some("tcp://127.0.0.1:9994"),
        kind: Kind::OptionalEndpoint,
    },
    Spec {
        flag: "--link",
        env: "RELAY_LINK",
        default: None,
        kind: Kind::Repeated,
    },
];

/// Parses `args` (without the program name) with `env` for the `RELAY_…` fallbacks.
pub fn parse<I, S>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, FlagError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut given: Vec<Vec<String>> = vec![Vec::new(); SPECS.len()];
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let Some(i) = SPECS.iter().position(|s| s.flag == name) else {
            return Err(FlagError::Unknown(arg));
        };
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| FlagError::MissingValue(name.clone()))?,
        };
        if matches!(SPECS[i].kind, Kind::Repeated) {
            given[i].push(value);
        } else {
            // A repeated single-valued flag: the last one wins, as in most tools.
            given[i] = vec![value];
        }
    }

    // Resolve each spec to (source name, raw values).
    let resolve = |i: usize| -> (String, Vec<String>) {
        let spec = &SPECS[i];
        if !given[i].is_empty() {
            return (spec.flag.to_owned(), given[i].clone());
        }
        if let Some(v) = env(spec.env) {
            let values = match spec.kind {
                Kind::Repeated => v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                _ => vec![v],
            };
            return (spec.env.to_owned(), values);
        }
        (
            spec.flag.to_owned(),
            spec.default.map(|d| vec![d.to_owned()]).unwrap_or_default(),
        )
    };
    let single = |i: usize| -> Result<Option<String>, FlagError> {
        let (source, values) = resolve(i);
        let Some(value) = values.into_iter().next() else {
            return Ok(None);
        };
        let invalid = |reason| FlagError::Invalid {
            origin: source.clone(),
            value: value.clone(),
            reason,
        };
        match SPECS[i].kind {
            Kind::OptionalEndpoint if value == "off" => Ok(None),
            Kind::Endpoint | Kind::OptionalEndpoint | Kind::Repeated => {
                check_endpoint(&value).map_err(invalid)?;
                Ok(Some(value))
            }
            Kind::Uuid => {
                check_sender_id(&value).map_err(invalid)?;
                Ok(Some(value))
            }
            Kind::Path if value.is_empty() => Err(invalid("empty path")),
            Kind::Path | Kind::Secs => Ok(Some(value)),
        }
    };
    let required = |i: usize| -> Result<String, FlagError> {
        // Required specs all have defaults, so `single` only returns None for "off".
        single(i)?.ok_or_else(|| FlagError::Invalid {
            origin: SPECS[i].flag.to_owned(),
            value: String::new(),
            reason: "required",
        })
    };

    let ping_interval = match single(PING_INTERVAL)? {
        None => None,
        Some(text) => {
            let (source, _) = resolve(PING_INTERVAL);
            let secs: u64 = text
                .parse()
                .ok()
                .filter(|s| *s <= MAX_PING_INTERVAL_SECS)
                .ok_or_else(|| FlagError::Invalid {
                    origin: source,
                    value: text.clone(),
                    reason: "expected whole seconds, 0..=86400",
                })?;
            (secs > 0).then(|| Duration::from_secs(secs))
        }
    };
    let (link_source, link_values) = resolve(LINK);
    for l in &link_values {
        check_endpoint(l).map_err(|reason| FlagError::Invalid {
            origin: link_source.clone(),
            value: l.clone(),
            reason,
        })?;
    }
    Ok(Parsed::Run(Box::new(Options {
        sender_id: required(SENDER_ID)?,
        pull: required(PULL)?,
        publish: required(PUB)?,
        control: single(CONTROL)?,
        inject: single(INJECT)?,
        pull_events: single(PULL_EVENTS)?,
        config: single(CONFIG)?.map(PathBuf::from),
        ping_interval,
        link_bind: single(LINK_BIND)?,
        links: link_values,
    })))
}

fn as_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.map_or(0, |d| d.as_secs()))
}

fn check_endpoint(v: &str) -> Result<(), &'static str> {
    match v.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() => Ok(()),
        _ => Err("expected a ZeroMQ address like tcp://127.0.0.1:9999"),
    }
}

/// Mongrel2 accepts only letters, digits and '-' in a reply's sender uuid.
fn check_sender_id(v: &str) -> Result<(), &'static str> {
    if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err("expected letters, digits and '-' (at most 128)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(args: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Options {
        match parse(args.iter().copied(), env).unwrap() {
            Parsed::Run(o) => *o,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn spec_positions_match_their_names() {
        let named = [
            (SENDER_ID, "--sender-id"),
            (PULL, "--pull"),
            (PUB, "--pub"),
            (CONTROL, "--control"),
            (INJECT, "--inject"),
            (PULL_EVENTS, "--pull-events"),
            (CONFIG, "--config"),
            (PING_INTERVAL, "--ping-interval"),
            (LINK_BIND, "--link-bind"),
            (LINK, "--link"),
        ];
        for (i, flag) in named {
            assert_eq!(SPECS[i].flag, flag);
            let env = format!("RELAY_{}", flag[2..].replace('-', "_").to_uppercase());
            assert_eq!(SPECS[i].env, env);
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[], &no_env);
        assert_eq!(
            o,
            Options {
                sender_id: "b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61".into(),
                pull: "tcp://127.0.0.1:9999".into(),
                publish: "tcp://127.0.0.1:9998".into(),
                control: Some("tcp://127.0.0.1:9997".into()),
                inject: Some("tcp://127.0.0.1:9996".into()),
                pull_events: Some("tcp://127.0.0.1:9995".into()),
                config: None,
                ping_interval: Some(Duration::from_secs(30)),
                link_bind: Some("tcp://127.0.0.1:9994".into()),
                links: vec![],
            }
        );
    }

    #[test]
    fn flags_both_forms_and_repeated_links() {
        let o = run(
            &[
                "--sender-id=abc-123",
                "--pull",
                "ipc:///tmp/p",
                "--pub=tcp://h:1",
                "--control",
                "off",
                "--inject=tcp://*:7",
                "--pull-events",
                "tcp://*:8",
                "--config",
                "/etc/relay.json",
                "--ping-interval=0",
                "--link-bind",
                "off",
                "--link",
                "tcp://a:1",
                "--link=tcp://b:2",
            ],
            &no_env,
        );
        assert_eq!(o.sender_id, "abc-123");
        assert_eq!(o.pull, "ipc:///tmp/p");
        assert_eq!(o.publish, "tcp://h:1");
        assert_eq!(o.control, None);
        assert_eq!(o.inject.as_deref(), Some("tcp://*:7"));
        assert_eq!(o.pull_events.as_deref(), Some("tcp://*:8"));
        assert_eq!(o.config, Some(PathBuf::from("/etc/relay.json")));
        assert_eq!(o.ping_interval, None);
        assert_eq!(o.link_bind, None);
        assert_eq!(o.links, ["tcp://a:1", "tcp://b:2"]);
    }

    #[test]
    fn env_fallbacks_and_flag_precedence() {
        let env = |k: &str| {
            Some(
                match k {
                    "RELAY_SENDER_ID" => "env-id",
                    "RELAY_PULL" => "tcp://env:1",
                    "RELAY_PUB" => "tcp://env:2",
                    "RELAY_CONTROL" => "tcp://env:3",
                    "RELAY_INJECT" => "off",
                    "RELAY_PULL_EVENTS" => "tcp://env:5",
                    "RELAY_CONFIG" => "/env.json",
                    "RELAY_PING_INTERVAL" => "5",
                    "RELAY_LINK_BIND" => "tcp://env:6",
                    "RELAY_LINK" => "tcp://x:1, tcp://y:2,",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let o = run(&[], &env);
        assert_eq!(o.sender_id, "env-id");
        assert_eq!(o.pull, "tcp://env:1");
        assert_eq!(o.publish, "tcp://env:2");
        assert_eq!(o.control.as_deref(), Some("tcp://env:3"));
        assert_eq!(o.inject, None);
        assert_eq!(o.pull_events.as_deref(), Some("tcp://env:5"));
        assert_eq!(o.config, Some(PathBuf::from("/env.json")));
        assert_eq!(o.ping_interval, Some(Duration::from_secs(5)));
        assert_eq!(o.link_bind.as_deref(), Some("tcp://env:6"));
        assert_eq!(o.links, ["tcp://x:1", "tcp://y:2"]);

        let o = run(
            &[
                "--pull",
                "tcp://flag:1",
                "--link",
                "tcp://f:1",
                "--ping-interval",
                "7",
            ],
            &env,
        );
        assert_eq!(o.pull, "tcp://flag:1");
        assert_eq!(o.links, ["tcp://f:1"], "flags replace the env list");
        assert_eq!(o.ping_interval, Some(Duration::from_secs(7)));
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse(["--help"], &no_env), Ok(Parsed::Help));
        assert_eq!(
            parse(["--pull", "tcp://a:1", "-h"], &no_env),
            Ok(Parsed::Help)
        );
        assert_eq!(
            parse(["--bogus"], &no_env),
            Err(FlagError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse(["positional"], &no_env),
            Err(FlagError::Unknown("positional".into()))
        );
        assert_eq!(
            parse(["--pull"], &no_env),
            Err(FlagError::MissingValue("--pull".into()))
        );
        for bad in [
            vec!["--pull", "nowhere"],
            vec!["--pull", "off"],
            vec!["--pub=tcp://"],
            vec!["--sender-id", "has space"],
            vec!["--sender-id="],
            vec!["--ping-interval", "-1"],
            vec!["--ping-interval", "1.5"],
            vec!["--ping-interval", "86401"],
            vec!["--link", "x"],
            vec!["--config="],
        ] {
            assert!(
                matches!(parse(bad.clone(), &no_env), Err(FlagError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let env = |k: &str| (k == "RELAY_PING_INTERVAL").then(|| "soon".to_owned());
        let err = parse(Vec::<String>::new(), &env).unwrap_err();
        assert!(err.to_string().contains("RELAY_PING_INTERVAL"), "{err}");
    }
}
