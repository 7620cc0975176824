//! Server-Sent Events through Mongrel2: a raw HTTP client reads the chunked
//! `text/event-stream` and parses it the way an EventSource does.

use std::io::{Read, Write};

use super::*;

/// One SSE event (or a comment line).
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event {
        id: Option<String>,
        name: String,
        data: Value,
    },
    Comment(String),
}

/// An open event stream.
pub struct Stream {
    tcp: TcpStream,
    /// Raw bytes read, not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet parsed into events.
    text: String,
    ended: bool,
}

impl Stream {
    /// `GET target` with extra header lines; the stream, or the refusal.
    pub fn open(
        m2: &Mongrel2,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Stream, HttpResponse> {
        let mut tcp = TcpStream::connect(m2.http_addr()).expect("connect");
        tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).expect("send");
        let mut stream = Stream {
            tcp,
            raw: Vec::new(),
            text: String::new(),
            ended: false,
        };
        let head_end = loop {
            if let Some(end) = stream.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            stream.fill();
        };
        let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut parsed_headers);
        parsed.parse(&stream.raw[..head_end]).expect("HTTP head");
        let status = parsed.code.expect("status");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        stream.raw.drain(..head_end);
        let response = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if status != 200 {
            let length: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while stream.raw.len() < length {
                stream.fill();
            }
            return Err(HttpResponse {
                body: stream.raw[..length].to_vec(),
                ..response
            });
        }
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        Ok(stream)
    }

    fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = self.tcp.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the connection closed mid-stream");
        self.raw.extend_from_slice(&buf[..n]);
    }

    /// Moves complete chunks from `raw` to `text`; false if none was complete.
    fn dechunk(&mut self) -> bool {
        let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size = std::str::from_utf8(&self.raw[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        let end = line_end + 2 + size + 2;
        if self.raw.len() < end {
            return false;
        }
        assert_eq!(&self.raw[end - 2..end], b"\r\n", "chunk trailer");
        let data = String::from_utf8(self.raw[line_end + 2..end - 2].to_vec()).expect("UTF-8");
        self.raw.drain(..end);
        if size == 0 {
            self.ended = true;
        }
        self.text.push_str(&data);
        true
    }

    /// The next event or comment; `None` once the terminating chunk has arrived.
    fn next_any(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse_block(&block));
            }
            if self.ended {
                return None;
            }
            if !self.dechunk() {
                self.fill();
            }
        }
    }

    /// The next event, skipping comments.
    pub fn next(&mut self) -> Sse {
        loop {
            match self.next_any() {
                Some(Sse::Comment(_)) => continue,
                Some(event) => return event,
                None => panic!("the stream ended"),
            }
        }
    }

    /// True when the server closes the connection after the stream ended.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.tcp.read(&mut buf), Ok(0))
    }
}

fn parse_block(block: &str) -> Sse {
    let (mut id, mut name, mut data) = (None, "message".to_owned(), Value::Null);
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            return Sse::Comment(comment.trim().to_owned());
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => name = value.to_owned(),
            "data" => {
                data = without_publish_time(serde_json::from_str(value).expect("data is JSON"))
            }
            other => panic!("unexpected field {other:?}"),
        }
    }
    Sse::Event { id, name, data }
}

fn event(id: &str, e: &str, rk: &str, name: &str, payload: Value, seq: u64) -> Sse {
    Sse::Event {
        id: Some(id.to_owned()),
        name: name.to_owned(),
        data: event_json(e, rk, name, payload, seq),
    }
}

fn sse_config() -> Value {
    let mut config = test_config();
    config["timing"] = json!({"sse_heartbeat_ms": 200});
    config
}

#[test]
fn sse_streams_events_with_ids_and_heartbeats_and_ends_on_shutdown() {
    let mut f = Fixture::with(&sse_config(), &[]);
    let mut s = Stream::open(
        &f.m2,
        "/events/stream?exchange=calls&routing_key=queue.*",
        &[],
    )
    .expect("stream");
    let Sse::Event { name, data, id } = s.next() else {
        unreachable!()
    };
    assert_eq!((name.as_str(), id), ("Welcome", None));
    assert_eq!(data["payload"]["id"].as_str().map(str::len), Some(16));
    let epoch = data["payload"]["epoch"].as_str().expect("epoch").to_owned();
    let id = |seq: u64| format!("{epoch}/{seq}");
    let inj = f.injector();
    assert_eq!(
        inj.publish("calls", "queue.a", "Offered", json!({"n": 1}))["delivered_to"],
        1
    );
    assert_eq!(
        inj.publish("calls", "other", "X", json!({}))["delivered_to"],
        0
    );
    inj.publish("calls", "queue.b", "Offered", json!({"n": 2}));
    inj.publish("calls", "queue.a", "Answered", json!({}));
    assert_eq!(
        s.next(),
        event(&id(1), "calls", "queue.a", "Offered", json!({"n": 1}), 1)
    );
    assert_eq!(
        s.next(),
        event(&id(3), "calls", "queue.b", "Offered", json!({"n": 2}), 3),
        "ids are positions on the exchange (2 went to `other`)"
    );
    assert_eq!(
        s.next(),
        event(&id(4), "calls", "queue.a", "Answered", json!({}), 4)
    );
    // An idle stream gets heartbeat comments.
    assert_eq!(s.next_any(), Some(Sse::Comment("heartbeat".into())));
    let status = f.status();
    assert_eq!(
        (&status["streams"], &status["sessions"]),
        (&json!(1), &json!(1))
    );

    // A WebSocket client and the stream share the relay; shutdown ends both cleanly.
    let mut ws = f.ws();
    f.relay.signal(libc::SIGTERM);
    let exit = f.relay.wait_exit(WAIT).expect("the relay exits");
    assert!(exit.success(), "{exit}");
    while let Some(sse) = s.next_any() {
        assert!(matches!(sse, Sse::Comment(_)), "{sse:?}");
    }
    assert!(s.ended, "terminating chunk");
    assert!(s.closed(), "connection closed after the stream");
    assert_eq!(ws.close_code(), Some(1001));
    assert!(f.relay.log_tail().contains("ending 1 SSE streams"));
}

#[test]
fn sse_last_event_id_resumes_the_whole_subscription() {
    let f = Fixture::with(&sse_config(), &[]);
    let inj = f.injector();
    // Positions 1..=5 on r1, 6 on r2, 7 on x.
    for n in 1..=5 {
        inj.publish("calls", "r1", "Tick", json!({"n": n}));
    }
    inj.publish("calls", "r2", "Other", json!({}));
    inj.publish("calls", "x", "Elsewhere", json!({}));
    let path = "/events/stream?exchange=calls&routing_key=r*";
    let mut s = Stream::open(&f.m2, path, &[]).expect("stream");
    let Sse::Event { name, data, .. } = s.next() else {
        unreachable!()
    };
    assert_eq!(name, "Welcome");
    let epoch = data["payload"]["epoch"].as_str().expect("epoch").to_owned();
    let id = |seq: u64| format!("{epoch}/{seq}");
    inj.publish("calls", "r1", "Tick", json!({"n": 6}));
    assert_eq!(
        s.next(),
        event(&id(8), "calls", "r1", "Tick", json!({"n": 6}), 8)
    );
    drop(s);

    // A stream that saw position 4 missed r1's 5 and r2's 6 under its wildcard, and 8.
    let last = id(4);
    let mut s = Stream::open(&f.m2, path, &[("Last-Event-ID", &last)]).expect("stream");
    assert!(matches!(s.next(), Sse::Event { name, .. } if name == "Welcome"));
    assert_eq!(
        s.next(),
        event(&id(5), "calls", "r1", "Tick", json!({"n": 5}), 5)
    );
    assert_eq!(
        s.next(),
        event(&id(6), "calls", "r2", "Other", json!({}), 6)
    );
    assert_eq!(
        s.next(),
        event(&id(8), "calls", "r1", "Tick", json!({"n": 6}), 8)
    );
    assert_eq!(
        s.next(),
        Sse::Event {
            id: None,
            name: "Resumed".into(),
            data: json!({"event":"Resumed","payload":{"exchange":"calls","routing_key":"r*",
                         "recovered":true,"more":false,"last_seq":8,"epoch":epoch,
                         "first_seq":5,"from":"history"}}),
        }
    );
    inj.publish("calls", "r2", "Other", json!({}));
    assert_eq!(
        s.next(),
        event(&id(9), "calls", "r2", "Other", json!({}), 9),
        "live, once"
    );

    // The query form works too.
    let query = format!("{path}&last_event_id={}", id(8).replace('/', "%2F"));
    let mut q = Stream::open(&f.m2, &query, &[]).expect("stream");
    assert!(matches!(q.next(), Sse::Event { name, .. } if name == "Welcome"));
    assert!(matches!(q.next(), Sse::Event { id: Some(i), .. } if i == id(9)));
    assert!(matches!(q.next(), Sse::Event { name, .. } if name == "Resumed"));
}

/// The probe of issue 12: after a relay restart, an id from the earlier run (the old
/// `EXCHANGE/KEY/SEQ` form, or the earlier epoch) was answered `recovered: true` with the
/// new run's events 4 and 5 only. Now it is `recovered: false` and every event the new
/// run kept is replayed, from `first_seq`.
#[test]
fn after_a_restart_an_old_last_event_id_is_not_recovered() {
    let mut f = Fixture::with(&sse_config(), &[]);
    let path = "/events/stream?exchange=calls&routing_key=q.*";
    let mut s = Stream::open(&f.m2, path, &[]).expect("stream");
    let Sse::Event { data, .. } = s.next() else {
        unreachable!()
    };
    let old_epoch = data["payload"]["epoch"].as_str().expect("epoch").to_owned();
    drop(s);
    f.relay.restart();
    f.relay.wait_ready(&f.m2);
    let inj = f.injector();
    for n in 1..=5 {
        inj.publish("calls", "q.a", "Tick", json!({"n": n}));
    }
    for last in ["calls/q.a/3".to_owned(), format!("{old_epoch}/3")] {
        let mut s = Stream::open(&f.m2, path, &[("Last-Event-ID", &last)]).expect("stream");
        let Sse::Event { data, .. } = s.next() else {
            unreachable!()
        };
        let epoch = data["payload"]["epoch"].as_str().expect("epoch").to_owned();
        assert_ne!(epoch, old_epoch, "a new run is a new epoch");
        for n in 1..=5 {
            assert_eq!(
                s.next(),
                event(
                    &format!("{epoch}/{n}"),
                    "calls",
                    "q.a",
                    "Tick",
                    json!({"n": n}),
                    n
                ),
                "{last}"
            );
        }
        let Sse::Event { name, data, .. } = s.next() else {
            unreachable!()
        };
        assert_eq!(name, "Resumed");
        assert_eq!(
            data["payload"],
            json!({"exchange":"calls","routing_key":"q.*","recovered":false,"more":false,
                   "last_seq":5,"epoch":epoch,"first_seq":1,"from":"history"}),
            "{last}"
        );
    }
    let status = f.status();
    assert_eq!(status["resumes_unrecovered"], 2, "{status}");
}

#[test]
fn sse_authorization_like_websocket_and_disconnects_are_forgotten() {
    let f = Fixture::with(&sse_config(), &[]);
    let refused = |target: &str, headers: &[(&str, &str)]| {
        Stream::open(&f.m2, target, headers).err().expect("refused")
    };
    let admin = "/events/stream?exchange=admin&routing_key=x";
    let r = refused(admin, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"ok":false,"error":"AuthRequired"}));
    assert!(r.header("www-authenticate").is_some());
    let r = refused(&format!("{admin}&token=wrong"), &[]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"ok":false,"error":"InvalidToken"}))
    );
    let r = refused(admin, &[("Authorization", &format!("Bearer {OPS_TOKEN}"))]);
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"ok":false,"error":"SubscriptionDenied"}))
    );
    let r = refused("/events/stream?exchange=queues&routing_key=*", &[]);
    assert_eq!(r.status, 403);
    let r = refused("/events/stream?exchange=nope", &[]);
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"ok":false,"error":"InvalidExchange"}))
    );
    let post = f
        .http()
        .request("POST /events/stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .expect("answered");
    assert_eq!(post.status, 405);
    assert_eq!(f.status()["sessions"], 0, "nothing was opened");

    let mut by_query =
        Stream::open(&f.m2, &format!("{admin}&token={ADMIN_TOKEN}"), &[]).expect("stream");
    let mut by_header = Stream::open(
        &f.m2,
        admin,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .expect("stream");
    let ack = f.injector().publish("admin", "x", "Secret", json!({}));
    assert_eq!(ack["delivered_to"], 2);
    for s in [&mut by_query, &mut by_header] {
        assert!(matches!(s.next(), Sse::Event { name, .. } if name == "Welcome"));
        assert!(matches!(s.next(), Sse::Event { name, .. } if name == "Secret"));
    }
    assert_eq!(f.status()["streams"], 2);
    // Clients that just go are forgotten (Mongrel2 reports the disconnect).
    drop(by_query);
    drop(by_header);
    let status = status_eventually(&f, |s| s["streams"] == 0 && s["sessions"] == 0);
    assert_eq!(status["subscriptions"]["admin"], 0);
}
