//! Relays as a group, sans IO: three cores whose group messages the test carries by hand,
//! so it can lose them the way a member killed mid-send does.

use super::*;
use crate::group::sequencer;

/// Members `m0`, `m1`, `m2`; each has one session (key 1) subscribed to every key.
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

    /// Per member: (key, seq) -> n, from its session's flushes so far (each seq once).
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

    /// A key that member `i` numbers.
    fn key_of(&self, i: usize) -> String {
        (0..1000)
            .map(|n| format!("k{n}"))
            .find(|k| self.sequencer_of(k) == i)
            .expect("some key")
    }

    fn sequencer_of(&self, key: &str) -> usize {
        let live: Vec<String> = (0..3)
            .filter(|i| self.alive[*i])
            .map(|i| self.names[i].clone())
            .collect();
        let name = sequencer(&live, "calls", key).unwrap();
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
    assert_eq!(got[0].len(), 40);
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0], got[2]);
    for key in KEYS {
        let seqs: Vec<u64> = got[0]
            .keys()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8], "{key}");
    }
    // Each member numbered only its own keys.
    let sequenced: u64 = net
        .relays
        .iter()
        .map(|r| r.group_stats().unwrap().sequenced)
        .sum();
    assert_eq!(sequenced, 40);
}

#[test]
fn a_new_sequencer_goes_on_from_the_highest_seq_a_survivor_has() {
    let mut net = Net::new();
    let key = &net.key_of(2);
    let mut got = vec![BTreeMap::new(); 3];
    for n in 0..3 {
        net.publish(0, key, n);
        net.deliver();
    }
    // m2 numbers the 4th, but only m1 hears of it before m2 dies.
    assert_eq!(net.publish(0, key, 3), Ack::Forwarded);
    net.step(0, Some(2));
    net.step(2, Some(1));
    // And the 5th reaches m2 never.
    assert_eq!(net.publish(0, key, 4), Ack::Forwarded);
    net.relays[0].take_group_sends();
    net.kill(2);
    assert!(net.relays[0].group_stats().unwrap().synced);
    net.received(&mut got);
    net.publish(1, key, 5);
    net.deliver();
    net.received(&mut got);
    let expected: BTreeMap<(String, u64), u64> =
        (0..6).map(|n| ((key.to_owned(), n + 1), n)).collect();
    assert_eq!(
        got[0], expected,
        "m0 got the 4th as a repair, the 5th sent again"
    );
    assert_eq!(got[1], expected);
    let m0 = net.relays[0].group_stats().unwrap();
    assert_eq!((m0.unconfirmed, m0.resent), (0, 1), "{m0:?}");
    assert!(net.relays[1].group_stats().unwrap().repairs_sent >= 1);
}

#[test]
fn publishes_wait_while_members_disagree_and_broken_messages_are_skipped() {
    let mut net = Net::new();
    // m0 hears of a member the others do not know yet: it holds what it would number.
    let four: Vec<String> = ["m0", "m1", "m2", "m3"].map(String::from).to_vec();
    net.relays[0].group_members(four, net.now);
    let mut got = vec![BTreeMap::new(); 3];
    let key = *KEYS
        .iter()
        .find(|k| net.sequencer_of(k) == 0)
        .expect("a key of m0");
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
    ] {
        net.relays[1].group_message("m0", junk, now);
    }
    net.received(&mut got);
    assert_eq!(got[1].len(), 1);
}
