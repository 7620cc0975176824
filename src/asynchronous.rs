//! The Transceiver for tokio programs (feature `tokio`).
//!
//! [`Builder::build_async`] starts an [`AsyncTransceiver`]: a [`Stream`] of [`Event`]s
//! plus the sending methods as `async fn`s, and [`AsyncHandle`]s for other tasks. Spawn a
//! task per request and await whatever it needs (a database, another service): the
//! other requests keep flowing meanwhile.
//!
//! ```no_run
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use mongrel2_transceiver::{http::Response, Event, Message, Transceiver};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mongrel2_transceiver::Error> {
//!     let mut transceiver = Transceiver::builder("75226238-c5fe-4cb0-ac5b-877fd841e97e")
//!         .pull("tcp://127.0.0.1:9989")
//!         .publish("tcp://127.0.0.1:9988")
//!         .build_async()?;
//!     // SIGINT/SIGTERM (or cancelling transceiver.cancellation_token()) end the stream
//!     // after every session got close 1001.
//!     transceiver.stop_on_signals()?;
//!     while let Some(event) = transceiver.next().await {
//!         match event {
//!             Event::Http(request) => {
//!                 let handle = transceiver.handle();
//!                 tokio::spawn(async move {
//!                     tokio::time::sleep(Duration::from_millis(100)).await; // a slow query
//!                     let answer = Response::ok().body("done\n");
//!                     let _ = handle.reply_http(&request, &answer).await;
//!                 });
//!             }
//!             Event::Message { message: Message::Text(text), .. } => {
//!                 transceiver.broadcast_text(&text).await?;
//!             }
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # How it runs
//!
//! One task (the driver) owns the sans-IO [`Core`] and the ZeroMQ sockets.
//! It waits on ZeroMQ's own descriptors (`ZMQ_FD`) in tokio's reactor, so no thread is
//! added and a request costs no hop between threads; it re-reads `ZMQ_EVENTS` after every
//! socket operation, as ZeroMQ's edge-triggered descriptor requires. Sending methods queue
//! work for the driver in a bounded queue and wait (asynchronously) while it is full;
//! events wait in a bounded stream, and while the handler is behind, requests stay queued
//! in ZeroMQ rather than in memory.
//!
//! The runtime needs its I/O and time drivers (`#[tokio::main]` and
//! `Builder::new_multi_thread().enable_all()` have them). Shutdown, on the
//! [`CancellationToken`], a signal ([`AsyncTransceiver::stop_on_signals`]) or dropping the
//! `AsyncTransceiver`, sends close 1001 to every session and reports each closed
//! ([`CloseReason::Shutdown`](crate::CloseReason::Shutdown)) before the stream ends.
//! Dropping the whole runtime instead closes the sockets at once, without goodbyes.
//!
//! On a multi-thread runtime the driver may move between worker threads; ZeroMQ allows a
//! socket to change threads when the hand-over is synchronised, which tokio's scheduler
//! does. A current-thread runtime (`#[tokio::main(flavor = "current_thread")]`) keeps the
//! handler and the driver on one thread, the cheapest arrangement for plain request/reply.
//!
//! The control socket (for the harness's `Server` and
//! `Connector`) works as in the blocking loop; [`Transceiver::watch`](crate::Transceiver::watch)
//! has no counterpart here: a tokio program waits on its other sources itself.
//!
//! # Tests on tokio
//!
//! The harness's `Server` and `Client` block; from a `#[tokio::test]` run them under
//! `tokio::task::spawn_blocking` while the handler runs on the runtime, as the
//! `asynchronous` tests in the repository do. Called directly they would hold up the
//! runtime's thread, and with it the driver their requests need.

mod driver;
mod handle;
mod readiness;

use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use handle::AsyncHandle;

use crate::transceiver::signals::Signals;
use crate::{Builder, Core, Error, Event};
use driver::Driver;
use handle::Job;

/// A running async handler: a [`Stream`] of [`Event`]s, and (through `Deref`) the
/// [`AsyncHandle`] sending methods. Build one with [`Builder::build_async`].
///
/// Dropping it shuts the driver down gracefully (close 1001 to every session).
#[derive(Debug)]
pub struct AsyncTransceiver {
    events: mpsc::Receiver<Event>,
    handle: AsyncHandle,
    cancel: CancellationToken,
    ready: watch::Receiver<bool>,
    control_endpoint: Option<String>,
    driver: Option<JoinHandle<()>>,
}

impl Builder {
    /// Connects to Mongrel2, binds the control socket and starts the driver task on the
    /// current tokio runtime (see [`asynchronous`](crate::asynchronous)). Fails outside a
    /// runtime.
    pub fn build_async(self) -> Result<AsyncTransceiver, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("build_async must run inside a tokio runtime".into()))?;
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue capacity must be at least 1".into()));
        }
        if self.group.is_some() {
            return Err(Error::Config(
                "handler groups run on the blocking Transceiver only (for now)".into(),
            ));
        }
        let context = self.context.unwrap_or_default();
        let control = match &self.control {
            Some(endpoint) => {
                let socket = context.socket(zmq::REP)?;
                socket.set_linger(0)?;
                socket.bind(endpoint)?;
                Some(socket)
            }
            None => None,
        };
        let control_endpoint = match &control {
            Some(socket) => socket.get_last_endpoint()?.ok(),
            None => None,
        };
        let now = Instant::now();
        let mut core = Core::new(now);
        core.set_ping_interval(self.ping_interval, now)?;
        core.set_max_message_size(self.max_message_size);
        core.set_handler_targets(self.handler_targets)?;
        core.set_handshake_boxed(self.handshake);

        let (jobs, job_queue) = mpsc::channel(self.queue_capacity);
        let (event_queue, events) = mpsc::channel(self.queue_capacity);
        let (ready_now, ready) = watch::channel(false);
        let cancel = CancellationToken::new();
        let mut driver = Driver::new(
            context,
            core,
            control,
            job_queue,
            event_queue,
            cancel.clone().cancelled_owned(),
            ready_now,
        )?;
        driver.add_connection(&self.sender, &self.pull, &self.publish)?;
        let driver = runtime.spawn(driver.run());
        Ok(AsyncTransceiver {
            events,
            handle: AsyncHandle { jobs },
            cancel,
            ready,
            control_endpoint,
            driver: Some(driver),
        })
    }
}

impl AsyncTransceiver {
    /// A clonable handle with the sending methods, for other tasks.
    pub fn handle(&self) -> AsyncHandle {
        self.handle.clone()
    }

    /// The token that stops the transceiver: cancel it (from anywhere) and the stream ends
    /// once every session was told goodbye.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the transceiver when `token` is cancelled, too (e.g. the program's own
    /// shutdown token).
    pub fn stop_on(&self, token: CancellationToken) {
        let own = self.cancel.clone();
        tokio::spawn(async move {
            if own.run_until_cancelled(token.cancelled()).await.is_some() {
                own.cancel();
            }
        });
    }

    /// Makes SIGINT and SIGTERM stop the transceiver, as
    /// [`Transceiver::stop_on_signals`](crate::Transceiver::stop_on_signals) does: the
    /// stream ends after the goodbyes, and a second signal exits the process at once.
    pub fn stop_on_signals(&self) -> Result<(), Error> {
        let signals = Signals::register()?;
        self.handle
            .jobs
            .try_send(Job::Signals(signals))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            })
    }

    /// Where the control socket is bound (with the real port when bound to `:*` or `:0`).
    pub fn control_endpoint(&self) -> Option<&str> {
        self.control_endpoint.as_deref()
    }

    /// Waits until every Mongrel2 server's SUB has subscribed (replies sent before that are
    /// dropped by PUB); false on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        let subscribed = tokio::time::timeout(timeout, async {
            ready.wait_for(|ready| *ready).await.is_ok()
        });
        subscribed.await.unwrap_or(false)
    }

    /// The next event; `None` once the transceiver has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Stops the transceiver and waits for the driver to finish its goodbyes.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
    }
}

impl Deref for AsyncTransceiver {
    type Target = AsyncHandle;

    fn deref(&self) -> &AsyncHandle {
        &self.handle
    }
}

impl Stream for AsyncTransceiver {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl Drop for AsyncTransceiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
