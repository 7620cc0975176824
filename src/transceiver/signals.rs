//! SIGINT/SIGTERM as a readable file descriptor the loop polls with its sockets.
//!
//! signal-hook does the async-signal-safe part (its handler only writes a byte to our
//! socket pair), so the loop needs no extra thread and a signal wakes a blocked `zmq_poll`.

use std::io::{ErrorKind, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

use super::Error;

pub(crate) struct Signals {
    read: UnixStream,
    pipes: Vec<SigId>,
    /// Set by the first signal; from then on the next one exits the process.
    seen: Arc<AtomicBool>,
}

impl Signals {
    pub(crate) fn register() -> Result<Signals, Error> {
        let failed = |err: std::io::Error| Error::Config(format!("signal handler: {err}"));
        let (read, write) = UnixStream::pair().map_err(failed)?;
        read.set_nonblocking(true).map_err(failed)?;
        write.set_nonblocking(true).map_err(failed)?;
        let seen = Arc::new(AtomicBool::new(false));
        let mut pipes = Vec::with_capacity(2);
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the exit check runs before the flag is set, so only a second
            // signal exits.
            signal_hook::flag::register_conditional_shutdown(signal, 1, seen.clone())
                .map_err(failed)?;
            signal_hook::flag::register(signal, seen.clone()).map_err(failed)?;
            let write = write.try_clone().map_err(failed)?;
            pipes.push(signal_hook::low_level::pipe::register(signal, write).map_err(failed)?);
        }
        Ok(Signals { read, pipes, seen })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the pipe; true when a signal had arrived.
    pub(crate) fn take(&mut self) -> bool {
        let mut arrived = false;
        let mut sink = [0u8; 64];
        loop {
            match self.read.read(&mut sink) {
                Ok(0) => return arrived,
                Ok(_) => arrived = true,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return arrived,
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Nobody reads the pipe any more; a later signal must still stop the process, so
        // the exit-on-signal action stays armed.
        self.seen.store(true, Ordering::SeqCst);
        for id in self.pipes.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
