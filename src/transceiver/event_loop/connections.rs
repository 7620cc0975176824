//! The loop's Mongrel2 connections: adding and removing servers while running, and whether
//! each server's SUB has subscribed to its PUB yet.

use std::time::{Duration, Instant};

use super::Transceiver;
use crate::transceiver::connection::Connection;
use crate::transceiver::waiting;
use crate::transceiver::Error;

impl Transceiver {
    /// The sender ids of every connected Mongrel2 server.
    pub fn senders(&self) -> impl Iterator<Item = &str> {
        self.connections.iter().map(|c| &*c.sender)
    }

    /// Connects to one more Mongrel2 server while running. Replies to its requests go out
    /// through its own PUB.
    pub fn add_connection(&mut self, sender: &str, pull: &str, publish: &str) -> Result<(), Error> {
        self.core.add_server(sender)?;
        let shared = self.core.server_of(sender)?;
        match Connection::open(
            &self.context,
            self.transport,
            self.max_frame,
            shared,
            pull,
            publish,
        ) {
            Ok(connection) => {
                log::info!("connected to Mongrel2 {sender}: pull {pull}, publish {publish}");
                self.connections.push(connection);
                Ok(())
            }
            Err(err) => {
                let _ = self.core.remove_server(sender);
                Err(err)
            }
        }
    }

    /// Disconnects from a Mongrel2 server; its sessions are reported closed
    /// ([`CloseReason::Disconnected`](crate::CloseReason::Disconnected)).
    pub fn remove_connection(&mut self, sender: &str) -> Result<(), Error> {
        let index = self
            .connections
            .iter()
            .position(|c| &*c.sender == sender)
            .ok_or_else(|| Error::UnknownSender(sender.to_owned()))?;
        let _ = self.flush();
        let connection = self.connections.remove(index);
        self.core.remove_server(sender)?;
        log::info!(
            "disconnected from Mongrel2 {sender} ({}, {})",
            connection.pull_endpoint,
            connection.publish_endpoint
        );
        Ok(())
    }

    /// Whether Mongrel2's SUB has subscribed to this connection's PUB, i.e. whether replies
    /// sent now will be heard. `None` for an unknown sender.
    pub fn is_ready(&mut self, sender: &str) -> Option<bool> {
        let connection = self.connections.iter_mut().find(|c| &*c.sender == sender)?;
        connection.drain_subscriptions();
        Some(connection.subscribed)
    }

    /// Waits until every Mongrel2 server's SUB has subscribed (PUB drops what it sends
    /// before that). Requests that arrive meanwhile stay queued. Returns false on timeout.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            let now = Instant::now();
            for connection in &mut self.connections {
                connection.handle_timeout(now);
                connection.drain_subscriptions();
                all &= connection.subscribed;
            }
            if all {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(false);
            }
            let watches: Vec<_> = self
                .connections
                .iter()
                .filter(|c| !c.subscribed)
                .map(Connection::subscription_watch)
                .collect();
            let until = self
                .connections
                .iter()
                .filter_map(Connection::next_timeout)
                .fold(deadline, Instant::min);
            waiting::wait(
                &watches,
                Some(until.saturating_duration_since(now)),
                &mut Vec::new(),
            )?;
        }
    }

    /// Warns about connections Mongrel2 has not subscribed to in time; returns when the
    /// next such check is due.
    pub(super) fn check_subscriptions(&mut self, now: Instant) -> Option<Instant> {
        let grace = self.subscription_timeout?;
        let mut next: Option<Instant> = None;
        for connection in &mut self.connections {
            connection.check_subscribed(now, grace);
            if let Some(due) = connection.warning_due(grace) {
                next = Some(next.map_or(due, |next| next.min(due)));
            }
        }
        next
    }
}
