//! Linked relays: several relay children behind one Mongrel2 (one handler and route each,
//! `/a/events`, `/b/events`, ...), publishing to each other over their link sockets.

use super::*;

/// Relays `a`, `b`, `c`, ... behind one Mongrel2; relays stop before it.
struct Net {
    relays: Vec<RelayProcess>,
    m2: Mongrel2,
}

impl Net {
    /// Relay `i` subscribes to the link publishers of the relays listed in `links[i]`.
    fn start(links: &[&[usize]]) -> Net {
        let mut config = test_config();
        config["timing"] = json!({"link_heartbeat_ms": 200});
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
                    config: &config,
                    link_bind: Some(binds[i].clone()),
                    links: peers.iter().map(|&j| binds[j].clone()).collect(),
                    ..Setup::new(&config)
                };
                RelayProcess::start(&m2, setup)
            })
            .collect();
        for relay in &mut relays {
            relay.wait_ready(&m2);
        }
        Net { relays, m2 }
    }

    fn status(&self, i: usize) -> Value {
        self.relays[i].status(&self.m2)
    }

    /// Waits until relay `i` has heard a hello through every one of its links, and
    /// returns that status.
    fn links_verified(&self, i: usize) -> Value {
        self.relays[i].status_eventually(&self.m2, |s| {
            s["links"]["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|p| p["verified"] == true))
        })
    }

    fn subscriber(&self, i: usize, routing_key: &str) -> Client {
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
        late.send(&json!({"action":"Resume","tag":"r","payload":{"exchange":"calls","routing_key":"net","since": total - 2}}));
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
