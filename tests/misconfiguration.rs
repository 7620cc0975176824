//! No silent misconfiguration: endpoint errors name the endpoint, the control socket is
//! opt-in, and a Mongrel2 that never subscribes (wrong or swapped endpoints) or goes away
//! is logged, against a real Mongrel2. Log lines are captured by a small logger of this
//! test binary's own (one per process, so these tests live in their own file).

use mongrel2_test_fixture as common;

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::{free_endpoint, HandlerConf, Mongrel2};
use mongrel2_transceiver::{Error, Transceiver};

struct Capture;

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
static CAPTURE: Capture = Capture;
static INSTALL: Once = Once::new();

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            LINES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((record.level(), line));
        }
    }

    fn flush(&self) {}
}

fn capture_logs() {
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The captured lines at `level` that mention `needle`.
fn lines(level: log::Level, needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(l, line)| *l == level && line.contains(needle))
        .map(|(_, line)| line.clone())
        .collect()
}

/// Runs the loop until a line at `level` mentions every one of `needles`.
fn drive_until(t: &mut Transceiver, level: log::Level, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = lines(level, needles[0])
            .into_iter()
            .find(|line| needles.iter().all(|n| line.contains(n)));
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {level} line with {needles:?}; captured: {:?}",
            LINES.lock().unwrap()
        );
        let _ = t.recv_timeout(Duration::from_millis(50)).unwrap();
    }
}

#[test]
fn build_errors_name_the_endpoint_and_the_socket() {
    let err = Transceiver::builder("h")
        .pull("nonsense")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Endpoint { role: "pull", endpoint, .. } if endpoint == "nonsense"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("nonsense") && text.contains("pull"), "{text}");

    let err = Transceiver::builder("h")
        .pull(&free_endpoint())
        .publish("tcp://127.0.0.1")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("publish socket to \"tcp://127.0.0.1\""),
        "{err}"
    );

    // A second handler on the same control port.
    let first = Transceiver::builder("h")
        .pull(&free_endpoint())
        .publish(&free_endpoint())
        .control(Some("tcp://127.0.0.1:*"))
        .build()
        .unwrap();
    let taken = first.control_endpoint().unwrap();
    let err = Transceiver::builder("h")
        .pull(&free_endpoint())
        .publish(&free_endpoint())
        .control(Some(&taken))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&taken) && text.contains("control") && text.contains("in use"),
        "{text}"
    );
}

#[test]
fn the_control_socket_is_opt_in() {
    let t = Transceiver::builder("h")
        .pull(&free_endpoint())
        .publish(&free_endpoint())
        .build()
        .unwrap();
    assert_eq!(t.control_endpoint(), None);
}

#[test]
fn wrong_or_swapped_endpoints_are_warned_about_once() {
    capture_logs();
    let m2 = Mongrel2::builder().handler(HandlerConf::new("/w")).start();
    let handler = m2.handler(0).clone();
    // Swapped: the PULL goes to Mongrel2's SUB and the PUB to its PUSH.
    let mut swapped = Transceiver::builder(&handler.send_ident)
        .pull(&handler.recv_spec)
        .publish(&handler.send_spec)
        .subscription_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let line = drive_until(
        &mut swapped,
        log::Level::Warn,
        &[
            &handler.send_ident,
            "has not subscribed",
            &handler.recv_spec,
            &handler.send_spec,
        ],
    );
    assert!(line.contains("swapped"), "{line}");

    // Nothing there at all.
    let nowhere = (free_endpoint(), free_endpoint());
    let mut lonely = Transceiver::builder("lonely-handler")
        .pull(&nowhere.0)
        .publish(&nowhere.1)
        .subscription_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    drive_until(
        &mut lonely,
        log::Level::Warn,
        &[
            "lonely-handler",
            "has not subscribed",
            &nowhere.0,
            &nowhere.1,
        ],
    );
    // Once: the loop keeps running (several more grace periods) without repeating it.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let _ = lonely.recv_timeout(Duration::from_millis(100)).unwrap();
        let _ = swapped.recv_timeout(Duration::from_millis(1)).unwrap();
    }
    assert_eq!(lines(log::Level::Warn, "lonely-handler").len(), 1);
    assert_eq!(lines(log::Level::Warn, &handler.send_ident).len(), 1);
}

#[test]
fn mongrel2_going_away_and_coming_back_is_logged() {
    capture_logs();
    let mut m2 = Mongrel2::builder().handler(HandlerConf::new("/g")).start();
    let handler = m2.handler(0).clone();
    let mut t = Transceiver::builder(&handler.send_ident)
        .pull(&handler.send_spec)
        .publish(&handler.recv_spec)
        .subscription_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(t.wait_ready(Duration::from_secs(10)).unwrap());

    m2.kill();
    let line = drive_until(
        &mut t,
        log::Level::Warn,
        &[
            &handler.send_ident,
            "unsubscribed",
            &handler.recv_spec,
            &handler.send_spec,
        ],
    );
    assert!(!line.contains("has not subscribed"), "{line}");

    m2.start();
    drive_until(
        &mut t,
        log::Level::Info,
        &[
            &handler.send_ident,
            "is back",
            &handler.recv_spec,
            &handler.send_spec,
        ],
    );
    assert_eq!(lines(log::Level::Warn, &handler.send_ident).len(), 1);
}

#[test]
fn a_sender_mongrel2_would_refuse_is_warned_about() {
    capture_logs();
    // Frames fine (the seed's Python Server calls itself this), but a real Mongrel2's reply
    // parser takes letters, digits and '-' only and drops every reply silently.
    let _t = Transceiver::builder("odd_sender_for_warning")
        .pull(&free_endpoint())
        .publish(&free_endpoint())
        .build()
        .unwrap();
    let warned = lines(log::Level::Warn, "odd_sender_for_warning");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("drops every reply"), "{warned:?}");
}
