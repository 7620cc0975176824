//! What can go wrong talking to a Mongrel2 control port.

use std::time::Duration;

/// Why a control-port call failed. Every variant names the endpoint, so a log line alone says
/// which server misbehaved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Creating, connecting or using the ZeroMQ socket failed.
    #[error("control port {endpoint}: {source}")]
    Socket {
        /// The control endpoint.
        endpoint: String,
        /// What ZeroMQ reported.
        #[source]
        source: zmq::Error,
    },
    /// No answer within the timeout (Mongrel2 is not running, its control port was stopped
    /// with `control_stop`, or the endpoint is wrong). The socket was discarded; the next
    /// call starts afresh.
    #[error("control port {endpoint}: no answer to {command:?} within {timeout:?}")]
    Timeout {
        /// The control endpoint.
        endpoint: String,
        /// The command that went unanswered.
        command: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// Mongrel2 answered with an error instead of a table, e.g. `NOT_CONNECTED` for a `kill`
    /// of a connection id that is gone, or `CALLBACK_NOT_FOUND` for an unknown command.
    #[error("control port {endpoint}: {command:?} refused{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        /// The control endpoint.
        endpoint: String,
        /// The refused command.
        command: String,
        /// Mongrel2's error code (`INVALID_ARGUMENT`, `NOT_CONNECTED`, ...); some refusals
        /// (a bad `status` argument) carry none.
        code: Option<String>,
        /// Mongrel2's error text.
        message: String,
    },
    /// The answer was not a tnetstring table (or not the table the command returns).
    #[error("control port {endpoint}: bad answer to {command:?}: {reason}")]
    BadReply {
        /// The control endpoint.
        endpoint: String,
        /// The command that was answered.
        command: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl ControlError {
    /// Mongrel2's error code when it refused the command.
    pub fn refusal_code(&self) -> Option<&str> {
        match self {
            ControlError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ControlError::Timeout { .. })
    }
}
