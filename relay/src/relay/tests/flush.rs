//! Flushes: coalescing and grouping, bursts, lag, download credits, pacing.

use super::*;

// ----- coalescing, grouping, lag -------------------------------------------------------------

#[test]
fn one_event_to_a_thousand_sessions_is_one_group() {
    let mut r = relay();
    for k in 0..1000 {
        r.open(k);
        r.on_message(
            &k,
            br#"{"action":"Subscribe","payload":{"exchange":"calls","routing_key":"q"}}"#,
        );
    }
    // Each Welcome carries its own id, so the first flush cannot share.
    assert_eq!(r.flush().deliveries.len(), 1000);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "E")), 1000);
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, (0..1000).collect::<Vec<_>>());
    assert_eq!(decode(&f.deliveries[0].payload)[0]["event"], "E");
    // 1000 ids at Mongrel2's default 128 targets per message: 8 messages.
    assert_eq!(f.deliveries[0].sessions.chunks(128).count(), 8);
    assert_eq!(r.stats().counters.payloads_out, 1000 + 1);
}

#[test]
fn sessions_group_by_identical_pending_bytes() {
    let mut r = relay();
    for k in 1..=4 {
        open(&mut r, k);
    }
    sub(&mut r, 1, "calls", "a");
    sub(&mut r, 2, "calls", "a");
    sub(&mut r, 3, "calls", "a");
    sub(&mut r, 3, "calls", "b");
    sub(&mut r, 4, "calls", "b");
    publish(&mut r, "calls", "a", "A");
    publish(&mut r, "calls", "b", "B");
    // Same bytes from different allocations still share a group (untagged Pongs).
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&4, br#"{"action":"Ping"}"#);
    let mut f = r.flush();
    f.deliveries.sort_by(|a, b| a.sessions.cmp(&b.sessions));
    let shapes: Vec<(Vec<Key>, Vec<String>)> = f
        .deliveries
        .iter()
        .map(|d| {
            let names = decode(&d.payload)
                .iter()
                .map(|v| v["event"].as_str().unwrap().to_owned())
                .collect();
            (d.sessions.clone(), names)
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (vec![1], vec!["A".into(), "Pong".into()]),
            (vec![2], vec!["A".into()]),
            (vec![3], vec!["A".into(), "B".into()]),
            (vec![4], vec!["B".into(), "Pong".into()]),
        ]
    );
    // Now without the pings: 1 and 2 share, and a Pong-only round merges 1 and 4.
    publish(&mut r, "calls", "a", "A2");
    let f = r.flush();
    let group: Vec<_> = f.deliveries.iter().map(|d| d.sessions.clone()).collect();
    assert_eq!(group, vec![vec![1, 2, 3]]);
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&4, br#"{"action":"Ping"}"#);
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, vec![1, 4]);
}

#[test]
fn a_burst_of_1000_arrives_complete_in_order_in_few_payloads() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    for n in 1..=1000 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    let f = r.flush();
    assert_eq!(f.deliveries.len(), 1);
    let frames = decode(&f.deliveries[0].payload);
    assert_eq!(seqs_of(&frames), (1..=1000).collect::<Vec<_>>());
    assert!(f.deliveries[0].payload.len() <= 256 * 1024);
    assert!(!r.has_pending());
    assert_eq!(r.stats().counters.dropped, 0);
}

#[test]
fn big_bursts_are_split_across_flushes_within_the_byte_cap() {
    let mut r = relay();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    let pad = "x".repeat(1000);
    for n in 1..=1000 {
        let body =
            json!({"exchange":"calls","routing_key":"q","event":"Big","payload":{"n":n,"pad":pad}})
                .to_string();
        r.publish_json(Source::Pull, body.as_bytes());
    }
    let mut seqs = Vec::new();
    let mut flushes = 0;
    while r.has_pending() {
        let f = r.flush();
        flushes += 1;
        assert_eq!(f.deliveries.len(), 1);
        assert!(f.deliveries[0].payload.len() <= 256 * 1024);
        seqs.extend(seqs_of(&decode(&f.deliveries[0].payload)));
        assert!(flushes < 100, "no progress");
    }
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert!((4..=6).contains(&flushes), "{flushes} flushes for ~1 MB");
}

#[test]
fn burst_over_a_small_bound_lags_and_resume_fills_the_gap() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":16,"history_per_key":1000}}"#);
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    for n in 1..=1000 {
        assert_eq!(
            delivered(&publish(&mut r, "calls", "q", &format!("E{n}"))),
            1
        );
    }
    let got = flush(&mut r).remove(&1).unwrap();
    // The gap is announced first (nothing delivered on q before it), then the newest 16.
    assert_eq!(
        got[0],
        json!({"event":"Lagged","payload":{"exchange":"calls","routing_key":"q","last_seq":0}})
    );
    assert_eq!(seqs_of(&got[1..]), (985..=1000).collect::<Vec<_>>());
    let s = r.stats().counters;
    assert_eq!((s.dropped, s.lagged, s.overflowed), (984, 1, 0));
    assert_eq!(r.session_count(), 1, "the client stays connected");

    // A client following the protocol resumes until nothing more is missing.
    let mut have: BTreeSet<u64> = seqs_of(&got).into_iter().collect();
    let mut since = got[0]["payload"]["last_seq"].as_u64().unwrap();
    let mut rounds = 0;
    let epoch = r.epoch().to_owned();
    loop {
        rounds += 1;
        assert!(rounds < 200);
        let got = act(
            &mut r,
            1,
            &json!({"action":"Resume",
                    "payload":{"exchange":"calls","routing_key":"q","since":since,"epoch":epoch}}),
        );
        let (resumed, events) = got.split_last().unwrap();
        let replayed = seqs_of(events);
        assert!(replayed.windows(2).all(|w| w[1] == w[0] + 1), "in order");
        assert!(
            !events.iter().any(|e| e["event"] == "Lagged"),
            "a replay never lags itself"
        );
        have.extend(replayed);
        assert_eq!(resumed["payload"]["recovered"], true);
        since = resumed["payload"]["last_seq"].as_u64().unwrap();
        if resumed["payload"]["more"] == false {
            break;
        }
    }
    assert_eq!(have, (1..=1000).collect::<BTreeSet<_>>());
    assert_eq!(since, 1000);
}

#[test]
fn lag_on_several_keys_gives_one_notice_per_key() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":4}}"#);
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "*");
    for n in 0..10 {
        publish(&mut r, "calls", if n % 2 == 0 { "a" } else { "b" }, "E");
    }
    let got = flush(&mut r).remove(&1).unwrap();
    let lagged: Vec<_> = got
        .iter()
        .filter(|f| f["event"] == "Lagged")
        .map(|f| f["payload"].clone())
        .collect();
    assert_eq!(
        lagged,
        vec![
            json!({"exchange":"calls","routing_key":"a","last_seq":0}),
            // b's first event was position 2.
            json!({"exchange":"calls","routing_key":"b","last_seq":1}),
        ]
    );
    assert_eq!(got.len(), 2 + 4);
}

#[test]
fn a_session_that_only_piles_up_replies_is_closed() {
    let mut r = relay_with(r#"{"limits":{"pending_frames":8}}"#);
    open(&mut r, 1);
    open(&mut r, 2);
    for _ in 0..9 {
        r.on_message(&1, br#"{"action":"Ping"}"#);
    }
    r.on_message(&2, br#"{"action":"Ping"}"#);
    let f = r.flush();
    assert_eq!(f.close, vec![1]);
    assert_eq!(f.deliveries.len(), 1);
    assert_eq!(f.deliveries[0].sessions, vec![2]);
    assert_eq!(r.session_count(), 1);
    assert_eq!(r.stats().counters.overflowed, 1);
}

#[test]
fn download_credits_are_never_overdrawn() {
    let mut r = relay();
    let welcome_len = {
        r.open_with(
            1,
            OpenOptions {
                kind: SessionKind::WebSocket,
                credits: Some(10_000),
            },
        );
        r.flush().deliveries[0].payload.len()
    };
    sub(&mut r, 1, "calls", "q");
    let mut sent = welcome_len;
    let budget = 10_000;
    for n in 0..200 {
        publish(&mut r, "calls", "q", &format!("E{n}"));
    }
    let mut seqs = Vec::new();
    while r.has_pending() {
        for d in r.flush().deliveries {
            sent += d.payload.len();
            seqs.extend(seqs_of(&decode(&d.payload)));
        }
    }
    // The Subscribed reply was counted when `sub` flushed; stop short of the budget.
    assert!(sent <= budget, "{sent}");
    assert!(seqs.len() < 200, "credits ran out first");
    assert!(
        !r.has_pending(),
        "a starved session is not flushed again until credits arrive"
    );
    r.credits(&1, 1_000_000);
    assert!(r.has_pending());
    while r.has_pending() {
        for d in r.flush().deliveries {
            seqs.extend(seqs_of(&decode(&d.payload)));
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

// ----- paced flushes --------------------------------------------------------------------------

/// Who got what from one flush: session -> frames.
fn received(f: Flush<Key>) -> BTreeMap<Key, Vec<Value>> {
    let mut out = BTreeMap::new();
    for d in f.deliveries {
        for s in d.sessions {
            out.insert(s, decode(&d.payload));
        }
    }
    out
}

#[test]
fn paced_flushes_space_each_session_and_serve_quiet_ones_at_once() {
    let ms = Duration::from_millis;
    let gap = Pacing {
        gap: ms(10),
        burst: 1,
    };
    let mut r = relay();
    let t0 = Instant::now();
    assert_eq!(r.flush_wait(t0, gap), None, "nothing pending");
    r.open(1);
    r.open(2);
    assert_eq!(r.flush_wait(t0, gap), Some(Duration::ZERO), "never sent to");
    let got = received(r.flush_paced(t0, gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2]);

    // Session 1 was just sent to: its next message waits for the gap.
    r.on_message(&1, br#"{"action":"Ping","tag":"p"}"#);
    assert_eq!(r.flush_wait(t0 + ms(4), gap), Some(ms(6)));
    assert!(r.flush_paced(t0 + ms(4), gap).deliveries.is_empty());
    assert!(r.has_pending(), "kept for later");
    let got = received(r.flush_paced(t0 + gap.gap, gap));
    assert_eq!(got[&1][0]["event"], "Pong");
    assert!(!r.has_pending());

    // Session 2 has been quiet since t0: served at once while 1 would wait.
    r.on_message(&1, br#"{"action":"Ping"}"#);
    r.on_message(&2, br#"{"action":"Ping"}"#);
    let got = received(r.flush_paced(t0 + ms(12), gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(r.flush_wait(t0 + ms(12), gap), Some(ms(8)));
    let got = received(r.flush_paced(t0 + ms(20), gap));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1]);

    // Events that arrive within the gap are coalesced into the session's next message.
    sub(&mut r, 2, "calls", "q");
    for name in ["a", "b", "c"] {
        assert_eq!(delivered(&publish(&mut r, "calls", "q", name)), 1);
    }
    let now = t0 + ms(40);
    let got = received(r.flush_paced(now, gap));
    assert_eq!(seqs_of(&got[&2]), [1, 2, 3]);
    assert_eq!(delivered(&publish(&mut r, "calls", "q", "d")), 1);
    assert!(r.flush_paced(now + ms(9), gap).deliveries.is_empty());
    assert_eq!(
        seqs_of(&received(r.flush_paced(now + gap.gap, gap))[&2]),
        [4]
    );
}

#[test]
fn a_quiet_session_gets_a_burst_then_one_message_per_gap() {
    let ms = Duration::from_millis;
    let pacing = Pacing {
        gap: ms(10),
        burst: 4,
    };
    let mut r = relay();
    let t0 = Instant::now();
    open(&mut r, 1);
    sub(&mut r, 1, "calls", "q");
    // A full bucket (4; one refilled per 10 ms): four events 1 ms apart go out at once,
    // one message each.
    for i in 0..4u64 {
        let now = t0 + ms(i);
        publish(&mut r, "calls", "q", "E");
        assert_eq!(r.flush_wait(now, pacing), Some(Duration::ZERO));
        assert_eq!(seqs_of(&received(r.flush_paced(now, pacing))[&1]), [i + 1]);
    }
    // The bucket is empty: what comes now waits for the next refill and is coalesced.
    publish(&mut r, "calls", "q", "E");
    publish(&mut r, "calls", "q", "E");
    assert_eq!(r.flush_wait(t0 + ms(4), pacing), Some(ms(6)));
    assert!(r.flush_paced(t0 + ms(4), pacing).deliveries.is_empty());
    let got = received(r.flush_paced(t0 + ms(10), pacing));
    assert_eq!(seqs_of(&got[&1]), [5, 6]);
    // Sustained output: one message per gap, never two within one.
    publish(&mut r, "calls", "q", "E");
    assert!(r.flush_paced(t0 + ms(19), pacing).deliveries.is_empty());
    assert_eq!(
        seqs_of(&received(r.flush_paced(t0 + ms(20), pacing))[&1]),
        [7]
    );
    // After a quiet spell of burst x gap the whole bucket is back.
    let later = t0 + ms(60);
    for i in 0..4u64 {
        publish(&mut r, "calls", "q", "E");
        let got = received(r.flush_paced(later + ms(i), pacing));
        assert_eq!(seqs_of(&got[&1]), [8 + i]);
    }
    publish(&mut r, "calls", "q", "E");
    assert!(r.flush_paced(later + ms(4), pacing).deliveries.is_empty());
}
