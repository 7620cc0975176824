//! A ZeroMQ socket's readiness through tokio's reactor.
//!
//! ZeroMQ exposes one file descriptor per socket (`ZMQ_FD`). It is not the socket's data
//! but a signal that the socket's state *may* have changed, and it is edge-triggered: it
//! fires once, and any operation on the socket (including a send, and reading
//! `ZMQ_EVENTS` itself) may consume that edge. So the truth is always `ZMQ_EVENTS`, read
//! after every operation, and the descriptor is only waited on once `ZMQ_EVENTS` says
//! there is nothing to do.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The socket's descriptor as tokio wants it. Closing stays with ZeroMQ.
struct ZmqFd(RawFd);

impl AsRawFd for ZmqFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Waits for `ZMQ_EVENTS` of one socket. Drop it before the socket (it deregisters the
/// descriptor the socket owns).
pub(super) struct Readiness {
    fd: AsyncFd<ZmqFd>,
}

impl Readiness {
    pub(super) fn new(socket: &zmq::Socket) -> io::Result<Readiness> {
        let fd = socket.get_fd().map_err(io::Error::from)?;
        // SAFETY: the descriptor belongs to `socket`, which stays open for as long as this
        // registration: every owner declares its `Readiness` before the socket, so it is
        // dropped (and deregistered) first.
        let fd = unsafe { AsyncFd::register_with_interest(ZmqFd(fd), Interest::READABLE)? };
        Ok(Readiness { fd })
    }

    /// Ready when `socket` can do `wanted` (`zmq::POLLIN` / `zmq::POLLOUT`) now; otherwise
    /// the task is woken when its descriptor next fires.
    pub(super) fn poll(
        &self,
        socket: &zmq::Socket,
        wanted: zmq::PollEvents,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let events = socket.get_events().map_err(io::Error::from)?;
            if events.intersects(wanted) {
                return Poll::Ready(Ok(()));
            }
            // Clearing tokio's readiness and then reading ZMQ_EVENTS again closes the race
            // with an edge that fired between the check above and this wait.
            match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
