//! Serving the control socket: the loop's side of the `control` protocol module.

use super::Transceiver;
use crate::transceiver::{control, Error};

impl Transceiver {
    pub(super) fn serve_control(&mut self) {
        let Some(socket) = &self.control else {
            return;
        };
        let message = match socket.recv_msg(zmq::DONTWAIT) {
            Ok(message) => message,
            Err(zmq::Error::EAGAIN) => return,
            Err(err) => {
                log::warn!("control socket: {err}");
                return;
            }
        };
        let (answer, action) = control::interpret(&message);
        if let Err(err) = socket.send(answer, 0) {
            log::warn!("control socket reply: {err}");
        }
        control::act(self, action);
    }

    /// Answers a control `__ping__` through `sender`'s own PUB, so its arrival proves that
    /// path works: the bare text for METHOD `MONGREL2` (what the seed's Server compares
    /// with its GUID), an HTTP response otherwise, as the seed does.
    fn answer_ping(
        &mut self,
        sender: &str,
        conn_id: Option<u64>,
        text: String,
        bare: bool,
    ) -> Result<(), Error> {
        let message = control::ping_answer(sender, conn_id, text, bare)?;
        // Whatever the core queued earlier goes first, as it would have without this ping.
        self.flush()?;
        let connection = self
            .connections
            .iter()
            .find(|c| &*c.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        connection.send(message)
    }
}

impl control::Target for Transceiver {
    fn add_connection(&mut self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        Transceiver::add_connection(self, sender, pull, publish)
    }
    fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        Transceiver::remove_connection(self, sender)
    }
    fn answer_ping(
        &mut self,
        sender: &str,
        conn_id: Option<u64>,
        text: String,
        bare: bool,
    ) -> Result<(), Error> {
        Transceiver::answer_ping(self, sender, conn_id, text, bare)
    }
}
