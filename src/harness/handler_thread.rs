//! The handler under test on its own thread, reachable through its control socket.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{Builder, Error, Handle, Transceiver};

/// A handler running on a thread of its own, from [`spawn_handler`].
///
/// Dropping it interrupts the handler and waits for the thread; a handler that panicked
/// makes the drop panic too (unless the test is already panicking), so failures are not
/// lost. An error the handler returned is logged; [`HandlerThread::stop`] returns it.
#[derive(Debug)]
pub struct HandlerThread {
    control: String,
    handle: Handle,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// An endpoint nothing binds, for a Transceiver's first connection when the harness (or a
/// [`Connector`](super::Connector)) gives it its real ones later: an `ipc://` path under the
/// temp directory with a fresh UUID in its name, so connecting just keeps retrying quietly.
///
/// Not `inproc://`: libzmq 4.3.4 (what the `zmq` crate builds) resolves connects to unbound
/// inproc endpoints with temporary sockets when the context ends, and that path can touch a
/// freed pipe and crash the process.
pub fn unbound_endpoint() -> String {
    let dir = std::env::temp_dir();
    format!(
        "ipc://{}/m2-nowhere-{}",
        dir.display(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Builds a Transceiver for `sender` with `configure`, starts `serve` with it on a new
/// thread, and returns once its control socket is bound: give
/// [`HandlerThread::control`] to [`Server::new`](super::Server::new).
///
/// The Transceiver's own Mongrel2 connection points at an endpoint nobody binds (so it
/// cannot take a real Mongrel2's requests) and its control socket binds a free loopback
/// port; `configure` may change anything else. `serve` runs until it returns; it should
/// return `Ok(())` on [`Error::Interrupted`], which [`HandlerThread::stop`] and the drop
/// cause.
///
/// ```
/// use mongrel2_transceiver::harness::{spawn_handler, Protocol, Server};
/// use mongrel2_transceiver::{Error, Event, Message};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handler = spawn_handler("echo", |builder| builder, |t| loop {
///     match t.recv() {
///         Ok(Event::Message { conn, message: Message::Text(text) }) => t.send_text(&conn, &text)?,
///         Ok(_) => {}
///         Err(Error::Interrupted) => return Ok(()),
///         Err(err) => return Err(err),
///     }
/// })?;
/// let mut server = Server::new([handler.control()])?;
/// let mut ws = server.client(Protocol::WebSocket)?;
/// ws.handshake("/echo")?;
/// ws.send_text("hi")?;
/// assert_eq!(ws.recv_text()?, "hi");
/// drop(server);
/// handler.stop()?;
/// # Ok(())
/// # }
/// ```
pub fn spawn_handler(
    sender: &str,
    configure: impl FnOnce(Builder) -> Builder + Send + 'static,
    serve: impl FnOnce(&mut Transceiver) -> Result<(), Error> + Send + 'static,
) -> Result<HandlerThread, super::HarnessError> {
    let nowhere = unbound_endpoint();
    let builder = Transceiver::builder(sender)
        .pull(&nowhere)
        .publish(&nowhere)
        .control(Some("tcp://127.0.0.1:*"))
        // The own connection points nowhere on purpose: no warning that nobody subscribed.
        .subscription_timeout(None);
    let (ready, started) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut transceiver = match configure(builder).build() {
            Ok(transceiver) => transceiver,
            Err(err) => {
                let _ = ready.send(Err(err));
                return Ok(());
            }
        };
        let Some(control) = transceiver.control_endpoint() else {
            let problem = "the handler has no control socket (configure removed it)";
            let _ = ready.send(Err(Error::Config(problem.into())));
            return Ok(());
        };
        if ready.send(Ok((control, transceiver.handle()))).is_err() {
            return Ok(());
        }
        serve(&mut transceiver)
    });
    match started.recv() {
        Ok(Ok((control, handle))) => Ok(HandlerThread {
            control,
            handle,
            thread: Some(thread),
        }),
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(err.into())
        }
        Err(_) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => Err(Error::Closed.into()),
        },
    }
}

impl HandlerThread {
    /// The handler's control endpoint, for [`Server::new`](super::Server::new) or a
    /// [`Connector`](super::Connector).
    pub fn control(&self) -> &str {
        &self.control
    }

    /// A handle for sending through the handler from the test.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Interrupts the handler and returns what its `serve` returned (a panic is resumed).
    pub fn stop(mut self) -> Result<(), Error> {
        self.join()
    }

    fn join(&mut self) -> Result<(), Error> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // Fails only when the loop is already gone, which join then reports.
        let _ = self.handle.interrupt();
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for HandlerThread {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.handle.interrupt();
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => log::warn!("the handler under test failed: {err}"),
            Err(_) if std::thread::panicking() => {}
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
