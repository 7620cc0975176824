//! The relay's plain-HTTP endpoints under its Mongrel2 route (`/events` in the shipped
//! mongrel2.conf): publish, status, metrics, and a JSON 404 for everything else.
//!
//! Pure: a request and the relay in, a [`Response`] out. The I/O loop sends it with
//! `Transceiver::reply_http`, which also takes care of HEAD and `Connection: close`.
//!
//! | Path (after the route)  | Methods    | Answer                                               |
//! |-------------------------|------------|------------------------------------------------------|
//! | `/publish`              | POST       | 202 + ack JSON; 401 without the bearer token; 400    |
//! | `/status`               | GET, HEAD  | 200 + status JSON; 401 without the status token      |
//! | `/metrics`              | GET, HEAD  | 200 + OpenMetrics text; 401 without the status token |
//! | `/stream`               | GET        | SSE stream, opened by the loop (see `sse`)           |
//! | anything else           | any        | 404 `{"ok":false,"error":"NotFound"}`                |
//!
//! A known path with another method gets 405 with `Allow`. Status and metrics name the
//! relay's link id, its link endpoints and peers: with `status_token` configured they need
//! `Authorization: Bearer STATUS_TOKEN` (a Prometheus scrape job sets it as its
//! `authorization` credentials).

use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::request::Request;
use serde_json::json;

use super::metrics::Stats;
use super::protocol::{Ack, ErrorName, Source};
use super::relay::{Relay, SessionKey};

/// The OpenMetrics text content type (what `prometheus-client` writes).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /publish`.
    Publish,
    /// `GET /status`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// `GET /stream` (SSE).
    Stream,
    /// Anything else.
    NotFound,
}

impl Endpoint {
    /// Which endpoint `path` names, once the route prefix `pattern` (Mongrel2's PATTERN
    /// header, e.g. `/events`) is removed. A trailing slash is ignored.
    pub fn of(path: &str, pattern: Option<&str>) -> Endpoint {
        let rest = pattern
            .and_then(|p| path.strip_prefix(p.trim_end_matches('/')))
            .unwrap_or(path);
        match rest.trim_end_matches('/') {
            "/publish" => Endpoint::Publish,
            "/status" => Endpoint::Status,
            "/metrics" => Endpoint::Metrics,
            "/stream" => Endpoint::Stream,
            _ => Endpoint::NotFound,
        }
    }

    /// Methods the endpoint answers (empty for [`Endpoint::NotFound`]).
    fn methods(self) -> &'static [&'static str] {
        match self {
            Endpoint::Publish => &["POST"],
            Endpoint::Status | Endpoint::Metrics => &["GET", "HEAD"],
            Endpoint::Stream => &["GET"],
            Endpoint::NotFound => &[],
        }
    }
}

/// Answers an HTTP request to the relay's route; `fill` adds what the I/O layer knows to
/// the status (links, RPC). `GET /stream` is the loop's to open (it starts a streamed
/// response): here it gets 400.
pub fn respond<K: SessionKey>(
    relay: &mut Relay<K>,
    request: &Request<'_>,
    fill: &dyn Fn(&mut Stats),
) -> Response {
    let endpoint = Endpoint::of(request.path(), request.pattern());
    let method = request.method().unwrap_or("");
    if endpoint == Endpoint::NotFound {
        return error(404, "NotFound");
    }
    if !endpoint.methods().contains(&method) {
        return error(405, "MethodNotAllowed").header("Allow", endpoint.methods().join(", "));
    }
    match endpoint {
        Endpoint::Publish => {
            let ack = relay.http_publish(request.header("authorization"), request.body());
            publish_response(&ack)
        }
        Endpoint::Status | Endpoint::Metrics => {
            if !relay
                .config()
                .status_authorized(request.header("authorization"))
            {
                return unauthorized();
            }
            let mut stats = relay.stats();
            fill(&mut stats);
            let (content_type, body) = if endpoint == Endpoint::Status {
                ("application/json", stats.to_json())
            } else {
                (PROMETHEUS_CONTENT_TYPE, stats.to_prometheus().into_bytes())
            };
            Response::ok()
                .header("Content-Type", content_type)
                .header("Cache-Control", "no-store")
                .body(body)
        }
        Endpoint::Stream => error(400, "InvalidPayload"),
        Endpoint::NotFound => error(404, "NotFound"),
    }
}

/// The answer to an upload Mongrel2 spooled or streamed (a body over its
/// `limits.content_length`): the relay takes no bodies that big, so 413, counted as a
/// rejected HTTP publish when it was one.
pub fn upload_refused<K: SessionKey>(relay: &mut Relay<K>, request: &Request<'_>) -> Response {
    if Endpoint::of(request.path(), request.pattern()) == Endpoint::Publish {
        relay.reject(Source::Http, ErrorName::InvalidPayload);
    }
    Response::new(413)
        .header("Content-Type", "application/json")
        .body(Ack::Rejected(ErrorName::InvalidPayload).to_json())
}

/// The answer to `POST /events/publish`.
pub fn publish_response(ack: &Ack) -> Response {
    let response = Response::new(ack.http_status())
        .header("Content-Type", "application/json")
        .body(ack.to_json());
    if ack.http_status() == 401 {
        response.header("WWW-Authenticate", BEARER_CHALLENGE)
    } else {
        response
    }
}

const BEARER_CHALLENGE: &str = "Bearer realm=\"event-relay\"";

fn unauthorized() -> Response {
    error(401, "AuthRequired").header("WWW-Authenticate", BEARER_CHALLENGE)
}

fn error(status: u16, name: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "application/json")
        .body(json!({ "ok": false, "error": name }).to_string())
}

#[cfg(test)]
mod tests {
    use super::super::config::Config;
    use super::*;
    use serde_json::Value;

    fn relay() -> Relay<u32> {
        let env = |name: &str| (name == "RELAY_PUBLISH_TOKEN").then(|| "pub-token".to_owned());
        Relay::new(Config::from_parts(None, &env).unwrap(), "r")
    }

    fn request(method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Request<'static> {
        let mut r = Request::new("s", 1, path.to_owned())
            .with_header("METHOD", method.to_owned())
            .with_header("PATTERN", "/events")
            .with_body(body.to_vec());
        if let Some(a) = auth {
            r = r.with_header("authorization", a.to_owned());
        }
        r
    }

    fn answer(relay: &mut Relay<u32>, r: &Request<'_>) -> (u16, Vec<(String, String)>, Value) {
        let resp = respond(relay, r, &|_| {});
        let headers = resp
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let body = serde_json::from_slice(resp.body_bytes()).unwrap_or(Value::Null);
        (resp.status(), headers, body)
    }

    #[test]
    fn endpoints_from_paths() {
        let p = Some("/events");
        assert_eq!(Endpoint::of("/events/publish", p), Endpoint::Publish);
        assert_eq!(Endpoint::of("/events/status/", p), Endpoint::Status);
        assert_eq!(Endpoint::of("/events/metrics", p), Endpoint::Metrics);
        assert_eq!(Endpoint::of("/events/stream", p), Endpoint::Stream);
        assert_eq!(Endpoint::of("/events", p), Endpoint::NotFound);
        assert_eq!(Endpoint::of("/events/statusx", p), Endpoint::NotFound);
        assert_eq!(
            Endpoint::of("/other/status", Some("/other/")),
            Endpoint::Status
        );
        assert_eq!(Endpoint::of("/status", None), Endpoint::Status);
    }

    #[test]
    fn publish_needs_post_and_the_token() {
        let mut r = relay();
        let body = br#"{"exchange":"calls","routing_key":"q","event":"E"}"#;
        let (status, headers, json) =
            answer(&mut r, &request("POST", "/events/publish", None, body));
        assert_eq!(
            (status, json["error"].as_str()),
            (401, Some("AuthRequired"))
        );
        assert!(headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
        let (status, _, json) = answer(
            &mut r,
            &request("POST", "/events/publish", Some("Bearer nope"), body),
        );
        assert_eq!((status, json["ok"].as_bool()), (401, Some(false)));
        let (status, _, json) = answer(
            &mut r,
            &request("POST", "/events/publish", Some("Bearer pub-token"), body),
        );
        assert_eq!(status, 202);
        assert_eq!(json, json!({"ok":true,"seq":1,"delivered_to":0}));
        let (status, _, json) = answer(
            &mut r,
            &request("POST", "/events/publish", Some("Bearer pub-token"), b"{"),
        );
        assert_eq!((status, json["error"].as_str()), (400, Some("InvalidJSON")));
        let (status, headers, _) = answer(&mut r, &request("GET", "/events/publish", None, b""));
        assert_eq!(status, 405);
        assert!(headers.contains(&("Allow".to_owned(), "POST".to_owned())));
        assert_eq!(r.stats().counters.events_in.http, 1);
    }

    #[test]
    fn status_metrics_and_not_found() {
        let mut r = relay();
        let (status, headers, json) = answer(&mut r, &request("GET", "/events/status", None, b""));
        assert_eq!(status, 200);
        assert!(headers.contains(&("Content-Type".to_owned(), "application/json".to_owned())));
        assert_eq!(json["sessions"], 0);
        let resp = respond(
            &mut r,
            &request("GET", "/events/metrics", None, b""),
            &|s| s.streams = 9,
        );
        assert_eq!(resp.status(), 200);
        assert!(std::str::from_utf8(resp.body_bytes())
            .unwrap()
            .contains("relay_sessions 0\n"));
        assert!(std::str::from_utf8(resp.body_bytes())
            .unwrap()
            .contains("relay_streams 9\n"));
        let (status, _, json) = answer(&mut r, &request("POST", "/events/status", None, b""));
        assert_eq!(
            (status, json["error"].as_str()),
            (405, Some("MethodNotAllowed"))
        );
        let (status, _, json) = answer(&mut r, &request("GET", "/events/nope", None, b""));
        assert_eq!(status, 404);
        assert_eq!(json, json!({"ok":false,"error":"NotFound"}));
    }

    #[test]
    fn a_status_token_guards_status_and_metrics() {
        let env = |name: &str| (name == "RELAY_STATUS_TOKEN").then(|| "status-tok".to_owned());
        let mut r: Relay<u32> = Relay::new(Config::from_parts(None, &env).unwrap(), "r");
        for path in ["/events/status", "/events/metrics"] {
            for auth in [None, Some("Bearer nope"), Some("status-tok")] {
                let (status, headers, json) = answer(&mut r, &request("GET", path, auth, b""));
                assert_eq!(
                    (status, json["error"].as_str()),
                    (401, Some("AuthRequired")),
                    "{path} {auth:?}"
                );
                assert!(headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
            }
            let resp = respond(
                &mut r,
                &request("GET", path, Some("Bearer status-tok"), b""),
                &|_| {},
            );
            assert_eq!(resp.status(), 200, "{path}");
        }
    }

    #[test]
    fn oversized_uploads_are_refused_and_counted() {
        let mut r = relay();
        let resp = upload_refused(&mut r, &request("POST", "/events/publish", None, b""));
        assert_eq!(resp.status(), 413);
        assert_eq!(r.stats().counters.events_rejected.http, 1);
    }
}
