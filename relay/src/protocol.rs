//! The relay's wire formats: client actions, replies and events (WebSocket protocol, after
//! Myxi's), and the event input + ack spoken by injectors, PULL pushers and HTTP publishers.
//!
//! Everything here is pure: bytes in, typed values or bytes out.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

/// Longest routing key accepted (bytes); longer ones are `InvalidPayload`.
pub const MAX_ROUTING_KEY: usize = 256;
/// Longest event name accepted (bytes).
pub const MAX_EVENT_NAME: usize = 128;
/// Longest token accepted by `Authenticate` (bytes).
pub const MAX_TOKEN: usize = 1024;
/// Longest epoch accepted in `Resume` or `Last-Event-ID` (bytes).
pub const MAX_EPOCH: usize = 256;
/// Default for `limits.max_hops`: most links an event may cross before it is refused (a
/// guard against loops the dedupe window cannot catch).
pub const DEFAULT_MAX_HOPS: u32 = 8;

/// Error names sent to clients (`{"event":"Error","payload":{"error":NAME}}`) and in acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorName {
    /// The message is not a JSON object.
    InvalidJson,
    /// `action` is missing, not a string, or names no known action.
    InvalidAction,
    /// The payload is missing a field, has a field of the wrong type, or is too big.
    InvalidPayload,
    /// The exchange is not configured.
    InvalidExchange,
    /// The session's identity may not subscribe to this exchange / routing key.
    SubscriptionDenied,
    /// The exact routing key pattern is already subscribed.
    AlreadySubscribed,
    /// The exchange needs an authenticated session (or HTTP publish needs its token).
    AuthRequired,
    /// `Authenticate` with an unknown token.
    InvalidToken,
    /// The session would exceed its subscription limit.
    TooManySubscriptions,
    /// An RPC action's backend did not answer in time.
    BackendTimeout,
    /// An RPC action's backend answered with an error (its `code` and `message` are in the
    /// payload too) or with something that is not an answer.
    BackendError,
    /// An RPC call could not be handed to its backend (its queue is full).
    BackendUnavailable,
    /// The session has `limits.rpc_calls_per_session` calls waiting for answers already.
    TooManyCalls,
    /// The session presented `limits.auth_failures_per_session` wrong tokens already and
    /// may not authenticate again (reconnect to retry).
    TooManyAttempts,
}

impl ErrorName {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::InvalidJson => "InvalidJSON",
            ErrorName::InvalidAction => "InvalidAction",
            ErrorName::InvalidPayload => "InvalidPayload",
            ErrorName::InvalidExchange => "InvalidExchange",
            ErrorName::SubscriptionDenied => "SubscriptionDenied",
            ErrorName::AlreadySubscribed => "AlreadySubscribed",
            ErrorName::AuthRequired => "AuthRequired",
            ErrorName::InvalidToken => "InvalidToken",
            ErrorName::TooManySubscriptions => "TooManySubscriptions",
            ErrorName::BackendTimeout => "BackendTimeout",
            ErrorName::BackendError => "BackendError",
            ErrorName::BackendUnavailable => "BackendUnavailable",
            ErrorName::TooManyCalls => "TooManyCalls",
            ErrorName::TooManyAttempts => "TooManyAttempts",
        }
    }
}

impl std::fmt::Display for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client message split into its envelope parts; the payload is parsed per action.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The action name.
    pub action: String,
    /// The tag to echo, if the client sent one (an explicit `null` is echoed too).
    pub tag: Option<Value>,
    /// The payload object (`{}` when absent or `null`).
    pub payload: Map<String, Value>,
}

/// Why a client message could not be split into an [`Envelope`]: the error to send, and the
/// tag if it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The error to send.
    pub error: ErrorName,
    /// The tag to echo with it.
    pub tag: Option<Value>,
}

/// Parses a client message. Oversized messages are refused unparsed (so without a tag).
pub fn parse_envelope(bytes: &[u8], max_size: usize) -> Result<Envelope, Rejected> {
    let reject = |error, tag| Rejected { error, tag };
    if bytes.len() > max_size {
        return Err(reject(ErrorName::InvalidPayload, None));
    }
    // serde_json bounds nesting depth itself (128), so hostile nesting cannot blow the stack.
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(reject(ErrorName::InvalidJson, None));
    };
    let tag = obj.remove("tag");
    let action = match obj.remove("action") {
        Some(Value::String(a)) => a,
        _ => return Err(reject(ErrorName::InvalidAction, tag)),
    };
    let payload = match obj.remove("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(reject(ErrorName::InvalidPayload, tag)),
    };
    Ok(Envelope {
        action,
        tag,
        payload,
    })
}

/// Where a subscriber stands on an exchange: the last position it has there, and the epoch
/// that position belongs to. Positions of different epochs (e.g. two runs of an in-memory
/// relay) are unrelated numbers, so a position without its epoch proves nothing beyond
/// `seq: 0` ("I have nothing").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The epoch, if the client said.
    pub epoch: Option<String>,
    /// The last position it has (0: none).
    pub seq: u64,
}

/// One routing key, or a list of them; remembers which field the client used so the reply
/// can echo the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// `routing_key`.
    One(String),
    /// `routing_keys` (deduplicated, order kept, never empty).
    Many(Vec<String>),
}

impl Keys {
    /// The keys as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(ks) => ks,
        }
    }

    /// Adds this value to a reply payload under the field name the client used.
    pub fn insert_into(&self, payload: &mut Map<String, Value>) {
        match self {
            Keys::One(k) => payload.insert("routing_key".into(), json!(k)),
            Keys::Many(ks) => payload.insert("routing_keys".into(), json!(ks)),
        };
    }
}

/// The built-in actions, with validated payloads.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Subscribe to one or more routing key patterns on an exchange.
    Subscribe {
        /// Exchange name (not yet checked against the config).
        exchange: String,
        /// Keys or patterns (`prefix*`).
        keys: Keys,
    },
    /// Unsubscribe from keys, from a whole exchange, or (both `None`) from everything.
    Unsubscribe {
        /// Exchange, or `None` for everything.
        exchange: Option<String>,
        /// Keys, or `None` for the whole exchange.
        keys: Option<Keys>,
    },
    /// List the session's subscriptions.
    ListSubscriptions,
    /// Liveness check.
    Ping,
    /// Present a token to gain its name's rights.
    Authenticate {
        /// The secret token.
        token: String,
    },
    /// Replay events after a position on an exchange that a key or pattern covers (and
    /// subscribe to it).
    Resume {
        /// Exchange name.
        exchange: String,
        /// An exact routing key or a `prefix*` pattern.
        routing_key: String,
        /// The last position the client has (`since`, `epoch`).
        position: Position,
    },
    /// Not built in: may be an RPC action from the config.
    Other(String),
}

impl Action {
    /// Validates the payload of the action named `name`. A `routing_keys` list longer than
    /// `max_keys` (the per-session subscription limit; duplicates count) is refused with
    /// `TooManySubscriptions` before any key is looked at, so a huge list costs one length
    /// check.
    pub fn parse(
        name: &str,
        payload: &Map<String, Value>,
        max_keys: usize,
    ) -> Result<Action, ErrorName> {
        Ok(match name {
            "Subscribe" => Action::Subscribe {
                exchange: exchange_field(payload)?.ok_or(ErrorName::InvalidPayload)?,
                keys: keys_field(payload, max_keys)?.ok_or(ErrorName::InvalidPayload)?,
            },
            "Unsubscribe" => {
                let exchange = exchange_field(payload)?;
                let keys = keys_field(payload, max_keys)?;
                if exchange.is_none() && keys.is_some() {
                    return Err(ErrorName::InvalidPayload);
                }
                Action::Unsubscribe { exchange, keys }
            }
            "ListSubscriptions" => Action::ListSubscriptions,
            "Ping" => Action::Ping,
            "Authenticate" => match payload.get("token") {
                Some(Value::String(t)) if t.len() <= MAX_TOKEN => {
                    Action::Authenticate { token: t.clone() }
                }
                _ => return Err(ErrorName::InvalidPayload),
            },
            "Resume" => {
                let exchange = exchange_field(payload)?.ok_or(ErrorName::InvalidPayload)?;
                let routing_key = payload
                    .get("routing_key")
                    .ok_or(ErrorName::InvalidPayload)
                    .and_then(routing_key)?;
                let since = payload
                    .get("since")
                    .and_then(Value::as_u64)
                    .ok_or(ErrorName::InvalidPayload)?;
                let epoch = match payload.get("epoch") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(e)) if e.len() <= MAX_EPOCH => Some(e.clone()),
                    Some(_) => return Err(ErrorName::InvalidPayload),
                };
                Action::Resume {
                    exchange,
                    routing_key,
                    position: Position { epoch, seq: since },
                }
            }
            other => Action::Other(other.to_owned()),
        })
    }
}

fn exchange_field(payload: &Map<String, Value>) -> Result<Option<String>, ErrorName> {
    match payload.get("exchange") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(e)) => Ok(Some(e.clone())),
        Some(_) => Err(ErrorName::InvalidPayload),
    }
}

fn keys_field(payload: &Map<String, Value>, max_keys: usize) -> Result<Option<Keys>, ErrorName> {
    match (payload.get("routing_key"), payload.get("routing_keys")) {
        (Some(_), Some(_)) => Err(ErrorName::InvalidPayload),
        (Some(k), None) => Ok(Some(Keys::One(routing_key(k)?))),
        (None, Some(Value::Array(list))) if list.len() > max_keys => {
            Err(ErrorName::TooManySubscriptions)
        }
        (None, Some(Value::Array(list))) if !list.is_empty() => {
            let mut keys: Vec<String> = Vec::with_capacity(list.len());
            let mut seen = HashSet::with_capacity(list.len());
            for k in list {
                let k = routing_key(k)?;
                if seen.insert(k.clone()) {
                    keys.push(k);
                }
            }
            Ok(Some(Keys::Many(keys)))
        }
        (None, Some(_)) => Err(ErrorName::InvalidPayload),
        (None, None) => Ok(None),
    }
}

/// A routing key from JSON: a string, or a number normalised to its decimal text (Myxi's
/// clients send ids like `1234`).
pub fn routing_key(v: &Value) -> Result<String, ErrorName> {
    let key = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ErrorName::InvalidPayload),
    };
    if key.len() > MAX_ROUTING_KEY {
        return Err(ErrorName::InvalidPayload);
    }
    Ok(key)
}

/// Serialises `{"event":NAME,"tag":TAG,"payload":PAYLOAD}` (tag omitted when `None`), in
/// that key order so replies read naturally.
pub fn reply_json(event: &str, tag: Option<&Value>, payload: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"event\":");
    push_json(&mut out, &event);
    if let Some(tag) = tag {
        out.extend_from_slice(b",\"tag\":");
        push_json(&mut out, tag);
    }
    out.extend_from_slice(b",\"payload\":");
    push_json(&mut out, payload);
    out.push(b'}');
    out
}

/// `{"event":"Error","tag":TAG,"payload":{"error":NAME}}`.
pub fn error_json(error: ErrorName, tag: Option<&Value>) -> Vec<u8> {
    reply_json("Error", tag, &json!({ "error": error.as_str() }))
}

/// `{"event":"Error","tag":TAG,"payload":{"error":"BackendError","code":CODE,"message":TEXT}}`:
/// an RPC backend's error, passed on.
pub fn backend_error_json(tag: Option<&Value>, code: &Value, message: &str) -> Vec<u8> {
    reply_json(
        "Error",
        tag,
        &json!({ "error": ErrorName::BackendError.as_str(), "code": code, "message": message }),
    )
}

/// An application event as clients receive it:
/// `{"event":NAME,"payload":{..},"mq":{"e":EXCHANGE,"rk":ROUTING_KEY,"seq":N,"ts":MS}}`
/// (`seq`: its position on the exchange);
/// `ts` (publish time, ms since the Unix epoch) is left out when `None`.
pub fn event_json(
    event: &str,
    payload: &Map<String, Value>,
    exchange: &str,
    rk: &str,
    seq: u64,
    ts: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"event\":");
    push_json(&mut out, &event);
    out.extend_from_slice(b",\"payload\":");
    push_json(&mut out, payload);
    out.extend_from_slice(b",\"mq\":{\"e\":");
    push_json(&mut out, &exchange);
    out.extend_from_slice(b",\"rk\":");
    push_json(&mut out, &rk);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if let Some(ts) = ts {
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(ts.to_string().as_bytes());
    }
    out.extend_from_slice(b"}}");
    out
}

/// `{"event":"Lagged","payload":{"exchange":E,"routing_key":RK,"last_seq":N}}`: events on
/// this key after position `last_seq` were dropped for this session; `Resume` with
/// `since: last_seq` (or earlier).
pub fn lagged_json(exchange: &str, rk: &str, last_seq: u64) -> Vec<u8> {
    reply_json(
        "Lagged",
        None,
        &json!({ "exchange": exchange, "routing_key": rk, "last_seq": last_seq }),
    )
}

/// Who a session talks to, and what a page should subscribe to on its first visit: the
/// parts of `Welcome` that are the same for every session of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WelcomeInfo {
    /// The relay's name (`--name`), shown to users.
    pub relay: String,
    /// Which member of a group of relays serves the session; left out when `None`.
    pub member: Option<String>,
    /// `[{"exchange":E,"routing_keys":[..]}]`, from the config's `public_routing_keys`.
    pub public: Value,
}

/// `{"event":"Welcome","payload":{"id":ID,"run":RUN,"epoch":EPOCH,"relay":NAME,"public":[..]
/// [,"member":M]}}`: `run` names this run of the relay (an opaque random value, not the
/// relay's origin id on its links: clients need only to compare it); `epoch` names the
/// numbering of event positions (`mq.seq`), which a client sends back with `Resume`.
pub fn welcome_json(id: &str, run: &str, epoch: &str, info: &WelcomeInfo) -> Vec<u8> {
    let mut payload = json!({
        "id": id, "run": run, "epoch": epoch, "relay": info.relay, "public": info.public
    });
    if let Some(member) = &info.member {
        payload["member"] = json!(member);
    }
    reply_json("Welcome", None, &payload)
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Serialising strings and serde_json Values into a Vec cannot fail (no I/O, no maps
    // with non-string keys, no non-finite floats in a serde_json Number).
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Where an event was published from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The injector REP socket.
    Inject,
    /// The PULL socket.
    Pull,
    /// `POST /events/publish`.
    Http,
    /// A linked relay.
    Link,
}

impl Source {
    /// Every source, in metric order.
    pub const ALL: [Source; 4] = [Source::Inject, Source::Pull, Source::Http, Source::Link];

    /// Lower-case name used in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Inject => "inject",
            Source::Pull => "pull",
            Source::Http => "http",
            Source::Link => "link",
        }
    }
}

/// Where an event entered the relay network, for linked relays (dedupe by relay + seq).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Id of the relay that first accepted the event.
    pub relay: String,
    /// That relay's sequence number for it (one counter per relay, across all keys).
    pub seq: u64,
    /// How many links it has crossed.
    pub hops: u32,
}

/// A validated event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInput {
    /// Exchange name (not yet checked against the config).
    pub exchange: String,
    /// Exact routing key (`""` when absent; never a wildcard).
    pub routing_key: String,
    /// Event name sent to clients.
    pub event: String,
    /// Event payload (`{}` when absent).
    pub payload: Map<String, Value>,
    /// Set on events that arrived from another relay.
    pub origin: Option<Origin>,
    /// Publish time (ms since the Unix epoch) if the publisher gave one; the relay stamps
    /// the time it accepted the event otherwise.
    pub ts: Option<u64>,
}

/// Parses `{"exchange","routing_key","event","payload"[,"ts":MS]
/// [,"origin":{"relay","seq","hops"}]}`.
pub fn parse_event_input(bytes: &[u8], max_size: usize) -> Result<EventInput, ErrorName> {
    if bytes.len() > max_size {
        return Err(ErrorName::InvalidPayload);
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(ErrorName::InvalidJson);
    };
    let exchange = match obj.remove("exchange") {
        Some(Value::String(e)) => e,
        _ => return Err(ErrorName::InvalidPayload),
    };
    let routing_key = match obj.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(k) => routing_key(k)?,
    };
    // A published key is an exact key: a trailing `*` would be unreachable by exact subscribers.
    if routing_key.ends_with('*') {
        return Err(ErrorName::InvalidPayload);
    }
    let event = match obj.remove("event") {
        Some(Value::String(e)) if !e.is_empty() && e.len() <= MAX_EVENT_NAME => e,
        _ => return Err(ErrorName::InvalidPayload),
    };
    let payload = match obj.remove("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(ErrorName::InvalidPayload),
    };
    let origin = match obj.remove("origin") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(parse_origin(&o)?),
        Some(_) => return Err(ErrorName::InvalidPayload),
    };
    let ts = match obj.remove("ts") {
        None | Some(Value::Null) => None,
        Some(t) => Some(t.as_u64().ok_or(ErrorName::InvalidPayload)?),
    };
    Ok(EventInput {
        exchange,
        routing_key,
        event,
        payload,
        origin,
        ts,
    })
}

fn parse_origin(o: &Map<String, Value>) -> Result<Origin, ErrorName> {
    let relay = match o.get("relay") {
        Some(Value::String(r)) if !r.is_empty() && r.len() <= MAX_ROUTING_KEY => r.clone(),
        _ => return Err(ErrorName::InvalidPayload),
    };
    let seq = o
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(ErrorName::InvalidPayload)?;
    let hops = match o.get("hops") {
        None => 0,
        Some(h) => h
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .ok_or(ErrorName::InvalidPayload)?,
    };
    Ok(Origin { relay, seq, hops })
}

/// The answer to a publish, on every input path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Accepted: its position and how many sessions it was queued to.
    Published {
        /// Its position on the exchange.
        seq: u64,
        /// Sessions it was queued to.
        delivered_to: usize,
    },
    /// A linked event already seen (by origin relay + seq); nothing was delivered.
    Duplicate,
    /// Stored by the backbone (RabbitMQ confirmed it); every relay delivers it from there.
    Confirmed,
    /// In a group of relays: accepted and handed on to the member that numbers its
    /// exchange (its position is decided there).
    Forwarded,
    /// Refused.
    Rejected(ErrorName),
}

impl Ack {
    /// `{"ok":true,"seq":N,"delivered_to":M}`, `{"ok":true,"duplicate":true}`,
    /// `{"ok":true,"forwarded":true}` or `{"ok":false,"error":NAME}`.
    pub fn to_json(&self) -> Vec<u8> {
        let v = match self {
            Ack::Published { seq, delivered_to } => {
                json!({ "ok": true, "seq": seq, "delivered_to": delivered_to })
            }
            Ack::Duplicate => json!({ "ok": true, "duplicate": true }),
            Ack::Confirmed => json!({ "ok": true, "confirmed": true }),
            Ack::Forwarded => json!({ "ok": true, "forwarded": true }),
            Ack::Rejected(e) => json!({ "ok": false, "error": e.as_str() }),
        };
        v.to_string().into_bytes()
    }

    /// HTTP status for `POST /events/publish`: 202 Accepted (the event is queued for its
    /// subscribers, not yet delivered), 401 without the publish token, 503 when the
    /// backbone (RabbitMQ) could not take it (try again), 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Ack::Published { .. } | Ack::Duplicate | Ack::Confirmed | Ack::Forwarded => 202,
            Ack::Rejected(ErrorName::AuthRequired) => 401,
            Ack::Rejected(ErrorName::BackendUnavailable | ErrorName::BackendTimeout) => 503,
            Ack::Rejected(_) => 400,
        }
    }
}

#[cfg(test)]
mod tests;
