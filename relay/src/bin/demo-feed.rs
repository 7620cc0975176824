//! A demo feed for the event relay: a small simulated call centre whose calls are offered to
//! queues, answered by agents and ended, published through the relay's injector REP socket
//! about every half second.
//!
//! ```text
//! cargo run -p mongrel2-event-relay --bin event-relay &
//! cargo run -p mongrel2-event-relay --bin demo-feed -- --inject tcp://127.0.0.1:9996 --interval-ms 500
//! ```
//!
//! Events (exchange / routing key: event {payload}):
//! - `calls` / `queue.QUEUE`: `CallOffered {call_id, queue, caller}`,
//!   `CallAnswered {call_id, queue, agent, wait_s}`, `CallEnded {call_id, queue, agent, talk_s}`
//! - `agents` / `agent.NAME`: `AgentBusy {agent, call_id, queue}`, `AgentReady {agent}`
//!
//! Each injection waits for the relay's ack (`{"ok":true,"seq":N,...}`); a relay that does
//! not answer within two seconds is reconnected to (a REQ socket cannot send again until
//! it has its answer), and the feed carries on, so it survives relay restarts.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const QUEUES: [&str; 3] = ["sales", "support", "billing"];
const AGENTS: [&str; 6] = ["ada", "bob", "cyd", "dee", "eve", "fox"];
/// Calls waiting in a queue before new calls stop being offered.
const MAX_WAITING: usize = 8;
/// How long to wait for the relay's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

const USAGE: &str = "\
usage: demo-feed [--inject ENDPOINT] [--interval-ms N] [--count N] [--seed N]
  --inject       the relay's injector REP socket   (default tcp://127.0.0.1:9996)
  --interval-ms  pause between call events          (default 500)
  --count        call events to send, 0 = forever   (default 0)
  --seed         random seed                         (default: from the clock)";

/// One event to inject.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    exchange: &'static str,
    routing_key: String,
    event: &'static str,
    payload: Value,
}

impl Event {
    fn to_json(&self) -> Value {
        json!({
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "event": self.event,
            "payload": self.payload,
        })
    }
}

/// xorshift64*: small, seedable, and good enough to make a demo look lively.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is a small constant or collection length here; the modulo bias is irrelevant.
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Call {
    id: u64,
    queue: &'static str,
    since_tick: u64,
    agent: Option<usize>,
}

/// The call centre: calls waiting or in progress, and which agents are free.
struct CallCentre {
    rng: Rng,
    tick: u64,
    seconds_per_tick: f64,
    next_call: u64,
    calls: Vec<Call>,
    busy: [bool; AGENTS.len()],
}

impl CallCentre {
    fn new(seed: u64, seconds_per_tick: f64) -> CallCentre {
        CallCentre {
            rng: Rng::new(seed),
            tick: 0,
            seconds_per_tick,
            next_call: 1,
            calls: Vec::new(),
            busy: [false; AGENTS.len()],
        }
    }

    /// Advances one tick: one call event, plus the agent event that goes with it.
    fn step(&mut self) -> Vec<Event> {
        self.tick += 1;
        let waiting = self.calls.iter().filter(|c| c.agent.is_none()).count();
        let talking = self.calls.len() - waiting;
        let free: Vec<usize> = (0..AGENTS.len()).filter(|&a| !self.busy[a]).collect();
        let free_agent = (!free.is_empty()).then(|| free[self.rng.below(free.len())]);
        // Weighted choice among what is possible right now.
        let mut options: Vec<(u8, u32)> = Vec::new();
        if waiting < MAX_WAITING {
            options.push((0, 4));
        }
        if waiting > 0 && free_agent.is_some() {
            options.push((1, 4));
        }
        if talking > 0 {
            options.push((2, 3));
        }
        let total: u32 = options.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.below(total as usize) as u32;
        let mut choice = 0;
        for (o, w) in options {
            if pick < w {
                choice = o;
                break;
            }
            pick -= w;
        }
        match (choice, free_agent) {
            (1, Some(agent)) => self.answer(agent),
            (2, _) => self.end(),
            _ => self.offer(),
        }
    }

    fn seconds_since(&self, tick: u64) -> f64 {
        // Whole tenths, so payloads stay short.
        ((self.tick - tick) as f64 * self.seconds_per_tick * 10.0).round() / 10.0
    }

    fn offer(&mut self) -> Vec<Event> {
        let queue = QUEUES[self.rng.below(QUEUES.len())];
        let id = self.next_call;
        self.next_call += 1;
        let caller = format!("+44 20 7946 {:04}", self.rng.below(10_000));
        self.calls.push(Call {
            id,
            queue,
            since_tick: self.tick,
            agent: None,
        });
        vec![call_event(
            "CallOffered",
            queue,
            json!({ "call_id": id, "queue": queue, "caller": caller }),
        )]
    }

    fn answer(&mut self, agent: usize) -> Vec<Event> {
        // The longest-waiting call is answered first.
        let Some(i) = self.calls.iter().position(|c| c.agent.is_none()) else {
            return self.offer();
        };
        let wait_s = self.seconds_since(self.calls[i].since_tick);
        let call = &mut self.calls[i];
        call.agent = Some(agent);
        call.since_tick = self.tick;
        self.busy[agent] = true;
        let (id, queue, name) = (call.id, call.queue, AGENTS[agent]);
        vec![
            call_event(
                "CallAnswered",
                queue,
                json!({ "call_id": id, "queue": queue, "agent": name, "wait_s": wait_s }),
            ),
            agent_event(
                "AgentBusy",
                name,
                json!({ "agent": name, "call_id": id, "queue": queue }),
            ),
        ]
    }

    fn end(&mut self) -> Vec<Event> {
        let talking: Vec<usize> = (0..self.calls.len())
            .filter(|&i| self.calls[i].agent.is_some())
            .collect();
        if talking.is_empty() {
            return self.offer();
        }
        let i = talking[self.rng.below(talking.len())];
        let talk_s = self.seconds_since(self.calls[i].since_tick);
        let call = self.calls.remove(i);
        let Some(agent) = call.agent else {
            return self.offer();
        };
        self.busy[agent] = false;
        let name = AGENTS[agent];
        vec![
            call_event(
                "CallEnded",
                call.queue,
                json!({ "call_id": call.id, "queue": call.queue, "agent": name, "talk_s": talk_s }),
            ),
            agent_event("AgentReady", name, json!({ "agent": name })),
        ]
    }
}

fn call_event(event: &'static str, queue: &str, payload: Value) -> Event {
    Event {
        exchange: "calls",
        routing_key: format!("queue.{queue}"),
        event,
        payload,
    }
}

fn agent_event(event: &'static str, agent: &str, payload: Value) -> Event {
    Event {
        exchange: "agents",
        routing_key: format!("agent.{agent}"),
        event,
        payload,
    }
}

/// A REQ socket to the injector that is replaced when an ack does not come.
struct Injector<'a> {
    ctx: &'a zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
}

impl<'a> Injector<'a> {
    fn connect(ctx: &'a zmq::Context, endpoint: &str) -> Result<Injector<'a>, zmq::Error> {
        Ok(Injector {
            ctx,
            endpoint: endpoint.to_owned(),
            socket: Self::socket(ctx, endpoint)?,
        })
    }

    fn socket(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, zmq::Error> {
        let s = ctx.socket(zmq::REQ)?;
        s.set_linger(0)?;
        s.connect(endpoint)?;
        Ok(s)
    }

    /// Sends one event and returns the relay's ack, or why there is none.
    fn inject(&mut self, event: &Event) -> Result<Value, String> {
        let body = event.to_json().to_string();
        self.socket
            .send(body.as_bytes(), 0)
            .map_err(|e| e.to_string())?;
        let timeout = i64::try_from(ACK_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        match self.socket.poll(zmq::POLLIN, timeout) {
            Ok(n) if n > 0 => {
                let bytes = self.socket.recv_bytes(0).map_err(|e| e.to_string())?;
                serde_json::from_slice(&bytes).map_err(|e| format!("ack is not JSON: {e}"))
            }
            other => {
                // The REQ socket now waits for an answer that may never come: start afresh.
                self.socket = Self::socket(self.ctx, &self.endpoint).map_err(|e| e.to_string())?;
                Err(match other {
                    Err(e) => e.to_string(),
                    _ => format!("no ack within {ACK_TIMEOUT:?}"),
                })
            }
        }
    }
}

struct Options {
    inject: String,
    interval: Duration,
    count: u64,
    seed: u64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        inject: "tcp://127.0.0.1:9996".into(),
        interval: Duration::from_millis(500),
        count: 0,
        seed: clock_seed(),
    };
    let number = |flag: &str, v: Option<String>| -> Result<u64, String> {
        v.ok_or(format!("{flag} needs a value"))?
            .parse::<u64>()
            .map_err(|_| format!("{flag} wants a whole number"))
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--inject" => o.inject = args.next().ok_or("--inject needs an endpoint")?,
            "--interval-ms" => {
                o.interval = Duration::from_millis(number(&flag, args.next())?.max(1))
            }
            "--count" => o.count = number(&flag, args.next())?,
            "--seed" => o.seed = number(&flag, args.next())?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Some(o))
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo-feed: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        log::warn!("cannot install the signal handler: {e}");
    }
    let ctx = zmq::Context::new();
    let mut injector = match Injector::connect(&ctx, &options.inject) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("demo-feed: cannot connect to {}: {e}", options.inject);
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "demo-feed: injecting into {} every {:?} (seed {})",
        options.inject,
        options.interval,
        options.seed
    );
    let mut centre = CallCentre::new(options.seed, options.interval.as_secs_f64());
    let mut sent = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) && (options.count == 0 || sent < options.count) {
        for event in centre.step() {
            match injector.inject(&event) {
                Ok(ack) if ack["ok"] == json!(true) => log::debug!("{}: {ack}", event.event),
                Ok(ack) => log::warn!("{} refused: {ack}", event.event),
                Err(e) => log::warn!("{} not delivered: {e}", event.event),
            }
        }
        sent += 1;
        next += options.interval;
        // Short naps so Ctrl-C is noticed quickly even with long intervals.
        while !stop.load(Ordering::SeqCst) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        // After a stall (relay down), carry on from now rather than bursting to catch up.
        next = next.max(Instant::now() - options.interval);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn simulated_calls_follow_their_life_cycle() {
        for seed in [1, 2, 42, 0xdead_beef] {
            let mut centre = CallCentre::new(seed, 0.5);
            let mut offered: HashMap<u64, String> = HashMap::new();
            let mut answered: HashMap<u64, String> = HashMap::new();
            let mut busy: HashSet<String> = HashSet::new();
            let mut kinds: HashSet<&str> = HashSet::new();
            for _ in 0..2000 {
                let events = centre.step();
                assert!(!events.is_empty());
                for e in events {
                    kinds.insert(e.event);
                    let p = &e.payload;
                    let call = p["call_id"].as_u64();
                    match e.event {
                        "CallOffered" => {
                            let queue = p["queue"].as_str().expect("queue").to_owned();
                            assert_eq!(e.routing_key, format!("queue.{queue}"));
                            assert!(offered.insert(call.expect("id"), queue).is_none());
                        }
                        "CallAnswered" => {
                            let id = call.expect("id");
                            assert_eq!(
                                offered.get(&id),
                                p["queue"].as_str().map(String::from).as_ref()
                            );
                            let agent = p["agent"].as_str().expect("agent").to_owned();
                            assert!(answered.insert(id, agent).is_none(), "answered twice");
                            assert!(p["wait_s"].as_f64().is_some_and(|w| w >= 0.0));
                        }
                        "CallEnded" => {
                            let id = call.expect("id");
                            assert_eq!(answered.remove(&id).as_deref(), p["agent"].as_str());
                            offered.remove(&id);
                        }
                        "AgentBusy" => {
                            let a = p["agent"].as_str().expect("agent").to_owned();
                            assert_eq!(e.routing_key, format!("agent.{a}"));
                            assert!(busy.insert(a), "agent busy twice");
                        }
                        "AgentReady" => {
                            assert!(busy.remove(p["agent"].as_str().expect("agent")));
                        }
                        other => panic!("unexpected event {other}"),
                    }
                }
                let waiting = offered.len() - answered.len();
                assert!(waiting <= MAX_WAITING);
            }
            assert_eq!(kinds.len(), 5, "every kind of event shows up");
        }
    }

    #[test]
    fn events_are_relay_inputs() {
        let mut centre = CallCentre::new(7, 0.5);
        let e = &centre.step()[0];
        let v = e.to_json();
        assert_eq!(v["exchange"], json!("calls"));
        assert_eq!(v["event"], json!("CallOffered"));
        assert!(v["routing_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("queue.")));
        assert!(v["payload"].is_object());
    }

    #[test]
    fn flags() {
        let args = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        let o = parse_args(args(&[
            "--interval-ms",
            "100",
            "--count",
            "5",
            "--seed",
            "3",
        ]))
        .expect("valid")
        .expect("not help");
        assert_eq!(
            (o.inject.as_str(), o.interval, o.count, o.seed),
            ("tcp://127.0.0.1:9996", Duration::from_millis(100), 5, 3)
        );
        assert!(parse_args(args(&["--count", "x"])).is_err());
        assert!(parse_args(args(&["--inject"])).is_err());
        assert!(parse_args(args(&["--nope"])).is_err());
        assert!(matches!(parse_args(args(&["-h"])), Ok(None)));
    }

    #[test]
    fn a_silent_injector_is_reported_not_waited_on_forever() {
        let ctx = zmq::Context::new();
        // A REP that never answers: the first ack times out, the socket is replaced.
        let rep = ctx.socket(zmq::REP).expect("rep");
        rep.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = match rep.get_last_endpoint() {
            Ok(Ok(e)) => e,
            other => panic!("no endpoint: {other:?}"),
        };
        let mut injector = Injector::connect(&ctx, &endpoint).expect("connect");
        let event = CallCentre::new(1, 0.5).step().remove(0);
        assert!(injector.inject(&event).is_err());
        // The stale request arrives; answering it must not confuse the new socket.
        let stale = rep.recv_bytes(0).expect("request");
        rep.send(&b"{\"ok\":true,\"seq\":1}"[..], 0).expect("send");
        let echo = std::thread::spawn(move || {
            let req = rep.recv_bytes(0).expect("second request");
            rep.send(&b"{\"ok\":true,\"seq\":2}"[..], 0).expect("send");
            req
        });
        let ack = injector.inject(&event).expect("ack");
        assert_eq!(ack, json!({"ok":true,"seq":2}));
        assert_eq!(echo.join().expect("rep thread"), stale);
    }
}
