//! Command-line flags (clap), each also settable from a `RELAY_…` environment variable
//! (flag > environment > default), turned into the effective [`Options`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Default Mongrel2 handler sender id (`send_ident`) when neither `--sender-id` nor
/// `RELAY_SENDER_ID` is given.
pub const RELAY_SENDER_ID: &str = "b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61";

/// Largest `--ping-interval` accepted (one day).
const MAX_PING_INTERVAL_SECS: u64 = 86_400;

const SECRETS: &str = "\
Endpoints marked (off-able) accept `off` to disable them.

Secrets come from the config file or the environment (the link secret also from
--link-secret-file), never from a flag's value:
  RELAY_TOKENS=name:token[,name:token...]   tokens for the Authenticate action
  RELAY_PUBLISH_TOKEN=token                 bearer token for POST /events/publish
  RELAY_STATUS_TOKEN=token                  bearer token for GET /events/status and /metrics
  RELAY_LINK_SECRET=secret                  shared secret of linked relays (>= 32 bytes)";

/// The command line as given.
#[derive(Debug, Parser)]
#[command(
    name = "event-relay",
    version,
    about = "Relay events from ZeroMQ, HTTP and linked relays to WebSocket and SSE subscribers \
             through Mongrel2, and forward configured actions to RPC backends",
    after_help = SECRETS
)]
pub struct Flags {
    /// Mongrel2 handler send_ident.
    #[arg(long, env = "RELAY_SENDER_ID", value_name = "UUID", default_value = RELAY_SENDER_ID, value_parser = sender_id)]
    sender_id: String,
    /// Mongrel2 send_spec (we PULL).
    #[arg(long, env = "RELAY_PULL", value_name = "ADDR", default_value = "tcp://127.0.0.1:9999", value_parser = endpoint)]
    pull: String,
    /// Mongrel2 recv_spec (we PUB).
    #[arg(long = "pub", env = "RELAY_PUB", value_name = "ADDR", default_value = "tcp://127.0.0.1:9998", value_parser = endpoint)]
    publish: String,
    /// Control REP socket (off-able).
    #[arg(long, env = "RELAY_CONTROL", value_name = "ADDR", default_value = "tcp://127.0.0.1:9997", value_parser = endpoint_or_off)]
    control: String,
    /// Event injector REP socket (off-able).
    #[arg(long, env = "RELAY_INJECT", value_name = "ADDR", default_value = "tcp://127.0.0.1:9996", value_parser = endpoint_or_off)]
    inject: String,
    /// Event PULL socket (off-able).
    #[arg(long, env = "RELAY_PULL_EVENTS", value_name = "ADDR", default_value = "tcp://127.0.0.1:9995", value_parser = endpoint_or_off)]
    pull_events: String,
    /// JSON config (exchanges, tokens, limits, actions, timing); built-in when absent.
    #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// WebSocket ping interval in seconds, 0 = off.
    #[arg(long, env = "RELAY_PING_INTERVAL", value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PING_INTERVAL_SECS))]
    ping_interval: u64,
    /// XPUB re-publishing every accepted event to linked relays (off-able).
    #[arg(long, env = "RELAY_LINK_BIND", value_name = "ADDR", default_value = "tcp://127.0.0.1:9994", value_parser = endpoint_or_off)]
    link_bind: String,
    /// The relay's name, shown by the live page (Welcome's `relay`); the sender id when absent.
    #[arg(long, env = "RELAY_NAME", value_name = "NAME", value_parser = name)]
    name: Option<String>,
    /// File holding the linked relays' shared secret (at least 32 bytes; a trailing line
    /// break is ignored). Wins over RELAY_LINK_SECRET and the config's link_secret.
    #[arg(long, env = "RELAY_LINK_SECRET_FILE", value_name = "FILE")]
    link_secret_file: Option<PathBuf>,
    /// Another relay's --link-bind to subscribe to; repeatable (env: comma-separated).
    #[arg(long = "link", env = "RELAY_LINK", value_name = "ADDR", value_delimiter = ',', value_parser = link)]
    links: Vec<String>,
    /// RabbitMQ (AMQP 0-9-1) as the event backbone, e.g. amqp://user:pass@host:5672/%2f
    /// (stream retention: the config's `stream`); without it events stay in this relay
    /// (and its links).
    #[arg(long, env = "RELAY_AMQP", value_name = "URL", value_parser = amqp_url)]
    amqp: Option<String>,
    /// A Mongrel2 control port whose open connections `/events/status` shows; repeatable
    /// (env: comma-separated).
    #[arg(long = "mongrel2-control", env = "RELAY_MONGREL2_CONTROL", value_name = "ADDR", value_delimiter = ',', value_parser = link)]
    mongrel2_control: Vec<String>,
    /// Makes this relay a member of a group of relays on one Mongrel2 route, reached by the
    /// others at this address (see --group-peer; off by default).
    #[arg(long, env = "RELAY_GROUP_BIND", value_name = "ADDR", value_parser = endpoint_or_off)]
    group_bind: Option<String>,
    /// A member of the group (its --group-bind); repeatable (env: comma-separated). The
    /// relay's own address may be listed, so every member can be given the same list.
    #[arg(long = "group-peer", env = "RELAY_GROUP_PEER", value_name = "ADDR", value_delimiter = ',', value_parser = link)]
    group_peers: Vec<String>,
    /// One more Mongrel2 in front of the relay (its handler's send_ident, send_spec,
    /// recv_spec), so one relay serves the clients of several; repeatable (env:
    /// ';'-separated).
    #[arg(long = "mongrel2", env = "RELAY_MONGREL2", value_name = "SENDER_ID,PULL,PUB", value_delimiter = ';', value_parser = mongrel2)]
    mongrel2: Vec<Mongrel2>,
    /// How Mongrel2's sockets are spoken: by the relay's own thread (direct), or through
    /// libzmq's sockets and I/O thread.
    #[arg(long, env = "RELAY_TRANSPORT", value_enum, default_value_t = Transport::Direct)]
    transport: Transport,
}

/// `--transport`: the library's [`mongrel2_transceiver::Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The loop's own thread speaks ZMTP to Mongrel2's tcp:// and ipc:// endpoints.
    Direct,
    /// libzmq's PULL and XPUB.
    Libzmq,
}

impl From<Transport> for mongrel2_transceiver::Transport {
    fn from(transport: Transport) -> Self {
        match transport {
            Transport::Direct => mongrel2_transceiver::Transport::Direct,
            Transport::Libzmq => mongrel2_transceiver::Transport::Libzmq,
        }
    }
}

/// A Mongrel2 server besides the one given by `--sender-id`, `--pull` and `--pub`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mongrel2 {
    /// Its handler's send_ident (the sender of its requests).
    pub sender_id: String,
    /// Its send_spec, connected with PULL.
    pub pull: String,
    /// Its recv_spec, connected with PUB.
    pub publish: String,
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
    /// File with the link secret.
    pub link_secret_file: Option<PathBuf>,
    /// Mongrel2 control ports asked for their open connections.
    pub mongrel2_control: Vec<String>,
    /// Further Mongrel2 servers, each with its own connection.
    pub mongrel2: Vec<Mongrel2>,
    /// The relay's name in `Welcome`.
    pub name: String,
    /// RabbitMQ URL (left out of the serialised options: it may hold a password).
    #[serde(skip)]
    pub amqp: Option<String>,
    /// Group-of-relays listener (`None`: not in a group).
    pub group_bind: Option<String>,
    /// Group members (possibly this relay's own address among them).
    pub group_peers: Vec<String>,
    /// How Mongrel2's sockets are spoken.
    pub transport: Transport,
}

impl From<Flags> for Options {
    fn from(flags: Flags) -> Options {
        let off = |value: String| (value != "off").then_some(value);
        Options {
            name: flags.name.unwrap_or_else(|| flags.sender_id.clone()),
            sender_id: flags.sender_id,
            pull: flags.pull,
            publish: flags.publish,
            control: off(flags.control),
            inject: off(flags.inject),
            pull_events: off(flags.pull_events),
            config: flags.config,
            ping_interval: (flags.ping_interval > 0)
                .then(|| Duration::from_secs(flags.ping_interval)),
            link_bind: off(flags.link_bind),
            // A trailing comma in RELAY_LINK leaves an empty item.
            links: flags.links.into_iter().filter(|l| !l.is_empty()).collect(),
            amqp: flags.amqp,
            link_secret_file: flags.link_secret_file,
            mongrel2_control: flags
                .mongrel2_control
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect(),
            group_bind: flags.group_bind.and_then(off),
            group_peers: flags
                .group_peers
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect(),
            mongrel2: flags.mongrel2,
            transport: flags.transport,
        }
    }
}

/// An AMQP URL: `amqp://` and a host (what lapin parses further is checked on connect).
fn amqp_url(value: &str) -> Result<String, String> {
    match value.strip_prefix("amqp://") {
        Some(rest) if !rest.is_empty() && value.len() <= 1024 => Ok(value.to_owned()),
        _ => Err("expected amqp://[user:pass@]host[:port][/vhost]".to_owned()),
    }
}

fn as_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.map_or(0, |d| d.as_secs()))
}

fn endpoint(v: &str) -> Result<String, &'static str> {
    match v.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() => Ok(v.to_owned()),
        _ => Err("expected a ZeroMQ address like tcp://127.0.0.1:9999"),
    }
}

fn endpoint_or_off(v: &str) -> Result<String, &'static str> {
    if v == "off" {
        Ok(v.to_owned())
    } else {
        endpoint(v)
    }
}

/// An item of `--link` or of the comma-separated `RELAY_LINK` (spaces around it dropped).
fn link(v: &str) -> Result<String, &'static str> {
    match v.trim() {
        "" => Ok(String::new()),
        v => endpoint(v),
    }
}

/// `SENDER_ID,PULL,PUB` of `--mongrel2`.
fn mongrel2(v: &str) -> Result<Mongrel2, String> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let [sender, pull, publish] = parts[..] else {
        return Err("expected SENDER_ID,PULL,PUB".into());
    };
    Ok(Mongrel2 {
        sender_id: sender_id(sender)?,
        pull: endpoint(pull)?,
        publish: endpoint(publish)?,
    })
}

/// A name for people to read: printable, one line, at most 128 bytes.
fn name(v: &str) -> Result<String, &'static str> {
    if !v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control) {
        Ok(v.to_owned())
    } else {
        Err("expected 1 to 128 bytes of printable text")
    }
}

/// Mongrel2 accepts only letters, digits and '-' in a reply's sender uuid.
fn sender_id(v: &str) -> Result<String, &'static str> {
    if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(v.to_owned())
    } else {
        Err("expected letters, digits and '-' (at most 128)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard};

    use clap::error::ErrorKind;

    use super::*;

    /// These tests set and read the process's `RELAY_…` variables: one at a time.
    static ENV: Mutex<()> = Mutex::new(());

    fn env_lock() -> MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Flags::try_parse_from(std::iter::once("event-relay").chain(args.iter().copied()))
            .map(Options::from)
    }

    #[test]
    fn clap_accepts_the_definition() {
        use clap::CommandFactory;
        Flags::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let _env = env_lock();
        assert_eq!(
            parse(&[]).unwrap(),
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
                link_secret_file: None,
                mongrel2_control: vec![],
                mongrel2: vec![],
                name: "b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61".into(),
                amqp: None,
                group_bind: None,
                group_peers: vec![],
                transport: Transport::Direct,
            }
        );
    }

    #[test]
    fn flags_both_forms_and_repeated_links() {
        let _env = env_lock();
        let o = parse(&[
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
            "--name",
            "relay one",
            "--link-secret-file",
            "/etc/link.key",
            "--group-bind",
            "tcp://127.0.0.1:7000",
            "--group-peer",
            "tcp://127.0.0.1:7000",
            "--group-peer=tcp://127.0.0.1:7001",
            "--mongrel2",
            "m2-b,tcp://h:3,tcp://h:4",
            "--mongrel2=m2-c, ipc:///tmp/c-pull, ipc:///tmp/c-pub",
        ])
        .unwrap();
        assert_eq!(o.group_bind.as_deref(), Some("tcp://127.0.0.1:7000"));
        assert_eq!(
            o.group_peers,
            ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]
        );
        assert_eq!(
            o.mongrel2,
            [
                Mongrel2 {
                    sender_id: "m2-b".into(),
                    pull: "tcp://h:3".into(),
                    publish: "tcp://h:4".into(),
                },
                Mongrel2 {
                    sender_id: "m2-c".into(),
                    pull: "ipc:///tmp/c-pull".into(),
                    publish: "ipc:///tmp/c-pub".into(),
                },
            ]
        );
        assert_eq!(o.name, "relay one");
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
        assert_eq!(o.link_secret_file, Some(PathBuf::from("/etc/link.key")));
    }

    #[test]
    fn env_fallbacks_and_flag_precedence() {
        let _env = env_lock();
        let vars = [
            ("RELAY_SENDER_ID", "env-id"),
            ("RELAY_PULL", "tcp://env:1"),
            ("RELAY_PUB", "tcp://env:2"),
            ("RELAY_CONTROL", "tcp://env:3"),
            ("RELAY_INJECT", "off"),
            ("RELAY_PULL_EVENTS", "tcp://env:5"),
            ("RELAY_CONFIG", "/env.json"),
            ("RELAY_PING_INTERVAL", "5"),
            ("RELAY_LINK_BIND", "tcp://env:6"),
            ("RELAY_LINK", "tcp://x:1, tcp://y:2,"),
            ("RELAY_GROUP_BIND", "tcp://g:1"),
            ("RELAY_GROUP_PEER", "tcp://g:1,tcp://g:2"),
            ("RELAY_TRANSPORT", "libzmq"),
        ];
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        let from_env = parse(&[]);
        let with_flags = parse(&[
            "--pull",
            "tcp://flag:1",
            "--link",
            "tcp://f:1",
            "--ping-interval",
            "7",
            "--transport",
            "direct",
        ]);
        std::env::set_var("RELAY_PING_INTERVAL", "soon");
        let bad_env = parse(&[]);
        for (name, _) in vars {
            std::env::remove_var(name);
        }

        let o = from_env.unwrap();
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
        assert_eq!(o.group_bind.as_deref(), Some("tcp://g:1"));
        assert_eq!(o.group_peers, ["tcp://g:1", "tcp://g:2"]);
        assert_eq!(o.transport, Transport::Libzmq);

        let o = with_flags.unwrap();
        assert_eq!(o.transport, Transport::Direct, "the flag wins over the env");
        assert_eq!(o.pull, "tcp://flag:1");
        assert_eq!(o.links, ["tcp://f:1"], "flags replace the env list");
        assert_eq!(o.ping_interval, Some(Duration::from_secs(7)));

        let err = bad_env.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{err}");
    }

    #[test]
    fn help_and_errors() {
        let _env = env_lock();
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        let help = parse(&["--pull", "tcp://a:1", "-h"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        let help = help.to_string();
        for documented in [
            "--link-bind",
            "RELAY_PULL_EVENTS",
            "RELAY_TOKENS",
            "RELAY_LINK_SECRET",
            "RELAY_STATUS_TOKEN",
            "--link-secret-file",
            "[default: 30]",
        ] {
            assert!(help.contains(documented), "{documented}: {help}");
        }
        for (args, kind) in [
            (&["--bogus"][..], ErrorKind::UnknownArgument),
            (&["positional"], ErrorKind::UnknownArgument),
            (&["--pull"], ErrorKind::InvalidValue),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        for bad in [
            &["--pull", "nowhere"][..],
            &["--pull", "off"],
            &["--pub=tcp://"],
            &["--sender-id", "has space"],
            &["--sender-id="],
            &["--ping-interval", "-1"],
            &["--ping-interval", "1.5"],
            &["--ping-interval", "86401"],
            &["--link", "x"],
            &["--group-peer", "x"],
            &["--group-bind", "nowhere"],
            &["--config="],
            &["--name="],
            &["--mongrel2", "m2-b,tcp://h:3"],
            &["--mongrel2", "bad id,tcp://h:3,tcp://h:4"],
            &["--mongrel2", "m2-b,tcp://h:3,nowhere"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn amqp_url_is_checked_and_kept_out_of_the_serialised_options() {
        let _env = env_lock();
        let o = parse(&["--amqp", "amqp://user:pa55word@rabbit:5672/%2f"]).unwrap();
        assert_eq!(
            o.amqp.as_deref(),
            Some("amqp://user:pa55word@rabbit:5672/%2f")
        );
        let shown = serde_json::to_string(&o).unwrap();
        assert!(!shown.contains("pa55word"), "{shown}");
        for bad in ["http://rabbit", "amqp://", "rabbit:5672"] {
            assert_eq!(parse(&["--amqp", bad]).unwrap_err().exit_code(), 2, "{bad}");
        }
    }
}
