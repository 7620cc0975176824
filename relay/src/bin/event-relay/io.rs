//! The I/O loop: one thread, one Transceiver polling Mongrel2 and the ZeroMQ event sources,
//! translating between them and the I/O-free [`Relay`].
//!
//! Every loop turn takes what is ready, in bounded batches (Mongrel2 requests, injector
//! requests, PULL messages), then flushes the relay's output once. Flushes are paced per
//! session ([`PACING`], `Relay::flush_paced`): a flush sends at most one Mongrel2
//! message per session, and Mongrel2 (without `download.flow_control`) drops a client that
//! has more than 16 messages queued. It reads queued replies without yielding, so replies
//! that pile up in its socket while it is descheduled all land in the client's queue at
//! once. Bounding each session's messages per interval bounds that, however fast events
//! arrive; events that arrive while a session's budget is spent are coalesced into its
//! next message. A session that has been quiet is served at once (a few messages back to
//! back, so low rates wait for nothing), whatever the others are doing. With
//! `download.flow_control` the relay also keeps every session within the credits Mongrel2
//! grants.
//!
//! Besides Mongrel2, the loop polls the injector, event PULL, link and RPC sockets, and keeps
//! three timers (RPC deadlines, link hello, SSE heartbeat) that bound its waits.
//!
//! With `--group-bind` the relay is a member of a group of relays on one route (see the
//! core's `group` module): the Transceiver is built with `Builder::group`, the loop tells
//! the core the live members every turn (at least every [`GROUP_LOOK`]) and passes the
//! members' messages both ways over the group's application channel. A session adopted
//! from a dead member is closed with 1012: its subscriptions died with that member, and the
//! client resumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongrel2_transceiver::request::Request;
use mongrel2_transceiver::transceiver::GroupTiming;
use mongrel2_transceiver::{CloseCode, CloseReason, ConnId, Event, Handle, Token, Transceiver};

use super::backbone::Loopside;
use super::flags::Options;
use super::frame::SessionKind;
use super::http_api::{self, Endpoint};
use super::links::{LinkError, LinkOptions, Links};
use super::mongrel2_status::Mongrel2Watch;
use super::protocol::{ErrorName, Source};
use super::relay::{Flush, OpenOptions, Pacing, Relay};
use super::rpc::Rpc;
use super::sources::{self, Kind};
use super::sse;

/// Flush pacing per session (see the module docs and [`Pacing`]): a bucket of
/// [`FLUSH_BURST`] messages refilled by one per [`FLUSH_INTERVAL`].
pub const PACING: Pacing = Pacing {
    gap: FLUSH_INTERVAL,
    burst: FLUSH_BURST,
};
/// Sustained spacing of one session's messages. Measured against Mongrel2 1.12 (SIGSTOP
/// during an injector burst to one client, one message per interval): unpaced, a 20 ms
/// stall dropped the client; at 5 ms a 100 ms stall did; at 10 ms 50 and 100 ms stalls
/// were survived (the bound is about 16 x 10 ms).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Messages a quiet session may be sent back to back. A stall of T now lets up to
/// 4 + T / 10 ms messages pile up, so the 16-message bound is reached after 120 ms instead
/// of 160 ms (still above the 100 ms measured), and in exchange events at up to one per
/// interval, jitter included, go out the moment they arrive instead of waiting up to an
/// interval behind the previous one.
pub const FLUSH_BURST: u32 = 4;
/// Events handled per loop turn before output is flushed (if due).
const EVENT_BATCH: usize = 1024;
/// How long the loop sleeps with nothing to do; signals and events wake it earlier.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long startup waits for Mongrel2 to subscribe to our replies (it may not be up yet;
/// nothing is lost either way, requests queue).
const READY_WAIT: Duration = Duration::from_secs(1);
/// `--ping-interval 0` turns pings off; the Transceiver wants an interval, so a year.
const NO_PINGS: Duration = Duration::from_secs(365 * 24 * 3600);
/// Download credits kept back from what Mongrel2 grants: the Transceiver's own frames
/// (handshake answer, pings, pongs) use credits the relay does not see.
const CREDIT_MARGIN: u64 = 4096;
/// Close code for a session whose outbox overflowed (policy violation).
const CLOSE_OVERFLOW: u16 = 1008;
/// Close code for a session this member adopted from a group member that died: its
/// subscriptions died with that member, so the client reconnects and resumes.
const CLOSE_RESTART: CloseCode = CloseCode::SERVICE_RESTART;
/// In a group, how long the loop waits at most before looking at the live members again.
const GROUP_LOOK: Duration = Duration::from_millis(100);

/// Why the loop could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Transceiver failed (connecting to Mongrel2, polling, sending).
    #[error("transceiver: {0}")]
    Transceiver(#[from] mongrel2_transceiver::Error),
    /// The RabbitMQ backbone could not be started.
    #[error("amqp: {0}")]
    Amqp(String),
    /// An event source, link or RPC socket could not be set up.
    #[error("{what} socket on {endpoint}: {source}")]
    Source {
        /// Which socket.
        what: &'static str,
        /// Where it should bind.
        endpoint: String,
        /// The cause.
        source: zmq::Error,
    },
    /// The link sockets could not be set up.
    #[error("link {0}")]
    Link(#[from] LinkError),
}

/// Runs the relay until `stop` is set (and the loop woken through the Transceiver's
/// [`Handle`], which [`stop_on_signal`] does), then ends every SSE stream (terminating
/// chunk) and closes every WebSocket session with 1001.
pub fn run(
    options: &Options,
    mut relay: Relay<ConnId>,
    on_start: impl FnOnce(&Transceiver) -> Arc<AtomicBool>,
) -> Result<(), RunError> {
    let limit = sources::transport_limit(relay.config().limits.message_size);
    let mut builder = Transceiver::builder(&options.sender_id)
        .pull(&options.pull)
        .publish(&options.publish)
        .control(options.control.as_deref())
        .ping_interval(options.ping_interval.unwrap_or(NO_PINGS))
        .max_message_size(limit)
        .transport(options.transport.into());
    if let Some(bind) = &options.group_bind {
        builder = builder.group(bind, &options.group_peers);
    }
    let mut transceiver = builder.build()?;
    // With RabbitMQ the injector answers when a confirm comes, in any order: a ROUTER.
    let router = options.amqp.is_some();
    // With --amqp, positions are the streams' offsets, the same on every member: members
    // do not sequence (the relay core is not made a group member); each consumes the
    // streams and delivers to the sessions the library gave it.
    if let (Some(member), true) = (transceiver.group_name(), options.amqp.is_some()) {
        relay.set_identity(&options.name, Some(member));
    }
    let sequencing_group = transceiver.group_name().filter(|_| options.amqp.is_none());
    if let Some(member) = sequencing_group {
        // Members wait for each other at startup for as long as the group takes to call one
        // dead; tips come within a heartbeat or two, so a sync that takes four is stuck.
        let timing = GroupTiming::for_ping_interval(options.ping_interval);
        let mut peers: Vec<&String> = options
            .group_peers
            .iter()
            .filter(|p| Some(*p) != options.group_bind.as_ref())
            .collect();
        peers.sort();
        peers.dedup();
        let member = member.to_owned();
        relay.enable_group(
            &member,
            peers.len() + 1,
            timing.dead_after,
            timing.heartbeat * 4,
            Instant::now(),
        );
    }
    // More Mongrel2 front ends: each session is answered through its own server's PUB, and
    // deliveries are grouped by server, so one event still costs a few messages per server.
    for m2 in &options.mongrel2 {
        transceiver.add_connection(&m2.sender_id, &m2.pull, &m2.publish)?;
    }
    let inject = watch_source(
        &mut transceiver,
        Kind::Inject,
        options.inject.as_deref(),
        limit,
        router,
    )?;
    let pull = watch_source(
        &mut transceiver,
        Kind::Pull,
        options.pull_events.as_deref(),
        limit,
        false,
    )?;
    let socket_error = |what: &'static str| {
        move |(endpoint, source): (String, zmq::Error)| RunError::Source {
            what,
            endpoint,
            source,
        }
    };
    let rpc =
        Rpc::start(&mut transceiver, relay.config(), limit).map_err(socket_error("RPC backend"))?;
    let timing = relay.config().timing.clone();
    let links = Links::start(
        &mut transceiver,
        LinkOptions {
            relay_id: relay.origin_id(),
            bind: options.link_bind.as_deref(),
            peers: &options.links,
            heartbeat: timing.link_heartbeat(),
            max_frame: limit,
            queue: relay.config().limits.link_queue_messages(),
            secret: relay.config().link_secret.clone(),
        },
    )?;
    if links.publishes() {
        relay.enable_forwarding();
    }
    let backbone = match &options.amqp {
        Some(url) => {
            Some(Loopside::start(&mut transceiver, &mut relay, url).map_err(RunError::Amqp)?)
        }
        None => None,
    };
    let mut backbone = backbone;
    if let Some(b) = &mut backbone {
        b.set_injector(inject);
    }
    let stop = on_start(&transceiver);
    if !transceiver.wait_ready(READY_WAIT)? {
        log::info!(
            "Mongrel2 has not subscribed to {} yet; carrying on",
            options.publish
        );
    }
    log::info!(
        "event relay {} ready: Mongrel2 {} / {} (+{} more), inject {}, pull {}, link-bind {}, \
         links [{}], RabbitMQ {}",
        relay.origin_id(),
        options.pull,
        options.publish,
        options.mongrel2.len(),
        options.inject.as_deref().unwrap_or("off"),
        options.pull_events.as_deref().unwrap_or("off"),
        options.link_bind.as_deref().unwrap_or("off"),
        options.links.join(", "),
        if backbone.is_some() { "on" } else { "off" },
    );
    let mut server = Server {
        transceiver,
        relay,
        inject,
        pull,
        rpc,
        links,
        backbone,
        mongrel2: Mongrel2Watch::start(&options.mongrel2_control),
        sse_heartbeat: timing.sse_heartbeat(),
        next_heartbeat: Instant::now() + timing.sse_heartbeat(),
    };
    let result = server.run(&stop);
    // Whatever events and replies are queued go out before the goodbye.
    let forwards = server.relay.take_forwards();
    server.links.publish(&server.transceiver, forwards);
    let last = server.relay.flush();
    server.send(last);
    let streams = server.relay.streams();
    if !streams.is_empty() {
        log::info!("shutting down: ending {} SSE streams", streams.len());
    }
    for conn in streams {
        reply_logged(server.transceiver.stream_end(&conn, true));
    }
    log::info!(
        "shutting down: closing {} sessions",
        server.transceiver.session_count()
    );
    server.transceiver.shutdown();
    result
}

/// Makes SIGINT and SIGTERM stop the loop (a second signal exits at once). Returns the
/// flag [`run`] watches.
pub fn stop_on_signal(transceiver: &Transceiver) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle: Handle = transceiver.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            log::warn!("second signal: exiting without closing sessions");
            std::process::exit(1);
        }
        if let Err(e) = handle.interrupt() {
            log::warn!("cannot wake the loop: {e}");
        }
    }) {
        log::warn!("cannot install the signal handler: {e}");
    }
    stop
}

fn watch_source(
    transceiver: &mut Transceiver,
    kind: Kind,
    endpoint: Option<&str>,
    limit: usize,
    router: bool,
) -> Result<Option<Token>, RunError> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let bound = sources::bind(transceiver.context(), kind, endpoint, limit, router);
    let socket = bound.map_err(|source| RunError::Source {
        what: match kind {
            Kind::Inject => "injector",
            Kind::Pull => "event PULL",
        },
        endpoint: endpoint.to_owned(),
        source,
    })?;
    Ok(Some(transceiver.watch(socket)))
}

struct Server {
    transceiver: Transceiver,
    relay: Relay<ConnId>,
    inject: Option<Token>,
    pull: Option<Token>,
    rpc: Rpc,
    links: Links,
    /// RabbitMQ (`--amqp`).
    backbone: Option<Loopside>,
    mongrel2: Mongrel2Watch,
    sse_heartbeat: Duration,
    next_heartbeat: Instant,
}

impl Server {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut wait = self.relay.flush_wait(now, PACING).unwrap_or(IDLE_WAIT);
            let group_look = self.relay.group_stats().map(|_| now + GROUP_LOOK);
            let timers = [
                self.rpc.next_deadline(),
                self.links.next_tick(),
                Some(self.next_heartbeat),
                self.backbone.as_ref().and_then(Loopside::next_deadline),
                self.relay.group_deadline(),
                group_look,
            ];
            for at in timers.into_iter().flatten() {
                wait = wait.min(at.saturating_duration_since(now));
            }
            // An interrupt (the signal handler) ends the wait; the stop flag says what next.
            if let Some(event) = interruptible(self.transceiver.recv_timeout(wait))? {
                self.handle(event)?;
                // Take everything that is ready before flushing, so one flush carries it all.
                for _ in 1..EVENT_BATCH {
                    match interruptible(self.transceiver.recv_timeout(Duration::ZERO))? {
                        Some(event) => self.handle(event)?,
                        None => break,
                    }
                }
            }
            self.timers(Instant::now());
            self.group(Instant::now());
            let forwards = self.relay.take_forwards();
            if !forwards.is_empty() {
                self.links.publish(&self.transceiver, forwards);
            }
            if self.relay.has_pending() {
                let flush = self.relay.flush_paced(Instant::now(), PACING);
                self.send(flush);
            }
        }
        Ok(())
    }

    fn timers(&mut self, now: Instant) {
        self.rpc.expire(now, &mut self.relay);
        self.links.tick(&self.transceiver, now);
        if let Some(b) = &mut self.backbone {
            b.expire(&mut self.transceiver, now);
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.sse_heartbeat;
            self.relay.sse_heartbeat();
        }
    }

    /// Tells the relay the group's live members, and sends what it has for them.
    fn group(&mut self, now: Instant) {
        if self.relay.group_stats().is_none() {
            return;
        }
        self.relay
            .group_members(self.transceiver.group_member_names(), now);
        self.relay.group_tick(now);
        for (to, body) in self.relay.take_group_sends() {
            if !self.transceiver.group_send(&to, body) {
                log::debug!("relay group: {to} is gone; message not sent");
            }
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), RunError> {
        let t = &mut self.transceiver;
        let relay = &mut self.relay;
        match event {
            Event::Opened {
                conn,
                adopted: true,
                ..
            } => {
                // Its subscriptions and queued events were with the member (or the run of
                // this relay) that opened it: the client reconnects and resumes.
                log::info!("session {conn} adopted: closing it with {CLOSE_RESTART}");
                reply_logged(t.close_session(&conn, CLOSE_RESTART, "service restart"));
            }
            Event::GroupMessage { from, body } => relay.group_message(&from, &body, Instant::now()),
            Event::Opened { conn, request, .. } => {
                let credits = request
                    .download_credits()
                    .map(|c| c.saturating_sub(CREDIT_MARGIN));
                let id = relay.open_with(
                    conn.clone(),
                    OpenOptions {
                        kind: SessionKind::WebSocket,
                        credits,
                    },
                );
                log::info!(
                    "session {conn} opened: id {id} from {}",
                    request.remote_addr().unwrap_or("?")
                );
            }
            Event::Message { conn, message } => {
                if let Some(call) = relay.on_message(&conn, message.as_bytes()) {
                    self.rpc.call(t, relay, call, Instant::now());
                }
            }
            Event::Closed { conn, reason } => {
                relay.close(&conn);
                log::info!("session {conn} closed: {}", describe(&reason));
            }
            Event::Disconnected(conn) => {
                if relay.close(&conn) {
                    log::info!("stream {conn} closed: disconnected");
                }
            }
            Event::Credits { conn, credits } => relay.credits(&conn, credits),
            Event::Http(request)
                if Endpoint::of(request.path(), request.pattern()) == Endpoint::Stream
                    && request.method() == Some("GET") =>
            {
                open_stream(t, relay, &request);
            }
            Event::Http(request)
                if Endpoint::of(request.path(), request.pattern()) == Endpoint::Publish
                    && request.method() == Some("POST")
                    && self.backbone.is_some() =>
            {
                let authorized = relay
                    .config()
                    .publish_authorized(request.header("authorization"));
                match &mut self.backbone {
                    Some(b) if authorized => b.publish_http(t, relay, request),
                    _ => {
                        let ack = relay.reject(Source::Http, ErrorName::AuthRequired);
                        let response = http_api::publish_response(&ack);
                        reply_logged(t.reply_http(&request, &response));
                    }
                }
            }
            Event::Http(request) => {
                let (rpc, links) = (&self.rpc, &self.links);
                let (backbone, mongrel2) = (&self.backbone, &self.mongrel2);
                let response = http_api::respond(relay, &request, &|stats| {
                    let now = Instant::now();
                    stats.rpc = Some(rpc.stats());
                    stats.links = Some(links.stats(now));
                    stats.amqp = backbone.as_ref().map(Loopside::stats);
                    stats.mongrel2 = mongrel2.stats(now);
                });
                log::debug!(
                    "{} {} -> {}",
                    request.method().unwrap_or("?"),
                    request.path(),
                    response.status()
                );
                reply_logged(t.reply_http(&request, &response));
            }
            Event::UploadStarted(request) => {
                let response = http_api::upload_refused(relay, &request).close(true);
                reply_logged(t.reply_http(&request, &response));
                reply_logged(t.close(&ConnId::of(&request)));
            }
            Event::Readable(token) if Some(token) == self.inject => match &mut self.backbone {
                Some(b) => b.serve_inject(t, relay),
                None => {
                    sources::serve_inject(t, token, relay, &mut sources::direct)?;
                }
            },
            Event::Readable(token) if Some(token) == self.pull => match &mut self.backbone {
                Some(b) => {
                    let mut via = |relay: &mut Relay<ConnId>, _: Source, body: &[u8]| {
                        b.publish_pull(relay, body)
                    };
                    sources::drain_pull(t, token, relay, &mut via)?;
                }
                None => {
                    sources::drain_pull(t, token, relay, &mut sources::direct)?;
                }
            },
            Event::Readable(token) if self.backbone.as_ref().is_some_and(|b| b.owns(token)) => {
                if let Some(b) = &mut self.backbone {
                    b.on_readable(t, relay);
                }
            }
            Event::Readable(token) if self.links.owns(token) => {
                self.links.on_readable(t, token, relay, Instant::now());
            }
            Event::Readable(token) if self.rpc.owns(token) => {
                self.rpc.on_readable(t, token, relay);
            }
            other => log::debug!("ignored: {other:?}"),
        }
        Ok(())
    }

    fn send(&mut self, flush: Flush<ConnId>) {
        for delivery in flush.deliveries {
            if let Err(e) = self
                .transceiver
                .deliver_to(&delivery.sessions, delivery.payload)
            {
                log::warn!(
                    "delivery to {} sessions failed: {e}",
                    delivery.sessions.len()
                );
            }
        }
        for conn in flush.close {
            log::info!("session {conn} is too far behind; closing it");
            reply_logged(self.transceiver.close_session(
                &conn,
                CloseCode(CLOSE_OVERFLOW),
                "lagging",
            ));
        }
        for conn in flush.end_streams {
            log::info!("stream {conn} is too far behind; ending it");
            reply_logged(self.transceiver.stream_end(&conn, true));
        }
    }
}

/// `GET /stream`: checks the request and opens an SSE session, or answers the refusal.
fn open_stream(t: &mut Transceiver, relay: &mut Relay<ConnId>, request: &Request<'_>) {
    let conn = ConnId::of(request);
    let credits = request
        .download_credits()
        .map(|c| c.saturating_sub(CREDIT_MARGIN));
    let opened = sse::stream_request(request)
        .and_then(|stream| relay.open_stream(conn.clone(), &stream, credits));
    match opened {
        Ok(id) => {
            // The head goes out now; Welcome (queued by the relay) follows in the next flush.
            if let Err(e) = t.stream_start(request, &sse::stream_head().for_request(request)) {
                log::warn!("stream {conn}: {e}");
                relay.close(&conn);
                return;
            }
            log::info!(
                "stream {conn} opened: id {id} from {}",
                request.remote_addr().unwrap_or("?")
            );
        }
        Err(e) => {
            log::debug!("stream {conn} refused: {e}");
            reply_logged(t.reply_http(request, &sse::stream_refused(e)));
        }
    }
}

fn interruptible(
    received: Result<Option<Event>, mongrel2_transceiver::Error>,
) -> Result<Option<Event>, mongrel2_transceiver::Error> {
    match received {
        Err(mongrel2_transceiver::Error::Interrupted) => Ok(None),
        other => other,
    }
}

fn reply_logged(result: Result<(), mongrel2_transceiver::Error>) {
    if let Err(e) = result {
        log::warn!("reply failed: {e}");
    }
}

fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Client { code, .. } => match code {
            Some(code) => format!("by the client ({code})"),
            None => "by the client".to_owned(),
        },
        CloseReason::Disconnected => "disconnected".to_owned(),
        CloseReason::PingTimeout => "ping timeout".to_owned(),
        CloseReason::ProtocolViolation { code, violation } => {
            format!("protocol violation ({code}: {violation})")
        }
        CloseReason::Handler { code } => format!("by the relay ({code})"),
        CloseReason::Shutdown => "shutdown".to_owned(),
        other => other.to_string(),
    }
}
