//! Client messages: the built-in actions (Subscribe, Unsubscribe, ListSubscriptions, Ping,
//! Authenticate, Resume), configured RPC actions, and the replies they queue.

use super::*;

/// One subscription: exchange and routing-key pattern.
type Subscription = (Arc<str>, Pattern);

impl<K: SessionKey> Relay<K> {
    /// A complete message from a session. Replies are queued on the session; a configured
    /// RPC action is returned for the I/O layer to forward. Never closes the session.
    pub fn on_message(&mut self, key: &K, message: &[u8]) -> Option<RpcCall<K>> {
        if !self.sessions.contains_key(key) {
            log::debug!("message for unknown session {key:?} ignored");
            return None;
        }
        let envelope = match parse_envelope(message, self.config.limits.message_size) {
            Ok(e) => e,
            Err(rejected) => {
                self.send_error(key, rejected.error, rejected.tag.as_ref());
                return None;
            }
        };
        let tag = envelope.tag.as_ref();
        let action = match Action::parse(
            &envelope.action,
            &envelope.payload,
            self.config.limits.subscriptions_per_session,
        ) {
            Ok(a) => a,
            Err(e) => {
                self.send_error(key, e, tag);
                return None;
            }
        };
        let result = match action {
            Action::Subscribe { exchange, keys } => self.subscribe_action(key, &exchange, keys),
            Action::Unsubscribe { exchange, keys } => self.unsubscribe_action(key, exchange, keys),
            Action::ListSubscriptions => Ok(("YourSubscriptions", self.list(key))),
            Action::Ping => Ok(("Pong", json!({}))),
            Action::Authenticate { token } => self.authenticate_action(key, &token),
            Action::Resume {
                exchange,
                routing_key,
                since,
            } => self.resume(key, &exchange, &routing_key, since),
            Action::Other(name) => match self.config.actions.get(&name) {
                Some(endpoint) => {
                    let s = self.sessions.get(key)?;
                    return Some(RpcCall {
                        session: key.clone(),
                        session_id: s.id.clone(),
                        identity: s.identity.clone(),
                        action: name,
                        tag: envelope.tag,
                        payload: envelope.payload,
                        endpoint: endpoint.clone(),
                    });
                }
                None => Err(ErrorName::InvalidAction),
            },
        };
        match result {
            Ok((event, payload)) => self.send(key, event, reply_json(event, tag, &payload)),
            Err(e) => self.send_error(key, e, tag),
        }
        None
    }

    /// Answers an [`RpcCall`] made by the session whose Welcome id is `session_id`.
    /// Returns false (and sends nothing) when that session has gone, even if another one
    /// now has the same key.
    pub fn rpc_reply(
        &mut self,
        key: &K,
        session_id: &str,
        tag: Option<&Value>,
        outcome: RpcOutcome,
    ) -> bool {
        if self.session_id(key) != Some(session_id) {
            return false;
        }
        match outcome {
            RpcOutcome::Result(result) => {
                self.send(key, "Result", reply_json("Result", tag, &result))
            }
            RpcOutcome::BackendError { code, message } => {
                self.send(key, "Error", backend_error_json(tag, &code, &message))
            }
            RpcOutcome::Failed(e) => self.send_error(key, e, tag),
        }
        true
    }

    /// Subscribes a session to `routing_key` (exact or `prefix*`) on `exchange`, with the
    /// same checks as the `Subscribe` action (for subscribers that cannot send actions,
    /// e.g. SSE streams subscribed from the URL).
    pub fn subscribe(
        &mut self,
        key: &K,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), ErrorName> {
        self.subscribe_keys(
            key,
            exchange,
            std::slice::from_ref(&routing_key.to_owned()),
            false,
        )
    }

    /// Sets a session's identity from a token, as the `Authenticate` action does, and
    /// returns the token's name.
    ///
    /// A new identity replaces the old one and its rights: subscriptions the new identity
    /// may not hold are dropped at once (see [`Relay::authenticate_action`], which lists
    /// them to the client). Keeping them (issue 18) let `admin` grants outlive a switch to
    /// `ops`; refusing a second identity would break a client that logs in again with a
    /// rotated token.
    ///
    /// After `limits.auth_failures_per_session` wrong tokens the session may not try again
    /// (`TooManyAttempts`, no token is checked), so one connection cannot guess at wire
    /// speed; failures are counted (`relay_auth_failures`).
    pub fn authenticate(&mut self, key: &K, token: &str) -> Result<String, ErrorName> {
        self.authenticate_dropping(key, token).map(|(name, _)| name)
    }

    fn authenticate_dropping(
        &mut self,
        key: &K,
        token: &str,
    ) -> Result<(String, Vec<Subscription>), ErrorName> {
        let max_failures = self.config.limits.auth_failures_per_session;
        let s = self.sessions.get_mut(key).ok_or(ErrorName::InvalidAction)?;
        if s.auth_failures >= max_failures {
            self.counters.auth_failures += 1;
            return Err(ErrorName::TooManyAttempts);
        }
        // A failed attempt leaves any earlier identity in place.
        let Some(name) = self.config.token_name(token).map(str::to_owned) else {
            s.auth_failures += 1;
            self.counters.auth_failures += 1;
            return Err(ErrorName::InvalidToken);
        };
        s.identity = Some(Arc::from(name.as_str()));
        let identity = s.identity.clone();
        let config = &self.config;
        let dropped: Vec<(Arc<str>, Pattern)> = s
            .subs
            .iter()
            .filter(|(exchange, pattern)| {
                config
                    .exchange(exchange)
                    .is_none_or(|(_, rule)| rule.check(pattern, identity.as_deref()).is_err())
            })
            .cloned()
            .collect();
        for sub in &dropped {
            self.index.remove(&sub.0, &sub.1, key);
            s.subs.remove(sub);
        }
        Ok((name, dropped))
    }

    /// The `Authenticate` reply: `{"name"}`, plus `"dropped":[{exchange, routing_key}]`
    /// when the new identity lost subscriptions the old one held.
    pub(super) fn authenticate_action(
        &mut self,
        key: &K,
        token: &str,
    ) -> Result<(&'static str, Value), ErrorName> {
        let (name, dropped) = self.authenticate_dropping(key, token)?;
        let mut payload = json!({ "name": name });
        if !dropped.is_empty() {
            payload["dropped"] = dropped
                .iter()
                .map(|(e, p)| json!({ "exchange": &**e, "routing_key": p.to_key() }))
                .collect();
        }
        Ok(("Authenticated", payload))
    }

    pub(super) fn subscribe_action(
        &mut self,
        key: &K,
        exchange: &str,
        keys: Keys,
    ) -> Result<(&'static str, Value), ErrorName> {
        self.subscribe_keys(key, exchange, keys.as_slice(), false)?;
        let mut payload = Map::new();
        payload.insert("exchange".into(), json!(exchange));
        keys.insert_into(&mut payload);
        Ok(("Subscribed", Value::Object(payload)))
    }

    /// All-or-nothing: every key is checked before any is added. With `allow_existing`,
    /// keys already subscribed are skipped instead of refused (Resume).
    pub(super) fn subscribe_keys(
        &mut self,
        key: &K,
        exchange: &str,
        keys: &[String],
        allow_existing: bool,
    ) -> Result<(), ErrorName> {
        let (exchange, rule) = self
            .config
            .exchange(exchange)
            .ok_or(ErrorName::InvalidExchange)?;
        let session = self.sessions.get_mut(key).ok_or(ErrorName::InvalidAction)?;
        let mut new = Vec::with_capacity(keys.len());
        for k in keys {
            let pattern = Pattern::parse(k);
            rule.check(&pattern, session.identity.as_deref())?;
            let entry = (exchange.clone(), pattern);
            if session.subs.contains(&entry) {
                if allow_existing {
                    continue;
                }
                return Err(ErrorName::AlreadySubscribed);
            }
            new.push(entry);
        }
        if session.subs.len() + new.len() > self.config.limits.subscriptions_per_session {
            return Err(ErrorName::TooManySubscriptions);
        }
        for (exchange, pattern) in new {
            self.index.insert(&exchange, &pattern, key.clone());
            session.subs.insert((exchange, pattern));
        }
        Ok(())
    }

    pub(super) fn unsubscribe_action(
        &mut self,
        key: &K,
        exchange: Option<String>,
        keys: Option<Keys>,
    ) -> Result<(&'static str, Value), ErrorName> {
        if let Some(e) = &exchange {
            if self.config.exchange(e).is_none() {
                return Err(ErrorName::InvalidExchange);
            }
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return Err(ErrorName::InvalidAction);
        };
        let doomed: Vec<(Arc<str>, Pattern)> = match (&exchange, &keys) {
            (None, _) => session.subs.iter().cloned().collect(),
            (Some(e), None) => session
                .subs
                .iter()
                .filter(|(x, _)| &**x == e.as_str())
                .cloned()
                .collect(),
            (Some(e), Some(ks)) => {
                let patterns: BTreeSet<Pattern> =
                    ks.as_slice().iter().map(|k| Pattern::parse(k)).collect();
                session
                    .subs
                    .iter()
                    .filter(|(x, p)| &**x == e.as_str() && patterns.contains(p))
                    .cloned()
                    .collect()
            }
        };
        for sub in doomed {
            self.index.remove(&sub.0, &sub.1, key);
            session.subs.remove(&sub);
        }
        let mut payload = Map::new();
        payload.insert("exchange".into(), json!(exchange));
        if let Some(ks) = &keys {
            ks.insert_into(&mut payload);
        }
        Ok(("Unsubscribed", Value::Object(payload)))
    }

    pub(super) fn list(&self, key: &K) -> Value {
        let subs: Vec<Value> = self
            .sessions
            .get(key)
            .map(|s| {
                s.subs
                    .iter()
                    .map(|(e, p)| json!({ "exchange": &**e, "routing_key": p.to_key() }))
                    .collect()
            })
            .unwrap_or_default();
        json!({ "subscriptions": subs })
    }

    pub(super) fn resume(
        &mut self,
        key: &K,
        exchange: &str,
        routing_key: &str,
        since: u64,
    ) -> Result<(&'static str, Value), ErrorName> {
        self.subscribe_keys(
            key,
            exchange,
            std::slice::from_ref(&routing_key.to_owned()),
            true,
        )?;
        let replay = self.history.since(exchange, routing_key, since);
        let bounds = bounds(&self.config);
        let Some(session) = self.sessions.get_mut(key) else {
            return Err(ErrorName::InvalidAction);
        };
        // Replay only what fits without evicting anything (keeping room for the Resumed
        // reply): a replay bigger than the outbox would otherwise push out its own oldest
        // events and announce a new gap at the very seq the client asked for.
        let (frames_room, bytes_room) = session.outbox.room(bounds);
        let mut frames_room = frames_room.saturating_sub(1);
        let mut bytes_room = bytes_room.saturating_sub(RESUMED_REPLY_RESERVE);
        let (ex, rk): (Arc<str>, Arc<str>) = (Arc::from(exchange), Arc::from(routing_key));
        let mut replayed = None;
        for (seq, encoded) in &replay.events {
            let bytes = encoded.frame(session.kind);
            if frames_room == 0 || bytes.len() > bytes_room {
                break;
            }
            frames_room -= 1;
            bytes_room -= bytes.len();
            let item = Item {
                bytes,
                event: Some(EventRef {
                    exchange: ex.clone(),
                    routing_key: rk.clone(),
                    seq: *seq,
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
            replayed = Some(*seq);
        }
        let more = replayed != replay.events.last().map(|(s, _)| *s);
        // Where the client stands after this replay: resume from here if `more`.
        let last_seq = match (replayed, replay.events.first()) {
            (Some(seq), _) => seq,
            (None, Some((first, _))) => first.saturating_sub(1),
            (None, None) => replay.last_seq,
        };
        Ok((
            "Resumed",
            json!({
                "exchange": exchange,
                "routing_key": routing_key,
                "recovered": replay.recovered,
                "more": more,
                "last_seq": last_seq,
                "from": "history",
            }),
        ))
    }

    /// Queues a reply or notice; `event` is its name (for SSE framing).
    pub(super) fn send(&mut self, key: &K, event: &str, json: Vec<u8>) {
        let bounds = bounds(&self.config);
        if let Some(s) = self.sessions.get_mut(key) {
            let item = Item {
                bytes: s.kind.framed(&json, &Meta::named(event)),
                event: None,
            };
            enqueue(s, key, item, bounds, &mut self.counters, &mut self.dirty);
        }
    }

    pub(super) fn send_error(&mut self, key: &K, error: ErrorName, tag: Option<&Value>) {
        self.send(key, "Error", error_json(error, tag));
    }
}
