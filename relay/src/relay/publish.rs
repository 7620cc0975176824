//! Publishing: events from every source checked, numbered, kept in history and queued to
//! subscribers; forwarding to linked relays.

use super::*;

/// `origin` says "a linked relay already published this": only an (authenticated) link may
/// say so. From anywhere else it let a publisher make other relays' events look like
/// duplicates (issue 18), so it is refused rather than ignored, which would hide the mistake.
fn links_only_origin(source: Source, input: EventInput) -> Result<EventInput, ErrorName> {
    if input.origin.is_some() && source != Source::Link {
        return Err(ErrorName::InvalidPayload);
    }
    Ok(input)
}

impl<K: SessionKey> Relay<K> {
    /// Publishes a raw event (injector, PULL, HTTP body or link) and returns the ack.
    /// Events from links may be [`LINK_ENVELOPE`] bytes over `limits.message_size`: the
    /// forwarding relay added the origin to an event that was within the limit.
    pub fn publish_json(&mut self, source: Source, body: &[u8]) -> Ack {
        let limit = match source {
            Source::Link => self.config.limits.message_size + LINK_ENVELOPE,
            _ => self.config.limits.message_size,
        };
        let result = parse_event_input(body, limit)
            .and_then(|input| links_only_origin(source, input))
            .and_then(|input| self.publish_inner(input));
        self.count(source, &result);
        match result {
            Ok(Published::Delivered {
                seq, delivered_to, ..
            }) => Ack::Published { seq, delivered_to },
            Ok(Published::Duplicate) => Ack::Duplicate,
            Ok(Published::Forwarded) => Ack::Forwarded,
            Err(e) => Ack::Rejected(e),
        }
    }

    /// `POST /events/publish`: checks the `Authorization: Bearer` header first (401 without
    /// a configured publish token), then publishes the body.
    pub fn http_publish(&mut self, authorization: Option<&str>, body: &[u8]) -> Ack {
        if !self.config.publish_authorized(authorization) {
            self.counters.events_rejected.bump(Source::Http);
            return Ack::Rejected(ErrorName::AuthRequired);
        }
        self.publish_json(Source::Http, body)
    }

    /// Counts an input refused before it could be parsed (e.g. a multipart ZeroMQ message)
    /// as rejected from `source`, and returns the ack to answer it with.
    pub fn reject(&mut self, source: Source, error: ErrorName) -> Ack {
        self.counters.events_rejected.bump(source);
        Ack::Rejected(error)
    }

    /// Publishes an already parsed event.
    pub fn publish(&mut self, source: Source, input: EventInput) -> Result<Published, ErrorName> {
        let result = links_only_origin(source, input).and_then(|input| self.publish_inner(input));
        self.count(source, &result);
        result
    }

    pub(super) fn count(&mut self, source: Source, result: &Result<Published, ErrorName>) {
        match result {
            Ok(Published::Delivered { .. } | Published::Forwarded) => {
                self.counters.events_in.bump(source)
            }
            Ok(Published::Duplicate) => self.counters.events_duplicate += 1,
            Err(_) => self.counters.events_rejected.bump(source),
        }
    }

    /// Checks an event from `source` for a shared backbone (e.g. RabbitMQ), where it will
    /// be numbered and come back through [`Relay::publish_at`] on every relay. Returns the
    /// exchange, routing key and the event-input JSON to publish there, stamped with the
    /// publish time. Counted as accepted from `source` (or rejected) here.
    pub fn prepare_backbone(
        &mut self,
        source: Source,
        body: &[u8],
    ) -> Result<(Arc<str>, String, Vec<u8>), ErrorName> {
        let result = parse_event_input(body, self.config.limits.message_size)
            .and_then(|input| links_only_origin(source, input))
            .and_then(|input| {
                let exchange = self.checked_exchange(&input)?;
                let ts = input.ts.unwrap_or_else(now_ms);
                let json = json!({
                    "exchange": &*exchange,
                    "routing_key": input.routing_key,
                    "event": input.event,
                    "payload": input.payload,
                    "ts": ts,
                });
                Ok((exchange, input.routing_key, json.to_string().into_bytes()))
            });
        match &result {
            Ok(_) => self.counters.events_in.bump(source),
            Err(_) => self.counters.events_rejected.bump(source),
        }
        result
    }

    /// An event read back from the shared backbone: from `exchange`'s log, at `position`
    /// (the same on every relay reading it), published there with `routing_key`.
    /// Delivered and kept in history under that position. A position already recorded is
    /// a repeat (`Duplicate`); positions skipped are lost.
    ///
    /// `body` is event-input JSON; Myxi-style publishers that write straight into the
    /// backbone may leave out `exchange` and `routing_key` (the log's and the message's are
    /// used). An `exchange` naming another exchange is refused: its position belongs to
    /// this log.
    pub fn publish_at(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        position: u64,
    ) -> Result<Published, ErrorName> {
        let result = parse_backbone_input(
            exchange,
            routing_key,
            body,
            self.config.limits.message_size + LINK_ENVELOPE,
        )
        .and_then(|input| links_only_origin(Source::Inject, input))
        .and_then(|input| self.publish_inner_at(input, Some(position)));
        match &result {
            Ok(Published::Delivered { .. } | Published::Forwarded) => {
                self.counters.backbone_in += 1
            }
            Ok(Published::Duplicate) => self.counters.events_duplicate += 1,
            Err(_) => self.counters.backbone_rejected += 1,
        }
        result
    }

    /// The configured exchange of `input`, after the checks parsing cannot do for inputs
    /// built in code.
    fn checked_exchange(&self, input: &EventInput) -> Result<Arc<str>, ErrorName> {
        let exchange = self
            .config
            .exchange(&input.exchange)
            .map(|(e, _)| e.clone())
            .ok_or(ErrorName::InvalidExchange)?;
        let rk = input.routing_key.as_str();
        if rk.len() > MAX_ROUTING_KEY
            || rk.ends_with('*')
            || input.event.is_empty()
            || input.event.len() > MAX_EVENT_NAME
        {
            return Err(ErrorName::InvalidPayload);
        }
        Ok(exchange)
    }

    pub(super) fn publish_inner(&mut self, input: EventInput) -> Result<Published, ErrorName> {
        self.publish_inner_at(input, None)
    }

    /// Publishes at a position given from outside (a backbone's offset), or numbered here
    /// (`None`): by this relay, or in a group by the exchange's sequencer.
    fn publish_inner_at(
        &mut self,
        input: EventInput,
        position: Option<u64>,
    ) -> Result<Published, ErrorName> {
        let exchange = self.checked_exchange(&input)?;
        if position.is_some_and(|p| p <= self.history.last_position(&exchange)) {
            return Ok(Published::Duplicate);
        }
        let Some((exchange, origin)) = self.admit(&input)? else {
            return Ok(Published::Duplicate);
        };
        if position.is_none() && self.group.is_some() {
            return Ok(self.group_publish(exchange, input, origin));
        }
        // Positions at or below the newest were turned away above.
        let Some((seq, delivered_to)) = self.sequence(&exchange, &input, &origin, position) else {
            return Ok(Published::Duplicate);
        };
        Ok(Published::Delivered {
            seq,
            delivered_to,
            origin,
        })
    }

    /// Checks an event and gives it its network-wide origin; `None` for a linked event
    /// already seen (or our own coming back).
    pub(super) fn admit(
        &mut self,
        input: &EventInput,
    ) -> Result<Option<(Arc<str>, Origin)>, ErrorName> {
        let exchange = self.checked_exchange(input)?;
        let max_hops = self.config.limits.max_hops;
        let origin = match &input.origin {
            Some(o) if o.hops > max_hops => return Err(ErrorName::InvalidPayload),
            Some(o) if *o.relay == *self.origin_id => return Ok(None),
            Some(o) if !self.dedupe.first_time(&o.relay, o.seq) => return Ok(None),
            Some(o) => o.clone(),
            None => {
                self.origin_seq += 1;
                Origin {
                    relay: self.origin_id.to_string(),
                    seq: self.origin_seq,
                    hops: 0,
                }
            }
        };
        Ok(Some((exchange, origin)))
    }

    /// Numbers an admitted event on its exchange (the next position, or `at` when that is
    /// past the newest), forwards it to linked relays, keeps it in history and queues it to
    /// the subscribed sessions: its position and how many; `None` when the exchange is at
    /// or past `at` already.
    pub(super) fn sequence(
        &mut self,
        exchange: &Arc<str>,
        input: &EventInput,
        origin: &Origin,
        at: Option<u64>,
    ) -> Option<(u64, usize)> {
        if at.is_some_and(|at| at <= self.history.last_position(exchange)) {
            return None;
        }
        let max_hops = self.config.limits.max_hops;
        // Stamped where the event enters the relay network, so pages can show the delay
        // from publish to display; linked relays pass the first relay's stamp on.
        let ts = input.ts.unwrap_or_else(now_ms);
        let (event, payload, rk) = (&input.event, &input.payload, input.routing_key.as_str());
        if self.forwarding && origin.hops < max_hops {
            if self.forward.len() >= FORWARD_QUEUE {
                self.forward.pop_front();
                self.counters.forward_dropped += 1;
            }
            let linked = json!({
                "exchange": &**exchange,
                "routing_key": rk,
                "event": event,
                "payload": payload,
                "ts": ts,
                "origin": { "relay": origin.relay, "seq": origin.seq, "hops": origin.hops + 1 },
            });
            self.forward.push_back(linked.to_string().into_bytes());
        }
        self.record(exchange, input, Some(ts), origin, at)
    }

    /// Keeps an event with its publish time `ts` (which replaces `input.ts`) in history at
    /// position `at` on its exchange (`None`: the next one) and queues it to the subscribed
    /// sessions; `None` when the exchange is at or past `at` already (a repeat).
    pub(super) fn record(
        &mut self,
        exchange: &Arc<str>,
        input: &EventInput,
        ts: Option<u64>,
        origin: &Origin,
        at: Option<u64>,
    ) -> Option<(u64, usize)> {
        let (event, payload, rk) = (&input.event, &input.payload, input.routing_key.as_str());
        let origin_relay: Arc<str> = Arc::from(origin.relay.as_str());
        let epoch = &self.epoch;
        let position = at.unwrap_or_else(|| self.history.last_position(exchange) + 1);
        let recorded = self.history.record_at(exchange, rk, position, |seq| {
            let meta = Meta {
                event,
                id: Some(EventId { epoch, seq }),
            };
            Encoded::new(&event_json(event, payload, exchange, rk, seq, ts), &meta)
                .with_origin(origin_relay, origin.seq)
        })?;
        let targets = self.index.matching(exchange, rk);
        let bounds = bounds(&self.config);
        for key in &targets {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let item = Item {
                bytes: recorded.encoded.frame(session.kind),
                event: Some(EventRef {
                    exchange: exchange.clone(),
                    routing_key: recorded.routing_key.clone(),
                    seq: recorded.seq,
                }),
            };
            enqueue(
                session,
                key,
                item,
                bounds,
                &mut self.counters,
                &mut self.dirty,
            );
        }
        self.counters.events_queued += targets.len() as u64;
        log::debug!(
            "event {event} on {exchange}/{rk} seq {} queued to {} sessions",
            recorded.seq,
            targets.len()
        );
        Some((recorded.seq, targets.len()))
    }

    // ----- linked relays -----------------------------------------------------------------

    /// This relay's origin id on forwarded events (`RELAY_ID.RUN`).
    pub fn origin_id(&self) -> &str {
        &self.origin_id
    }

    /// What `Welcome.run` says this run is called: random, not the origin id.
    pub fn welcome_run(&self) -> &str {
        &self.welcome_run
    }

    /// Starts queueing every accepted event for linked relays (see [`Relay::take_forwards`]).
    pub fn enable_forwarding(&mut self) {
        self.forwarding = true;
    }

    /// Accepted events to send to every linked relay, as event-input JSON with `origin`
    /// (hops already incremented). Events that have crossed `limits.max_hops` links are
    /// not forwarded;
    /// if the link layer falls more than 10,000 behind, the oldest are dropped (counted).
    pub fn take_forwards(&mut self) -> Vec<Vec<u8>> {
        self.forward.drain(..).collect()
    }
}

/// Event input read from a backbone log of `exchange`, filling in what a direct publisher
/// left out (see [`Relay::publish_at`]).
fn parse_backbone_input(
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    max_size: usize,
) -> Result<EventInput, ErrorName> {
    if body.len() > max_size {
        return Err(ErrorName::InvalidPayload);
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(ErrorName::InvalidJson);
    };
    match obj.get("exchange") {
        None => {
            obj.insert("exchange".into(), json!(exchange));
        }
        Some(Value::String(e)) if e == exchange => {}
        Some(_) => return Err(ErrorName::InvalidExchange),
    }
    obj.entry("routing_key")
        .or_insert_with(|| json!(routing_key));
    // Room for what was filled in.
    let filled = serde_json::to_vec(&Value::Object(obj)).map_err(|_| ErrorName::InvalidJson)?;
    parse_event_input(&filled, max_size + 2 * MAX_ROUTING_KEY)
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
