//! Session lifecycle: WebSocket sessions and SSE streams opening and closing,
//! download credits, SSE heartbeats.

use super::*;

impl<K: SessionKey> Relay<K> {
    /// A WebSocket session opened (handshake answered): queues `Welcome`, returns its id.
    pub fn open(&mut self, key: K) -> String {
        self.open_with(key, OpenOptions::default())
    }

    /// A session opened with explicit options. Reopening a known key replaces the old session.
    pub fn open_with(&mut self, key: K, options: OpenOptions) -> String {
        if self.close(&key) {
            log::warn!("session {key:?} opened twice; the old one was forgotten");
        }
        let id = self.ids.next();
        self.sessions.insert(
            key.clone(),
            Session {
                id: id.clone(),
                kind: options.kind,
                identity: None,
                subs: BTreeSet::new(),
                outbox: Outbox::with_credits(options.credits),
                dirty: false,
                overflowed: false,
                auth_failures: 0,
                paced_until: None,
            },
        );
        self.counters.sessions_opened += 1;
        let welcome = welcome_json(&id, &self.welcome_run, &self.epoch, &self.welcome);
        self.send(&key, "Welcome", welcome);
        id
    }

    /// Opens an SSE stream: checks the token and the subscription first (nothing is
    /// created when they fail), then queues `Welcome`, subscribes, and with `last_event`
    /// resumes the stream's whole subscription (every key a wildcard covers) from that
    /// position, then `Resumed`, as `Resume` does.
    pub fn open_stream(
        &mut self,
        key: K,
        request: &StreamRequest,
        credits: Option<u64>,
    ) -> Result<String, ErrorName> {
        let identity: Option<Arc<str>> = match &request.token {
            Some(token) => Some(Arc::from(
                self.config
                    .token_name(token)
                    .ok_or(ErrorName::InvalidToken)?,
            )),
            None => None,
        };
        let rk = request.routing_key.as_str();
        if rk.len() > MAX_ROUTING_KEY {
            return Err(ErrorName::InvalidPayload);
        }
        let pattern = Pattern::parse(rk);
        let (_, rule) = self
            .config
            .exchange(&request.exchange)
            .ok_or(ErrorName::InvalidExchange)?;
        rule.check(&pattern, identity.as_deref())?;
        let id = self.open_with(
            key.clone(),
            OpenOptions {
                kind: SessionKind::Sse,
                credits,
            },
        );
        if let Some(s) = self.sessions.get_mut(&key) {
            s.identity = identity;
        }
        let subscribed = self.subscribe(&key, &request.exchange, rk);
        if let Err(e) = subscribed {
            self.close(&key);
            return Err(e);
        }
        if let Some(position) = &request.last_event {
            match self.resume(&key, &request.exchange, rk, position) {
                Ok((event, payload)) => self.send(&key, event, reply_json(event, None, &payload)),
                Err(e) => self.send_error(&key, e, None),
            }
        }
        Ok(id)
    }

    /// The session closed, disconnected or timed out: forget it and its subscriptions.
    /// Returns false for an unknown key.
    pub fn close(&mut self, key: &K) -> bool {
        let Some(session) = self.sessions.remove(key) else {
            return false;
        };
        for (exchange, pattern) in &session.subs {
            self.index.remove(exchange, pattern, key);
        }
        true
    }

    /// Mongrel2 reported `bytes` more download credits for this session.
    pub fn credits(&mut self, key: &K, bytes: u64) {
        if let Some(s) = self.sessions.get_mut(key) {
            s.outbox.add_credits(bytes);
            if !s.outbox.is_empty() {
                mark_dirty(s, key, &mut self.dirty);
            }
        }
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The Welcome id of the session open under `key`.
    pub fn session_id(&self, key: &K) -> Option<&str> {
        self.sessions.get(key).map(|s| s.id.as_str())
    }

    /// Every open SSE stream.
    pub fn streams(&self) -> Vec<K> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.kind == SessionKind::Sse)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Queues a heartbeat comment on every SSE stream (idle streams stay visibly alive
    /// for clients and proxies).
    pub fn sse_heartbeat(&mut self) {
        let chunk: Arc<[u8]> = sse_comment_chunk("heartbeat").into();
        let bounds = bounds(&self.config);
        for (key, s) in &mut self.sessions {
            if s.kind != SessionKind::Sse {
                continue;
            }
            let item = Item {
                bytes: chunk.clone(),
                event: None,
            };
            enqueue(s, key, item, bounds, &mut self.counters, &mut self.dirty);
        }
    }

    /// True when no session and no subscription remain.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.index.is_empty()
    }
}
