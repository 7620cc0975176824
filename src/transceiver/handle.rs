//! Sending from other threads: a bounded queue into the loop, plus a wake-up pipe it polls.
//!
//! ZeroMQ sockets must stay on the loop's thread, so a [`Handle`] never touches one: it
//! queues a [`Command`] and writes a byte to a socket pair whose read end the loop polls
//! next to its ZeroMQ sockets.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use super::command::Outbound;
use super::Error;

/// Work for the loop's thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// A sending method, for the core.
    Outbound(Outbound),
    AddConnection {
        sender: String,
        pull: String,
        publish: String,
    },
    RemoveConnection {
        sender: String,
    },
    /// Makes the loop return from `recv`/`recv_timeout` (e.g. on a signal).
    Interrupt,
}

/// The loop's end of the queue.
pub(crate) struct Inbox {
    pub(crate) commands: Receiver<Command>,
    pub(crate) wake: UnixStream,
}

impl Inbox {
    /// Empties the wake-up pipe; the queue itself is drained with [`Inbox::try_next`].
    pub(crate) fn clear_wakeups(&mut self) {
        let mut sink = [0u8; 256];
        loop {
            match self.wake.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    pub(crate) fn try_next(&self) -> Option<Command> {
        self.commands.try_recv().ok()
    }
}

struct Shared {
    commands: Sender<Command>,
    wake: UnixStream,
    send_timeout: Duration,
}

/// A clonable, thread-safe way to send through a running [`Transceiver`](super::Transceiver).
///
/// Every method queues the work for the loop's thread (the queue is bounded; a full queue
/// waits up to the handle's send timeout, then fails with [`Error::QueueFull`]). Once the
/// Transceiver is dropped, every method fails with [`Error::Closed`].
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

pub(crate) fn channel(capacity: usize, send_timeout: Duration) -> Result<(Handle, Inbox), Error> {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let (write, read) =
        UnixStream::pair().map_err(|err| Error::Config(format!("socketpair: {err}")))?;
    for end in [&write, &read] {
        end.set_nonblocking(true)
            .map_err(|err| Error::Config(format!("socketpair: {err}")))?;
    }
    let handle = Handle {
        shared: Arc::new(Shared {
            commands: tx,
            wake: write,
            send_timeout,
        }),
    };
    Ok((
        handle,
        Inbox {
            commands: rx,
            wake: read,
        },
    ))
}

impl Handle {
    pub(crate) fn submit(&self, command: Outbound) -> Result<(), Error> {
        self.send_command(Command::Outbound(command))
    }

    fn send_command(&self, command: Command) -> Result<(), Error> {
        match self
            .shared
            .commands
            .send_timeout(command, self.shared.send_timeout)
        {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(Error::QueueFull),
            Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Closed),
        }
        // A full pipe already holds a wake-up the loop has not read; nothing is lost.
        match (&self.shared.wake).write(&[1]) {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Adds a Mongrel2 server to the running loop (see [`Transceiver::add_connection`](super::Transceiver::add_connection)).
    /// Failures are logged by the loop.
    pub fn add_connection(&self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        self.send_command(Command::AddConnection {
            sender: sender.to_owned(),
            pull: pull.to_owned(),
            publish: publish.to_owned(),
        })
    }

    /// Removes a Mongrel2 server from the running loop.
    pub fn remove_connection(&self, sender: &str) -> Result<(), Error> {
        self.send_command(Command::RemoveConnection {
            sender: sender.to_owned(),
        })
    }

    /// Wakes the loop: a blocked [`recv`](super::Transceiver::recv) or
    /// [`recv_timeout`](super::Transceiver::recv_timeout) returns [`Error::Interrupted`] and
    /// [`events`](super::Transceiver::events) ends. Meant for whatever wants the loop to stop
    /// (see also [`Transceiver::stop_on_signals`](super::Transceiver::stop_on_signals)).
    pub fn interrupt(&self) -> Result<(), Error> {
        self.send_command(Command::Interrupt)
    }

    super::outbound::outbound_methods!();
}
