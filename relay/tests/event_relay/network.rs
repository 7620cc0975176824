//! Linked relays: several relay children behind one Mongrel2 (one handler and route each,
//! `/a/events`, `/b/events`, ...), publishing to each other over their link sockets.

use super::*;

/// Relays `a`, `b`, `c`, ... behind one Mongrel2; relays stop before it.
pub struct Net {
    pub relays: Vec<RelayProcess>,
    /// Each relay's `--link-bind`.
    pub binds: Vec<String>,
    pub m2: Mongrel2,
}

impl Net {
    /// Relay `i` subscribes to the link publishers of the relays listed in `links[i]`.
    pub fn start(links: &[&[usize]]) -> Net {
        let mut config = test_config();
        config["timing"] = json!({"link_heartbeat_ms": 200});
        Net::with(&config, links)
    }

    /// Like [`Net::start`], every relay with `config`.
    pub fn with(config: &Value, links: &[&[usize]]) -> Net {
        let names = ["a", "b", "c", "d"];
        let mut builder = Mongrel2::builder();
        for name in &names[..links.len()] {
            builder = builder.handler(HandlerConf::new(&format!("/{name}/events")));
        }
        let m2 = builder.start();
        let binds: Vec<String> = links.iter().map(|_| free_endpoint()).collect();
        let mut relays: Vec<RelayProcess> = links
            .iter()
            .enumerate()
            .map(|(i, peers)| {
                let setup = Setup {
                    handler: i,
                    link_bind: Some(binds[i].clone()),
                    links: peers.iter().map(|&j| binds[j].clone()).collect(),
                    ..Setup::new(config)
                };
                RelayProcess::start(&m2, setup)
            })
            .collect();
        for relay in &mut relays {
            relay.wait_ready(&m2);
        }
        Net { relays, binds, m2 }
    }

    pub fn status(&self, i: usize) -> Value {
        self.relays[i].status(&self.m2)
    }

    /// Waits until relay `i` has heard a hello through every one of its links, and
    /// returns that status.
    pub fn links_verified(&self, i: usize) -> Value {
        self.relays[i].status_eventually(&self.m2, |s| {
            s["links"]["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|p| p["verified"] == true))
        })
    }

    pub fn subscriber(&self, i: usize, routing_key: &str) -> Client {
        let mut client = self.relays[i].ws(&self.m2);
        client.subscribe("calls", routing_key);
        client
    }
}

#[test]
fn three_linked_relays_deliver_every_event_once_everywhere_in_order() {
    // a <-> b both ways, c subscribes to b, a subscribes to c: every relay reaches every
    // other, with a cycle (a -> b -> c -> a) and two paths from b to a.
    let net = Net::start(&[&[1, 2], &[0], &[1]]);
    for i in 0..3 {
        let status = net.links_verified(i);
        assert_eq!(
            status["links"]["relay"].as_str().map(|r| r.len() > 2),
            Some(true)
        );
    }
    let mut clients: Vec<Client> = (0..3).map(|i| net.subscriber(i, "net")).collect();
    let injectors: Vec<Injector> = net.relays.iter().map(RelayProcess::injector).collect();
    const ROUNDS: u64 = 20;
    for n in 0..ROUNDS {
        for (from, inj) in injectors.iter().enumerate() {
            let ack = inj.publish("calls", "net", "Net", json!({"from": from, "n": n}));
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }
    let total = 3 * ROUNDS;
    for (i, client) in clients.iter_mut().enumerate() {
        let mut next_n = [0u64; 3];
        for seq in 1..=total {
            let event = client.recv();
            // Each relay numbers the key for its own clients: 1, 2, 3, ... with no gap.
            assert_eq!(event["mq"]["seq"], seq, "relay {i}: {event}");
            let from = event["payload"]["from"].as_u64().expect("from") as usize;
            // Per origin, in the order it was published; together, each exactly once.
            assert_eq!(event["payload"]["n"], next_n[from], "relay {i}: {event}");
            next_n[from] += 1;
        }
        assert_eq!(next_n, [ROUNDS; 3], "relay {i}");
    }
    // Once every copy has arrived, each relay has seen exactly the copies the topology
    // makes: a hears everything from b and c (120, 40 new), b and c everything from one
    // peer (60, 40 new). A loop would show up as more.
    for (i, duplicates) in [(0, 80), (1, 20), (2, 20)] {
        let status = net.relays[i].status_eventually(&net.m2, |s| {
            s["events_duplicate"] == duplicates
                && s["events_in"]["link"] == 2 * ROUNDS
                && s["events_in"]["inject"] == ROUNDS
        });
        assert!(
            status["links"]["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .all(|p| p["missed"] == 0 && p["restarts"] == 0),
            "{status}"
        );
        assert_eq!(status["links"]["published"], total, "{status}");
    }
    for client in &mut clients {
        client.assert_nothing_pending();
    }
    // Resume works on every relay with that relay's own numbering.
    for i in 0..3 {
        let mut late = net.relays[i].ws(&net.m2);
        let epoch = late.epoch.clone();
        late.send(&json!({"action":"Resume","tag":"r",
                          "payload":{"exchange":"calls","routing_key":"net","since": total - 2,"epoch":epoch}}));
        assert_eq!(late.recv()["mq"]["seq"], total - 1);
        assert_eq!(late.recv()["mq"]["seq"], total);
        let resumed = late.recv();
        assert_eq!(resumed["event"], "Resumed", "{resumed}");
        assert_eq!(resumed["payload"]["recovered"], true);
    }
    // Each publisher knows who listens: a is heard by b, b by a and c, c by a.
    let subscribers = |i: usize| -> Vec<String> {
        let mut s: Vec<String> = net.status(i)["links"]["subscribers"]
            .as_array()
            .expect("subscribers")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect();
        s.sort();
        s
    };
    let id = |i: usize| {
        net.status(i)["links"]["relay"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    assert_eq!(subscribers(0), [id(1)]);
    let mut b_heard_by = vec![id(0), id(2)];
    b_heard_by.sort();
    assert_eq!(subscribers(1), b_heard_by);
    assert_eq!(subscribers(2), [id(0)]);
}

#[test]
fn relays_with_a_link_secret_link_and_deliver_both_ways() {
    let mut config = test_config();
    config["timing"] = json!({"link_heartbeat_ms": 200});
    config["link_secret"] = json!(LINK_SECRET);
    let mut net = Net::with(&config, &[&[1], &[0]]);
    for i in 0..2 {
        let status = net.links_verified(i);
        assert_eq!(status["links"]["authenticated"], true, "{status}");
    }
    let mut clients: Vec<Client> = (0..2).map(|i| net.subscriber(i, "s")).collect();
    for (from, relay) in net.relays.iter().enumerate() {
        let ack = relay
            .injector()
            .publish("calls", "s", "Signed", json!({"from": from}));
        assert_eq!(ack["ok"], true, "{ack}");
        for client in &mut clients {
            assert_eq!(client.recv()["payload"]["from"], from);
        }
    }
    // Each publisher lists the other as its one authenticated subscriber.
    let ids: Vec<Value> = (0..2)
        .map(|i| net.status(i)["links"]["relay"].clone())
        .collect();
    for i in 0..2 {
        let status = net.status(i);
        assert_eq!(
            status["links"]["subscribers"],
            json!([ids[1 - i]]),
            "{status}"
        );
        assert_eq!(status["links"]["refused"], 0, "{status}");
        assert_eq!(status["links"]["peers"][0]["refused"], 0, "{status}");
    }
    // A restart goes through the handshake again.
    net.relays[1].restart();
    net.relays[1].wait_ready(&net.m2);
    net.links_verified(1);
    let mut on_b = net.subscriber(1, "s");
    net.relays[0].status_eventually(&net.m2, |s| {
        s["links"]["subscribers"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0] != ids[1])
    });
    let ack = net.relays[0]
        .injector()
        .publish("calls", "s", "Again", json!({}));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(on_b.recv()["event"], "Again");
    assert_eq!(clients[0].recv()["event"], "Again");
    // a's own link answered the new run's challenge too.
    net.relays[0].status_eventually(&net.m2, |s| {
        let peer = &s["links"]["peers"][0];
        peer["restarts"] == 1 && peer["verified"] == true
    });
    let ack = net.relays[1]
        .injector()
        .publish("calls", "s", "FromNewB", json!({}));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(clients[0].recv()["event"], "FromNewB");
    assert_eq!(on_b.recv()["event"], "FromNewB");
}

#[test]
fn a_restarted_relay_rejoins_and_loses_nothing_after_verification() {
    let mut net = Net::start(&[&[1], &[0]]);
    net.links_verified(0);
    net.links_verified(1);
    let mut on_a = net.subscriber(0, "r");

    // b restarts: once its status says the link to a is verified, a burst published on a
    // right away must reach b's subscriber whole (a fresh SUB would miss the first ones).
    let old_b = net.status(1)["links"]["relay"].clone();
    net.relays[1].restart();
    net.relays[1].wait_ready(&net.m2);
    let mut on_b = net.subscriber(1, "r");
    let status = net.links_verified(1);
    assert_ne!(status["links"]["relay"], old_b, "a new run id");
    let a = net.relays[0].injector();
    for n in 0..200u64 {
        assert_eq!(
            a.publish("calls", "r", "Burst", json!({"n": n}))["ok"],
            true
        );
    }
    for n in 0..200u64 {
        let event = on_b.recv();
        assert_eq!(event["payload"]["n"], n, "{event}");
        assert_eq!(
            event["mq"]["seq"],
            n + 1,
            "b numbers from 1 again after its restart"
        );
        assert_eq!(on_a.recv()["payload"]["n"], n);
    }
    // a noticed: its link to b is verified again, with b's new run.
    let status = net.relays[0].status_eventually(&net.m2, |s| {
        let peer = &s["links"]["peers"][0];
        peer["restarts"] == 1 && peer["verified"] == true
    });
    assert_eq!(status["links"]["peers"][0]["missed"], 0);
    let b = net.relays[1].injector();
    assert_eq!(b.publish("calls", "r", "FromB", json!({}))["ok"], true);
    assert_eq!(on_a.recv()["event"], "FromB");
    assert_eq!(on_b.recv()["event"], "FromB");

    // Now a restarts: b's link goes through a new run of a, and events flow again.
    net.relays[0].restart();
    net.relays[0].wait_ready(&net.m2);
    let mut on_a = net.subscriber(0, "r");
    net.links_verified(0);
    net.relays[1].status_eventually(&net.m2, |s| {
        let peer = &s["links"]["peers"][0];
        peer["restarts"] == 1 && peer["verified"] == true
    });
    let a = net.relays[0].injector();
    for n in 0..50u64 {
        assert_eq!(
            a.publish("calls", "r", "Again", json!({"n": n}))["ok"],
            true
        );
    }
    for n in 0..50u64 {
        assert_eq!(on_b.recv()["payload"]["n"], n);
        assert_eq!(on_a.recv()["payload"]["n"], n);
    }
    for i in 0..2 {
        let status = net.status(i);
        assert_eq!(status["links"]["peers"][0]["missed"], 0, "{status}");
    }
    on_a.assert_nothing_pending();
    on_b.assert_nothing_pending();
}

/// `--mongrel2-control`: `/status` lists Mongrel2's own count of open client connections,
/// per control port, and names a control port that does not answer.
#[test]
fn status_shows_mongrel2s_open_connections() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let config = test_config();
    let silent = free_endpoint();
    let mut setup = Setup::new(&config);
    setup.args = vec![
        "--mongrel2-control".to_owned(),
        m2.control_endpoint(),
        "--mongrel2-control".to_owned(),
        silent.clone(),
    ];
    let mut relay = RelayProcess::start(&m2, setup);
    relay.wait_ready(&m2);
    let clients: Vec<Client> = (0..3).map(|_| relay.ws(&m2)).collect();
    let with_ids = |m: &Value| {
        m["connections"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["id"].is_u64()).count())
    };
    let status = relay.status_eventually(&m2, |s| {
        s["mongrel2"][0]["open_connections"]
            .as_u64()
            .is_some_and(|n| n >= 3)
            && with_ids(&s["mongrel2"][0]) >= 3
            // "not asked yet" until the first ask has timed out.
            && s["mongrel2"][1]["error"]
                .as_str()
                .is_some_and(|error| error.contains(&silent))
    });
    let real = &status["mongrel2"][0];
    assert_eq!(real["endpoint"], json!(m2.control_endpoint()), "{status}");
    assert_eq!(real["error"], Value::Null, "{status}");
    assert!(real["answered_ms_ago"].is_u64(), "{status}");
    let dead = &status["mongrel2"][1];
    assert_eq!(dead["endpoint"], json!(silent), "{status}");
    assert_eq!(dead["open_connections"], Value::Null, "{status}");
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(error.contains(&silent), "the error names the port: {error}");
    let metrics = String::from_utf8_lossy(&get(&m2, "/events/metrics").body).into_owned();
    assert!(
        metrics.contains("relay_mongrel2_connections{endpoint="),
        "{metrics}"
    );

    // The clients leave: Mongrel2's count (which the status reports as it is, the asking
    // GET included) falls back to at most the status request's own connection.
    drop(clients);
    relay.status_eventually(&m2, |s| {
        s["mongrel2"][0]["open_connections"]
            .as_u64()
            .is_some_and(|n| n <= 1)
    });
}
