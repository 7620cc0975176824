//! The control socket protocol (wire-compatible with the seed's Connector).
//!
//! A raw `PING` (any case) is answered `PONG`. Anything else is answered `RECEIVED`, parsed
//! as a Mongrel2 request, and acted on by the last segment of its path. The seed's
//! Connector sends every command from connection id `-1`, `__add_connection__` and
//! `__remove_connection__` with METHOD `JSON`, `__ping__` and `__disconnect_ping__` with
//! METHOD `MONGREL2`; the sender is any id without spaces.

use serde::Deserialize;

use crate::request::Request;

pub(crate) const PONG: &[u8] = b"PONG";
pub(crate) const RECEIVED: &[u8] = b"RECEIVED";

/// What a control request asks the loop to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Connect a PULL to `pull` and a PUB to `publish` for `sender`.
    Add {
        sender: String,
        pull: String,
        publish: String,
    },
    /// Drop the connection of `sender`.
    Remove { sender: String },
    /// Reply `text` through `sender`'s PUB to connection `conn_id` (`None`: the seed's
    /// `-1`), bare for METHOD `MONGREL2`, as an HTTP response for any other method.
    Ping {
        sender: String,
        conn_id: Option<u64>,
        text: String,
        bare: bool,
    },
}

#[derive(Deserialize)]
struct AddBody {
    push: (String, Port),
    sub: (String, Port),
}

/// The seed sends ports as numbers; accept strings too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

impl Port {
    fn get(&self) -> Option<u16> {
        match self {
            Port::Number(port) => Some(*port),
            Port::Text(text) => text.trim().parse().ok(),
        }
    }
}

/// The reply to send, and what to do (if the request made sense).
pub(crate) fn interpret(message: &[u8]) -> (&'static [u8], Result<Option<Action>, String>) {
    if message.eq_ignore_ascii_case(b"PING") {
        return (PONG, Ok(None));
    }
    (RECEIVED, action(message))
}

fn action(message: &[u8]) -> Result<Option<Action>, String> {
    let (request, conn_id) = Request::parse_control(message)
        .map_err(|err| format!("unparsable control request: {err}"))?;
    let command = request.path().rsplit('/').next().unwrap_or_default();
    let sender = request.sender().to_owned();
    match command {
        "__add_connection__" => {
            if request.method() != Some("JSON") {
                return Err(format!(
                    "__add_connection__ wants METHOD JSON, got {:?}",
                    request.method()
                ));
            }
            let body: AddBody = serde_json::from_slice(request.body())
                .map_err(|err| format!("__add_connection__ body: {err}"))?;
            Ok(Some(Action::Add {
                sender,
                pull: endpoint(&body.push)?,
                publish: endpoint(&body.sub)?,
            }))
        }
        "__remove_connection__" => Ok(Some(Action::Remove { sender })),
        "__ping__" => {
            let text = request
                .query_pairs()
                .into_iter()
                .find(|(key, _)| key == "text")
                .map(|(_, value)| value)
                .ok_or_else(|| "__ping__ without text= in its query".to_owned())?;
            Ok(Some(Action::Ping {
                sender,
                conn_id,
                text,
                bare: request.method() == Some("MONGREL2"),
            }))
        }
        "__disconnect_ping__" => Ok(None),
        other => Err(format!("unknown control command {other:?}")),
    }
}

/// What a loop (blocking or async) does for a control request; [`act`] dispatches to it.
pub(crate) trait Target {
    fn add_connection(
        &mut self,
        sender: &str,
        pull: &str,
        publish: &str,
    ) -> Result<(), crate::Error>;
    fn remove_connection(&mut self, sender: &str) -> Result<(), crate::Error>;
    /// Sends `message` through `sender`'s own PUB, after whatever the loop queued before it
    /// (as it would have gone without the control request).
    fn send_after_queued(&mut self, sender: &str, message: Vec<u8>) -> Result<(), crate::Error>;
}

/// Carries out what [`interpret`] made of a request; failures are logged, never fatal.
pub(crate) fn act(target: &mut impl Target, action: Result<Option<Action>, String>) {
    let result = match action {
        Ok(None) => Ok(()),
        Ok(Some(Action::Add {
            sender,
            pull,
            publish,
        })) => target.add_connection(&sender, &pull, &publish),
        Ok(Some(Action::Remove { sender })) => target.remove_connection(&sender),
        Ok(Some(Action::Ping {
            sender,
            conn_id,
            text,
            bare,
        })) => ping_answer(&sender, conn_id, text, bare)
            .and_then(|message| target.send_after_queued(&sender, message)),
        Err(err) => {
            log::warn!("control request ignored: {err}");
            Ok(())
        }
    };
    if let Err(err) = result {
        log::warn!("control request failed: {err}");
    }
}

/// The message that answers a control `__ping__` through `sender`'s own PUB: the bare text
/// for METHOD `MONGREL2` (what the seed's Server compares with its GUID), an HTTP response
/// otherwise, as the seed does; to connection `-1` when the request came from it.
pub(crate) fn ping_answer(
    sender: &str,
    conn_id: Option<u64>,
    text: String,
    bare: bool,
) -> Result<Vec<u8>, crate::Error> {
    let body = if bare {
        text.into_bytes()
    } else {
        crate::http::Response::ok().body(text).encode()?
    };
    Ok(match conn_id {
        Some(id) => crate::reply::reply(sender, &[id], &body)?,
        None => crate::reply::to_control_connection(sender, &body)?,
    })
}

fn endpoint((host, port): &(String, Port)) -> Result<String, String> {
    let port = port
        .get()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("bad port for host {host:?}"))?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(format!("bad host {host:?}"));
    }
    Ok(format!("tcp://{host}:{port}"))
}

#[cfg(test)]
mod tests;
