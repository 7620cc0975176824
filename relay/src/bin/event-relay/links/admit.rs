//! The publisher's side of admission: what each subscription a connection sends leads to.

use std::time::Instant;

use super::auth::{Auth, AuthError, TOPIC_ANSWER, TOPIC_CHALLENGE};
use super::{Publisher, MAX_SUBSCRIBERS, TOPIC_EVENT, TOPIC_HELLO, TOPIC_ID};

/// Handles one subscription `topic` on the publisher; true when a subscriber was admitted
/// (and should be greeted).
pub fn admit(
    publisher: &mut Publisher,
    auth: Option<&Auth>,
    relay_id: &str,
    socket: &zmq::Socket,
    topic: &[u8],
    now: Instant,
) -> bool {
    let name = match (auth, topic) {
        (Some(auth), t) if t.starts_with(TOPIC_CHALLENGE) => {
            let nonce = &t[TOPIC_CHALLENGE.len()..];
            match auth.challenge(nonce, relay_id, now) {
                // Only this connection gets the challenge: apply its topic, send, take
                // it off again (manual mode applies to the connection last read from).
                Ok([topic, body]) => {
                    let sent = socket
                        .set_subscribe(&topic)
                        .and_then(|()| socket.send_multipart([&topic, &body], zmq::DONTWAIT));
                    let _ = socket.set_unsubscribe(&topic);
                    if let Err(e) = sent {
                        log::warn!("link challenge: {e}");
                    }
                }
                Err(e) => log::debug!("link subscriber's challenge request: {e}"),
            }
            return false;
        }
        (Some(auth), t) if t.starts_with(TOPIC_ANSWER) => {
            match auth.check_answer(&t[TOPIC_ANSWER.len()..], now) {
                Ok(name) => name,
                Err(AuthError::Expired) => {
                    // A reconnecting subscriber repeats its old answer before the new one.
                    log::debug!("an expired link answer was ignored");
                    return false;
                }
                Err(e) => {
                    refuse_subscriber(publisher, &format!("authentication failed: {e}"));
                    return false;
                }
            }
        }
        (Some(_), t) if t.starts_with(TOPIC_ID) => {
            let name = String::from_utf8_lossy(&t[TOPIC_ID.len()..]);
            refuse_subscriber(
                publisher,
                &format!("{name} does not authenticate, and this relay requires the link secret"),
            );
            return false;
        }
        (None, t) if t.starts_with(TOPIC_ID) => {
            String::from_utf8_lossy(&t[TOPIC_ID.len()..]).into_owned()
        }
        (None, t) if t.starts_with(TOPIC_CHALLENGE) => {
            refuse_subscriber(
                publisher,
                "it wants to authenticate, but this relay has no link secret",
            );
            return false;
        }
        // `ev`, `hello`, the empty prefix, anything else: never applied as asked.
        _ => return false,
    };
    for applied in [TOPIC_EVENT, TOPIC_HELLO] {
        if let Err(e) = socket.set_subscribe(applied) {
            log::warn!("link subscriber {name}: {e}");
            return false;
        }
    }
    log::info!("linked relay {name} subscribed");
    if publisher.admitted.len() < MAX_SUBSCRIBERS {
        publisher.admitted.insert(topic.to_vec(), name);
    }
    true
}

/// Counts a refused subscriber; the first of a run of refusals is worth a warning (when the
/// count is a power of two), the rest are only counted, so a peer cannot flood the log.
fn refuse_subscriber(publisher: &mut Publisher, why: &str) {
    publisher.refused += 1;
    if publisher.refused.is_power_of_two() {
        log::warn!(
            "link subscriber refused: {why} ({} refused so far)",
            publisher.refused
        );
    }
}
