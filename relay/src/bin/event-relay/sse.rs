//! Server-Sent Events: `GET /events/stream?exchange=E&routing_key=K` answers
//! `text/event-stream`, streamed as a chunked response that stays open.
//!
//! - `routing_key` is an exact key or a `prefix*` wildcard (default `*`, every key).
//! - The token for exchanges that need one: `?token=T` or `Authorization: Bearer T`, with
//!   the same rules as the WebSocket `Authenticate` + `Subscribe`. Refusals are plain HTTP
//!   answers with the error name: 401 (`AuthRequired`, `InvalidToken`), 403
//!   (`SubscriptionDenied`), 400 (anything else).
//! - `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set headers):
//!   an id the stream sent (`EPOCH/SEQ`: a position on the exchange); the events after it
//!   that the stream's key or wildcard covers are replayed from history, then `Resumed`
//!   says whether nothing was missed and from where delivery restarts, as for the
//!   WebSocket `Resume`. An id from another epoch (a restarted relay; or an old-style
//!   `EXCHANGE/KEY/SEQ` id) is answered `recovered: false`; an id that is not one at all
//!   (no `/SEQ` ending, or an epoch over `MAX_EPOCH` bytes) is refused (400).
//!
//! Every relay message is an SSE event (see `frame`): `Welcome` first, then the events, each
//! with its id. A comment line every `timing.sse_heartbeat_ms`. On shutdown the stream ends
//! with the terminating chunk.

use mongrel2_transceiver::http::{ChunkedResponse, Response};
use mongrel2_transceiver::request::Request;
use serde_json::json;

use super::frame::parse_event_id;
use super::protocol::{ErrorName, Position, MAX_EPOCH};
use super::relay::StreamRequest;

/// Reads a stream request from the URL and headers.
pub fn stream_request(request: &Request<'_>) -> Result<StreamRequest, ErrorName> {
    let mut exchange = None;
    let mut routing_key = None;
    let mut token = None;
    let mut last_event_id = None;
    for (name, value) in request.query_pairs() {
        match name.as_str() {
            "exchange" => exchange = Some(value),
            "routing_key" => routing_key = Some(value),
            "token" => token = Some(value),
            "last_event_id" => last_event_id = Some(value),
            _ => {}
        }
    }
    let exchange = exchange.ok_or(ErrorName::InvalidPayload)?;
    let token = token.or_else(|| {
        let header = request.header("authorization")?;
        let bearer = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?;
        Some(bearer.trim().to_owned())
    });
    let last_event = match request
        .header("last-event-id")
        .map(str::to_owned)
        .or(last_event_id)
        .filter(|id| !id.trim().is_empty())
    {
        Some(id) => {
            let (epoch, seq) = parse_event_id(&id)
                .filter(|(epoch, _)| epoch.len() <= MAX_EPOCH)
                .ok_or(ErrorName::InvalidPayload)?;
            Some(Position {
                epoch: Some(epoch),
                seq,
            })
        }
        None => None,
    };
    Ok(StreamRequest {
        routing_key: routing_key.unwrap_or_else(|| "*".to_owned()),
        exchange,
        token,
        last_event,
    })
}

/// The head of an accepted stream.
pub fn stream_head() -> ChunkedResponse {
    ChunkedResponse::start(200)
        .header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-store")
        // Proxies that buffer responses would hold events back.
        .header("X-Accel-Buffering", "no")
}

/// The answer to a stream that cannot be opened.
pub fn stream_refused(error: ErrorName) -> Response {
    let status = match error {
        ErrorName::AuthRequired | ErrorName::InvalidToken => 401,
        ErrorName::SubscriptionDenied => 403,
        _ => 400,
    };
    let response = Response::new(status)
        .header("Content-Type", "application/json")
        .body(json!({ "ok": false, "error": error.as_str() }).to_string());
    if status == 401 {
        response.header("WWW-Authenticate", "Bearer realm=\"event-relay\"")
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(query: &str, headers: &[(&str, &str)]) -> Request<'static> {
        let mut r = Request::new("s", 1, "/events/stream")
            .with_header("METHOD", "GET")
            .with_header("PATTERN", "/events")
            .with_header("QUERY", query.to_owned());
        for (n, v) in headers {
            r = r.with_header((*n).to_owned(), (*v).to_owned());
        }
        r
    }

    #[test]
    fn query_headers_and_defaults() {
        let r = stream_request(&get("exchange=calls&routing_key=queue.*&token=t1", &[])).unwrap();
        assert_eq!(
            r,
            StreamRequest {
                exchange: "calls".into(),
                routing_key: "queue.*".into(),
                token: Some("t1".into()),
                last_event: None,
            }
        );
        let r = stream_request(&get(
            "exchange=calls",
            &[
                ("authorization", "Bearer t2"),
                ("last-event-id", "relay.0a/7"),
            ],
        ))
        .unwrap();
        assert_eq!(r.routing_key, "*");
        assert_eq!(r.token.as_deref(), Some("t2"));
        let at = |epoch: &str, seq| {
            Some(Position {
                epoch: Some(epoch.into()),
                seq,
            })
        };
        assert_eq!(r.last_event, at("relay.0a", 7));
        let r =
            stream_request(&get("exchange=calls&last_event_id=calls%2Fa%2Fb%2F3", &[])).unwrap();
        assert_eq!(r.last_event, at("calls/a/b", 3), "old ids: a foreign epoch");
        assert_eq!(
            stream_request(&get("routing_key=k", &[])),
            Err(ErrorName::InvalidPayload)
        );
        for bad in [
            "calls",
            "calls/k/x",
            &format!("{}/1", "e".repeat(MAX_EPOCH + 1)),
        ] {
            assert_eq!(
                stream_request(&get("exchange=calls", &[("last-event-id", bad)])),
                Err(ErrorName::InvalidPayload),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(stream_refused(ErrorName::AuthRequired).status(), 401);
        assert_eq!(stream_refused(ErrorName::InvalidToken).status(), 401);
        assert_eq!(stream_refused(ErrorName::SubscriptionDenied).status(), 403);
        assert_eq!(stream_refused(ErrorName::InvalidExchange).status(), 400);
        let head = String::from_utf8(stream_head().encode().unwrap()).unwrap();
        assert!(
            head.contains("Content-Type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    }
}
