//! The attacks of issue 18 (items 1, 3, 4, 5 and 7) replayed through a real Mongrel2 with
//! real clients, each checking what a user of the relay relies on once it is fixed. The
//! relay core has unit tests for each fix; these show the attack no longer gets through the
//! whole stack (HTTP, WebSocket, injector, links, RPC backends).

use super::rpc::{rpc_config, Backend};
use super::*;

/// The relay's dedupe window per origin (`DEDUPE_WINDOW` in the core): the attack of item 1
/// filled it with forged seqs far ahead of the victim's, so every real seq looked old.
const DEDUPE_WINDOW: u64 = 4096;

/// Where the forged seqs of item 1 start (the issue's `1e15`).
const FAR_AHEAD: u64 = 1_000_000_000_000_000;

/// Reads `client`'s messages up to the Pong of a Ping sent now, and returns the ones before
/// it. The relay answers a session's actions in order, so everything due for the actions
/// sent before has arrived by then (no sleeping).
fn drain(client: &mut Client) -> Vec<Value> {
    client.send(&json!({"action": "Ping", "tag": "drain", "payload": {}}));
    let mut before = Vec::new();
    loop {
        let message = client.recv();
        if message["event"] == "Pong" && message["tag"] == "drain" {
            return before;
        }
        before.push(message);
    }
}

fn error_answer(tag: &str, name: &str) -> Value {
    json!({"event": "Error", "tag": tag, "payload": {"error": name}})
}

#[test]
fn forged_origins_are_refused_and_cannot_drop_a_linked_relays_events() {
    // b links to a (the victim); the attacker publishes into b, where a's events arrive.
    let net = Net::start(&[&[], &[0]]);
    net.links_verified(1);
    let (a, b) = (&net.relays[0], &net.relays[1]);
    // The victim's origin id, as anyone could read it from the open status.
    let victim = net.status(0)["links"]["relay"]
        .as_str()
        .expect("origin id")
        .to_owned();
    let mut subscriber = net.subscriber(1, "real");

    let forged = |seq: u64| {
        json!({"exchange": "calls", "routing_key": "forged", "event": "Forged", "payload": {},
               "origin": {"relay": victim, "seq": seq}})
        .to_string()
    };
    // Through Mongrel2, with the right publish token: refused, not 202.
    let body = forged(FAR_AHEAD);
    let response = HttpClient::connect(net.m2.http_addr())
        .request(&format!(
            "POST {}/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {PUBLISH_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            b.route,
            body.len()
        ))
        .expect("answered");
    assert_eq!(response.status, 400, "{:?}", response.json());
    assert_eq!(
        response.json(),
        json!({"ok": false, "error": "InvalidPayload"})
    );
    // The rest of a full window of neighbours through the injector: each one refused.
    let injector = b.injector();
    for seq in FAR_AHEAD + 1..FAR_AHEAD + DEDUPE_WINDOW {
        let ack = injector.request(forged(seq).as_bytes());
        assert_eq!(
            ack,
            json!({"ok": false, "error": "InvalidPayload"}),
            "{seq}"
        );
    }

    // A real event of the victim still reaches b's subscriber.
    let ack = a
        .injector()
        .publish("calls", "real", "Real", json!({"n": 1}));
    assert_eq!(ack["ok"], true, "{ack}");
    // Wait until b has taken the link copy in (delivered or dropped as a duplicate)...
    let status = b.status_eventually(&net.m2, |s| {
        s["events_in"]["link"].as_u64().unwrap_or(0) + s["events_duplicate"].as_u64().unwrap_or(0)
            >= 1
    });
    assert_eq!(status["events_duplicate"], 0, "{status}");
    // ...so it is queued ahead of the Pong if it was delivered at all.
    assert_eq!(
        drain(&mut subscriber),
        [event_json("calls", "real", "Real", json!({"n": 1}), 1)]
    );
    assert_eq!(status["events_in"]["inject"], 0, "{status}");
    assert_eq!(status["events_in"]["http"], 0, "{status}");
}

#[test]
fn a_subscribe_with_thousands_of_keys_is_refused_on_its_length() {
    let f = Fixture::start();
    let mut c = f.ws();
    // ~57 KB, under limits.message_size (64 KiB), 8,100 keys against a limit of 5.
    let distinct: Vec<Value> = (0..8_100).map(|i| json!(format!("k{i}"))).collect();
    let send_keys = |c: &mut Client, action: &str, tag: &str, keys: &[Value]| {
        let message = json!({"action": action, "tag": tag,
                             "payload": {"exchange": "calls", "routing_keys": keys}});
        assert!(message.to_string().len() < 64 * 1024);
        c.send(&message);
        c.recv()
    };
    assert_eq!(
        send_keys(&mut c, "Subscribe", "distinct", &distinct),
        error_answer("distinct", "TooManySubscriptions")
    );
    // A bad key at the end would be InvalidPayload had the relay walked the list: it is
    // refused on its length alone, so the list costs nothing to the relay's one thread.
    let mut bad_last = distinct[..8_099].to_vec();
    bad_last.push(json!({"not": "a key"}));
    assert_eq!(
        send_keys(&mut c, "Subscribe", "bad-last", &bad_last),
        error_answer("bad-last", "TooManySubscriptions")
    );
    // Duplicates count: the limit is checked before de-duplicating, not after.
    let same = vec![json!("k1"); 8_100];
    assert_eq!(
        send_keys(&mut c, "Subscribe", "same", &same),
        error_answer("same", "TooManySubscriptions")
    );
    // Every list a client sends is bounded the same way.
    assert_eq!(
        send_keys(&mut c, "Unsubscribe", "unsub", &distinct),
        error_answer("unsub", "TooManySubscriptions")
    );

    // The session is still open, holds nothing, and can subscribe within its limit.
    let reply = c.call("ListSubscriptions", json!("l"), json!({}));
    assert_eq!(reply["payload"]["subscriptions"], json!([]), "{reply}");
    assert_eq!(f.status()["subscriptions"]["calls"], 0);
    c.subscribe("calls", "after");
    let ack = f.injector().publish("calls", "after", "After", json!({}));
    assert_eq!(ack["delivered_to"], 1, "{ack}");
    assert_eq!(
        c.recv(),
        event_json("calls", "after", "After", json!({}), 1)
    );
    c.assert_nothing_pending();
    let status = f.status();
    assert_eq!(status["sessions"], 1, "{status}");
    assert_eq!(status["subscriptions"]["calls"], 1, "{status}");
}

#[test]
fn a_new_identity_drops_the_subscriptions_the_old_one_granted() {
    let f = Fixture::start();
    let mut c = f.ws();
    let reply = c.call("Authenticate", json!(1), json!({"token": ADMIN_TOKEN}));
    assert_eq!(reply["payload"], json!({"name": "admin"}), "{reply}");
    c.subscribe("admin", "x");
    c.subscribe("calls", "keep");
    assert_eq!(f.status()["subscriptions"]["admin"], 1);

    // ops may read calls but not admin: only admin/x goes, and the client is told.
    let reply = c.call("Authenticate", json!(2), json!({"token": OPS_TOKEN}));
    assert_eq!(
        reply,
        json!({"event": "Authenticated", "tag": 2, "payload": {"name": "ops",
               "dropped": [{"exchange": "admin", "routing_key": "x"}]}})
    );
    let inj = f.injector();
    let ack = inj.publish("admin", "x", "Secret", json!({"k": "v"}));
    assert_eq!(ack["delivered_to"], 0, "{ack}");
    let ack = inj.publish("calls", "keep", "Kept", json!({}));
    assert_eq!(ack["delivered_to"], 1, "{ack}");
    // The admin event was published first: had it been queued, it would come first.
    assert_eq!(c.recv(), event_json("calls", "keep", "Kept", json!({}), 1));
    c.assert_nothing_pending();
    let reply = c.call("ListSubscriptions", json!("l"), json!({}));
    assert_eq!(
        reply["payload"]["subscriptions"],
        json!([{"exchange": "calls", "routing_key": "keep"}])
    );
    let status = f.status();
    assert_eq!(status["subscriptions"]["admin"], 0, "{status}");
    assert_eq!(status["subscriptions"]["calls"], 1, "{status}");
}

#[test]
fn wrong_tokens_lock_the_session_and_short_tokens_are_refused_at_startup() {
    let mut config = test_config();
    config["limits"]["auth_failures_per_session"] = json!(3);
    let f = Fixture::with(&config, &[]);
    let mut guesser = f.ws();
    for n in 0..3 {
        let tag = format!("guess-{n}");
        let reply = guesser.call("Authenticate", json!(tag), json!({"token": "wrong-guess"}));
        assert_eq!(reply, error_answer(&tag, "InvalidToken"));
    }
    // Locked: even the right token is not looked at, and no identity is set.
    let reply = guesser.call(
        "Authenticate",
        json!("right"),
        json!({"token": ADMIN_TOKEN}),
    );
    assert_eq!(reply, error_answer("right", "TooManyAttempts"));
    let reply = guesser.call(
        "Subscribe",
        json!("sub"),
        json!({"exchange": "admin", "routing_key": "x"}),
    );
    assert_eq!(reply, error_answer("sub", "AuthRequired"));
    // The session itself stays usable, and the lock is its own: a new session may log in.
    guesser.assert_nothing_pending();
    let mut other = f.ws();
    let reply = other.call("Authenticate", json!(1), json!({"token": ADMIN_TOKEN}));
    assert_eq!(reply["payload"]["name"], "admin", "{reply}");
    let metrics = f.get("/events/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("relay_auth_failures_total 4\n"), "{text}");

    // A guessable token in the config: the relay refuses to start and names the limit,
    // never the token (a secret, even a bad one).
    let short = "q7Zk";
    let mut bad = test_config();
    bad["tokens"]["ops"] = json!(short);
    let mut relay = RelayProcess::spawn(&f.m2, &bad);
    let status = relay
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("started with a short token:\n{}", relay.log_tail()));
    assert_eq!(status.code(), Some(2), "{}", relay.log_tail());
    let log = relay.log_text();
    assert!(log.contains("min_token_length"), "{log}");
    assert!(!log.contains(short), "{log}");
}

#[test]
fn one_session_filling_its_rpc_share_leaves_room_for_another() {
    let backend = Backend::start();
    // A budget of 8 calls in all; the long timeout keeps held calls in flight for the whole
    // test, whatever the machine's speed.
    let config = rpc_config(
        &backend,
        json!({"rpc_timeout_ms": 120_000}),
        json!({"rpc_calls_total": 8}),
    );
    let f = Fixture::with(&config, &[]);
    let mut victim = f.ws();
    let mut attacker = f.ws();
    // The attacker asks for the whole budget from a backend that never answers.
    for n in 0..8 {
        attacker.send(&json!({"action": "hold", "tag": n, "payload": {}}));
    }
    // Once its Pong is back the relay has taken all 8 in (answered in order).
    let refused = drain(&mut attacker);
    backend.wait_requests(4);
    // The victim's call is still accepted and answered...
    let reply = victim.call("echo", json!("mine"), json!({"still": "served"}));
    assert_eq!(
        reply,
        json!({"event": "Result", "tag": "mine", "payload": {"still": "served"}})
    );
    // ...because two sessions share 8: the attacker got 4 and the rest was refused at once.
    assert_eq!(
        refused,
        (4..8)
            .map(|n| json!({"event": "Error", "tag": n, "payload": {"error": "TooManyCalls"}}))
            .collect::<Vec<_>>()
    );
    let status = f.status();
    assert_eq!(status["rpc"]["in_flight"], 4, "{status}");
    assert_eq!(status["rpc"]["refused"], 4, "{status}");
    victim.assert_nothing_pending();
}
