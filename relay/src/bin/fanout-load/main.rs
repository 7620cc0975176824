//! Fan-out load client for `scripts/bench-fanout`: N WebSocket subscribers (through
//! Mongrel2 to the event relay, or to nchan), one publisher sending R events/s that carry
//! their number and publish time, and one summary line: p50/p99/max latency (publish to
//! receive), deliveries/s, lost/duplicated/out-of-order events, and CPU per delivery of
//! the processes given with `--watch`.
//!
//! ```text
//! fanout-load --peer relay --url ws://127.0.0.1:6767/events --publish tcp://127.0.0.1:9995 \
//!     --subscribers 1000 --rate 100 --duration 10 --watch mongrel2=1234 --watch relay=1235
//! fanout-load --peer nchan --url ws://127.0.0.1:8080/sub/bench \
//!     --publish http://127.0.0.1:8080/pub/bench --watch nginx=2345
//! ```
//!
//! One thread runs every subscriber (mio), another publishes; both read one monotonic
//! clock, so latencies need no clock sync. Warm-up events (number 0) go out until every
//! subscriber has one (so subscriptions are in place), then events 1..=rate×duration.
//! Linux only (/proc, epoll); needs the feature `load-client`.

mod publisher;
mod stats;
mod subscribers;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use publisher::{Shared, Target};
use subscribers::{Endpoint, Subscribers};

/// How long one subscriber-loop wait lasts at most (the loop also watches the clock).
const TURN: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Peer {
    /// The event relay behind Mongrel2: subscribers send Subscribe, events go to its PULL.
    Relay,
    /// nchan: subscribers connect to a sub location, events are POSTed to a pub location.
    Nchan,
}

#[derive(Debug, Parser)]
#[command(
    name = "fanout-load",
    about = "WebSocket fan-out load client for scripts/bench-fanout"
)]
struct Flags {
    /// What serves the subscribers.
    #[arg(long, value_enum, default_value = "relay")]
    peer: Peer,
    /// Subscriber WebSocket URL (ws://HOST:PORT/PATH); repeatable: subscribers are spread
    /// round-robin (e.g. one URL per Mongrel2).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Where events are published: the relay's PULL (tcp://...) or nchan's pub URL.
    #[arg(long)]
    publish: String,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    subscribers: u64,
    /// Events per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of measured publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for stragglers after the last publish.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Seconds allowed for connecting and subscribing everyone.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Relay exchange and routing key to subscribe and publish on.
    #[arg(long, default_value = "calls")]
    exchange: String,
    #[arg(long, default_value = "bench")]
    routing_key: String,
    /// NAME=PID of a process whose CPU time per delivery is reported; repeatable (PIDs of
    /// one NAME add up, e.g. two Mongrel2 processes).
    #[arg(long = "watch", value_parser = watch)]
    watch: Vec<(String, u32)>,
    /// Label at the start of the summary line.
    #[arg(long)]
    label: Option<String>,
}

fn watch(value: &str) -> Result<(String, u32), String> {
    let (name, pid) = value.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("PID {pid:?}: {e}"))?;
    Ok((name.to_owned(), pid))
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(&flags) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fanout-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: &Flags) -> Result<String, String> {
    if !(flags.rate > 0.0 && flags.duration > 0.0) {
        return Err("--rate and --duration must be positive".into());
    }
    raise_fd_limit(flags.subscribers + 64);
    let endpoints = flags
        .urls
        .iter()
        .map(|u| endpoint(u))
        .collect::<Result<Vec<_>, _>>()?;
    let target = target(flags)?;
    let total = (flags.rate * flags.duration).round().max(1.0) as u64;
    let epoch = Instant::now();
    let subscribe = (flags.peer == Peer::Relay).then(|| {
        serde_json::json!({"action": "Subscribe", "tag": "bench",
            "payload": {"exchange": flags.exchange, "routing_key": flags.routing_key}})
        .to_string()
    });
    let count = usize::try_from(flags.subscribers).map_err(|e| e.to_string())?;
    let mut subs = Subscribers::connect(&endpoints, count, subscribe, total, epoch)
        .map_err(|e| format!("connecting: {e}"))?;
    let shared = Arc::new(Shared::default());
    let publisher = {
        let shared = shared.clone();
        let rate = flags.rate;
        std::thread::spawn(move || publisher::run(&target, rate, total, epoch, &shared))
    };
    let setup_deadline = Instant::now() + Duration::from_secs_f64(flags.setup_timeout);
    while subs.warm < subs.len() {
        // A subscriber lost before the run would make every figure wrong: stop at once.
        if subs.failed > 0 || Instant::now() > setup_deadline || publisher.is_finished() {
            shared.abort.store(true, Ordering::Release);
            let why = match publisher.join() {
                Ok(Err(e)) => format!(" (publisher: {e})"),
                _ => String::new(),
            };
            return Err(format!(
                "setup: {} of {} subscribers open, {} got a warm-up event, {} failed{why}",
                subs.open,
                subs.len(),
                subs.warm,
                subs.failed
            ));
        }
        subs.turn(TURN).map_err(|e| e.to_string())?;
    }
    let setup = epoch.elapsed();
    let cpu_before = cpu_sample(&flags.watch);
    let wall_start = Instant::now();
    shared.go.store(true, Ordering::Release);
    let mut drain_deadline = None;
    loop {
        subs.turn(TURN).map_err(|e| e.to_string())?;
        if shared.done.load(Ordering::Acquire) || publisher.is_finished() {
            let deadline = *drain_deadline
                .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(flags.drain));
            if subs.complete() == subs.len() || Instant::now() > deadline {
                break;
            }
        }
    }
    let wall = wall_start.elapsed();
    let cpu_after = cpu_sample(&flags.watch);
    match publisher.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("publisher: {e}")),
        Err(_) => return Err("publisher thread panicked".into()),
    }
    subs.finish();
    let mut line = summary(flags, &subs, total, wall, &shared, &cpu_before, &cpu_after);
    line.push_str(&format!(" | setup {:.1}s", setup.as_secs_f64()));
    Ok(line)
}

fn summary(
    flags: &Flags,
    subs: &Subscribers,
    total: u64,
    wall: Duration,
    shared: &Shared,
    before: &[(String, Duration)],
    after: &[(String, Duration)],
) -> String {
    let t = &subs.tally;
    let expected = total * subs.len() as u64;
    let first = shared.first_ns.load(Ordering::Acquire);
    let last_pub = shared.last_ns.load(Ordering::Acquire);
    let published_rate = (total.saturating_sub(1)) as f64 / ns_secs(last_pub.saturating_sub(first));
    let receive_span = ns_secs(t.last_receive_ns.saturating_sub(first));
    let deliveries = t.distinct + t.duplicates;
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1e3);
    let mut line = format!(
        "{:<8} subs={} rate={}/s (sent {:.0}/s) events={} | p50={} p99={} max={} | \
         deliveries/s={:.0} lost={} dup={} ooo={} dropped_subs={}",
        flags.label.as_deref().unwrap_or(match flags.peer {
            Peer::Relay => "relay",
            Peer::Nchan => "nchan",
        }),
        subs.len(),
        flags.rate,
        published_rate,
        total,
        ms(t.latency.quantile(0.50)),
        ms(t.latency.quantile(0.99)),
        ms(t.latency.max()),
        deliveries as f64 / receive_span,
        expected.saturating_sub(t.distinct),
        t.duplicates,
        t.out_of_order,
        t.dropped,
    );
    if !before.is_empty() {
        line.push_str(" | cpu/delivery:");
        for ((name, b), (_, a)) in before.iter().zip(after) {
            let cpu = a.saturating_sub(*b).as_secs_f64();
            line.push_str(&format!(
                " {name}={:.2}us ({:.0}% of a core)",
                cpu * 1e6 / deliveries.max(1) as f64,
                cpu * 100.0 / wall.as_secs_f64()
            ));
        }
    }
    line
}

fn ns_secs(ns: u64) -> f64 {
    (ns as f64 / 1e9).max(1e-9)
}

/// CPU time so far of each watched NAME (PIDs with one NAME summed), names in first-seen order.
fn cpu_sample(watch: &[(String, u32)]) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = Vec::new();
    for (name, pid) in watch {
        let cpu = stats::cpu_time(*pid).unwrap_or_default();
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += cpu,
            None => out.push((name.clone(), cpu)),
        }
    }
    out.push((
        "client".into(),
        stats::cpu_time(std::process::id()).unwrap_or_default(),
    ));
    out
}

fn endpoint(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok(Endpoint {
        addr,
        host: host.to_owned(),
        path: if path.is_empty() { "/" } else { path }.to_owned(),
    })
}

fn target(flags: &Flags) -> Result<Target, String> {
    match flags.peer {
        Peer::Relay => Ok(Target::Relay {
            endpoint: flags.publish.clone(),
            exchange: flags.exchange.clone(),
            routing_key: flags.routing_key.clone(),
        }),
        Peer::Nchan => {
            let rest = flags
                .publish
                .strip_prefix("http://")
                .ok_or("--publish for nchan must be an http:// URL")?;
            let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            Ok(Target::Nchan {
                address: address.to_owned(),
                path: if path.is_empty() { "/" } else { path }.to_owned(),
            })
        }
    }
}

/// Raises the soft open-files limit to at least `wanted` (up to the hard limit): a
/// thousand subscribers need more than the usual 1,024.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= wanted {
            return;
        }
        limit.rlim_cur = wanted.min(limit.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < wanted {
            eprintln!(
                "fanout-load: open files limited to {} (hard limit); raise it for {wanted}",
                limit.rlim_cur
            );
        }
    }
}
