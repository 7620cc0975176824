//! The server side of the opening handshake.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::token::is_token;

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key + [`WEBSOCKET_GUID`])). Surrounding whitespace of `key` is ignored.
///
/// Mongrel2 already computes this and sends it as the body of the
/// `WEBSOCKET_HANDSHAKE` request; this is for checking it and for test clients.
///
/// ```
/// use mongrel2_transceiver::websocket::accept_key;
/// assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key.trim_ascii().as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

/// Why a handshake response could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The accept value is not a 28-character base64 SHA-1 digest.
    #[error("invalid Sec-WebSocket-Accept value {0:?}")]
    InvalidAccept(String),
    /// The subprotocol is not a non-empty token.
    #[error("invalid Sec-WebSocket-Protocol value {0:?}")]
    InvalidProtocol(String),
}

fn is_accept_value(accept: &str) -> bool {
    let bytes = accept.as_bytes();
    bytes.len() == 28
        && bytes[27] == b'='
        && bytes[..27]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// The `101 Switching Protocols` response completing the handshake, ending in an
/// empty line.
///
/// `accept` is the `Sec-WebSocket-Accept` value (the body Mongrel2 sends with
/// `WEBSOCKET_HANDSHAKE`, or [`accept_key`]); `protocol` is the chosen subprotocol, if
/// any. Both are checked (base64 digest, token) so that neither can inject headers.
///
/// ```
/// use mongrel2_transceiver::websocket::handshake_response;
/// let bytes = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None).unwrap();
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
/// ```
pub fn handshake_response(accept: &str, protocol: Option<&str>) -> Result<Vec<u8>, HandshakeError> {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    const PROTOCOL: &[u8] = b"\r\nSec-WebSocket-Protocol: ";
    if !is_accept_value(accept) {
        return Err(HandshakeError::InvalidAccept(accept.to_owned()));
    }
    if let Some(p) = protocol {
        if !is_token(p) {
            return Err(HandshakeError::InvalidProtocol(p.to_owned()));
        }
    }
    let protocol_len = protocol.map_or(0, |p| PROTOCOL.len() + p.len());
    let mut out = Vec::with_capacity(HEAD.len() + accept.len() + protocol_len + 4);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    Ok(out)
}
