//! Delivery under load: bursts, Mongrel2's download credits and stalls, many subscribers,
//! session churn.

use super::*;

/// Publishes `count` events on calls/burst through the injector (one REQ round trip each)
/// and, from `pull` on, as fast as a PUSH socket goes; then checks they all arrive in order.
fn burst(f: &Fixture, client: &mut Client, first_seq: u64, count: u64, pad: usize, label: &str) {
    let inj = f.injector();
    let pad = "p".repeat(pad);
    let started = Instant::now();
    for n in 0..count {
        let ack = inj.publish("calls", "burst", "Burst", json!({"n": n, "pad": pad}));
        assert_eq!(ack["seq"], first_seq + n, "{ack}");
        assert_eq!(ack["delivered_to"], 1, "{ack}");
    }
    let injected = started.elapsed();
    for n in 0..count {
        let got = client.recv();
        assert_eq!(got["mq"]["seq"], first_seq + n, "{got}");
        assert_eq!(got["payload"]["n"], n);
    }
    let received = started.elapsed();
    eprintln!("{label}: {count} events injected in {injected:?}, all received after {received:?}");

    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("PUSH");
    push.set_linger(1000).expect("linger");
    push.connect(&f.relay.pull_events).expect("connect");
    let started = Instant::now();
    for n in 0..count {
        let event = json!({"exchange":"calls","routing_key":"burst","event":"Burst","payload":{"n": n, "pad": pad}});
        push.send(event.to_string().as_bytes(), 0).expect("push");
    }
    for n in 0..count {
        let got = client.recv();
        assert_eq!(got["mq"]["seq"], first_seq + count + n, "{got}");
        assert_eq!(got["payload"]["n"], n);
    }
    eprintln!(
        "{label}: {count} events pushed, all received after {:?}",
        started.elapsed()
    );
    client.assert_nothing_pending();
}

#[test]
fn a_burst_of_1000_events_arrives_in_order_and_the_client_stays() {
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "burst");
    burst(&f, &mut c, 1, 1000, 0, "no flow control");
    let status = f.status();
    assert_eq!(status["sessions"], 1);
    assert_eq!(status["lagged"], 0);
    assert_eq!(status["dropped"], 0);
}

#[test]
fn a_burst_within_mongrel2_download_credits() {
    // With download.flow_control Mongrel2 drops a client with more than 100 KiB queued;
    // 1000 events of ~600 bytes are several windows, so credits must come back in between.
    let f = Fixture::with(&test_config(), &[("download.flow_control", 1)]);
    let mut c = f.ws();
    c.subscribe("calls", "burst");
    burst(&f, &mut c, 1, 1000, 500, "download.flow_control");
    assert_eq!(f.status()["sessions"], 1);
}

/// Keeps a process stopped (SIGSTOP) until dropped (SIGCONT), even if the test panics.
struct Stopped(libc::pid_t);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a live child of
        // this process (the fixture's Mongrel2), so it cannot have been recycled.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[test]
fn a_burst_survives_mongrel2_stalling() {
    // Mongrel2 reads every reply already queued on its socket before its writer task runs,
    // so replies that pile up while it is descheduled land in the client's queue at once,
    // and more than 16 drop the client. Measured: unpaced (one flush per event), a 20 ms
    // stall in an injector burst dropped the client; with flushes 10 ms apart it takes a
    // stall of about 16 x 10 ms. The stall here is simulated with SIGSTOP/SIGCONT.
    let f = Fixture::start();
    let mut c = f.ws();
    c.subscribe("calls", "stall");
    let inj = f.injector();
    let mut stopped = None;
    let mut stall_started = Instant::now();
    for n in 0..600u64 {
        if n == 100 {
            stopped = Some(Stopped::new(f.m2.pid().expect("Mongrel2 runs")));
            stall_started = Instant::now();
        }
        if stall_started.elapsed() >= Duration::from_millis(50) {
            stopped = None;
        }
        let ack = inj.publish("calls", "stall", "Stall", json!({"n": n}));
        assert_eq!(ack["delivered_to"], 1, "{ack}");
    }
    drop(stopped);
    for n in 0..600u64 {
        let got = c.recv();
        assert_eq!(got["mq"]["seq"], n + 1, "{got}");
    }
    c.assert_nothing_pending();
    assert_eq!(f.status()["sessions"], 1);
}

#[test]
fn three_hundred_subscribers_each_get_every_event_exactly_once() {
    // More than limits.handler_targets (128): deliveries are split into batches.
    let f = Fixture::start();
    let mut clients: Vec<Client> = (0..300).map(|_| f.ws()).collect();
    // All requests first, then all answers: 300 sessions busy at once.
    let subscribe = json!({"action":"Subscribe","tag":"s","payload":{"exchange":"calls","routing_key":"fanout"}});
    for c in &mut clients {
        c.send(&subscribe);
    }
    for c in &mut clients {
        assert_eq!(c.recv()["event"], "Subscribed");
    }
    let inj = f.injector();
    for n in 1..=3u64 {
        let ack = inj.publish("calls", "fanout", "Fan", json!({"n": n}));
        assert_eq!(ack, json!({"ok":true,"seq":n,"delivered_to":300}));
    }
    for c in &mut clients {
        for n in 1..=3u64 {
            assert_eq!(
                c.recv(),
                event_json("calls", "fanout", "Fan", json!({"n": n}), n)
            );
        }
    }
    // Exactly once: the next message after the three events is the answer to a Ping.
    for c in &mut clients {
        c.send(&json!({"action":"Ping","tag":"after"}));
    }
    for c in &mut clients {
        assert_eq!(c.recv(), json!({"event":"Pong","tag":"after","payload":{}}));
    }
    let status = f.status();
    assert_eq!(status["sessions"], 300);
    assert_eq!(status["subscriptions"]["calls"], 300);
}

#[test]
fn session_tables_are_empty_after_churn() {
    let f = Fixture::start();
    for round in 0..20 {
        let mut batch: Vec<Client> = (0..10).map(|_| f.ws()).collect();
        for (i, c) in batch.iter_mut().enumerate() {
            c.subscribe("calls", &format!("churn.{i}"));
        }
        for (i, mut c) in batch.into_iter().enumerate() {
            if (round + i) % 2 == 0 {
                // A clean close: the relay hears the close frame.
                c.ws.close(None).expect("close");
                while c.ws.read().is_ok() {}
            } else {
                // The TCP connection just goes: Mongrel2 reports the disconnect.
                drop(c);
            }
        }
    }
    let status = status_eventually(&f, |s| {
        s["sessions"] == 0 && s["subscriptions"]["calls"] == 0
    });
    assert_eq!(status["sessions_opened"], 200);
    assert_eq!(
        status["subscriptions"],
        json!({"admin":0,"agents":0,"calls":0,"queues":0})
    );
}
