//! Link authentication with a shared secret: a challenge/answer handshake that admits a
//! subscriber, and a signature on every message a publisher sends.
//!
//! # Why this and not ZAP
//!
//! The `zmq` crate's vendored libzmq is built without libsodium, so CURVE is not there. ZAP
//! with PLAIN would make each subscriber send the password in clear to whatever it connects
//! to: a rogue publisher that a relay `--link`s to would learn the secret, and nothing in
//! PLAIN authenticates the publisher to the subscriber. Here the secret never crosses the
//! wire, both sides prove they hold it, and the answers cannot be replayed after a short
//! window.
//!
//! # The handshake (over the link's own sockets)
//!
//! The publisher's XPUB runs in manual mode: a subscription reaches the socket only when
//! this module applies it, so a subscriber that merely subscribes (to anything, the empty
//! prefix included) receives nothing.
//!
//! 1. The subscriber subscribes to `ch/NC` (NC: 32 random hex digits, new for each SUB).
//! 2. The publisher applies `ch/NC` to that one connection, sends `[ch/NC, {"relay":ID,
//!    "nonce":S,"proof":P}]` and takes the subscription off again. `S` is a cookie, `T.M`
//!    with `T` the publisher's clock in ms and `M` a MAC of `NC` and `T` under a key of
//!    this run, so the publisher keeps no state per challenge (a flood costs nothing) and
//!    knows its own nonces. `P = MAC(secret, "publisher", NC, S, ID)`: the subscriber
//!    checks it, so a publisher without the secret cannot go further.
//! 3. The subscriber subscribes to `au/ITS_ID/NC/S/A` with `A = MAC(secret, "subscriber",
//!    NC, S, ITS_ID)`. The publisher checks the cookie (its own, at most
//!    [`CHALLENGE_TTL`] old) and `A`, then applies `ev` and `hello` to that connection.
//!
//! Every `ev` and `hello` message then carries a third frame, `MAC(secret, "message",
//! topic, body)`; the subscriber drops what does not verify, so nothing injected by anyone
//! without the secret is accepted even if a connection is taken over later.
//!
//! MACs are HMAC-SHA-256 (crates `hmac` and `sha2`), each part length-prefixed so parts
//! cannot run into each other.
//!
//! # Limits
//!
//! Links are authenticated, not encrypted: whoever can read the traffic reads the events
//! and could replay an answer within [`CHALLENGE_TTL`]. Without channel binding, a relay
//! that `--link`s to an attacker's endpoint can be made to answer challenges that the
//! attacker relays from another relay with the same secret. So across hosts links need a
//! trusted network or a tunnel (see the README's Security part).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::super::config::LinkSecret;

/// Topic prefix of challenges (and of the subscription asking for one).
pub const TOPIC_CHALLENGE: &[u8] = b"ch/";
/// Topic prefix of the subscription that answers a challenge.
pub const TOPIC_ANSWER: &[u8] = b"au/";
/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Length of a signature frame.
pub const TAG_LEN: usize = 32;
/// Hex digits of a subscriber's challenge nonce.
const NONCE_HEX: usize = 32;
/// Bytes of the cookie's MAC kept in the cookie.
const COOKIE_MAC: usize = 12;

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not shaped like the message it should be.
    #[error("malformed")]
    Malformed,
    /// A challenge older than [`CHALLENGE_TTL`] (or not one of ours).
    #[error("challenge expired or unknown")]
    Expired,
    /// The proof does not verify: the peer does not hold the same secret.
    #[error("wrong proof (a different link secret?)")]
    WrongProof,
}

/// The link secret and this run's own keys.
pub struct Auth {
    secret: LinkSecret,
    /// Key of this run's cookies and nonces: random, never sent.
    local: [u8; 32],
    counter: u64,
    started: Instant,
}

impl Auth {
    /// Keys for `secret`; fails only when the system has no randomness to give.
    pub fn new(secret: LinkSecret) -> Result<Auth, getrandom::Error> {
        let mut local = [0; 32];
        getrandom::fill(&mut local)?;
        Ok(Auth {
            secret,
            local,
            counter: 0,
            started: Instant::now(),
        })
    }

    /// A fresh unpredictable nonce (32 hex digits): the counter under this run's key.
    pub fn nonce(&mut self) -> String {
        self.counter += 1;
        hex(&mac(&self.local, &[b"nonce", &self.counter.to_be_bytes()])[..NONCE_HEX / 2])
    }

    /// The topic a subscriber subscribes to for a challenge.
    pub fn challenge_topic(nonce: &str) -> Vec<u8> {
        [TOPIC_CHALLENGE, nonce.as_bytes()].concat()
    }

    /// Publisher: the challenge answering a subscription to `ch/NONCE` (`nonce` is what
    /// follows `ch/`), as the two frames to send.
    pub fn challenge(
        &self,
        nonce: &[u8],
        relay: &str,
        now: Instant,
    ) -> Result<[Vec<u8>; 2], AuthError> {
        let nonce = valid_nonce(nonce)?;
        let cookie = self.cookie(nonce, millis(now.saturating_duration_since(self.started)));
        let proof = self.proof(b"publisher", nonce, &cookie, relay);
        let body = json!({"relay": relay, "nonce": cookie, "proof": proof});
        Ok([Auth::challenge_topic(nonce), body.to_string().into_bytes()])
    }

    /// Subscriber: checks a challenge `body` received for our `nonce` and returns the
    /// publisher's relay id and the answer topic to subscribe to as `relay`.
    pub fn answer(
        &self,
        nonce: &str,
        relay: &str,
        body: &[u8],
    ) -> Result<(String, Vec<u8>), AuthError> {
        let Ok(Value::Object(c)) = serde_json::from_slice::<Value>(body) else {
            return Err(AuthError::Malformed);
        };
        let field = |name: &str| c.get(name).and_then(Value::as_str);
        let (Some(peer), Some(cookie), Some(proof)) =
            (field("relay"), field("nonce"), field("proof"))
        else {
            return Err(AuthError::Malformed);
        };
        let expected = self.proof(b"publisher", nonce, cookie, peer);
        if !ct_eq(expected.as_bytes(), proof.as_bytes()) {
            return Err(AuthError::WrongProof);
        }
        if cookie.contains('/') || peer.is_empty() {
            return Err(AuthError::Malformed);
        }
        let answer = self.proof(b"subscriber", nonce, cookie, relay);
        let topic = format!("{relay}/{nonce}/{cookie}/{answer}");
        Ok((peer.to_owned(), [TOPIC_ANSWER, topic.as_bytes()].concat()))
    }

    /// Publisher: checks an answer (what follows `au/`) and returns the subscriber's id.
    pub fn check_answer(&self, answer: &[u8], now: Instant) -> Result<String, AuthError> {
        let text = std::str::from_utf8(answer).map_err(|_| AuthError::Malformed)?;
        // The relay id comes first and is the only part that could hold a '/'.
        let mut parts = text.rsplitn(4, '/');
        let (Some(proof), Some(cookie), Some(nonce), Some(relay)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let nonce = valid_nonce(nonce.as_bytes())?;
        let (issued, _) = cookie.split_once('.').ok_or(AuthError::Malformed)?;
        let issued = u64::from_str_radix(issued, 16).map_err(|_| AuthError::Malformed)?;
        let age = millis(now.saturating_duration_since(self.started)).checked_sub(issued);
        if !ct_eq(self.cookie(nonce, issued).as_bytes(), cookie.as_bytes())
            || age.is_none_or(|age| age > millis(CHALLENGE_TTL))
        {
            return Err(AuthError::Expired);
        }
        let expected = self.proof(b"subscriber", nonce, cookie, relay);
        if relay.is_empty() || !ct_eq(expected.as_bytes(), proof.as_bytes()) {
            return Err(AuthError::WrongProof);
        }
        Ok(relay.to_owned())
    }

    /// The signature frame of a message.
    pub fn sign(&self, topic: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        mac(self.secret.as_bytes(), &[b"message", topic, body])
    }

    /// Does `tag` sign this message?
    pub fn verify(&self, topic: &[u8], body: &[u8], tag: &[u8]) -> bool {
        keyed(self.secret.as_bytes(), &[b"message", topic, body])
            .verify_slice(tag)
            .is_ok()
    }

    /// `MAC(secret, role, nonce, cookie, relay)` in hex: what a `role` proves about one
    /// challenge.
    fn proof(&self, role: &[u8], nonce: &str, cookie: &str, relay: &str) -> String {
        let parts = [role, nonce.as_bytes(), cookie.as_bytes(), relay.as_bytes()];
        hex(&mac(self.secret.as_bytes(), &parts))
    }

    fn cookie(&self, nonce: &str, issued_ms: u64) -> String {
        let m = mac(
            &self.local,
            &[b"cookie", nonce.as_bytes(), &issued_ms.to_be_bytes()],
        );
        format!("{issued_ms:x}.{}", hex(&m[..COOKIE_MAC]))
    }
}

fn valid_nonce(nonce: &[u8]) -> Result<&str, AuthError> {
    if nonce.len() == NONCE_HEX && nonce.iter().all(u8::is_ascii_hexdigit) {
        std::str::from_utf8(nonce).map_err(|_| AuthError::Malformed)
    } else {
        Err(AuthError::Malformed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn keyed(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    keyed(key, parts).finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str) -> Auth {
        Auth::new(LinkSecret::new(secret.as_bytes().to_vec(), "test").unwrap()).unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_handshake_between_holders_of_the_secret_admits_the_subscriber() {
        let (mut sub, publisher) = (auth(SECRET), auth(SECRET));
        let nonce = sub.nonce();
        assert_eq!(nonce.len(), NONCE_HEX);
        assert_ne!(nonce, sub.nonce());
        let now = Instant::now();
        let [topic, body] = publisher.challenge(nonce.as_bytes(), "pub.1", now).unwrap();
        assert_eq!(topic, Auth::challenge_topic(&nonce));
        let (peer, answer) = sub.answer(&nonce, "sub.2", &body).unwrap();
        assert_eq!(peer, "pub.1");
        let rest = answer.strip_prefix(TOPIC_ANSWER).unwrap();
        assert!(rest.len() < 1024);
        assert_eq!(publisher.check_answer(rest, now).as_deref(), Ok("sub.2"));
        // Late, or a cookie of another run: refused.
        assert_eq!(
            publisher.check_answer(rest, now + CHALLENGE_TTL + Duration::from_secs(1)),
            Err(AuthError::Expired)
        );
        assert_eq!(
            auth(SECRET).check_answer(rest, now),
            Err(AuthError::Expired)
        );
        // Another subscriber id in the same answer: refused.
        let forged = String::from_utf8(rest.to_vec())
            .unwrap()
            .replace("sub.2", "sub.3");
        assert_eq!(
            publisher.check_answer(forged.as_bytes(), now),
            Err(AuthError::WrongProof)
        );
    }

    #[test]
    fn a_different_secret_fails_both_ways() {
        let (mut sub, publisher) = (auth(SECRET), auth("another secret of thirty-two bytes"));
        let nonce = sub.nonce();
        let now = Instant::now();
        let [_, body] = publisher.challenge(nonce.as_bytes(), "pub", now).unwrap();
        assert_eq!(sub.answer(&nonce, "sub", &body), Err(AuthError::WrongProof));
        // An answer made with the other secret to a genuine challenge.
        let (_, answer) = publisher.answer(&nonce, "sub", &body).unwrap();
        let rest = answer.strip_prefix(TOPIC_ANSWER).unwrap();
        let genuine = auth(SECRET);
        assert_ne!(genuine.check_answer(rest, now), Ok("sub".into()));
        for bad in [&b""[..], b"x", b"a/b/c/d", b"r/zz/1.2/00"] {
            assert!(publisher.check_answer(bad, now).is_err());
        }
        for bad in [&b"short"[..], b"0123456789abcdef0123456789abcdeg"] {
            assert_eq!(
                publisher.challenge(bad, "p", now).unwrap_err(),
                AuthError::Malformed
            );
        }
        assert_eq!(sub.answer(&nonce, "sub", b"{}"), Err(AuthError::Malformed));
    }

    #[test]
    fn signatures_cover_topic_and_body() {
        let (a, b) = (auth(SECRET), auth("another secret of thirty-two bytes"));
        let tag = a.sign(b"ev", b"{}");
        assert!(auth(SECRET).verify(b"ev", b"{}", &tag));
        assert!(!a.verify(b"hello", b"{}", &tag));
        assert!(!a.verify(b"ev", b"{ }", &tag));
        assert!(!b.verify(b"ev", b"{}", &tag));
        assert!(!a.verify(b"ev", b"{}", &tag[..31]));
    }
}
