//! A relay group on RabbitMQ (`--amqp` with `--group-bind`): members do not sequence;
//! each consumes the streams and delivers to the sessions it owns, so every client sees
//! the streams' positions and epoch whichever member serves it.

use std::collections::BTreeSet;

use super::rabbitmq::{rabbitmq_installed, RabbitMq};
use super::*;

const EVENTS: u64 = 40;
const CLIENTS: usize = 8;

#[test]
fn a_group_on_rabbitmq_delivers_stream_positions_from_every_member() {
    if !rabbitmq_installed() {
        return;
    }
    let broker = RabbitMq::start();
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/events"))
        .start();
    let config = test_config();
    let binds: Vec<String> = (0..2).map(|_| free_endpoint()).collect();
    let mut relays: Vec<RelayProcess> = binds
        .iter()
        .map(|bind| {
            let mut setup = Setup {
                ping_interval: 1,
                args: group_args(bind, &binds),
                ..Setup::new(&config)
            };
            setup.amqp = Some(broker.url());
            RelayProcess::start(&m2, setup)
        })
        .collect();
    for relay in &mut relays {
        relay.wait_ready(&m2);
    }
    // The group has formed once each member logged its peer's join (the library's line);
    // sessions opened before would be handed to their owner with 1012.
    let deadline = Instant::now() + WAIT;
    for relay in &relays {
        while !fs::read_to_string(&relay.log)
            .unwrap_or_default()
            .contains(" joined at ")
        {
            assert!(
                Instant::now() < deadline,
                "no peer joined: {}",
                relay.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Each member takes publishes once its RabbitMQ connection is up (on another exchange
    // than the clients'); until then it refuses them.
    let injectors: Vec<Injector> = relays.iter().map(RelayProcess::injector).collect();
    for injector in &injectors {
        let deadline = Instant::now() + WAIT;
        let warm = json!({"exchange":"agents","routing_key":"w","event":"W","payload":{}});
        while injector.request(warm.to_string().as_bytes())["ok"] != true {
            assert!(Instant::now() < deadline, "RabbitMQ never took a publish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut ws = ws_connect(m2.http_addr(), "/events");
            let welcome = read_json(&mut ws);
            assert_eq!(welcome["payload"]["epoch"], "amqp:event-relay", "{welcome}");
            let member = welcome["payload"]["member"].as_str().expect("member");
            let member = member.to_owned();
            let sub =
                json!({"action":"Subscribe","payload":{"exchange":"calls","routing_key":"g.*"}});
            ws.send(tungstenite::Message::text(sub.to_string()))
                .expect("subscribe");
            assert_eq!(read_json(&mut ws)["event"], "Subscribed");
            (ws, member)
        })
        .collect();
    // Published through both members, one at a time (each answered once RabbitMQ has it).
    for n in 0..EVENTS {
        let ack = injectors[n as usize % 2].publish("calls", "g.1", "G", json!({ "n": n }));
        assert_eq!(ack, json!({"ok":true,"confirmed":true}));
    }
    let mut seen: Option<Vec<u64>> = None;
    let mut members = BTreeSet::new();
    for (ws, member) in &mut clients {
        let mut positions = Vec::new();
        let mut ns = Vec::new();
        while ns.len() < EVENTS as usize {
            let v = read_json(ws);
            if v["event"] == "G" {
                positions.push(v["mq"]["seq"].as_u64().expect("seq"));
                ns.push(v["payload"]["n"].as_u64().expect("n"));
            }
        }
        assert_eq!(
            ns,
            (0..EVENTS).collect::<Vec<_>>(),
            "{member}: each once, in order"
        );
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        match &seen {
            Some(first) => assert_eq!(&positions, first, "{member}: the streams' positions"),
            None => seen = Some(positions),
        }
        members.insert(member.clone());
    }
    eprintln!(
        "{CLIENTS} clients served by {} members on RabbitMQ got {EVENTS} events at the same positions",
        members.len()
    );
}
