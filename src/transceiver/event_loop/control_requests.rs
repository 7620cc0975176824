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
        let result = match action {
            Ok(None) => Ok(()),
            Ok(Some(control::Action::Add {
                sender,
                pull,
                publish,
            })) => self.add_connection(&sender, &pull, &publish),
            Ok(Some(control::Action::Remove { sender })) => self.remove_connection(&sender),
            Ok(Some(control::Action::Ping {
                sender,
                conn_id,
                text,
                bare,
            })) => self.answer_ping(&sender, conn_id, text, bare),
            Err(err) => {
                log::warn!("control request ignored: {err}");
                Ok(())
            }
        };
        if let Err(err) = result {
            log::warn!("control request failed: {err}");
        }
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
