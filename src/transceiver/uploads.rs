//! Which temp-file upload notices are believable.
//!
//! Mongrel2 passes client headers through unchanged, so a client can send
//! `X-Mongrel2-Upload-Start` / `-Done` itself and name any file (`/etc/passwd`), which the
//! handler would then read and delete. A notice is taken for an upload only when it could
//! have come from Mongrel2's upload path:
//!
//! * a temp store is configured, and the path is that template with its trailing `XXXXXX`
//!   replaced by six letters or digits, as `mkstemp` does;
//! * a done notice names the same path in both headers (Mongrel2 sets both);
//! * the message body is empty although the request declared one (`Content-Length` above
//!   zero, or chunked): Mongrel2 forwards bodies up to `limits.content_length` inline, and
//!   only requests over it (or chunked) take the upload path, where Mongrel2 *replaces*
//!   the client's header with its own;
//! * a done notice for a connection whose start this process saw names the same path.
//!   A start seen by another process (Mongrel2 round-robins messages over every handler
//!   process) leaves nothing here, so the done is judged by the other rules alone.

use std::collections::VecDeque;

use super::{ConnId, Error};
use crate::request::Request;

/// How many started uploads are remembered; the oldest is forgotten first. Forgetting
/// one only drops the extra same-path check for its done notice.
pub(super) const MAX_STARTED_UPLOADS: usize = 1024;

const TEMPLATE_SUFFIX: &str = "XXXXXX";

/// Mongrel2's `upload.temp_store`, split at the `XXXXXX` `mkstemp` fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TempStore {
    prefix: String,
}

impl TempStore {
    pub(super) fn new(template: &str) -> Result<TempStore, Error> {
        let prefix = template.strip_suffix(TEMPLATE_SUFFIX).ok_or_else(|| {
            Error::Config(format!(
                "upload temp store {template:?} must end in XXXXXX, as Mongrel2's upload.temp_store"
            ))
        })?;
        Ok(TempStore {
            prefix: prefix.to_owned(),
        })
    }

    /// Whether `path` is a name `mkstemp` could have made from the template.
    pub(super) fn holds(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|tail| tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
    }
}

/// Which upload notices are believed, and the starts this process saw.
#[derive(Debug, Default)]
pub(super) struct UploadNotices {
    store: Option<TempStore>,
    started: VecDeque<(ConnId, String)>,
}

/// Whether a notice is a start or a done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    Start,
    Done,
}

impl UploadNotices {
    pub(super) fn set_store(&mut self, store: Option<TempStore>) {
        self.store = store;
        self.started.clear();
    }

    /// `Ok` when the notice is believable (a start is then remembered, a done forgets its
    /// start); otherwise why not.
    pub(super) fn judge(
        &mut self,
        conn: &ConnId,
        notice: Notice,
        request: &Request<'_>,
    ) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Err("no upload temp store is configured".into());
        };
        let start = request.upload_start();
        let path = match (notice, start, request.upload_done()) {
            (Notice::Start, Some(start), None) => start,
            (Notice::Done, Some(start), Some(done)) if start == done => done,
            (Notice::Done, Some(start), Some(done)) => {
                return Err(format!("start {start:?} and done {done:?} differ"))
            }
            (Notice::Done, None, Some(_)) => return Err("done without a start header".into()),
            _ => return Err("not an upload notice".into()),
        };
        if !store.holds(path) {
            return Err(format!("{path:?} is not in the upload temp store"));
        }
        if !request.body().is_empty() || !declares_body(request) {
            return Err("the request did not take Mongrel2's upload path".into());
        }
        let seen = self.started.iter().position(|(c, _)| c == conn);
        match notice {
            Notice::Start => {
                // A new upload on a keep-alive connection replaces an abandoned one.
                if let Some(at) = seen {
                    self.started.remove(at);
                }
                if self.started.len() == MAX_STARTED_UPLOADS {
                    self.started.pop_front();
                }
                self.started.push_back((conn.clone(), path.to_owned()));
            }
            Notice::Done => {
                if let Some((_, started)) = seen.and_then(|at| self.started.remove(at)) {
                    if started != path {
                        return Err(format!("this process saw the upload start as {started:?}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection is gone: its upload will not finish.
    pub(super) fn forget(&mut self, conn: &ConnId) {
        self.started.retain(|(c, _)| c != conn);
    }

    pub(super) fn forget_sender(&mut self, sender: &str) {
        self.started.retain(|(c, _)| &*c.sender != sender);
    }

    #[cfg(test)]
    pub(super) fn started_len(&self) -> usize {
        self.started.len()
    }
}

/// Whether the request declared a body: only such requests take the upload path.
fn declares_body(request: &Request<'_>) -> bool {
    let content_length = request
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = request
        .header_all("transfer-encoding")
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
    content_length.is_some_and(|len| len > 0) || chunked
}
