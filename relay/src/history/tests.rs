use super::*;

fn rec(h: &mut History, e: &Arc<str>, k: &str) -> u64 {
    h.record(e, k, |seq| {
        Encoded::new(format!("{{\"seq\":{seq}}}").as_bytes(), &Meta::named("E"))
    })
    .seq
}

fn exact(k: &str) -> Pattern {
    Pattern::parse(k)
}

fn seqs(r: &Replay) -> Vec<u64> {
    r.events.iter().map(|(s, _, _)| *s).collect()
}

#[test]
fn positions_are_per_exchange_across_keys_from_one() {
    let mut h = History::new(10, 100, 1 << 20);
    let (calls, agents) = (Arc::from("calls"), Arc::from("agents"));
    assert_eq!(rec(&mut h, &calls, "a"), 1);
    assert_eq!(rec(&mut h, &calls, "a"), 2);
    assert_eq!(rec(&mut h, &calls, "b"), 3);
    assert_eq!(rec(&mut h, &agents, "a"), 1);
    assert_eq!(h.size().keys, 3);
    assert_eq!(h.size().events, 4);
}

#[test]
fn since_with_and_without_loss() {
    let mut h = History::new(3, 100, 1 << 20);
    let e = Arc::from("calls");
    for _ in 0..5 {
        rec(&mut h, &e, "k");
    }
    let r = h.since("calls", &exact("k"), 2);
    assert_eq!((seqs(&r), r.lost_upto, r.last_seq), (vec![3, 4, 5], 2, 5));
    let r = h.since("calls", &exact("k"), 1);
    assert_eq!((seqs(&r), r.lost_upto), (vec![3, 4, 5], 2), "2 is gone");
    let r = h.since("calls", &exact("k"), 5);
    assert_eq!(seqs(&r), Vec::<u64>::new());
    let r = h.since("calls", &exact("never"), 0);
    assert_eq!((seqs(&r), r.lost_upto, r.last_seq), (vec![], 0, 5));
    let r = h.since("nothing", &exact("k"), 0);
    assert_eq!((seqs(&r), r.lost_upto, r.last_seq), (vec![], 0, 0));
    let json = r#"{"seq":4}"#;
    assert_eq!(
        h.since("calls", &exact("k"), 3).events[0].2.json(),
        json.as_bytes()
    );
}

#[test]
fn a_wildcard_replays_every_key_it_covers_in_position_order() {
    let mut h = History::new(2, 100, 1 << 20);
    let e = Arc::from("calls");
    for k in ["q.a", "q.b", "x", "q.a", "q.c", "q.b", "q.a"] {
        rec(&mut h, &e, k);
    }
    let r = h.since("calls", &exact("q.*"), 2);
    let got: Vec<(u64, &str)> = r.events.iter().map(|(p, k, _)| (*p, &**k)).collect();
    assert_eq!(got, [(4, "q.a"), (5, "q.c"), (6, "q.b"), (7, "q.a")]);
    // q.a kept its last two (4, 7): 1 was dropped. x is not covered, so its history is
    // not a loss for this pattern.
    assert_eq!(r.lost_upto, 1);
    assert_eq!(h.since("calls", &exact("x"), 0).lost_upto, 0);
    assert_eq!(h.since("calls", &exact("*"), 0).events.len(), 6);
}

#[test]
fn key_budget_forgets_least_recently_published_and_remembers_the_loss() {
    let mut h = History::new(2, 2, 1 << 20);
    let e = Arc::from("calls");
    rec(&mut h, &e, "a");
    rec(&mut h, &e, "b");
    rec(&mut h, &e, "a");
    rec(&mut h, &e, "c");
    assert_eq!(h.size().keys, 2);
    let r = h.since("calls", &exact("b"), 0);
    assert!(r.events.is_empty(), "b was least recent");
    assert_eq!(r.lost_upto, 2, "b's name is gone, its position is not");
    assert_eq!(seqs(&h.since("calls", &exact("a"), 0)), vec![1, 3]);
    assert_eq!(rec(&mut h, &e, "b"), 5, "positions go on");
    assert_eq!(h.size().events, 2, "a went this time");
}

#[test]
fn byte_budget_is_kept() {
    let one = Encoded::new(br#"{"seq":1}"#, &Meta::named("E")).size();
    let mut h = History::new(100, 100, one * 3);
    let e = Arc::from("calls");
    for _ in 0..5 {
        rec(&mut h, &e, "a");
    }
    assert!(h.size().bytes <= one * 3);
    let r = h.since("calls", &exact("a"), 0);
    assert_eq!((seqs(&r), r.lost_upto), (vec![3, 4, 5], 2));
    rec(&mut h, &e, "b");
    assert!(h.size().bytes <= one * 3);
    assert_eq!(h.size().keys, 1, "the older key went first");
}

#[test]
fn zero_history_still_counts_positions_and_loses_them_all() {
    let mut h = History::new(0, 10, 1 << 20);
    let e = Arc::from("calls");
    assert_eq!(rec(&mut h, &e, "a"), 1);
    assert_eq!(rec(&mut h, &e, "a"), 2);
    assert_eq!(h.size().events, 0);
    assert_eq!(h.since("calls", &exact("a"), 1).lost_upto, 2);
}

#[test]
fn positions_from_outside_skip_repeats_and_remember_gaps() {
    let mut h = History::new(10, 100, 1 << 20);
    let e: Arc<str> = Arc::from("calls");
    let at = |h: &mut History, pos: u64| {
        h.record_at(&e, "k", pos, |p| {
            Encoded::new(format!("{{\"seq\":{p}}}").as_bytes(), &Meta::named("E"))
        })
        .map(|r| r.seq)
    };
    assert_eq!(at(&mut h, 1), Some(1));
    assert_eq!(at(&mut h, 1), None, "a repeat");
    assert_eq!(at(&mut h, 5), Some(5), "2..4 never came");
    let r = h.since("calls", &exact("k"), 1);
    assert_eq!((seqs(&r), r.lost_upto), (vec![5], 4));
    assert_eq!(
        h.since("calls", &exact("k"), 4).lost_upto,
        4,
        "nothing after 4 lost"
    );
    assert_eq!(
        rec(&mut h, &Arc::from("calls"), "k"),
        6,
        "local numbering goes on"
    );
}

#[test]
fn sse_frame_is_built_once_and_shared() {
    let enc = Encoded::new(b"{}", &Meta::named("E"));
    let a = enc.frame(SessionKind::Sse);
    let b = enc.frame(SessionKind::Sse);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(&*a, b"13\r\nevent: E\ndata: {}\n\n\r\n");
    assert_eq!(&enc.frame(SessionKind::WebSocket)[..], b"\x81\x02{}");
}
