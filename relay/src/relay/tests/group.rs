//! Relays as a group, sans IO: three cores whose group messages the test carries by hand,
//! so it can lose them the way a member killed mid-send does.

use super::*;
use crate::group::sequencer;

/// Members `m0`, `m1`, `m2`; each has one session (key 1) subscribed to every key of
/// `calls`, which one of them (see [`Net::sequencer_of`]) numbers.
struct Net {
    relays: Vec<Relay<Key>>,
    names: Vec<String>,
    alive: Vec<bool>,
    now: Instant,
}

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        let names: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
        let mut relays: Vec<Relay<Key>> = (0..3)
            .map(|i| Relay::new(config(None), &format!("relay-{i}")))
            .collect();
        for (r, name) in relays.iter_mut().zip(&names) {
            r.enable_group(name, 3, Duration::ZERO, Duration::from_secs(5), now);
            r.open(1);
            let welcome = flush(r).remove(&1).unwrap();
            assert_eq!(
                welcome[0]["payload"]["member"],
                json!(name),
                "Welcome names the member"
            );
            sub(r, 1, "calls", "*");
        }
        let mut net = Net {
            relays,
            names,
            alive: vec![true; 3],
            now,
        };
        net.members_changed();
        for r in &net.relays {
            assert!(r.group_stats().is_some_and(|s| s.synced));
        }
        let epoch = net.relays[0].epoch().to_owned();
        assert!(
            net.relays.iter().all(|r| r.epoch() == epoch),
            "one epoch for the group"
        );
        assert_eq!(
            epoch,
            net.relays.iter().map(|r| r.welcome_run()).min().unwrap(),
            "the smallest run's"
        );
        net
    }

    fn members_changed(&mut self) {
        let live: Vec<String> = (0..3)
            .filter(|i| self.alive[*i])
            .map(|i| self.names[i].clone())
            .collect();
        for i in 0..3 {
            if self.alive[i] {
                self.relays[i].group_members(live.clone(), self.now);
            }
        }
        self.deliver();
    }

    /// Carries `from`'s pending messages: to `only` when given (the rest are lost).
    fn step(&mut self, from: usize, only: Option<usize>) -> bool {
        let sends = self.relays[from].take_group_sends();
        let moved = !sends.is_empty();
        for (to, body) in sends {
            let Some(to) = self.names.iter().position(|n| *n == to) else {
                continue;
            };
            if self.alive[to] && only.is_none_or(|only| only == to) {
                let (name, now) = (self.names[from].clone(), self.now);
                self.relays[to].group_message(&name, &body, now);
            }
        }
        moved
    }

    /// Carries every message until nothing moves.
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..3 {
                if self.alive[i] {
                    moved |= self.step(i, None);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn kill(&mut self, i: usize) {
        self.alive[i] = false;
        self.relays[i].take_group_sends();
        self.members_changed();
    }

    fn publish(&mut self, at: usize, key: &str, n: u64) -> Ack {
        let body = json!({"exchange":"calls","routing_key":key,"event":"E","payload":{"n":n}});
        self.relays[at].publish_json(Source::Inject, body.to_string().as_bytes())
    }

    /// Per member: (key, position) -> n, from its session's flushes so far (each once).
    fn received(&mut self, got: &mut [BTreeMap<(String, u64), u64>]) {
        for (i, (relay, seen)) in self.relays.iter_mut().zip(got.iter_mut()).enumerate() {
            if !self.alive[i] {
                continue;
            }
            for frame in flush(relay).remove(&1).unwrap_or_default() {
                let Some(mq) = frame.get("mq") else { continue };
                let key = (
                    mq["rk"].as_str().unwrap().to_owned(),
                    mq["seq"].as_u64().unwrap(),
                );
                let n = frame["payload"]["n"].as_u64().unwrap();
                assert!(seen.insert(key, n).is_none(), "m{i} got {frame} twice");
            }
        }
    }

    /// The live member that numbers `calls`.
    fn sequencer_of(&self) -> usize {
        let live: Vec<String> = (0..3)
            .filter(|i| self.alive[*i])
            .map(|i| self.names[i].clone())
            .collect();
        let name = sequencer(&live, "calls").unwrap();
        self.names.iter().position(|n| n == name).unwrap()
    }
}

#[test]
fn every_member_numbers_alike_and_each_session_gets_each_event_once() {
    let mut net = Net::new();
    let mut got = vec![BTreeMap::new(); 3];
    for n in 0..40u64 {
        let key = KEYS[n as usize % KEYS.len()];
        let ack = net.publish(n as usize % 3, key, n);
        assert!(
            matches!(ack, Ack::Published { .. } | Ack::Forwarded),
            "{ack:?}"
        );
        net.deliver();
    }
    net.received(&mut got);
    // Positions count across the exchange's keys, in publish order, alike everywhere.
    let expected: BTreeMap<(String, u64), u64> = (0..40u64)
        .map(|n| ((KEYS[n as usize % KEYS.len()].to_owned(), n + 1), n))
        .collect();
    assert_eq!(got[0], expected);
    assert_eq!(got[1], expected);
    assert_eq!(got[2], expected);
    // The exchange's sequencer numbered them all.
    let sequenced: Vec<u64> = net
        .relays
        .iter()
        .map(|r| r.group_stats().unwrap().sequenced)
        .collect();
    let s = net.sequencer_of();
    assert_eq!(sequenced[s], 40);
    assert_eq!(sequenced.iter().sum::<u64>(), 40);
}

#[test]
fn a_new_sequencer_goes_on_from_the_highest_position_a_survivor_has() {
    let mut net = Net::new();
    // s numbers `calls`; p publishes, w witnesses.
    let s = net.sequencer_of();
    let (p, w) = ((s + 1) % 3, (s + 2) % 3);
    let mut got = vec![BTreeMap::new(); 3];
    let key = |n: u64| KEYS[n as usize % KEYS.len()];
    for n in 0..3 {
        net.publish(p, key(n), n);
        net.deliver();
    }
    // s numbers the 4th, but only w hears of it before s dies.
    assert_eq!(net.publish(p, key(3), 3), Ack::Forwarded);
    net.step(p, Some(s));
    net.step(s, Some(w));
    // And the 5th reaches s never.
    assert_eq!(net.publish(p, key(4), 4), Ack::Forwarded);
    net.relays[p].take_group_sends();
    net.kill(s);
    assert!(net.relays[p].group_stats().unwrap().synced);
    net.received(&mut got);
    net.publish(w, key(5), 5);
    net.deliver();
    net.received(&mut got);
    let expected: BTreeMap<(String, u64), u64> =
        (0..6).map(|n| ((key(n).to_owned(), n + 1), n)).collect();
    assert_eq!(
        got[p], expected,
        "p got the 4th as a repair, the 5th sent again"
    );
    assert_eq!(got[w], expected);
    let stats = net.relays[p].group_stats().unwrap();
    assert_eq!((stats.unconfirmed, stats.resent), (0, 1), "{stats:?}");
    assert!(net.relays[w].group_stats().unwrap().repairs_sent >= 1);
}

#[test]
fn a_fresh_member_takes_the_running_groups_epoch_and_history() {
    let mut net = Net::new();
    let s = net.sequencer_of();
    let mut got = vec![BTreeMap::new(); 3];
    for n in 0..4 {
        net.publish(s, KEYS[n as usize], n);
        net.deliver();
    }
    net.received(&mut got);
    let epoch = net.relays[0].epoch().to_owned();
    // One member restarts: a new run, no positions; it rejoins.
    let r = (s + 1) % 3;
    net.kill(r);
    net.relays[r] = Relay::new(config(None), "relay-again");
    let name = net.names[r].clone();
    net.relays[r].enable_group(&name, 3, Duration::ZERO, Duration::from_secs(5), net.now);
    net.relays[r].open(1);
    flush(&mut net.relays[r]);
    sub(&mut net.relays[r], 1, "calls", "*");
    net.alive[r] = true;
    net.members_changed();
    assert_eq!(
        net.relays[r].epoch(),
        epoch,
        "the group's epoch, not its run"
    );
    let resumed = act(
        &mut net.relays[r],
        1,
        &json!({"action":"Resume","payload":{"exchange":"calls","routing_key":"*","since":2,"epoch":epoch}}),
    );
    let last = resumed.last().unwrap();
    assert_eq!(last["event"], "Resumed", "{resumed:?}");
    assert_eq!(last["payload"]["recovered"], true, "repaired: {resumed:?}");
    assert_eq!(last["payload"]["last_seq"], 4);
}

#[test]
fn publishes_wait_while_members_disagree_and_broken_messages_are_skipped() {
    let mut net = Net::new();
    // m0 hears of a member the others do not know yet: it holds what it would number.
    let four: Vec<String> = ["m0", "m1", "m2", "m3"].map(String::from).to_vec();
    net.relays[0].group_members(four, net.now);
    assert_ne!(
        sequencer(&["m0", "m1", "m2", "m3"].map(String::from), "calls"),
        Some("m3"),
        "m0 numbers or forwards to a member the others know"
    );
    let mut got = vec![BTreeMap::new(); 3];
    let key = KEYS[0];
    assert_eq!(net.publish(0, key, 0), Ack::Forwarded);
    net.deliver();
    net.received(&mut got);
    assert!(got[0].is_empty() && got[1].is_empty());
    assert_eq!(net.relays[0].group_stats().unwrap().held, 1);
    // The others' views never match: after the sync timeout m0 numbers anyway.
    net.now += Duration::from_secs(6);
    let now = net.now;
    net.relays[0].group_tick(now);
    net.deliver();
    net.received(&mut got);
    assert_eq!(got[0].len() + got[1].len() + got[2].len(), 3);
    assert_eq!(net.relays[0].group_stats().unwrap().sync_timeouts, 1);
    for junk in [
        &b"nonsense"[..],
        br#"{"v":9}"#,
        br#"{"v":1,"kind":"ev","seq":1}"#,
        br#"{"v":2,"kind":"tips","members":[],"epoch":"e","tips":[["calls","k",9]],"last":true,"reply":false}"#,
    ] {
        net.relays[1].group_message("m0", junk, now);
    }
    net.received(&mut got);
    assert_eq!(got[1].len(), 1);
}

#[test]
fn the_sequencers_sessions_get_an_event_once_every_peer_has_it() {
    let mut net = Net::new();
    let s = net.sequencer_of();
    let (a, b) = ((s + 1) % 3, (s + 2) % 3);
    let mut got = vec![BTreeMap::new(); 3];
    net.publish(s, "a", 0);
    net.received(&mut got);
    assert!(got[s].is_empty(), "not before the peers have it");
    assert_eq!(net.relays[s].group_stats().unwrap().awaiting, 1);
    // a has it and acks; b never hears of it.
    net.step(s, Some(a));
    net.step(a, Some(s));
    net.received(&mut got);
    assert!(got[s].is_empty(), "b has not acked");
    assert_eq!(got[a].len(), 1);
    // After the sync timeout it is delivered anyway, counted.
    net.now += Duration::from_secs(6);
    let now = net.now;
    net.relays[s].group_tick(now);
    net.received(&mut got);
    assert_eq!(got[s], got[a]);
    let stats = net.relays[s].group_stats().unwrap();
    assert_eq!((stats.awaiting, stats.ack_timeouts), (0, 1), "{stats:?}");
    // With every ack, at once; in order behind nothing.
    net.relays[b].take_group_sends();
    net.publish(s, "b", 1);
    net.deliver();
    net.received(&mut got);
    assert_eq!(got[s].len(), 2);
    assert_eq!(got[s].keys().last(), Some(&("b".to_owned(), 2)));
}
