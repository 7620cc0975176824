//! The driver task: the sans-IO [`Core`] moved by tokio, with ZeroMQ's own descriptors as
//! the wake-ups (no thread of its own, no extra hop per request).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::time::Sleep;
use tokio_util::sync::{PollSender, WaitForCancellationFutureOwned};

use super::handle::Job;
use super::readiness::Readiness;
use crate::transceiver::connection::Connection;
use crate::transceiver::control;
use crate::transceiver::signals::Signals;
use crate::transceiver::Transport;
use crate::{Core, Error, Event};

/// Requests read from one PULL before the rest gets a turn (as the blocking loop).
const PULL_BATCH: usize = 256;
/// Jobs taken from the queue in one turn.
const JOB_BATCH: usize = 1024;
/// Busy turns before the driver yields to the runtime's other tasks.
const TURNS_BEFORE_YIELD: usize = 16;
/// How long the goodbye close frames may take to drain on a graceful shutdown.
const SHUTDOWN_LINGER_MS: i32 = 250;

/// One Mongrel2 server; the readiness registrations drop before the sockets they watch.
struct Link {
    pull_ready: Readiness,
    publish_ready: Readiness,
    connection: Connection,
}

struct ControlSocket {
    ready: Readiness,
    socket: zmq::Socket,
}

struct SignalWatch {
    ready: tokio::io::unix::AsyncFd<RawFdOf>,
    signals: Signals,
}

struct RawFdOf(std::os::unix::io::RawFd);

impl std::os::unix::io::AsRawFd for RawFdOf {
    fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        self.0
    }
}

pub(super) struct Driver {
    /// Declared before the context: sockets must close before it terminates.
    links: Vec<Link>,
    control: Option<ControlSocket>,
    signals: Option<SignalWatch>,
    core: Core,
    jobs: mpsc::Receiver<Job>,
    events: PollSender<Event>,
    /// An event taken from the core while the stream was full.
    held: Option<Event>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether every server's SUB has subscribed (see `wait_ready`).
    ready: watch::Sender<bool>,
    context: zmq::Context,
}

impl Driver {
    pub(super) fn new(
        context: zmq::Context,
        core: Core,
        control: Option<zmq::Socket>,
        jobs: mpsc::Receiver<Job>,
        events: mpsc::Sender<Event>,
        stop: WaitForCancellationFutureOwned,
        ready: watch::Sender<bool>,
    ) -> Result<Driver, Error> {
        let control = match control {
            Some(socket) => Some(ControlSocket {
                ready: Readiness::new(&socket).map_err(io_error)?,
                socket,
            }),
            None => None,
        };
        Ok(Driver {
            links: Vec::new(),
            control,
            signals: None,
            core,
            jobs,
            events: PollSender::new(events),
            held: None,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            timer_at: None,
            stop: Box::pin(stop),
            ready,
            context,
        })
    }

    pub(super) fn add_connection(
        &mut self,
        sender: &str,
        pull: &str,
        publish: &str,
    ) -> Result<(), Error> {
        self.core.add_server(sender)?;
        let shared: Arc<str> = match self.core.server(sender) {
            Some(shared) => shared.clone(),
            None => return Err(Error::UnknownSender(sender.to_owned())),
        };
        // tokio's reactor waits on libzmq's descriptors here; the direct transport's
        // sockets are the blocking loop's.
        let opened = Connection::open(&self.context, Transport::Libzmq, 0, shared, pull, publish)
            .and_then(|connection| {
                let (pull, publish) = connection
                    .libzmq()
                    .ok_or_else(|| Error::Config("the async face needs libzmq sockets".into()))?;
                Ok(Link {
                    pull_ready: Readiness::new(pull).map_err(io_error)?,
                    publish_ready: Readiness::new(publish).map_err(io_error)?,
                    connection,
                })
            });
        match opened {
            Ok(link) => {
                log::info!("connected to Mongrel2 {sender}: pull {pull}, publish {publish}");
                self.links.push(link);
                self.update_ready();
                Ok(())
            }
            Err(err) => {
                let _ = self.core.remove_server(sender);
                Err(err)
            }
        }
    }

    fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        let index = self
            .links
            .iter()
            .position(|link| &*link.connection.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        self.flush();
        self.links.remove(index);
        self.core.remove_server(sender)?;
        self.update_ready();
        log::info!("disconnected from Mongrel2 {sender}");
        Ok(())
    }

    /// Serves until stopped, then says goodbye to every session.
    pub(super) async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_serve(cx)).await;
        self.shutdown();
        // Terminating the context waits (up to the linger) for the goodbyes to leave: not
        // on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }

    /// One round of everything that can be done now; `Ready` once it is time to stop.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..TURNS_BEFORE_YIELD {
            if self.stop.as_mut().poll(cx).is_ready() || self.signalled(cx) {
                return Poll::Ready(());
            }
            let mut busy = self.run_jobs(cx);
            self.core.handle_timeout(Instant::now());
            busy |= self.poll_timer(cx);
            busy |= self.serve_control(cx);
            match self.forward_events(cx) {
                Err(Gone) => return Poll::Ready(()),
                Ok(room) if room => busy |= self.read_requests(cx),
                Ok(_) => {}
            }
            if self.forward_events(cx).is_err() {
                return Poll::Ready(());
            }
            self.flush();
            self.watch_subscriptions(cx);
            if !busy {
                return Poll::Pending;
            }
        }
        // Still busy: let the runtime's other tasks (the handler's) run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn signalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(watch) = &mut self.signals else {
            return false;
        };
        loop {
            match watch.ready.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    guard.clear_ready();
                    // Drains the pipe, so the next poll waits for the next signal.
                    if watch.signals.take() {
                        log::info!("stopping on a signal");
                        return true;
                    }
                }
                Poll::Ready(Err(err)) => {
                    log::warn!("signal pipe: {err}");
                    return false;
                }
                Poll::Pending => return false,
            }
        }
    }

    /// Runs queued jobs; true when any ran.
    fn run_jobs(&mut self, cx: &mut Context<'_>) -> bool {
        let mut ran = false;
        for _ in 0..JOB_BATCH {
            let job = match self.jobs.poll_recv(cx) {
                Poll::Ready(Some(job)) => job,
                // The transceiver keeps a sender, so the queue only closes with it.
                Poll::Ready(None) | Poll::Pending => break,
            };
            ran = true;
            let result = match job {
                Job::Outbound(command) => self.core.submit(command),
                Job::AddConnection {
                    sender,
                    pull,
                    publish,
                } => self.add_connection(&sender, &pull, &publish),
                Job::RemoveConnection { sender } => self.remove_connection(&sender),
                Job::Sessions(answer) => {
                    let _ = answer.send(self.core.sessions().collect());
                    Ok(())
                }
                Job::Signals(signals) => self.watch_signals(signals),
            };
            if let Err(err) = result {
                log::warn!("queued command failed: {err}");
            }
        }
        ran
    }

    fn watch_signals(&mut self, signals: Signals) -> Result<(), Error> {
        // SAFETY: the pipe belongs to `signals`, kept beside the registration in a
        // `SignalWatch`, which declares (so drops) the registration first.
        let ready = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                RawFdOf(signals.fd()),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|err| io_error(err.into()))?;
        self.signals = Some(SignalWatch { ready, signals });
        Ok(())
    }

    /// Arms the ping timer for the core's next deadline; true when it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.core.next_timeout() else {
            return false;
        };
        if self.timer_at != Some(at) {
            self.timer_at = Some(at);
            self.timer.as_mut().reset(at.into());
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// Hands the core's events to the stream; `Ok(true)` when there is room for more.
    fn forward_events(&mut self, cx: &mut Context<'_>) -> Result<bool, Gone> {
        loop {
            let Some(event) = self.held.take().or_else(|| self.core.poll_event()) else {
                return Ok(true);
            };
            match self.events.poll_reserve(cx) {
                Poll::Ready(Ok(())) => {
                    if self.events.send_item(event).is_err() {
                        return Err(Gone);
                    }
                }
                Poll::Ready(Err(_)) => return Err(Gone),
                // Requests stay queued in ZeroMQ until the handler catches up.
                Poll::Pending => {
                    self.held = Some(event);
                    return Ok(false);
                }
            }
        }
    }

    /// Reads requests from every PULL that has some; true when any arrived. Receives first
    /// and asks ZMQ_EVENTS only once the socket is empty: that costs a system call, and a
    /// receive checks the same state anyway.
    fn read_requests(&mut self, cx: &mut Context<'_>) -> bool {
        let mut read = false;
        for link in &self.links {
            let Some((socket, _)) = link.connection.libzmq() else {
                continue;
            };
            let mut budget = PULL_BATCH;
            while budget > 0 {
                match socket.recv_msg(zmq::DONTWAIT) {
                    Ok(message) => {
                        link.pull_ready.used();
                        read = true;
                        budget -= 1;
                        self.core.handle_message(&link.connection.sender, &message);
                    }
                    Err(zmq::Error::EAGAIN) => {
                        link.pull_ready.used();
                        match link.pull_ready.poll(socket, zmq::POLLIN, cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(err)) => {
                                log::warn!("PULL of {}: {err}", link.connection.sender);
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    Err(err) => {
                        log::warn!("receiving from Mongrel2 {}: {err}", link.connection.sender);
                        break;
                    }
                }
            }
        }
        read
    }

    /// Writes every reply the core produced to its server's PUB.
    fn flush(&mut self) {
        while let Some(out) = self.core.poll_outgoing() {
            match self
                .links
                .iter_mut()
                .find(|link| link.connection.sender == out.sender)
            {
                Some(link) => {
                    link.publish_ready.used();
                    match link.connection.send(out.message) {
                        Ok(Some(buffer)) => self.core.recycle(buffer),
                        Ok(None) => {}
                        Err(err) => log::warn!("reply to Mongrel2 {} failed: {err}", out.sender),
                    }
                }
                None => log::warn!("reply to unknown Mongrel2 {} dropped", out.sender),
            }
        }
    }

    /// Reads XPUB subscription notices. Called after every flush: a send may consume the
    /// descriptor's edge for a notice that arrived meanwhile.
    fn watch_subscriptions(&mut self, cx: &mut Context<'_>) {
        let mut changed = false;
        for link in &mut self.links {
            while let Some((_, publish)) = link.connection.libzmq() {
                if !matches!(
                    link.publish_ready.poll(publish, zmq::POLLIN, cx),
                    Poll::Ready(Ok(()))
                ) {
                    break;
                }
                let drained = link.connection.drain_subscriptions();
                link.publish_ready.used();
                if !drained {
                    break;
                }
                changed = true;
            }
        }
        if changed {
            self.update_ready();
        }
    }

    fn update_ready(&self) {
        let all = self.links.iter().all(|link| link.connection.subscribed);
        self.ready
            .send_if_modified(|ready| std::mem::replace(ready, all) != all);
    }

    /// The control socket (REP): one request, its answer, then the action.
    fn serve_control(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(control) = &self.control else {
            return false;
        };
        match control.ready.poll(&control.socket, zmq::POLLIN, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(err)) => {
                log::warn!("control socket: {err}");
                return false;
            }
            Poll::Pending => return false,
        }
        control.ready.used();
        let message = match control.socket.recv_msg(zmq::DONTWAIT) {
            Ok(message) => message,
            Err(zmq::Error::EAGAIN) => return false,
            Err(err) => {
                log::warn!("control socket: {err}");
                return false;
            }
        };
        let (answer, action) = control::interpret(&message);
        if let Err(err) = control.socket.send(answer, zmq::DONTWAIT) {
            log::warn!("control socket reply: {err}");
        }
        control::act(self, action);
        true
    }

    /// Close 1001 to every session, the events that report it (if the stream has room), and
    /// a bounded linger for the goodbyes. Queued sends go out first.
    fn shutdown(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            if let Job::Outbound(command) = job {
                if let Err(err) = self.core.submit(command) {
                    log::warn!("queued command failed: {err}");
                }
            }
        }
        self.core.shutdown();
        self.flush();
        let events = self.events.get_ref().cloned();
        self.events.close();
        while let Some(event) = self.held.take().or_else(|| self.core.poll_event()) {
            if let Some(events) = &events {
                let _ = events.try_send(event);
            }
        }
        for link in &mut self.links {
            link.connection.set_linger(SHUTDOWN_LINGER_MS);
        }
        self.jobs.close();
        log::debug!("async Transceiver shut down");
    }
}

/// The stream's receiver is gone.
struct Gone;

fn io_error(err: io::Error) -> Error {
    Error::Config(format!("cannot register with the tokio reactor: {err}"))
}

impl control::Target for Driver {
    fn add_connection(&mut self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        Driver::add_connection(self, sender, pull, publish)
    }
    fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        Driver::remove_connection(self, sender)
    }
    /// A ping's answer goes through `sender`'s own PUB, so its arrival proves that path.
    fn send_after_queued(&mut self, sender: &str, message: Vec<u8>) -> Result<(), Error> {
        self.flush();
        let link = self
            .links
            .iter_mut()
            .find(|link| &*link.connection.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        link.publish_ready.used();
        link.connection.send(message).map(drop)
    }
}
