//! Relays in a group: the messages members exchange and the choice of each exchange's
//! sequencer.
//!
//! N relay processes on one Mongrel2 route form a handler group (the library's
//! `Builder::group`): the library gives every WebSocket session one owner and routes all its
//! frames there, so a client's `Subscribe`, `Resume` and events are handled by one member.
//! What the relays add is one numbering: an event must have the same position on its
//! exchange (and the same epoch) on every member, or a client that resumes on another member
//! after its owner died would skip or repeat events. Positions count across all routing keys
//! of an exchange (see the [`history`](crate::history) module), so a wildcard resume works on
//! any member.
//!
//! - Each exchange has a **sequencer**: the member chosen by rendezvous hashing of the
//!   exchange name over the live members ([`sequencer`]). Every member computes the same
//!   one once their views of the group agree.
//! - A publish that arrives at any member goes to its exchange's sequencer (`pub`), which
//!   numbers it and sends the numbered event to every other member (`ev`); they keep it at that position, deliver it to the sessions
//!   they own and answer `ack`. The sequencer's own sessions get the event once every live
//!   peer acked it (or the sync timeout passed): a sequencer killed just after numbering
//!   has then shown no client a position the survivors lack, which the next sequencer
//!   would give to another event. A position past the member's newest one plus one marks the positions between
//!   as lost there (a resume from before them answers `recovered: false`).
//!   The member that took the publish keeps it until the numbered event comes back, and
//!   sends it again to a new sequencer if the group changes first; sequencers drop repeats
//!   by the event's origin (relay run id, seq), as linked relays do.
//!   Only the sequencer forwards an event to linked relays (`--link-bind`), so each member's
//!   link publisher carries the exchanges it numbers.
//! - When the live members change, every member sends its **tips** (its epoch and the newest
//!   position of every exchange it has) to the others, and answers tips with its own; a
//!   member that has more of an exchange than a peer sends the peer the missing events from
//!   its history (as `ev`, in position order). A member numbers nothing until every live
//!   peer has sent tips for the same member list and it has caught up with them (or a
//!   timeout passed), so a new sequencer continues from the highest position any survivor
//!   had.
//! - Positions mean something only within an **epoch**. A member that has numbered nothing
//!   yet takes the epoch of its peers: the smallest epoch among peers that have positions,
//!   or, when none has, the smallest of all (its own included). So a group that starts
//!   together, and a member that (re)joins a running group, share one epoch; a member that
//!   already has positions keeps its epoch.
//! - With the RabbitMQ backbone (`--amqp`) positions are the streams' offsets, the same on
//!   every relay: members do not sequence at all. Every member consumes the streams and
//!   delivers to the sessions it owns; no group messages are sent.
//!
//! # Wire format, version 2
//!
//! Version 2 replaced version 1's per-key seqs by exchange positions: `ev.seq` is a
//! position on the event's exchange, and tips are per exchange and carry the epoch. Members
//! skip version 1 messages (their numbers mean something else).
//!
//! Each message is one JSON object, the body of one group application message (the
//! library's `app` kind, in order per pair of members). `v` is the version; members skip
//! (and log) other versions and unknown kinds, so a later version can add kinds.
//!
//! | `kind` | fields                                                                       |
//! |--------|------------------------------------------------------------------------------|
//! | `pub`  | `hops` (forwards so far), `event` (event input with `origin` and `ts`)       |
//! | `ev`   | `seq` (the position on the exchange), `event` (as for `pub`)                 |
//! | `ack`  | `exchange`, `seq`: the answer to an `ev`, "I have it"                        |
//! | `tips` | `members` (the sender's live members, sorted), `epoch` (the sender's), `tips` (`[exchange, position]`, at most [`MAX_TIPS`] a message), `last` (the final chunk), `reply` (an answer to tips: not answered again) |
//!
//! An event input is the JSON a publisher sends (`exchange`, `routing_key`, `event`,
//! `payload`, `ts`, `origin {relay, seq, hops}`), checked as strictly as a publisher's.

use mongrel2_transceiver::transceiver::group::stable_hash;
use serde_json::{json, Map, Value};

use super::protocol::{parse_event_input, ErrorName, EventInput, MAX_ROUTING_KEY};

/// The `v` of every message.
pub const VERSION: u64 = 2;
/// Exchanges per `tips` message; more go in further chunks.
pub const MAX_TIPS: usize = 512;
/// Bytes an epoch may have.
pub const MAX_EPOCH: usize = 256;
/// Members a `tips` message may list.
pub const MAX_MEMBERS: usize = 64;
/// Room around an event in a `pub` or `ev` message (kind, version, seq, hops).
pub const ENVELOPE: usize = 256;

/// One message between group members.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An event for its exchange's sequencer to number.
    Publish {
        /// How many members forwarded it so far (bounded: views may disagree for a moment).
        hops: u32,
        /// The event, with its origin and publish time.
        event: EventInput,
    },
    /// An event numbered by its exchange's sequencer (or a repair of one).
    Event {
        /// Its position on the exchange.
        seq: u64,
        /// The event, with its origin and publish time.
        event: EventInput,
    },
    /// The sender has the exchange's events up to this position (an answer to `ev`).
    Ack {
        /// The exchange.
        exchange: String,
        /// The position.
        seq: u64,
    },
    /// The newest position of every exchange the sender has, in chunks.
    Tips {
        /// The sender's live members, sorted.
        members: Vec<String>,
        /// The epoch the sender's positions belong to.
        epoch: String,
        /// (exchange, newest position).
        tips: Vec<(String, u64)>,
        /// The final chunk.
        last: bool,
        /// An answer to tips: the receiver does not answer it with tips.
        reply: bool,
    },
}

/// Why a message was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a JSON object, or over the size bound.
    #[error("not a JSON object within the size bound")]
    Json,
    /// Another version.
    #[error("version {0:?}, not 2")]
    Version(Option<u64>),
    /// An unknown kind.
    #[error("unknown kind {0:?}")]
    Kind(String),
    /// A field missing or of the wrong type or size.
    #[error("bad field {0}")]
    Field(&'static str),
    /// The event input failed the publisher checks.
    #[error("bad event: {0}")]
    Event(ErrorName),
}

impl Message {
    /// The message's body.
    pub fn encode(&self) -> Vec<u8> {
        let value = match self {
            Message::Publish { hops, event } => {
                json!({"v": VERSION, "kind": "pub", "hops": hops, "event": event_value(event)})
            }
            Message::Event { seq, event } => {
                json!({"v": VERSION, "kind": "ev", "seq": seq, "event": event_value(event)})
            }
            Message::Ack { exchange, seq } => {
                json!({"v": VERSION, "kind": "ack", "exchange": exchange, "seq": seq})
            }
            Message::Tips {
                members,
                epoch,
                tips,
                last,
                reply,
            } => json!({
                "v": VERSION, "kind": "tips", "members": members, "epoch": epoch,
                "tips": tips, "last": last, "reply": reply,
            }),
        };
        value.to_string().into_bytes()
    }

    /// Reads a body of at most `max_body` bytes; events are held to `max_event` bytes.
    pub fn decode(body: &[u8], max_body: usize, max_event: usize) -> Result<Message, WireError> {
        if body.len() > max_body {
            return Err(WireError::Json);
        }
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(body) else {
            return Err(WireError::Json);
        };
        match m.get("v").and_then(Value::as_u64) {
            Some(VERSION) => {}
            other => return Err(WireError::Version(other)),
        }
        let kind = match m.get("kind") {
            Some(Value::String(kind)) => kind.clone(),
            _ => return Err(WireError::Field("kind")),
        };
        let flag = |m: &Map<String, Value>, name: &'static str| {
            m.get(name)
                .and_then(Value::as_bool)
                .ok_or(WireError::Field(name))
        };
        match kind.as_str() {
            "pub" => Ok(Message::Publish {
                hops: m
                    .get("hops")
                    .and_then(Value::as_u64)
                    .and_then(|h| u32::try_from(h).ok())
                    .ok_or(WireError::Field("hops"))?,
                event: event_field(&mut m, max_event)?,
            }),
            "ev" => Ok(Message::Event {
                seq: m
                    .get("seq")
                    .and_then(Value::as_u64)
                    .filter(|seq| *seq > 0)
                    .ok_or(WireError::Field("seq"))?,
                event: event_field(&mut m, max_event)?,
            }),
            "ack" => Ok(Message::Ack {
                exchange: match m.get("exchange") {
                    Some(Value::String(e)) if e.len() <= MAX_ROUTING_KEY => e.clone(),
                    _ => return Err(WireError::Field("exchange")),
                },
                seq: m
                    .get("seq")
                    .and_then(Value::as_u64)
                    .filter(|seq| *seq > 0)
                    .ok_or(WireError::Field("seq"))?,
            }),
            "tips" => Ok(Message::Tips {
                members: members_field(&m)?,
                epoch: match m.get("epoch") {
                    Some(Value::String(e)) if e.len() <= MAX_EPOCH => e.clone(),
                    _ => return Err(WireError::Field("epoch")),
                },
                tips: tips_field(&m)?,
                last: flag(&m, "last")?,
                reply: flag(&m, "reply")?,
            }),
            _ => Err(WireError::Kind(kind.chars().take(32).collect())),
        }
    }
}

fn event_value(event: &EventInput) -> Value {
    let mut v = json!({
        "exchange": event.exchange,
        "routing_key": event.routing_key,
        "event": event.event,
        "payload": event.payload,
    });
    if let Some(ts) = event.ts {
        v["ts"] = json!(ts);
    }
    if let Some(o) = &event.origin {
        v["origin"] = json!({"relay": o.relay, "seq": o.seq, "hops": o.hops});
    }
    v
}

/// The event input, checked as a publisher's; members always send its origin and time.
fn event_field(m: &mut Map<String, Value>, max_event: usize) -> Result<EventInput, WireError> {
    let event = m.remove("event").ok_or(WireError::Field("event"))?;
    let bytes = serde_json::to_vec(&event).map_err(|_| WireError::Field("event"))?;
    let input = parse_event_input(&bytes, max_event).map_err(WireError::Event)?;
    if input.origin.is_none() || input.ts.is_none() {
        return Err(WireError::Field("event.origin"));
    }
    Ok(input)
}

fn members_field(m: &Map<String, Value>) -> Result<Vec<String>, WireError> {
    let Some(Value::Array(items)) = m.get("members") else {
        return Err(WireError::Field("members"));
    };
    if items.len() > MAX_MEMBERS {
        return Err(WireError::Field("members"));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(name) if name.len() <= 1024 => Ok(name.clone()),
            _ => Err(WireError::Field("members")),
        })
        .collect()
}

fn tips_field(m: &Map<String, Value>) -> Result<Vec<(String, u64)>, WireError> {
    let Some(Value::Array(items)) = m.get("tips") else {
        return Err(WireError::Field("tips"));
    };
    if items.len() > MAX_TIPS {
        return Err(WireError::Field("tips"));
    }
    items
        .iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([Value::String(e), pos]) if e.len() <= MAX_ROUTING_KEY => {
                let pos = pos.as_u64().ok_or(WireError::Field("tips"))?;
                Ok((e.clone(), pos))
            }
            _ => Err(WireError::Field("tips")),
        })
        .collect()
}

/// The member that numbers `exchange`: the highest rendezvous score over `members`
/// (`None` when there are none).
pub fn sequencer<'a>(members: &'a [String], exchange: &str) -> Option<&'a str> {
    members
        .iter()
        .map(|member| (score(member, exchange), member))
        .max()
        .map(|(_, member)| member.as_str())
}

/// The member and exchange, each ended by a zero byte, through the library's
/// build-independent hash (the one its groups choose session owners with).
fn score(member: &str, exchange: &str) -> u64 {
    stable_hash(&[member.as_bytes(), &[0], exchange.as_bytes(), &[0]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Origin;

    fn event() -> EventInput {
        EventInput {
            exchange: "calls".into(),
            routing_key: "k".into(),
            event: "E".into(),
            payload: Map::new(),
            origin: Some(Origin {
                relay: "r.1".into(),
                seq: 3,
                hops: 0,
            }),
            ts: Some(7),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for message in [
            Message::Publish {
                hops: 1,
                event: event(),
            },
            Message::Event {
                seq: 9,
                event: event(),
            },
            Message::Ack {
                exchange: "calls".into(),
                seq: 9,
            },
            Message::Tips {
                members: vec!["a".into(), "b".into()],
                epoch: "relay.1f".into(),
                tips: vec![("calls".into(), 4)],
                last: true,
                reply: false,
            },
        ] {
            assert_eq!(Message::decode(&message.encode(), 4096, 1024), Ok(message));
        }
    }

    #[test]
    fn broken_messages_are_errors_not_panics() {
        let decode = |body: &str| Message::decode(body.as_bytes(), 4096, 1024);
        assert_eq!(decode("[]"), Err(WireError::Json));
        assert_eq!(
            decode(r#"{"v":1,"kind":"ev","seq":1}"#),
            Err(WireError::Version(Some(1))),
            "version 1 seqs were per key"
        );
        assert_eq!(
            decode(r#"{"v":2,"kind":"what"}"#),
            Err(WireError::Kind("what".into()))
        );
        assert_eq!(
            decode(r#"{"v":2,"kind":"ev","seq":0,"event":{}}"#),
            Err(WireError::Field("seq"))
        );
        let no_origin =
            r#"{"v":2,"kind":"ev","seq":1,"event":{"exchange":"calls","event":"E","ts":1}}"#;
        assert_eq!(decode(no_origin), Err(WireError::Field("event.origin")));
        let old_tips = r#"{"v":2,"kind":"tips","members":[],"epoch":"e","tips":[["e","k",1]],"last":true,"reply":false}"#;
        assert_eq!(decode(old_tips), Err(WireError::Field("tips")));
        let no_epoch = r#"{"v":2,"kind":"tips","members":[],"tips":[],"last":true,"reply":false}"#;
        assert_eq!(decode(no_epoch), Err(WireError::Field("epoch")));
        let many: Vec<Value> = (0..=MAX_TIPS).map(|i| json!(["e", i])).collect();
        let tips = json!({"v":2,"kind":"tips","members":[],"epoch":"e","tips":many,"last":true,"reply":false});
        assert_eq!(
            Message::decode(tips.to_string().as_bytes(), 1 << 20, 1024),
            Err(WireError::Field("tips"))
        );
        assert_eq!(
            Message::decode(&[b' '; 5000], 4096, 1024),
            Err(WireError::Json)
        );
    }

    #[test]
    fn every_member_picks_the_same_sequencer_and_exchanges_spread() {
        let members: Vec<String> = ["tcp://a:1#1", "tcp://b:2#2", "tcp://c:3#3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut reversed = members.clone();
        reversed.reverse();
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let exchange = format!("ex.{i}");
            let chosen = sequencer(&members, &exchange).expect("one");
            assert_eq!(Some(chosen), sequencer(&reversed, &exchange));
            counts[members.iter().position(|m| m == chosen).expect("a member")] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
        // Removing a member moves only its exchanges.
        let survivors = &members[..2];
        for i in 0..300 {
            let exchange = format!("ex.{i}");
            let before = sequencer(&members, &exchange).expect("one");
            if before != members[2] {
                assert_eq!(sequencer(survivors, &exchange), Some(before));
            }
        }
        assert_eq!(sequencer(&[], "calls"), None);
    }
}
