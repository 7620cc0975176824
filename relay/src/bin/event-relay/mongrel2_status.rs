//! Mongrel2's own view of its clients for `/events/status`: with `--mongrel2-control`, a
//! thread asks each Mongrel2 control port for its open connections (`status what=net`) every
//! [`POLL_INTERVAL`] and keeps the latest answer.
//!
//! The asking happens off the relay's loop because a control port that does not answer costs
//! a whole timeout, and the loop must never wait on Mongrel2's control thread. The thread has
//! its own ZeroMQ context, so ending the relay's context never waits for it.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mongrel2_transceiver::control_port;

use super::metrics::{Mongrel2Connection, Mongrel2Status};

/// How often each control port is asked.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long one answer may take before the endpoint is reported as not answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections listed per Mongrel2 in the status document (the count covers all of them).
const LISTED: usize = 100;

/// The latest answer of each control port, refreshed by a background thread.
pub struct Mongrel2Watch {
    latest: Arc<Mutex<Vec<Answer>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Answer {
    endpoint: String,
    at: Option<Instant>,
    result: Result<Vec<control_port::Connection>, String>,
}

impl Mongrel2Watch {
    /// Starts asking `endpoints` (nothing runs when the list is empty).
    pub fn start(endpoints: &[String]) -> Mongrel2Watch {
        let latest: Vec<Answer> = endpoints
            .iter()
            .map(|endpoint| Answer {
                endpoint: endpoint.clone(),
                at: None,
                result: Err("not asked yet".to_owned()),
            })
            .collect();
        let latest = Arc::new(Mutex::new(latest));
        if endpoints.is_empty() {
            return Mongrel2Watch {
                latest,
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel();
        let shared = Arc::clone(&latest);
        let endpoints = endpoints.to_vec();
        let thread = std::thread::Builder::new()
            .name("mongrel2-status".to_owned())
            .spawn(move || poll(&endpoints, &shared, &stopped));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::warn!("cannot start the Mongrel2 status thread: {e}");
                None
            }
        };
        Mongrel2Watch {
            latest,
            stop: Some(stop),
            thread,
        }
    }

    /// What the status document shows (`None` without `--mongrel2-control`).
    pub fn stats(&self, now: Instant) -> Option<Vec<Mongrel2Status>> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if latest.is_empty() {
            return None;
        }
        Some(latest.iter().map(|answer| answer.status(now)).collect())
    }
}

impl Answer {
    fn status(&self, now: Instant) -> Mongrel2Status {
        let age_ms = self.at.map(|at| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        });
        let (open, connections, error) = match &self.result {
            Ok(connections) => (
                Some(connections.len()),
                connections.iter().take(LISTED).map(listed).collect(),
                None,
            ),
            Err(e) => (None, Vec::new(), Some(e.clone())),
        };
        Mongrel2Status {
            endpoint: self.endpoint.clone(),
            open_connections: open,
            connections,
            answered_ms_ago: age_ms,
            error,
        }
    }
}

fn listed(connection: &control_port::Connection) -> Mongrel2Connection {
    Mongrel2Connection {
        id: connection.id,
        last_read_secs: connection.last_read,
        last_write_secs: connection.last_write,
        bytes_read: connection.bytes_read,
        bytes_written: connection.bytes_written,
    }
}

fn poll(endpoints: &[String], latest: &Mutex<Vec<Answer>>, stopped: &mpsc::Receiver<()>) {
    let context = zmq::Context::new();
    loop {
        for (index, endpoint) in endpoints.iter().enumerate() {
            let result = control_port::open_connections(&context, endpoint, ANSWER_TIMEOUT)
                .map_err(|e| {
                    log::debug!("Mongrel2 status from {endpoint}: {e}");
                    e.to_string()
                });
            let mut latest = latest.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(answer) = latest.get_mut(index) {
                // A failed ask keeps when the last answer came, so the age tells how stale.
                if result.is_ok() {
                    answer.at = Some(Instant::now());
                }
                answer.result = result;
            }
        }
        match stopped.recv_timeout(POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Drop for Mongrel2Watch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // At most one ANSWER_TIMEOUT: the thread checks for the stop between asks.
            let _ = thread.join();
        }
    }
}
