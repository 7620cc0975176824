//! A ZeroMQ socket's readiness through tokio's reactor.
//!
//! ZeroMQ exposes one file descriptor per socket (`ZMQ_FD`). It is not the socket's data
//! but a signal that the socket's state *may* have changed, and it is edge-triggered: it
//! fires once, and any operation on the socket (including a send, and reading
//! `ZMQ_EVENTS` itself) may consume that edge. So the truth is always `ZMQ_EVENTS`, read
//! after every operation, and the descriptor is only waited on once `ZMQ_EVENTS` says
//! there is nothing to do.

use std::cell::Cell;
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
    /// `ZMQ_EVENTS` showed nothing wanted and the socket was not used since: only an edge
    /// on the descriptor can change that, so reading `ZMQ_EVENTS` again (a system call)
    /// can wait for one.
    idle: Cell<bool>,
}

impl Readiness {
    pub(super) fn new(socket: &zmq::Socket) -> io::Result<Readiness> {
        let fd = socket.get_fd().map_err(io::Error::from)?;
        // SAFETY: the descriptor belongs to `socket`, which stays open for as long as this
        // registration: every owner declares its `Readiness` before the socket, so it is
        // dropped (and deregistered) first.
        let fd = unsafe { AsyncFd::register_with_interest(ZmqFd(fd), Interest::READABLE)? };
        Ok(Readiness {
            fd,
            idle: Cell::new(false),
        })
    }

    /// Ready when `socket` can do `wanted` (`zmq::POLLIN` / `zmq::POLLOUT`) now; otherwise
    /// the task is woken when its descriptor next fires. Call [`Readiness::used`] after
    /// every other operation on the socket.
    pub(super) fn poll(
        &self,
        socket: &zmq::Socket,
        wanted: zmq::PollEvents,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.idle.get() {
                // Clearing tokio's readiness before reading ZMQ_EVENTS again closes the race
                // with an edge that fires in between: it sets the readiness anew.
                match self.fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                }
                self.idle.set(false);
            }
            let events = socket.get_events().map_err(io::Error::from)?;
            if events.intersects(wanted) {
                return Poll::Ready(Ok(()));
            }
            self.idle.set(true);
        }
    }

    /// The socket was used (a send, say): its events may have changed without an edge.
    pub(super) fn used(&self) {
        self.idle.set(false);
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::Readiness;

    /// Messages that arrive while the task waits, in bursts and one by one, all wake it: the
    /// edge-triggered descriptor is never waited on with messages already queued.
    #[tokio::test]
    async fn every_message_sent_while_waiting_wakes_the_reader() {
        const MESSAGES: usize = 2000;
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL).unwrap();
        pull.bind("inproc://readiness-test").unwrap();
        let push = context.socket(zmq::PUSH).unwrap();
        push.connect("inproc://readiness-test").unwrap();
        let ready = Readiness::new(&pull).unwrap();
        let sender = std::thread::spawn(move || {
            for index in 0..MESSAGES {
                push.send(index.to_string().as_bytes(), 0).unwrap();
                if index % 7 == 0 {
                    std::thread::yield_now();
                }
            }
            push
        });
        let mut received = 0;
        let reading = async {
            while received < MESSAGES {
                poll_fn(|cx| ready.poll(&pull, zmq::POLLIN, cx))
                    .await
                    .unwrap();
                while pull.recv_msg(zmq::DONTWAIT).is_ok() {
                    received += 1;
                }
                ready.used();
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(20), reading).await;
        assert!(finished.is_ok(), "stalled after {received} of {MESSAGES}");
        drop(sender.join().unwrap());
    }
}
