//! Secrets: the link secret, and comparing presented tokens without leaking timing.

use super::ConfigError;

/// Shortest link secret accepted (bytes): HMAC-SHA-256's output size, so the secret is not
/// the weak part (`openssl rand -hex 32` writes 64 characters, 32 random bytes).
pub const MIN_LINK_SECRET: usize = 32;

/// The secret linked relays prove to each other (see the binary's `links` module). Never
/// printed: `Debug` says only how long it is.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSecret(Vec<u8>);

impl LinkSecret {
    /// A secret from `bytes`, refused when shorter than [`MIN_LINK_SECRET`]; `origin` names
    /// where it came from in the error (never the secret itself).
    pub fn new(bytes: Vec<u8>, origin: &str) -> Result<LinkSecret, ConfigError> {
        if bytes.len() < MIN_LINK_SECRET {
            return Err(ConfigError::Invalid(format!(
                "{origin}: the link secret must be at least {MIN_LINK_SECRET} bytes"
            )));
        }
        Ok(LinkSecret(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkSecret({} bytes)", self.0.len())
    }
}

/// Does `authorization` (`Bearer TOKEN`) carry `expected`? Never without an expected token.
pub(super) fn bearer_matches(expected: Option<&str>, authorization: Option<&str>) -> bool {
    let (Some(expected), Some(header)) = (expected, authorization) else {
        return false;
    };
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
