//! RabbitMQ as the backbone (`--amqp`): two relays behind one Mongrel2 (`/a/events`,
//! `/b/events`) on one private RabbitMQ node (see `rabbitmq`).

use std::collections::BTreeMap;

use mongrel2_test_fixture::support::HttpClient;

use super::rabbitmq::{rabbitmq_installed, RabbitMq};
use super::sse::{Sse, Stream};
use super::*;

/// Events per publish path.
const PER_PATH: u64 = 1000;

struct Pair {
    relays: Vec<RelayProcess>,
    m2: Mongrel2,
}

impl Pair {
    fn start(broker: &RabbitMq) -> Pair {
        let mut config = test_config();
        // Enough history for the resume below (the tests' default keeps 10 per key).
        config["limits"]["history_per_key"] = json!(1000);
        config["stream"] = json!({"max_age": "2h", "max_bytes": 100_000_000});
        let m2 = Mongrel2::builder()
            .handler(HandlerConf::new("/a/events"))
            .handler(HandlerConf::new("/b/events"))
            .start();
        let mut relays: Vec<RelayProcess> = (0..2)
            .map(|handler| {
                let mut setup = Setup::new(&config);
                setup.handler = handler;
                setup.amqp = Some(broker.url());
                RelayProcess::start(&m2, setup)
            })
            .collect();
        for relay in &mut relays {
            relay.wait_ready(&m2);
            relay.status_eventually(&m2, |s| s["amqp"]["connected"] == true);
        }
        Pair { relays, m2 }
    }

    fn post(&self, i: usize, http: &mut HttpClient, body: &str) -> HttpResponse {
        let route = &self.relays[i].route;
        http.request(&format!(
            "POST {route}/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {PUBLISH_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .expect("answered")
    }
}

/// Reads `n` events, checking each source's `n` counts up from `first`, exactly once, and
/// that positions only grow. Returns the positions in arrival order.
fn read_in_order(client: &mut Client, n: usize, first: u64) -> Vec<u64> {
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut positions = Vec::with_capacity(n);
    while positions.len() < n {
        let got = client.recv();
        let Some(seq) = got["mq"]["seq"].as_u64() else {
            continue;
        };
        let via = got["payload"]["via"].as_str().expect("via").to_owned();
        let count = got["payload"]["n"].as_u64().expect("n");
        let want = next.entry(via.clone()).or_insert(first);
        assert_eq!(count, *want, "{via}: in order, once: {got}");
        *want += 1;
        if let Some(last) = positions.last() {
            assert!(seq > *last, "positions grow: {got}");
        }
        positions.push(seq);
    }
    positions
}

#[test]
fn two_relays_on_one_rabbitmq_share_events_and_positions() {
    if !rabbitmq_installed() {
        return;
    }
    let broker = RabbitMq::start();
    let pair = Pair::start(&broker);
    let mut b = pair.relays[1].ws(&pair.m2);
    assert_eq!(b.epoch, "amqp:event-relay");
    // A stream per exchange, bounded as the config says.
    let queues = broker.queues();
    for exchange in ["admin", "agents", "calls", "queues"] {
        let line = queues
            .lines()
            .find(|l| l.starts_with(&format!("event-relay.{exchange}\t")))
            .unwrap_or_else(|| panic!("no stream for {exchange}: {queues}"));
        assert!(line.contains("\tstream\t"), "{line}");
        assert!(line.contains("x-max-age") && line.contains("2h"), "{line}");
        assert!(line.contains("100000000"), "{line}");
    }
    b.subscribe("calls", "q.*");

    // Every publish path of relay A: answered once RabbitMQ confirmed.
    let a = &pair.relays[0];
    let injector = a.injector();
    let event = |via: &str, n: u64| {
        json!({"exchange":"calls","routing_key":format!("q.{via}"),"event":"E",
               "payload":{"via":via,"n":n}})
        .to_string()
    };
    for n in 1..=PER_PATH {
        let ack = injector.request(event("inject", n).as_bytes());
        assert_eq!(ack, json!({"ok":true,"confirmed":true}));
    }
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("PUSH");
    push.set_linger(1000).expect("linger");
    push.connect(&a.pull_events).expect("connect");
    for n in 1..=PER_PATH {
        push.send(event("pull", n).as_bytes(), 0).expect("push");
    }
    let mut http = HttpClient::connect(pair.m2.http_addr());
    for n in 1..=PER_PATH {
        let response = pair.post(0, &mut http, &event("http", n));
        assert_eq!(response.status, 202);
        assert_eq!(response.json(), json!({"ok":true,"confirmed":true}));
    }
    // Relay B delivers every one of them, once, in each publisher's order.
    let total = (3 * PER_PATH) as usize;
    let positions = read_in_order(&mut b, total, 1);
    b.assert_nothing_pending();

    // Positions are the streams' offsets: a client of B that missed the last 500 events
    // resumes on A from one of them.
    let gap = total - 500;
    assert_eq!(
        resume_all(&pair, 0, positions[gap - 1]),
        positions[gap..],
        "the same positions on both relays"
    );
    // An SSE stream on the wildcard, resuming on A from an id B sent.
    let last = format!("amqp:event-relay/{}", positions[gap - 1]);
    let mut sse = Stream::open(
        &pair.m2,
        "/a/events/stream?exchange=calls&routing_key=q.*",
        &[("Last-Event-ID", &last)],
    )
    .expect("stream");
    assert!(matches!(sse.next(), Sse::Event { name, .. } if name == "Welcome"));
    for want in &positions[gap..] {
        let Sse::Event { id, .. } = sse.next() else {
            unreachable!()
        };
        assert_eq!(id, Some(format!("amqp:event-relay/{want}")));
    }
    let Sse::Event { name, data, .. } = sse.next() else {
        unreachable!()
    };
    assert_eq!(name, "Resumed");
    assert_eq!(data["payload"]["recovered"], true, "{data}");
    drop(sse);

    let status = pair.relays[0].status(&pair.m2);
    let published = 3 * PER_PATH;
    assert_eq!(status["amqp"]["published"], published, "{status}");
    assert_eq!(status["amqp"]["confirmed"], published, "{status}");
    assert_eq!(status["amqp"]["failed"], 0, "{status}");
    assert_eq!(status["backbone_in"], published, "{status}");

    // Both relays restart: they read the streams again, so resume still recovers.
    let mut pair = pair;
    for relay in &mut pair.relays {
        relay.restart();
        relay.wait_ready(&pair.m2);
        relay.status_eventually(&pair.m2, |s| s["backbone_in"] == published);
    }
    assert_eq!(resume_all(&pair, 1, positions[gap - 1]), positions[gap..]);

    // An application publishing straight into RabbitMQ, Myxi-style: {event, payload} to
    // the exchange with a routing key. Every relay delivers it.
    let mut subscribers: Vec<Client> = pair
        .relays
        .iter()
        .map(|r| {
            let mut c = r.ws(&pair.m2);
            c.subscribe("calls", "widgets.*");
            c
        })
        .collect();
    publish_directly(
        &broker,
        "calls",
        "widgets.1234",
        br#"{"event":"WidgetQtyChanged","payload":{"quantity":3}}"#,
    );
    for c in &mut subscribers {
        assert_eq!(
            c.recv(),
            json!({"event":"WidgetQtyChanged","payload":{"quantity":3},
                   "mq":{"e":"calls","rk":"widgets.1234","seq":total as u64 + 1}})
        );
    }
}

/// Publishes `body` to `exchange` with `routing_key` through RabbitMQ itself, confirmed.
fn publish_directly(broker: &RabbitMq, exchange: &str, routing_key: &str, body: &[u8]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    async_global_executor::block_on(async {
        let conn = lapin::Connection::connect(&broker.url(), Default::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                body,
                Default::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        conn.close(200, "done").await.expect("close");
    });
}

/// Resumes `calls/q.*` on relay `i` from `since` (again while `more`); the positions
/// replayed.
fn resume_all(pair: &Pair, i: usize, mut since: u64) -> Vec<u64> {
    let mut late = pair.relays[i].ws(&pair.m2);
    let mut replayed = Vec::new();
    loop {
        late.send(&json!({"action":"Resume","tag":"r",
                          "payload":{"exchange":"calls","routing_key":"q.*","since":since,
                                     "epoch":"amqp:event-relay"}}));
        let resumed = loop {
            let got = late.recv();
            match got["mq"]["seq"].as_u64() {
                Some(seq) => replayed.push(seq),
                None => break got,
            }
        };
        assert_eq!(resumed["event"], "Resumed", "{resumed}");
        assert_eq!(resumed["payload"]["recovered"], true, "{resumed}");
        since = resumed["payload"]["last_seq"].as_u64().expect("last_seq");
        if resumed["payload"]["more"] == false {
            return replayed;
        }
    }
}

#[test]
fn a_rabbitmq_outage_is_refused_not_lost_and_shown() {
    if !rabbitmq_installed() {
        return;
    }
    let mut broker = RabbitMq::start();
    let pair = Pair::start(&broker);
    let mut b = pair.relays[1].ws(&pair.m2);
    b.subscribe("calls", "q.*");
    let a = &pair.relays[0];
    let injector = a.injector();
    let event = |n: u64| {
        json!({"exchange":"calls","routing_key":"q.inject","event":"E",
               "payload":{"via":"inject","n":n}})
        .to_string()
    };
    for n in 1..=50 {
        let ack = injector.request(event(n).as_bytes());
        assert_eq!(ack, json!({"ok":true,"confirmed":true}));
    }
    read_in_order(&mut b, 50, 1);

    // RabbitMQ goes away for 5 s: publishers are told, nothing is acknowledged.
    broker.stop();
    a.status_eventually(&pair.m2, |s| s["amqp"]["connected"] == false);
    let outage = Instant::now();
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(5) {
        let ack = injector.request(event(51).as_bytes());
        assert_eq!(ack["ok"], false, "{ack}");
        refused += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut http = HttpClient::connect(pair.m2.http_addr());
    let response = pair.post(0, &mut http, &event(51));
    assert_eq!(response.status, 503, "{:?}", response.json());

    // Back: both relays reconnect and delivery carries on, in order, once.
    broker.launch();
    for relay in &pair.relays {
        relay.status_eventually(&pair.m2, |s| s["amqp"]["connected"] == true);
    }
    for n in 51..=100 {
        let ack = injector.request(event(n).as_bytes());
        assert_eq!(ack, json!({"ok":true,"confirmed":true}));
    }
    let positions = read_in_order(&mut b, 50, 51);
    assert_eq!(positions.len(), 50);
    b.assert_nothing_pending();

    let status = a.status(&pair.m2);
    assert!(status["amqp"]["outages"].as_u64() >= Some(1), "{status}");
    assert!(
        status["amqp"]["failed"].as_u64() > Some(refused),
        "{status}"
    );
    let metrics = String::from_utf8(get(&pair.m2, "/a/events/metrics").body).expect("text");
    assert!(metrics.contains("relay_amqp_outages_total "), "{metrics}");
    assert!(metrics.contains("relay_amqp_connected 1\n"), "{metrics}");
}

/// Not a timed test: fan-out throughput through RabbitMQ and in memory, in one run.
/// `cargo test -p mongrel2-event-relay --release --test event_relay -- --ignored --nocapture
/// benchmark`
#[test]
#[ignore = "a benchmark, run by hand"]
fn benchmark_fan_out_through_rabbitmq_and_in_memory() {
    if !rabbitmq_installed() {
        return;
    }
    const SUBSCRIBERS: usize = 1000;
    const EVENTS: u64 = 200;
    let broker = RabbitMq::start();
    let pair = Pair::start(&broker);
    let memory = Fixture::start();
    for (mode, m2, relay) in [
        ("rabbitmq", &pair.m2, &pair.relays[0]),
        ("memory", &memory.m2, &memory.relay),
    ] {
        let mut clients: Vec<Client> = (0..SUBSCRIBERS).map(|_| relay.ws(m2)).collect();
        let subscribe = json!({"action":"Subscribe","tag":"s",
                               "payload":{"exchange":"calls","routing_key":"bench"}});
        for c in &mut clients {
            c.send(&subscribe);
        }
        for c in &mut clients {
            assert_eq!(c.recv()["event"], "Subscribed");
        }
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).expect("PUSH");
        push.connect(&relay.pull_events).expect("connect");
        let started = Instant::now();
        for n in 0..EVENTS {
            let event = json!({"exchange":"calls","routing_key":"bench","event":"B",
                               "payload":{"via":"pull","n":n + 1}});
            push.send(event.to_string().as_bytes(), 0).expect("push");
        }
        // When the relay has queued every event to every session (through RabbitMQ: read
        // back from the stream), then when the last subscriber has read them all.
        relay.status_eventually(m2, |s| {
            s["events_queued"].as_u64() >= Some(EVENTS * SUBSCRIBERS as u64)
        });
        let queued = started.elapsed().as_secs_f64();
        for c in &mut clients {
            read_in_order(c, EVENTS as usize, 1);
        }
        let took = started.elapsed().as_secs_f64();
        eprintln!(
            "{mode}: {EVENTS} events to {SUBSCRIBERS} subscribers: queued to all in {queued:.2} s \
             ({:.0} events/s), read by all in {took:.2} s ({:.0} deliveries/s)",
            EVENTS as f64 / queued,
            (EVENTS * SUBSCRIBERS as u64) as f64 / took
        );
    }
}
