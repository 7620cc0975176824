//! RPC actions: client actions named in the config's `actions` are forwarded to ZeroMQ
//! backends, and their answers routed back to the calling session.
//!
//! One DEALER per distinct backend endpoint, connected at startup (ZeroMQ queues calls until
//! the backend is there) and polled by the Transceiver's loop like every other socket, so
//! the loop never waits for a backend. Wire format (one frame each way; a ROUTER backend
//! sees `[identity, request]` and answers `[identity, answer]`):
//!
//! ```text
//! -> {"id":N,"method":ACTION,"params":PAYLOAD,"session":{"id":WELCOME_ID,"auth":NAME|null}}
//! <- {"id":N,"result":ANY}  or  {"id":N,"error":{"code":C,"message":TEXT}}
//! ```
//!
//! The client gets `{"event":"Result","tag":TAG,"payload":ANY}`, or `Error` with
//! `{"error":"BackendError","code":C,"message":TEXT}`. Without an answer within
//! `timing.rpc_timeout_ms` it gets `BackendTimeout`, and a later answer is dropped (so is
//! an answer for a session that has gone). Deadlines are checked on the loop's own timer
//! ([`Rpc::next_deadline`] bounds its wait). Bounds: per session, `Limits::rpc_share` calls
//! in flight (`limits.rpc_calls_per_session`, less when many sessions share
//! `limits.rpc_calls_total`; `TooManyCalls`); `limits.rpc_calls_total` in all and the
//! socket's send queue (`BackendUnavailable`); answers of at most `limits.message_size`
//! bytes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mongrel2_transceiver::{ConnId, Token, Transceiver};
use serde_json::{json, Value};

use super::config::{Config, Limits};
use super::metrics::RpcStats;
use super::protocol::ErrorName;
use super::relay::{Relay, RpcCall, RpcOutcome};

/// Answers read per readable backend socket before the loop moves on.
const ANSWER_BATCH: usize = 1024;
/// Frames accepted in one answer (an empty delimiter and the body, with room to spare).
const MAX_FRAMES: usize = 4;

struct Backend {
    endpoint: String,
    token: Token,
}

struct Pending {
    session: ConnId,
    session_id: String,
    tag: Option<Value>,
}

/// The RPC forwarder.
pub struct Rpc {
    backends: Vec<Backend>,
    pending: HashMap<u64, Pending>,
    /// (deadline, call id) in call order, which is deadline order (one timeout for all).
    /// Answered calls stay here until their deadline passes or they reach the front.
    deadlines: VecDeque<(Instant, u64)>,
    per_session: HashMap<String, usize>,
    next_id: u64,
    timeout: Duration,
    limits: Limits,
    max_answer: usize,
    stats: RpcStats,
}

impl Rpc {
    /// Connects a DEALER to every backend named in `config.actions`, each refusing frames
    /// over `max_frame` bytes, and registers them with the Transceiver.
    pub fn start(
        transceiver: &mut Transceiver,
        config: &Config,
        max_frame: usize,
    ) -> Result<Rpc, (String, zmq::Error)> {
        let mut endpoints: Vec<&String> = config.actions.values().collect();
        endpoints.sort();
        endpoints.dedup();
        let mut backends = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let socket = dealer(transceiver.context(), endpoint, max_frame)
                .map_err(|e| (endpoint.clone(), e))?;
            log::info!("RPC backend {endpoint} connected");
            backends.push(Backend {
                endpoint: endpoint.clone(),
                token: transceiver.watch(socket),
            });
        }
        Ok(Rpc {
            backends,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            per_session: HashMap::new(),
            next_id: 0,
            timeout: config.timing.rpc_timeout(),
            limits: config.limits.clone(),
            max_answer: config.limits.message_size,
            stats: RpcStats::default(),
        })
    }

    /// Is `token` one of the backend sockets?
    pub fn owns(&self, token: Token) -> bool {
        self.backends.iter().any(|b| b.token == token)
    }

    /// Sends a call to its backend, or answers the client at once when it cannot be sent.
    pub fn call(
        &mut self,
        transceiver: &Transceiver,
        relay: &mut Relay<ConnId>,
        call: RpcCall<ConnId>,
        now: Instant,
    ) {
        let refuse = |relay: &mut Relay<ConnId>, stats: &mut RpcStats, error: ErrorName| {
            stats.refused += 1;
            relay.rpc_reply(
                &call.session,
                &call.session_id,
                call.tag.as_ref(),
                RpcOutcome::Failed(error),
            );
        };
        let in_flight = self.per_session.get(&call.session_id).copied().unwrap_or(0);
        if in_flight >= self.limits.rpc_share(relay.session_count()) {
            return refuse(relay, &mut self.stats, ErrorName::TooManyCalls);
        }
        let socket = self
            .backends
            .iter()
            .find(|b| b.endpoint == call.endpoint)
            .and_then(|b| transceiver.socket(b.token).ok());
        let Some(socket) = socket.filter(|_| self.pending.len() < self.limits.rpc_calls_total)
        else {
            return refuse(relay, &mut self.stats, ErrorName::BackendUnavailable);
        };
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({
            "id": id,
            "method": call.action,
            "params": call.payload,
            "session": { "id": call.session_id, "auth": call.identity.as_deref() },
        });
        if let Err(e) = socket.send(request.to_string().as_bytes(), zmq::DONTWAIT) {
            // EAGAIN: the backend's queue is full (or it was never reachable).
            log::warn!("RPC {} to {}: {e}", call.action, call.endpoint);
            return refuse(relay, &mut self.stats, ErrorName::BackendUnavailable);
        }
        log::debug!("RPC {id} {} from {} sent", call.action, call.session);
        let deadline = now + self.timeout;
        *self.per_session.entry(call.session_id.clone()).or_default() += 1;
        self.pending.insert(
            id,
            Pending {
                session: call.session,
                session_id: call.session_id,
                tag: call.tag,
            },
        );
        self.deadlines.push_back((deadline, id));
        self.stats.calls += 1;
    }

    /// Reads the answers waiting on a backend socket and passes them on.
    pub fn on_readable(
        &mut self,
        transceiver: &Transceiver,
        token: Token,
        relay: &mut Relay<ConnId>,
    ) {
        let Ok(socket) = transceiver.socket(token) else {
            return;
        };
        for _ in 0..ANSWER_BATCH {
            let frames = match socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    log::warn!("RPC backend socket: {e}");
                    return;
                }
            };
            // A REQ-style backend puts an empty delimiter first; the body is the last frame.
            let body = match frames.as_slice() {
                [.., body] if frames.len() <= MAX_FRAMES => body,
                _ => {
                    log::warn!("RPC answer of {} frames dropped", frames.len());
                    self.stats.late += 1;
                    continue;
                }
            };
            self.answer(body, relay);
        }
    }

    fn answer(&mut self, body: &[u8], relay: &mut Relay<ConnId>) {
        let Some((id, outcome)) = parse_answer(body, self.max_answer) else {
            log::warn!("RPC answer without a readable id dropped");
            self.stats.late += 1;
            return;
        };
        let Some(call) = self.take(id) else {
            log::debug!("RPC answer {id} came after its timeout (or was never asked); dropped");
            self.stats.late += 1;
            return;
        };
        match &outcome {
            RpcOutcome::Result(_) => self.stats.results += 1,
            _ => self.stats.errors += 1,
        }
        if !relay.rpc_reply(&call.session, &call.session_id, call.tag.as_ref(), outcome) {
            log::debug!("RPC answer {id}: session {} has gone", call.session);
            self.stats.orphaned += 1;
        }
    }

    fn take(&mut self, id: u64) -> Option<Pending> {
        let call = self.pending.remove(&id)?;
        if let Some(n) = self.per_session.get_mut(&call.session_id) {
            *n -= 1;
            if *n == 0 {
                self.per_session.remove(&call.session_id);
            }
        }
        Some(call)
    }

    /// Answers `BackendTimeout` to every call whose deadline has passed.
    pub fn expire(&mut self, now: Instant, relay: &mut Relay<ConnId>) {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(call) = self.take(id) else {
                continue;
            };
            log::info!("RPC {id} from {} timed out", call.session);
            self.stats.timeouts += 1;
            if !relay.rpc_reply(
                &call.session,
                &call.session_id,
                call.tag.as_ref(),
                RpcOutcome::Failed(ErrorName::BackendTimeout),
            ) {
                self.stats.orphaned += 1;
            }
        }
    }

    /// When [`Rpc::expire`] next has work: the earliest deadline of a call still waiting.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if self.pending.contains_key(&id) {
                return Some(deadline);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Counters for status.
    pub fn stats(&self) -> RpcStats {
        RpcStats {
            in_flight: self.pending.len(),
            ..self.stats.clone()
        }
    }
}

fn dealer(context: &zmq::Context, endpoint: &str, max_frame: usize) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(i64::try_from(max_frame).unwrap_or(i64::MAX))?;
    // Calls beyond this many queued for an absent or slow backend are refused at once.
    socket.set_sndhwm(10_000)?;
    socket.connect(endpoint)?;
    Ok(socket)
}

/// Reads a backend's answer: its call id and what the client should get. `None` when no
/// call id can be read (nobody to answer).
pub fn parse_answer(body: &[u8], max_size: usize) -> Option<(u64, RpcOutcome)> {
    let mut answer = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(answer)) => answer,
        _ => return None,
    };
    let id = answer.get("id").and_then(Value::as_u64)?;
    let malformed = |message: &str| RpcOutcome::BackendError {
        code: Value::Null,
        message: message.to_owned(),
    };
    if body.len() > max_size {
        return Some((id, malformed("the backend's answer is too large")));
    }
    let outcome = if let Some(result) = answer.remove("result") {
        RpcOutcome::Result(result)
    } else {
        match answer.remove("error") {
            Some(Value::Object(mut error)) => RpcOutcome::BackendError {
                code: error.remove("code").unwrap_or(Value::Null),
                message: match error.remove("message") {
                    Some(Value::String(m)) => m,
                    _ => String::new(),
                },
            },
            Some(_) => malformed("the backend's error is not an object"),
            None => malformed("the backend's answer has neither result nor error"),
        }
    };
    Some((id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_results_errors_and_junk() {
        let parse = |s: &str| parse_answer(s.as_bytes(), 1000);
        assert_eq!(
            parse(r#"{"id":3,"result":[1,2]}"#),
            Some((3, RpcOutcome::Result(json!([1, 2]))))
        );
        assert_eq!(
            parse(r#"{"id":4,"result":null}"#),
            Some((4, RpcOutcome::Result(Value::Null)))
        );
        assert_eq!(
            parse(r#"{"id":5,"error":{"code":-32601,"message":"no such method"}}"#),
            Some((
                5,
                RpcOutcome::BackendError {
                    code: json!(-32601),
                    message: "no such method".into()
                }
            ))
        );
        assert!(matches!(
            parse(r#"{"id":6,"error":"bad"}"#),
            Some((6, RpcOutcome::BackendError { .. }))
        ));
        assert!(matches!(
            parse(r#"{"id":7}"#),
            Some((7, RpcOutcome::BackendError { .. }))
        ));
        for junk in [
            "",
            "nope",
            "[]",
            r#"{"result":1}"#,
            r#"{"id":"7","result":1}"#,
        ] {
            assert_eq!(parse(junk), None, "{junk}");
        }
        let big = format!(r#"{{"id":8,"result":"{}"}}"#, "x".repeat(2000));
        assert!(matches!(
            parse(&big),
            Some((8, RpcOutcome::BackendError { .. }))
        ));
    }
}
