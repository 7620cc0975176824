//! The live web page (`web/`) in headless Chromium, served by a real Mongrel2 next to a real
//! event relay: subscribing through the page's form, events injected through the relay's
//! injector REP socket and read back from the DOM, then Mongrel2 restarts (the page resumes
//! from the relay's history) and Mongrel2 + relay restarts (a new epoch: the relay numbers
//! positions from 1 again and the page must notice).
//!
//! The relay is the crate's `event-relay` binary, run as a child process (Cargo builds it
//! before the tests), as in tests/event_relay.rs.
//!
//! Needs Chromium (`apt-get install -y chromium`; scripts/test installs it), driven over the
//! DevTools protocol by `headless_chrome`. Without them the test fails under `CI=true` and is skipped, loudly,
//! otherwise. Screenshots go to `target/artifacts/` for review.

mod chrome;
mod page;

use std::collections::BTreeMap;

use serde_json::json;

use page::*;

// ----- the tests -------------------------------------------------------------------------

#[test]
fn the_page_shows_live_events_and_catches_up_after_restarts() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let limits = json!({"history_per_key": 100});
    let mut m2 = mongrel2_with_page();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    relay_status_eventually(&m2, &mut relay);
    let browser = open_page(&tools, &m2);
    let title = browser.execute("return document.title;").expect("title");
    assert_eq!(title, json!("Event relay"));

    // Subscribing through the form: a wildcard on one exchange, an exact key on another.
    subscribe(&browser, "calls", "queue.*");
    subscribe(&browser, "agents", "agent.ada");

    // Live: matching events appear newest first; others are not shown.
    for (n, exchange, key, event, to_page) in [
        (1, "calls", "queue.sales", "CallOffered", 1),
        (2, "calls", "queue.sales", "CallAnswered", 1),
        (3, "calls", "queue.sales", "CallEnded", 1),
        (4, "calls", "queue.support", "CallOffered", 1),
        (5, "calls", "other.x", "Ignored", 0),
        (6, "agents", "agent.ada", "AgentBusy", 1),
        (7, "agents", "agent.bob", "AgentBusy", 0),
    ] {
        let ack = inject(&relay, exchange, key, event, n);
        assert_eq!(ack["delivered_to"], json!(to_page), "event {n}: {ack}");
    }
    let live = wait_shown(&browser, &[1, 2, 3, 4, 6]);
    assert_eq!(
        live.iter().map(|r| r.n).collect::<Vec<_>>(),
        [6, 4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(
        live[2],
        Row {
            seq: 3,
            exchange: "calls".into(),
            key: "queue.sales".into(),
            event: "CallEnded".into(),
            n: 3
        }
    );
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 1), ("calls".into(), 4)])
    );
    save_screenshot(&browser, "page-live.png");

    // Mongrel2 restarts; the relay keeps its history. Events published meanwhile reach the
    // page through Resume, exactly once.
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    for (n, key, event) in [
        (8, "queue.sales", "CallOffered"),
        (9, "queue.sales", "CallAnswered"),
    ] {
        inject(&relay, "calls", key, event, n);
    }
    inject(&relay, "agents", "agent.ada", "AgentReady", 10);
    m2.start();
    wait_state(&browser, "live", 2);
    wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10]);
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 2), ("calls".into(), 6)])
    );
    // Resume re-subscribed the wildcard itself: no exact-key subscriptions beside it.
    wait_subscriptions(&m2, "calls", 1);
    wait_subscriptions(&m2, "agents", 1);

    // Mongrel2 and the relay restart: the new relay has lost its history and numbers
    // positions from 1 again (a new epoch), so old positions must not hide new events,
    // whether the new ones stay below what the page saw (calls: 1, 2 < 7) or reach it
    // (agents: 1..3 >= 3).
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    relay.stop();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    inject(&relay, "calls", "queue.sales", "CallOffered", 11);
    inject(&relay, "calls", "queue.sales", "CallAnswered", 12);
    for n in 13..=15 {
        inject(&relay, "agents", "agent.ada", "AgentBusy", n);
    }
    m2.start();
    relay_status_eventually(&m2, &mut relay);
    wait_state(&browser, "live", 3);
    let after = wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15]);
    let ada: Vec<(u64, u64)> = after
        .iter()
        .filter(|r| r.n >= 13)
        .map(|r| (r.n, r.seq))
        .collect();
    assert_eq!(
        ada,
        [(15, 3), (14, 2), (13, 1)],
        "the new run's seqs, newest first"
    );
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 5), ("calls".into(), 8)])
    );

    // Unsubscribing through the page stops its events; a later event on the other
    // subscription proves the page is still live and in order.
    browser
        .click("#subscriptions li[data-exchange='agents'][data-key='agent.ada'] button.unsubscribe")
        .expect("click unsubscribe");
    wait_subscriptions(&m2, "agents", 0);
    let ack = inject(&relay, "agents", "agent.ada", "AgentReady", 16);
    assert_eq!(ack["delivered_to"], json!(0), "{ack}");
    inject(&relay, "calls", "queue.billing", "CallOffered", 17);
    wait_shown(&browser, &[1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 17]);
    assert_eq!(shown(&browser)[0], 17, "newest first");
    assert_eq!(
        browser
            .count("#subscriptions li")
            .expect("subscription list"),
        1
    );
    save_screenshot(&browser, "page.png");
}

#[test]
fn a_gap_longer_than_one_replay_is_resumed_in_parts() {
    let Some(tools) = browser_tools() else {
        return;
    };
    // A six-frame outbox: one Resume replays at most five events and answers `more`, so
    // the page has to resume again from `last_seq`, several times.
    let limits = json!({"history_per_key": 100, "pending_frames": 6});
    let mut m2 = mongrel2_with_page();
    let mut relay = RelayProcess::spawn(&m2, &limits);
    relay_status_eventually(&m2, &mut relay);
    let browser = open_page(&tools, &m2);
    subscribe(&browser, "calls", "queue.sales");
    inject(&relay, "calls", "queue.sales", "CallOffered", 1);
    wait_shown(&browser, &[1]);

    m2.stop();
    wait_state_is(&browser, "reconnecting");
    for n in 2..=40 {
        inject(&relay, "calls", "queue.sales", "CallOffered", n);
    }
    m2.start();
    wait_state(&browser, "live", 2);
    let all: Vec<u64> = (1..=40).collect();
    let rows = wait_shown(&browser, &all);
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        all.iter().rev().copied().collect::<Vec<_>>(),
        "in seq order, newest first"
    );
    assert_eq!(counters(&browser), BTreeMap::from([("calls".into(), 40)]));
}

/// The demo's shape: a named relay announcing its call-centre exchanges. The page, opened
/// without `?sub=`, shows events at once as a wallboard with per-exchange charts, names the
/// relay, and says how each reconnection went. Screenshots of it become docs/.
#[test]
fn the_page_opens_on_announced_exchanges_as_a_wallboard() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let config = json!({
        "exchanges": {
            "calls": {"public": true, "public_routing_keys": ["queue.*"]},
            "agents": {"public": true, "public_routing_keys": ["*"]},
        },
    });
    let flags = ["--name", "relay-east"];
    let mut m2 = mongrel2_with_page();
    let mut relay = RelayProcess::spawn_with(&m2, &config, &flags);
    relay_status_eventually(&m2, &mut relay);
    let browser = open_page(&tools, &m2);
    // Subscribed without a click: the relay holds the page's two subscriptions.
    wait_subscriptions(&m2, "calls", 1);
    wait_subscriptions(&m2, "agents", 1);
    assert_eq!(
        data(&browser, "#relay", "relay").as_deref(),
        Some("relay-east")
    );

    // Two queues and three agents: sales ends with c2 and c3 waiting and c1 talking,
    // support with c4 waiting (c5 hung up); bob and cy ready, ada busy.
    let call = |key: &str, event: &str, id: &str| {
        inject_payload(
            &relay,
            "calls",
            key,
            event,
            json!({"call_id": id, "wait_s": 4}),
        )
    };
    let agent = |name: &str, event: &str| {
        let key = format!("agent.{name}");
        inject_payload(
            &relay,
            "agents",
            &key,
            event,
            json!({"agent": name, "queue": "sales"}),
        )
    };
    agent("ada", "AgentReady");
    agent("bob", "AgentReady");
    for id in ["c1", "c2", "c3"] {
        let ack = call("queue.sales", "CallOffered", id);
        assert_eq!(ack["delivered_to"], json!(1), "{ack}");
    }
    call("queue.sales", "CallAnswered", "c1");
    agent("ada", "AgentBusy");
    call("queue.support", "CallOffered", "c4");
    call("queue.support", "CallOffered", "c5");
    call("queue.support", "CallEnded", "c5");
    agent("cy", "AgentReady");
    wait_rows(&browser, 11);
    wait_data(&browser, "#wallboard", "waiting", "3");
    wait_data(&browser, "#wallboard", "ready", "2");
    wait_data(
        &browser,
        "#wallboard .queue[data-queue='sales']",
        "waiting",
        "2",
    );
    wait_data(
        &browser,
        "#wallboard .queue[data-queue='sales']",
        "talking",
        "1",
    );
    wait_data(
        &browser,
        "#wallboard .queue[data-queue='support']",
        "waiting",
        "1",
    );
    wait_data(&browser, "#agents", "busy", "1");
    for exchange in ["calls", "agents"] {
        let chart = format!("#counters tr[data-exchange='{exchange}'] svg.chart");
        browser.wait_until(WAIT, &format!("{chart} with points"), |b| {
            let points = data(b, &chart, "points").and_then(|p| p.parse::<u64>().ok());
            Ok(points.is_some_and(|p| p > 0).then_some(()))
        });
    }
    assert_eq!(
        counters(&browser),
        BTreeMap::from([("agents".into(), 4), ("calls".into(), 7)])
    );
    // The relay stamps each event; the page shows publish-to-shown time.
    let delay = data(&browser, "#delay", "delay-ms").unwrap_or_default();
    assert!(
        delay.parse::<i64>().is_ok(),
        "#delay[data-delay-ms={delay:?}]"
    );
    save_screenshot(&browser, "event-relay-page.png");

    // Mongrel2 restarts: the page resumes from the relay's history and says so.
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    call("queue.sales", "CallAnswered", "c2");
    agent("bob", "AgentBusy");
    m2.start();
    wait_state(&browser, "live", 2);
    wait_data(&browser, "#resume", "result", "recovered");
    wait_rows(&browser, 13);
    wait_data(&browser, "#wallboard", "waiting", "2");
    wait_data(&browser, "#wallboard", "ready", "1");
    save_screenshot(&browser, "event-relay-after-restart.png");

    // The relay restarts too, under another name: the page names it and reports a restart.
    m2.stop();
    wait_state_is(&browser, "reconnecting");
    relay.stop();
    let mut relay = RelayProcess::spawn_with(&m2, &config, &["--name", "relay-west"]);
    m2.start();
    relay_status_eventually(&m2, &mut relay);
    wait_state(&browser, "live", 3);
    wait_data(&browser, "#relay", "relay", "relay-west");
    wait_data(&browser, "#resume", "result", "restarted");
    inject_payload(
        &relay,
        "calls",
        "queue.sales",
        "CallOffered",
        json!({"call_id": "c6"}),
    );
    wait_rows(&browser, 14);
    wait_data(
        &browser,
        "#wallboard .queue[data-queue='sales']",
        "waiting",
        "2",
    );
    save_screenshot(&browser, "event-relay-after-relay-restart.png");
}

/// Waits until the events table shows `n` rows.
fn wait_rows(b: &chrome::Browser, n: usize) {
    let css = "#events tbody tr[data-seq]";
    b.wait_until(WAIT, &format!("{n} rows in #events"), |b| {
        Ok((b.count(css)? == n).then_some(()))
    });
}
