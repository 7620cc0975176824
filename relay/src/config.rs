//! Relay configuration: exchanges and who may subscribe, tokens, limits, RPC actions.
//!
//! Read from an optional JSON file, then secrets from the environment. No secret is built
//! in: without a configured token, nobody can authenticate and HTTP publish answers 401.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::protocol::{ErrorName, DEFAULT_MAX_HOPS, MAX_ROUTING_KEY};
use super::subscriptions::Pattern;

use secrets::{bearer_matches, constant_time_eq};
pub use secrets::{LinkSecret, MIN_LINK_SECRET};

/// Names of the actions the relay implements itself; config `actions` may not shadow them.
pub const BUILT_IN_ACTIONS: [&str; 6] = [
    "Subscribe",
    "Unsubscribe",
    "ListSubscriptions",
    "Ping",
    "Authenticate",
    "Resume",
];

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid JSON of the expected shape.
    #[error("invalid config JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `RELAY_TOKENS` is not `name:token[,name:token...]`.
    #[error("RELAY_TOKENS: {0}")]
    EnvTokens(String),
    /// The config is well-formed but inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Who may subscribe to an exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRule {
    /// Anyone may subscribe (no `Authenticate` needed).
    #[serde(default)]
    pub public: bool,
    /// Token names that may subscribe (ignored when `public`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// If not empty, only routing keys (or wildcard prefixes) starting with one of these may
    /// be subscribed, by anyone.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Routing keys or `prefix*` patterns a page subscribes to on its first visit, announced
    /// in every `Welcome` as `public` (only on `public` exchanges; empty: none announced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_routing_keys: Vec<String>,
}

impl ExchangeRule {
    /// May a session with identity `auth` (token name) subscribe to `pattern`?
    pub fn check(&self, pattern: &Pattern, auth: Option<&str>) -> Result<(), ErrorName> {
        if !self.public {
            let name = auth.ok_or(ErrorName::AuthRequired)?;
            if !self.tokens.iter().any(|t| t == name) {
                return Err(ErrorName::SubscriptionDenied);
            }
        }
        // A wildcard's literal part must itself lie inside an allowed prefix, so `*` (all
        // keys) is refused when prefixes restrict the exchange.
        if !self.prefixes.is_empty()
            && !self
                .prefixes
                .iter()
                .any(|p| pattern.literal().starts_with(p.as_str()))
        {
            return Err(ErrorName::SubscriptionDenied);
        }
        Ok(())
    }
}

/// Resource limits. Every one bounds something a peer controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Subscriptions one session may hold.
    pub subscriptions_per_session: usize,
    /// Largest client message or published event (bytes); bigger ones are `InvalidPayload`.
    pub message_size: usize,
    /// Events kept per (exchange, routing key) for `Resume`.
    pub history_per_key: usize,
    /// (exchange, routing key) pairs with history; the least recently published is
    /// forgotten first (its seq restarts at 1).
    pub history_keys: usize,
    /// Bytes of history kept in total (same eviction as `history_keys`).
    pub history_bytes: usize,
    /// Frames queued for one session before the oldest events are dropped (and `Lagged`).
    pub pending_frames: usize,
    /// Bytes queued for one session before the oldest events are dropped (and `Lagged`).
    pub pending_bytes: usize,
    /// Most bytes sent to one session per flush (one Mongrel2 message); the rest waits.
    pub flush_bytes: usize,
    /// Most links an event from a linked relay may have crossed; more is refused (and an
    /// event that has crossed this many is not forwarded again).
    pub max_hops: u32,
    /// RPC calls one session may have waiting for their backends at once (see also
    /// [`Limits::rpc_share`]).
    pub rpc_calls_per_session: usize,
    /// RPC calls all sessions together may have waiting for their backends.
    pub rpc_calls_total: usize,
    /// Wrong `Authenticate` tokens one session may present; after that it may not try
    /// again (`TooManyAttempts`).
    pub auth_failures_per_session: usize,
    /// Shortest token (and publish and status token) accepted by config validation
    /// (bytes), so no guessable secret is configured by mistake.
    pub min_token_length: usize,
    /// Bytes one linked-relay subscriber (or our own subscription to a peer) may have queued
    /// before ZeroMQ drops for it. ZeroMQ bounds queues in messages, so the link sockets get
    /// `link_queue_bytes / (message_size + envelope)` messages (at least 16): a subscriber
    /// that never reads costs at most about this much, whatever the events' size.
    pub link_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            subscriptions_per_session: 100,
            message_size: 64 * 1024,
            history_per_key: 100,
            history_keys: 10_000,
            history_bytes: 64 * 1024 * 1024,
            pending_frames: 4096,
            pending_bytes: 4 * 1024 * 1024,
            flush_bytes: 256 * 1024,
            max_hops: DEFAULT_MAX_HOPS,
            rpc_calls_per_session: 256,
            rpc_calls_total: 65_536,
            auth_failures_per_session: 5,
            min_token_length: 8,
            link_queue_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// RPC calls one session may have in flight while `open_sessions` sessions are open:
    /// `rpc_calls_per_session`, but never more than an equal share of `rpc_calls_total`
    /// (at least one). With a fixed per-session limit alone, `rpc_calls_total /
    /// rpc_calls_per_session` sessions could take the whole budget and refuse everyone else
    /// (issue 18). Calls a session took before others opened are not cancelled, but it
    /// gets no more until it is under its share again; calls end within `rpc_timeout_ms`.
    pub fn rpc_share(&self, open_sessions: usize) -> usize {
        let equal = self.rpc_calls_total / open_sessions.max(1);
        self.rpc_calls_per_session.min(equal.max(1))
    }

    /// Messages a link socket may queue: `link_queue_bytes` over the largest link message
    /// (an event of `message_size` plus its origin envelope and signature), at least
    /// [`MIN_LINK_QUEUE`] so small bursts still pass.
    pub fn link_queue_messages(&self) -> i32 {
        let largest = self.message_size.saturating_add(LINK_ENVELOPE);
        let n = (self.link_queue_bytes / largest).max(MIN_LINK_QUEUE);
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("subscriptions_per_session", self.subscriptions_per_session),
            ("message_size", self.message_size),
            ("history_keys", self.history_keys),
            ("pending_frames", self.pending_frames),
            ("flush_bytes", self.flush_bytes),
            ("rpc_calls_per_session", self.rpc_calls_per_session),
            ("rpc_calls_total", self.rpc_calls_total),
            ("auth_failures_per_session", self.auth_failures_per_session),
            ("link_queue_bytes", self.link_queue_bytes),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("limits.{name} must be > 0")));
        }
        // An outgoing event carries the input's event name and payload plus a small envelope;
        // the pending bound must hold at least one of the largest.
        if self.pending_bytes < self.message_size.saturating_add(1024) {
            return Err(ConfigError::Invalid(
                "limits.pending_bytes must be at least limits.message_size + 1024".into(),
            ));
        }
        if self.max_hops > MAX_HOPS_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "limits.max_hops must be at most {MAX_HOPS_LIMIT}"
            )));
        }
        Ok(())
    }
}

/// Fewest messages a link socket queues, whatever `limits.link_queue_bytes` says.
pub const MIN_LINK_QUEUE: usize = 16;
/// What a link message adds to an event's size at most: the origin object, the topic and
/// signature frames, ZeroMQ framing.
const LINK_ENVELOPE: usize = 1024;
/// Highest `limits.max_hops` accepted.
const MAX_HOPS_LIMIT: u32 = 255;
/// Longest interval accepted in `timing` (one day).
const MAX_TIMING_MS: u64 = 86_400_000;

/// Timers, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// How long an RPC call waits for its backend's answer before the client gets
    /// `BackendTimeout` (a later answer is dropped).
    pub rpc_timeout_ms: u64,
    /// Interval of the comment lines that keep idle SSE streams (and proxies) alive.
    pub sse_heartbeat_ms: u64,
    /// Interval of the hello this relay publishes to linked relays; a link that has not
    /// heard its peer's hello for three of the peer's intervals counts as stale.
    pub link_heartbeat_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rpc_timeout_ms: 5_000,
            sse_heartbeat_ms: 15_000,
            link_heartbeat_ms: 1_000,
        }
    }
}

impl Timing {
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, ms) in [
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("sse_heartbeat_ms", self.sse_heartbeat_ms),
            ("link_heartbeat_ms", self.link_heartbeat_ms),
        ] {
            if ms == 0 || ms > MAX_TIMING_MS {
                return Err(ConfigError::Invalid(format!(
                    "timing.{name} must be 1..={MAX_TIMING_MS}"
                )));
            }
        }
        Ok(())
    }

    /// `rpc_timeout_ms` as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    /// `sse_heartbeat_ms` as a duration.
    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_millis(self.sse_heartbeat_ms)
    }

    /// `link_heartbeat_ms` as a duration.
    pub fn link_heartbeat(&self) -> Duration {
        Duration::from_millis(self.link_heartbeat_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    exchanges: Option<BTreeMap<String, ExchangeRule>>,
    #[serde(default)]
    tokens: BTreeMap<String, String>,
    publish_token: Option<String>,
    status_token: Option<String>,
    link_secret: Option<String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    actions: BTreeMap<String, String>,
    #[serde(default)]
    timing: Timing,
    #[serde(default)]
    stream: Stream,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Exchanges by name (names shared as `Arc<str>` with indexes and history).
    pub exchanges: BTreeMap<Arc<str>, ExchangeRule>,
    /// Token name -> secret token, for `Authenticate`.
    pub tokens: BTreeMap<String, String>,
    /// Bearer token for `POST /events/publish` (`None`: HTTP publish is refused).
    pub publish_token: Option<String>,
    /// Bearer token for `GET /events/status` and `/events/metrics` (`None`: open).
    pub status_token: Option<String>,
    /// Secret that linked relays prove to each other (`None`: links are not authenticated,
    /// which the binary allows on loopback only).
    pub link_secret: Option<LinkSecret>,
    /// Limits.
    pub limits: Limits,
    /// RPC actions: action name -> backend endpoint (a ZeroMQ ROUTER the relay connects a
    /// DEALER to).
    pub actions: BTreeMap<String, String>,
    /// Timers.
    pub timing: Timing,
    /// RabbitMQ stream retention (`--amqp`).
    pub stream: Stream,
}

impl Default for Config {
    /// Built-in default: `calls` and `agents` public (and announced: a page subscribes to
    /// all their keys on its first visit), `admin` for the token named `admin`.
    fn default() -> Self {
        let mut exchanges = BTreeMap::new();
        let public = ExchangeRule {
            public: true,
            public_routing_keys: vec!["*".into()],
            ..ExchangeRule::default()
        };
        exchanges.insert(Arc::from("calls"), public.clone());
        exchanges.insert(Arc::from("agents"), public);
        exchanges.insert(
            Arc::from("admin"),
            ExchangeRule {
                tokens: vec!["admin".into()],
                ..ExchangeRule::default()
            },
        );
        Config {
            exchanges,
            tokens: BTreeMap::new(),
            publish_token: None,
            status_token: None,
            link_secret: None,
            limits: Limits::default(),
            actions: BTreeMap::new(),
            timing: Timing::default(),
            stream: Stream::default(),
        }
    }
}

impl Config {
    /// Loads `path` (or the built-in default), then applies `RELAY_TOKENS`,
    /// `RELAY_PUBLISH_TOKEN`, `RELAY_STATUS_TOKEN` and `RELAY_LINK_SECRET` from `env` (which
    /// override the file).
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.to_owned(),
                    source,
                })?,
            ),
            None => None,
        };
        Config::from_parts(text.as_deref(), env)
    }

    /// Like [`Config::load`] with the file's text (or `None` for the default).
    pub fn from_parts(
        json: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match json {
            None => Config::default(),
            Some(text) => {
                let file: ConfigFile = serde_json::from_str(text)?;
                let defaults = Config::default();
                Config {
                    exchanges: match file.exchanges {
                        Some(ex) => ex.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
                        None => defaults.exchanges,
                    },
                    tokens: file.tokens,
                    publish_token: file.publish_token,
                    status_token: file.status_token,
                    link_secret: file
                        .link_secret
                        .map(|s| LinkSecret::new(s.into_bytes(), "config link_secret"))
                        .transpose()?,
                    limits: file.limits,
                    actions: file.actions,
                    timing: file.timing,
                    stream: file.stream,
                }
            }
        };
        if let Some(list) = env("RELAY_TOKENS") {
            for (name, token) in parse_token_list(&list)? {
                config.tokens.insert(name, token);
            }
        }
        if let Some(t) = env("RELAY_PUBLISH_TOKEN") {
            config.publish_token = Some(t);
        }
        if let Some(t) = env("RELAY_STATUS_TOKEN") {
            config.status_token = Some(t);
        }
        if let Some(s) = env("RELAY_LINK_SECRET") {
            config.link_secret = Some(LinkSecret::new(s.into_bytes(), "RELAY_LINK_SECRET")?);
        }
        config.validate()?;
        Ok(config)
    }

    /// Takes the link secret from `path` (`--link-secret-file`, which wins over the
    /// environment and the config file); one trailing line break is not part of it.
    pub fn read_link_secret(&mut self, path: &Path) -> Result<(), ConfigError> {
        let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        for end in [b'\n', b'\r'] {
            if bytes.last() == Some(&end) {
                bytes.pop();
            }
        }
        self.link_secret = Some(LinkSecret::new(bytes, &path.display().to_string())?);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.timing.validate()?;
        self.stream.validate()?;
        if self.exchanges.keys().any(|e| e.is_empty()) {
            return Err(ConfigError::Invalid(
                "exchange names must not be empty".into(),
            ));
        }
        if let Some((name, _)) = self
            .tokens
            .iter()
            .find(|(n, t)| n.is_empty() || t.is_empty())
        {
            return Err(ConfigError::Invalid(format!(
                "token {name:?}: name and token must not be empty"
            )));
        }
        for (name, token) in [
            ("publish_token", &self.publish_token),
            ("status_token", &self.status_token),
        ] {
            if token.as_deref() == Some("") {
                return Err(ConfigError::Invalid(format!("{name} must not be empty")));
            }
        }
        let min = self.limits.min_token_length;
        // Never name the token itself: it is a secret.
        if let Some((name, _)) = self.tokens.iter().find(|(_, t)| t.len() < min) {
            return Err(ConfigError::Invalid(format!(
                "token {name:?} is shorter than limits.min_token_length ({min})"
            )));
        }
        for (name, token) in [
            ("publish_token", &self.publish_token),
            ("status_token", &self.status_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < min) {
                return Err(ConfigError::Invalid(format!(
                    "{name} is shorter than limits.min_token_length ({min})"
                )));
            }
        }
        for (action, endpoint) in &self.actions {
            if BUILT_IN_ACTIONS.contains(&action.as_str()) {
                return Err(ConfigError::Invalid(format!("action {action} is built in")));
            }
            if !endpoint.contains("://") {
                return Err(ConfigError::Invalid(format!(
                    "action {action}: endpoint {endpoint:?} is not a ZeroMQ address"
                )));
            }
        }
        for (exchange, rule) in &self.exchanges {
            // Announced keys are what an anonymous page subscribes to: each must be one it
            // may subscribe to.
            for key in &rule.public_routing_keys {
                let allowed =
                    key.len() <= MAX_ROUTING_KEY && rule.check(&Pattern::parse(key), None).is_ok();
                if !allowed {
                    return Err(ConfigError::Invalid(format!(
                        "exchange {exchange}: public routing key {key:?} needs a public \
                         exchange and a key anyone may subscribe to"
                    )));
                }
            }
            for name in rule.tokens.iter().filter(|n| !self.tokens.contains_key(*n)) {
                // Not fatal: the token may be added later (or deliberately left out).
                log::warn!("exchange {exchange}: token name {name:?} has no token configured");
            }
        }
        Ok(())
    }

    /// The name whose token is `token`, comparing in constant time per candidate so the
    /// answer time does not reveal how much of a token was right.
    pub fn token_name(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, secret) in &self.tokens {
            if constant_time_eq(secret.as_bytes(), token.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Does an HTTP `Authorization` header value (`Bearer TOKEN`) carry the publish token?
    pub fn publish_authorized(&self, authorization: Option<&str>) -> bool {
        bearer_matches(self.publish_token.as_deref(), authorization)
    }

    /// May a request with this `Authorization` header value read status and metrics? Yes
    /// when no status token is configured, else only with `Bearer STATUS_TOKEN`.
    pub fn status_authorized(&self, authorization: Option<&str>) -> bool {
        self.status_token.is_none() || bearer_matches(self.status_token.as_deref(), authorization)
    }

    /// `Welcome.public`: `[{"exchange":E,"routing_keys":[..]}]` for every exchange with
    /// `public_routing_keys`, in exchange order.
    pub fn public_subscriptions(&self) -> serde_json::Value {
        self.exchanges
            .iter()
            .filter(|(_, rule)| !rule.public_routing_keys.is_empty())
            .map(|(e, rule)| json!({ "exchange": &**e, "routing_keys": rule.public_routing_keys }))
            .collect()
    }

    /// The interned name and rule of an exchange.
    pub fn exchange(&self, name: &str) -> Option<(&Arc<str>, &ExchangeRule)> {
        self.exchanges.get_key_value(name)
    }

    /// A printable summary with every secret left out.
    pub fn redacted(&self) -> serde_json::Value {
        json!({
            "exchanges": self.exchanges.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "token_names": self.tokens.keys().collect::<Vec<_>>(),
            "publish_token": if self.publish_token.is_some() { "set" } else { "unset (HTTP publish answers 401)" },
            "status_token": if self.status_token.is_some() { "set" } else { "unset (status and metrics are open)" },
            "link_secret": if self.link_secret.is_some() { "set" } else { "unset (links are not authenticated)" },
            "limits": self.limits,
            "actions": self.actions,
            "timing": self.timing,
        })
    }
}

/// Parses `name:token,name2:token2` (whitespace around items ignored).
pub fn parse_token_list(list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once(':') {
            Some((name, token)) if !name.is_empty() && !token.is_empty() => {
                Ok((name.to_owned(), token.to_owned()))
            }
            // Never echo the item: it may be a secret.
            _ => Err(ConfigError::EnvTokens(
                "expected name:token[,name:token...]".into(),
            )),
        })
        .collect()
}

mod secrets;
mod stream;

pub use stream::Stream;
#[cfg(test)]
mod tests;
