//! The harness's error type.

use std::time::Duration;

use super::Protocol;

/// What can go wrong while faking Mongrel2 for a handler under test.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A ZeroMQ call failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    /// Nothing the test waited for happened in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        timeout: Duration,
    },
    /// No handler took a request within the send timeout: none is connected, or every
    /// connected one stopped reading.
    #[error("no handler took the request within {0:?} (is any handler connected?)")]
    SendTimeout(Duration),
    /// A handler could not be connected, verified or disconnected; names the handler's
    /// control endpoint.
    #[error("handler at {handler}: {reason}")]
    Handler {
        /// The handler's control endpoint.
        handler: String,
        /// What went wrong.
        reason: String,
    },
    /// [`Server::send`](super::Server::send) before the handlers the Server was built
    /// with were connected (by the first `client()` or `connect_pending()`); names them.
    #[error("handlers {0:?} are not connected yet: call Server::client or Server::connect_pending first")]
    HandlersPending(Vec<String>),
    /// `connect` was given a handler that is already connected.
    #[error("handler at {0} is already connected")]
    AlreadyConnected(String),
    /// `disconnect` was given a handler that is not connected.
    #[error("handler at {0} is not connected")]
    NotConnected(String),
    /// An endpoint the harness cannot use or advertise.
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why it does not work.
        reason: String,
    },
    /// The handler sent something Mongrel2 would not accept or a client would not
    /// understand (malformed reply, HTTP response or WebSocket frame).
    #[error("{protocol} protocol error: {reason}")]
    Protocol {
        /// Which layer: `mongrel2`, `http` or `websocket`.
        protocol: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The test asked the harness to send something Mongrel2 itself would never send.
    #[error("Mongrel2 would never send this: {0}")]
    Unsendable(String),
    /// The handler closed this connection (an empty reply).
    #[error("the handler closed the connection")]
    Closed,
    /// The operation does not fit the client's protocol.
    #[error("a {protocol} client cannot {operation}")]
    WrongProtocol {
        /// The client's protocol.
        protocol: Protocol,
        /// What was attempted.
        operation: &'static str,
    },
    /// The WebSocket handshake has not been done (or failed).
    #[error("the WebSocket handshake has not succeeded yet")]
    NoHandshake,
    /// The Server behind this client or connector has been dropped.
    #[error("the harness Server is gone")]
    ServerGone,
    /// The handler under test failed to start (see [`spawn_handler`](super::spawn_handler)).
    #[error("handler: {0}")]
    Transceiver(#[from] crate::Error),
}

impl HarnessError {
    pub(crate) fn timeout(what: impl Into<String>, timeout: Duration) -> HarnessError {
        HarnessError::Timeout {
            what: what.into(),
            timeout,
        }
    }

    pub(crate) fn handler(handler: &str, reason: impl Into<String>) -> HarnessError {
        HarnessError::Handler {
            handler: handler.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(protocol: &'static str, reason: impl Into<String>) -> HarnessError {
        HarnessError::Protocol {
            protocol,
            reason: reason.into(),
        }
    }

    /// Whether this is a timeout of any kind (waiting or sending).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            HarnessError::Timeout { .. } | HarnessError::SendTimeout(_)
        )
    }
}
