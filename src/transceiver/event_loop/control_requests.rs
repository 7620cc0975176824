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
}

impl control::Target for Transceiver {
    fn add_connection(&mut self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        Transceiver::add_connection(self, sender, pull, publish)
    }
    fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        Transceiver::remove_connection(self, sender)
    }
    /// A ping's answer goes through `sender`'s own PUB, so its arrival proves that path.
    fn send_after_queued(&mut self, sender: &str, message: Vec<u8>) -> Result<(), Error> {
        self.flush()?;
        let connection = self
            .connections
            .iter_mut()
            .find(|c| &*c.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        connection.send(message)?;
        connection.write_queued();
        Ok(())
    }
}
