//! [`AsyncHandle`]: sending from any task, with backpressure.

use std::cell::RefCell;

use tokio::sync::{mpsc, oneshot};

use crate::http::{ChunkedResponse, Response};
use crate::request::Request;
use crate::transceiver::command::Outbound;
use crate::transceiver::signals::Signals;
use crate::websocket::{CloseCode, Opcode};
use crate::{ConnId, Error};

/// Work for the driver task.
pub(super) enum Job {
    Outbound(Outbound),
    AddConnection {
        sender: String,
        pull: String,
        publish: String,
    },
    RemoveConnection {
        sender: String,
    },
    Sessions(oneshot::Sender<Vec<ConnId>>),
    Signals(Signals),
}

/// Captures the command one of the shared sending methods builds, so the async methods
/// frame, check and batch exactly as [`Handle`](crate::Handle) does without repeating it.
struct Recorder(RefCell<Option<Outbound>>);

impl Recorder {
    fn submit(&self, command: Outbound) -> Result<(), Error> {
        *self.0.borrow_mut() = Some(command);
        Ok(())
    }

    crate::transceiver::outbound::outbound_methods!();
}

/// What `method` asked to send; `None` when there is nothing to send (an empty chunk).
fn record(method: impl FnOnce(&Recorder) -> Result<(), Error>) -> Result<Option<Outbound>, Error> {
    let recorder = Recorder(RefCell::new(None));
    method(&recorder)?;
    Ok(recorder.0.into_inner())
}

/// A clonable handle on an [`AsyncTransceiver`](super::AsyncTransceiver) for any task.
///
/// Every method queues work for the driver task. The queue is bounded
/// ([`Builder::queue_capacity`](crate::Builder::queue_capacity)): when it is full the
/// method waits for room (it never blocks the runtime's thread). Once the transceiver has
/// shut down every method fails with [`Error::Closed`].
#[derive(Clone, Debug)]
pub struct AsyncHandle {
    pub(super) jobs: mpsc::Sender<Job>,
}

/// Async versions of the shared sending methods, each documented on [`Handle`](crate::Handle).
macro_rules! async_outbound {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[doc = concat!("Queues [`Handle::", stringify!($name), "`](crate::Handle::",
                stringify!($name), "), waiting while the queue is full.")]
            pub async fn $name(&self, $($arg: $ty),*) -> Result<(), Error> {
                let command = record(|recorder| recorder.$name($($arg),*))?;
                self.submit(command).await
            }
        )*
    };
}

impl AsyncHandle {
    async fn submit(&self, command: Option<Outbound>) -> Result<(), Error> {
        match command {
            Some(command) => self.send_job(Job::Outbound(command)).await,
            None => Ok(()),
        }
    }

    pub(super) async fn send_job(&self, job: Job) -> Result<(), Error> {
        self.jobs.send(job).await.map_err(|_| Error::Closed)
    }

    async_outbound! {
        reply_http(request: &Request<'_>, response: &Response);
        close(conn: &ConnId);
        stream_start(request: &Request<'_>, head: &ChunkedResponse);
        stream_chunk(conn: &ConnId, data: &[u8]);
        stream_end(conn: &ConnId, then_close: bool);
        send_text(conn: &ConnId, text: &str);
        send_binary(conn: &ConnId, data: &[u8]);
        send_ping(conn: &ConnId, payload: &[u8]);
        send_frame(conn: &ConnId, opcode: Opcode, payload: &[u8]);
        close_session(conn: &ConnId, code: CloseCode, reason: &str);
        deliver_text(conns: &[ConnId], text: &str);
        deliver_binary(conns: &[ConnId], data: &[u8]);
        deliver_frame(conns: &[ConnId], opcode: Opcode, payload: &[u8]);
        broadcast(opcode: Opcode, payload: &[u8]);
        broadcast_text(text: &str);
        broadcast_binary(data: &[u8]);
        keep_alive(conn: &ConnId);
        grant_credits(conn: &ConnId, credits: u64);
        cancel(conn: &ConnId);
    }

    /// Queues [`Handle::reply`](crate::Handle::reply), waiting while the queue is full.
    pub async fn reply(&self, conn: &ConnId, body: impl Into<Vec<u8>>) -> Result<(), Error> {
        let body = body.into();
        self.submit(record(|recorder| recorder.reply(conn, body))?)
            .await
    }

    /// Queues [`Handle::reply_json`](crate::Handle::reply_json), waiting while the queue is
    /// full.
    pub async fn reply_json<T: serde::Serialize + ?Sized>(
        &self,
        request: &Request<'_>,
        status: u16,
        value: &T,
    ) -> Result<(), Error> {
        self.submit(record(|recorder| {
            recorder.reply_json(request, status, value)
        })?)
        .await
    }

    /// Queues [`Handle::deliver`](crate::Handle::deliver), waiting while the queue is full.
    pub async fn deliver(
        &self,
        sender: &str,
        ids: &[u64],
        body: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let body = body.into();
        self.submit(record(|recorder| recorder.deliver(sender, ids, body))?)
            .await
    }

    /// Queues [`Handle::deliver_to`](crate::Handle::deliver_to), waiting while the queue is
    /// full.
    pub async fn deliver_to(
        &self,
        conns: &[ConnId],
        body: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let body = body.into();
        self.submit(record(|recorder| recorder.deliver_to(conns, body))?)
            .await
    }

    /// Connects the running transceiver to one more Mongrel2 server (see
    /// [`Transceiver::add_connection`](crate::Transceiver::add_connection)); failures are
    /// logged by the driver.
    pub async fn add_connection(
        &self,
        sender: &str,
        pull: &str,
        publish: &str,
    ) -> Result<(), Error> {
        self.send_job(Job::AddConnection {
            sender: sender.to_owned(),
            pull: pull.to_owned(),
            publish: publish.to_owned(),
        })
        .await
    }

    /// Disconnects from a Mongrel2 server; its sessions are reported closed.
    pub async fn remove_connection(&self, sender: &str) -> Result<(), Error> {
        self.send_job(Job::RemoveConnection {
            sender: sender.to_owned(),
        })
        .await
    }

    /// Every open WebSocket session, as the driver knows them once it reaches this request
    /// (sessions opened by events still in the stream are included).
    pub async fn sessions(&self) -> Result<Vec<ConnId>, Error> {
        let (answer, sessions) = oneshot::channel();
        self.send_job(Job::Sessions(answer)).await?;
        sessions.await.map_err(|_| Error::Closed)
    }
}
