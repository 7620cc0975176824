//! Waiting on the loop's ZeroMQ sockets and plain descriptors with one poll(2).
//!
//! `zmq_poll` makes two system calls whenever nothing is ready yet: a first pass that does
//! not wait, then the wait. With Mongrel2's sockets spoken directly, a handler under load
//! waits once per batch of requests, so that first pass was one system call in four. Here
//! ZeroMQ sockets are asked for pending messages first (their descriptor only signals
//! changes), and poll(2) waits at once unless one has some.

use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

/// One thing to wait on.
pub(crate) enum Watch<'a> {
    /// A descriptor and the poll(2) events wanted (none: skipped, as a negative fd is).
    Fd { fd: RawFd, events: libc::c_short },
    /// A ZeroMQ socket, ready when it has a message to receive.
    Socket(&'a zmq::Socket),
}

impl Watch<'_> {
    /// Readability of a descriptor.
    pub(crate) fn readable(fd: RawFd) -> Watch<'static> {
        Watch::Fd {
            fd,
            events: libc::POLLIN,
        }
    }
}

/// Waits until something in `watches` is ready or `wait` passed (`None`: no limit), and
/// sets `ready` to one flag per watch: any event (errors included) for a descriptor,
/// a message waiting for a socket. EINTR, from poll(2) or from a socket asked for its
/// events, counts as a quiet wake-up (nothing ready): the caller looks at its signals.
pub(crate) fn wait(
    watches: &[Watch<'_>],
    wait: Option<Duration>,
    ready: &mut Vec<bool>,
) -> Result<(), zmq::Error> {
    match wait_once(watches, wait, ready) {
        Err(zmq::Error::EINTR) => {
            ready.clear();
            ready.resize(watches.len(), false);
            Ok(())
        }
        other => other,
    }
}

fn wait_once(
    watches: &[Watch<'_>],
    wait: Option<Duration>,
    ready: &mut Vec<bool>,
) -> Result<(), zmq::Error> {
    let deadline = wait.and_then(|wait| Instant::now().checked_add(wait));
    let mut fds = Vec::with_capacity(watches.len());
    for watch in watches {
        let (fd, events) = match watch {
            Watch::Fd { fd, events } if *events != 0 => (*fd, *events),
            Watch::Fd { .. } => (-1, 0),
            Watch::Socket(socket) => (socket.get_fd()?, libc::POLLIN),
        };
        fds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
    }
    loop {
        ready.clear();
        let mut any = false;
        for watch in watches {
            let pending = match watch {
                Watch::Socket(socket) => socket.get_events()?.contains(zmq::POLLIN),
                Watch::Fd { .. } => false,
            };
            any |= pending;
            ready.push(pending);
        }
        let timeout = if any { 0 } else { millis_until(deadline) };
        // SAFETY: `fds` is a live, initialised array of `fds.len()` pollfd structs, which
        // poll(2) only reads and writes within.
        let polled = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if polled < 0 {
            let err = std::io::Error::last_os_error();
            return Err(zmq::Error::from_raw(
                err.raw_os_error().unwrap_or(libc::EIO),
            ));
        }
        for ((watch, fd), flag) in watches.iter().zip(&fds).zip(ready.iter_mut()) {
            match watch {
                Watch::Fd { .. } => *flag = fd.revents != 0,
                // The descriptor only says "look again"; ask the socket.
                Watch::Socket(socket) if fd.revents != 0 && !*flag => {
                    *flag = socket.get_events()?.contains(zmq::POLLIN);
                }
                Watch::Socket(_) => {}
            }
        }
        let timed_out = deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if any || ready.iter().any(|&flag| flag) || timed_out || polled == 0 {
            return Ok(());
        }
        // A socket's descriptor fired for something other than a message (a subscription
        // handled inside ZeroMQ, a peer's handshake): wait on.
    }
}

/// poll(2)'s timeout for `deadline`: -1 for none, rounded up so a sub-millisecond wait does
/// not spin.
fn millis_until(deadline: Option<Instant>) -> libc::c_int {
    let Some(deadline) = deadline else {
        return -1;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut millis = left.as_millis();
    if left.subsec_nanos() % 1_000_000 != 0 {
        millis += 1;
    }
    libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::os::unix::io::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    type Outcome = Result<(), Box<dyn Error>>;

    #[test]
    fn a_socket_with_a_message_is_ready_without_waiting() -> Outcome {
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL)?;
        pull.bind("inproc://waiting-test")?;
        let push = context.socket(zmq::PUSH)?;
        push.connect("inproc://waiting-test")?;
        let mut ready = Vec::new();

        let started = Instant::now();
        let waited = wait(
            &[Watch::Socket(&pull)],
            Some(Duration::from_millis(50)),
            &mut ready,
        );
        assert_eq!(waited, Ok(()));
        assert_eq!(ready, [false]);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "waited it out"
        );

        push.send("x", 0)?;
        let idle = Watch::Fd { fd: -1, events: 0 };
        assert_eq!(
            wait(&[idle, Watch::Socket(&pull)], None, &mut ready),
            Ok(())
        );
        assert_eq!(ready, [false, true]);
        Ok(())
    }

    #[test]
    fn a_signal_is_a_quiet_wake_up() -> Outcome {
        let caught = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(libc::SIGUSR2, caught.clone())?;
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL)?;
        pull.bind("inproc://signal-test")?;
        let (thread_id, waiting) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            let _ = thread_id.send(unsafe { libc::pthread_self() });
            let mut ready = Vec::new();
            let result = wait(&[Watch::Socket(&pull)], None, &mut ready);
            (result, ready)
        });
        let thread = waiting.recv()?;
        // Until the waiter is inside poll(2): signal it again and again.
        while !waiter.is_finished() {
            // SAFETY: the thread has not been joined (only below), so its id is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
            std::thread::sleep(Duration::from_millis(20));
        }
        let outcome = waiter.join().map_err(|_| "the waiter panicked")?;
        assert_eq!(outcome, (Ok(()), vec![false]));
        assert!(caught.load(Ordering::SeqCst));
        Ok(())
    }

    #[test]
    fn a_readable_descriptor_wakes_the_wait() -> Outcome {
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair()?;
        let mut ready = Vec::new();
        std::io::Write::write_all(&mut writer, b"!")?;
        let waited = wait(&[Watch::readable(reader.as_raw_fd())], None, &mut ready);
        assert_eq!(waited, Ok(()));
        assert_eq!(ready, [true]);
        Ok(())
    }
}
