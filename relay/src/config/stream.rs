//! RabbitMQ stream retention (the config's `stream`, used with `--amqp`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How much of each exchange's stream RabbitMQ keeps (with `--amqp`): its history, shared by
/// every relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stream {
    /// `x-max-age`: a number and one of `Y`, `M`, `D`, `h`, `m`, `s` (e.g. `7D`).
    pub max_age: String,
    /// `x-max-length-bytes`.
    pub max_bytes: u64,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            max_age: "1D".into(),
            max_bytes: 1 << 30,
        }
    }
}

impl Stream {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let (digits, unit) = self.max_age.split_at(self.max_age.len().saturating_sub(1));
        let age_ok = !digits.is_empty()
            && digits.len() <= 9
            && digits.bytes().all(|b| b.is_ascii_digit())
            && matches!(unit, "Y" | "M" | "D" | "h" | "m" | "s");
        if !age_ok {
            return Err(ConfigError::Invalid(
                "stream.max_age must be a number and Y, M, D, h, m or s (e.g. 7D)".into(),
            ));
        }
        if self.max_bytes == 0 || i64::try_from(self.max_bytes).is_err() {
            return Err(ConfigError::Invalid(
                "stream.max_bytes must be 1..=2^63-1".into(),
            ));
        }
        Ok(())
    }
}
