//! Reading captured messages: what each means once parsed, and how a live capture is
//! compared with the stored one.

use super::*;
use mongrel2_transceiver::request::{HeaderProtocol, Request, RequestKind};

/// `SENDER CONN_ID PATH ...`: the three leading fields.
pub(super) fn fields(msg: &[u8]) -> (&[u8], &str, &[u8]) {
    let mut parts = msg.splitn(4, |&b| b == b' ');
    let sender = parts.next().unwrap_or_default();
    let id = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    (sender, std::str::from_utf8(id).unwrap_or(""), path)
}

pub(super) fn conn_id(msg: &[u8]) -> String {
    let id = fields(msg).1;
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "bad connection id in {}",
        show(msg)
    );
    id.to_string()
}

pub(super) fn is_disconnect(msg: &[u8]) -> bool {
    fields(msg).2 == b"@*" && ends_with(msg, b"\"disconnect\"}")
}

pub(super) fn ends_with(msg: &[u8], tail: &[u8]) -> bool {
    // The body netstring's trailing ',' follows the JSON.
    msg.strip_suffix(b",").is_some_and(|m| m.ends_with(tail))
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn show(msg: &[u8]) -> String {
    msg.escape_ascii().to_string()
}

/// Replaces mkstemp's random file-name suffix (which legitimately differs
/// between runs) by `XXXXXX`.
pub(super) fn normalise_upload_names(text: &str) -> String {
    let prefix = std::str::from_utf8(UPLOAD_PREFIX).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let name_start = at + prefix.len();
        out.push_str(&rest[..name_start]);
        let suffix: String = rest[name_start..].chars().take(6).collect();
        out.extend(std::iter::repeat_n('X', suffix.chars().count()));
        rest = &rest[name_start + suffix.len()..];
    }
    out.push_str(rest);
    out
}

/// What a message means, as parsed by the crate, with the parts that vary
/// between runs (the connection id, upload file names) left out or
/// normalised. Header order is left out too: Mongrel2 emits its hash
/// table's order, which carries no meaning.
#[derive(Debug)]
pub(super) struct Meaning {
    sender: String,
    path: String,
    protocol: HeaderProtocol,
    kind: String,
    headers: Vec<(String, Vec<String>)>,
    body: String,
}

pub(super) fn meaning(msg: &[u8]) -> Result<Meaning, String> {
    let req = Request::parse(msg).map_err(|e| format!("does not parse: {e}: {}", show(msg)))?;
    let mut headers: Vec<(String, Vec<String>)> = req
        .headers()
        .iter()
        .map(|(name, values)| {
            (
                name.to_string(),
                values.iter().map(normalise_upload_names).collect(),
            )
        })
        .collect();
    headers.sort();
    let kind = req
        .kind()
        .map_err(|e| format!("has no kind: {e}: {}", show(msg)))?;
    Ok(Meaning {
        sender: req.sender().to_string(),
        path: req.path().to_string(),
        protocol: req.protocol(),
        kind: normalise_upload_names(&format!("{kind:?}")),
        headers,
        body: show(req.body()),
    })
}

/// The crate's reading of each live message must be what the scenario
/// produced; this ties the request parser to real Mongrel2 output.
pub(super) fn check_kind(name: &str, msg: &[u8]) -> Result<(), String> {
    let req = Request::parse(msg).map_err(|e| format!("does not parse: {e}"))?;
    let kind = req.kind().map_err(|e| format!("has no kind: {e}"))?;
    let frame = |opcode: u8, rsv1: bool| match kind {
        RequestKind::WebSocketFrame { flags } => {
            flags.fin() && flags.opcode().as_u8() == opcode && flags.rsv1() == rsv1
        }
        _ => false,
    };
    let ok = match name {
        "http_get" | "http_post" | "http_10" | "flow_request" => kind == RequestKind::Http,
        "disconnect" => kind == RequestKind::Disconnect && req.is_disconnect(),
        "json_socket" => kind == RequestKind::Json,
        "credits" => kind == RequestKind::Credits { credits: 41 },
        "ws_handshake" => kind == RequestKind::WebSocketHandshake { accept: WS_ACCEPT },
        "ws_text" | "ws_fragmented" => frame(0x1, false),
        "ws_binary" => frame(0x2, false),
        "ws_close" => frame(0x8, false),
        "ws_ping" => frame(0x9, false),
        "ws_rsv1" => frame(0x1, true),
        "upload_start" => {
            matches!(kind, RequestKind::UploadStart { path } if path.starts_with("/tmp/upload."))
        }
        "upload_done" => {
            matches!(kind, RequestKind::UploadDone { path } if path.starts_with("/tmp/upload."))
        }
        // The start carries the full headers; the first chunk has the same
        // offset but only the UPLOAD_STREAM header.
        "upload_stream_start" => {
            kind == RequestKind::UploadChunk {
                offset: 0,
                done: false,
            } && req.method() == Some("POST")
        }
        "upload_stream_chunk" => {
            kind == RequestKind::UploadChunk {
                offset: 0,
                done: false,
            } && req.method().is_none()
        }
        "upload_stream_done" => {
            kind == RequestKind::UploadChunk {
                offset: 4096,
                done: true,
            }
        }
        _ => return Err("no expected kind for this capture".to_string()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected kind {kind:?}"))
    }
}

pub(super) fn compare(stored: &[u8], live: &[u8]) -> Result<(), String> {
    let a = meaning(stored).map_err(|e| format!("stored message {e}"))?;
    let b = meaning(live).map_err(|e| format!("live message {e}"))?;
    let mut diffs = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            diffs.push(format!("{name}: stored {x}, live {y}"));
        }
    };
    field("sender", a.sender, b.sender);
    field("path", a.path, b.path);
    field(
        "protocol",
        format!("{:?}", a.protocol),
        format!("{:?}", b.protocol),
    );
    field("kind", a.kind, b.kind);
    field("body", a.body, b.body);
    for (name, values) in &a.headers {
        let live = b.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if live != Some(values) {
            diffs.push(format!("header {name}: stored {values:?}, live {live:?}"));
        }
    }
    for (name, values) in &b.headers {
        if !a.headers.iter().any(|(n, _)| n == name) {
            diffs.push(format!("header {name}: stored None, live {values:?}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}
