//! The headers Mongrel2 1.12 puts into the requests it forwards, in the order it writes
//! them (checked against captures of a real Mongrel2; see tests/data/).
//!
//! Mongrel2 writes a request's client headers (names lower-cased, a repeated header as a
//! list of up to five values, `x-forwarded-for` overwritten with the peer address) plus
//! the situational headers it adds to that table (FLAGS, DOWNLOAD_CREDITS, UPLOAD_STREAM,
//! x-mongrel2-upload-*), and then its own: PATH, METHOD, VERSION, URI, QUERY, FRAGMENT,
//! PATTERN, URL_SCHEME, REMOTE_ADDR. JSON headers start with PATH and end with the others;
//! tnetstring headers come out in reverse (its encoder writes back to front).

use crate::request::{HeaderProtocol, Request};

use super::HarnessError;

/// Mongrel2 refuses a request with a header repeated more than this many times.
pub(crate) const MAX_DUPLICATES: usize = 5;
/// Mongrel2's default `limits.header_count`.
pub(crate) const MAX_HEADERS: usize = 128 * 10;

/// One header value: Mongrel2 turns a repeated header into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    One(String),
    Many(Vec<String>),
}

/// A Mongrel2 request's header table, in wire order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    entries: Vec<(String, Value)>,
}

impl Table {
    /// Sets `name` (replacing any value), like Mongrel2's `Request_set(..., replace=1)`.
    pub(crate) fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = Value::One(value.into());
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name.to_owned(), value)),
        }
    }

    /// Adds a client header: names are lower-cased and repeats become a list.
    pub(crate) fn add_client(&mut self, name: &str, value: &str) -> Result<(), HarnessError> {
        let name = name.to_ascii_lowercase();
        let Some(entry) = self.entries.iter_mut().find(|(n, _)| *n == name) else {
            if self.entries.len() >= MAX_HEADERS {
                return Err(HarnessError::Unsendable(format!(
                    "more than {MAX_HEADERS} headers"
                )));
            }
            self.entries.push((name, Value::One(value.to_owned())));
            return Ok(());
        };
        match &mut entry.1 {
            Value::One(first) => {
                entry.1 = Value::Many(vec![std::mem::take(first), value.to_owned()]);
            }
            Value::Many(values) => {
                if values.len() >= MAX_DUPLICATES {
                    return Err(HarnessError::Unsendable(format!(
                        "header {name:?} repeated more than {MAX_DUPLICATES} times"
                    )));
                }
                values.push(value.to_owned());
            }
        }
        Ok(())
    }

    /// The first value of `name` (exact match).
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, value)| match value {
                Value::One(one) => Some(one.as_str()),
                Value::Many(many) => many.first().map(String::as_str),
            })
    }

    /// Whether a header of this (lower-case) name is present.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    pub(crate) fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }
}

/// What Mongrel2 knows about the HTTP request line and the route it matched.
#[derive(Debug, Clone)]
pub(crate) struct Line<'a> {
    pub(crate) method: &'a str,
    pub(crate) version: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) fragment: Option<&'a str>,
    pub(crate) pattern: &'a str,
    pub(crate) remote_addr: &'a str,
}

/// Splits a request target into path, query and fragment the way Mongrel2 reports them.
pub(crate) fn split_target(target: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, fragment) = match target.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (target, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    (path, query, fragment)
}

/// Encodes a full HTTP-style request (client headers plus Mongrel2's own) the way
/// Mongrel2 would send it to a handler.
pub(crate) fn encode_http(
    sender: &str,
    conn_id: u64,
    line: &Line<'_>,
    client: &Table,
    body: &[u8],
    protocol: HeaderProtocol,
) -> Vec<u8> {
    let uri = match line.query {
        Some(query) => format!("{}?{query}", line.path),
        None => line.path.to_owned(),
    };
    let mut own: Vec<(&str, &str)> = vec![
        ("METHOD", line.method),
        ("VERSION", line.version),
        ("URI", &uri),
    ];
    if let Some(query) = line.query {
        own.push(("QUERY", query));
    }
    if let Some(fragment) = line.fragment {
        own.push(("FRAGMENT", fragment));
    }
    own.push(("PATTERN", line.pattern));
    own.push(("URL_SCHEME", "http"));
    own.push(("REMOTE_ADDR", line.remote_addr));

    let mut request = Request::new(sender, conn_id, line.path).with_protocol(protocol);
    match protocol {
        HeaderProtocol::Json => {
            request = request.with_header("PATH", line.path);
            request = add_table(request, client.entries().iter());
            for (name, value) in own {
                request = request.with_header(name, value);
            }
        }
        HeaderProtocol::Tnetstring => {
            // Mongrel2's tnetstring writer puts METHOD after URL_SCHEME (the JSON one
            // right after the client headers), then reverses everything.
            let method = own.remove(0);
            let at = own.len() - 1;
            own.insert(at, method);
            for (name, value) in own.into_iter().rev() {
                request = request.with_header(name, value);
            }
            request = request.with_header("PATH", line.path);
            request = add_table(request, client.entries().iter().rev());
        }
    }
    request.with_body(body.to_vec()).encode()
}

/// Encodes a request whose headers are exactly `table` (Mongrel2's "alt headers": the
/// disconnect and credits notices and upload stream chunks).
pub(crate) fn encode_bare(
    sender: &str,
    conn_id: u64,
    path: &str,
    table: &Table,
    body: &[u8],
    protocol: HeaderProtocol,
) -> Vec<u8> {
    let request = Request::new(sender, conn_id, path).with_protocol(protocol);
    let request = match protocol {
        HeaderProtocol::Json => add_table(request, table.entries().iter()),
        HeaderProtocol::Tnetstring => add_table(request, table.entries().iter().rev()),
    };
    request.with_body(body.to_vec()).encode()
}

fn add_table<'r, 't>(
    mut request: Request<'r>,
    entries: impl Iterator<Item = &'t (String, Value)>,
) -> Request<'r> {
    for (name, value) in entries {
        match value {
            Value::One(one) => request = request.with_header(name.clone(), one.clone()),
            Value::Many(many) => {
                for one in many {
                    request = request.with_header(name.clone(), one.clone());
                }
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_like_mongrel2() {
        assert_eq!(
            split_target("/handler/get?a=1&b=two%20words#frag"),
            ("/handler/get", Some("a=1&b=two%20words"), Some("frag"))
        );
        assert_eq!(split_target("/x"), ("/x", None, None));
        assert_eq!(
            split_target("/x#f?not-query"),
            ("/x", None, Some("f?not-query"))
        );
    }

    #[test]
    fn client_headers_lower_case_and_list_repeats() {
        let mut table = Table::default();
        table.add_client("X-Dup", "one").unwrap();
        table.add_client("x-dup", "two").unwrap();
        table.add_client("Host", "localhost").unwrap();
        assert_eq!(
            table.entries()[0],
            (
                "x-dup".to_owned(),
                Value::Many(vec!["one".into(), "two".into()])
            )
        );
        assert_eq!(table.get("host"), Some("localhost"));
        for value in ["3", "4", "5"] {
            table.add_client("x-dup", value).unwrap();
        }
        assert!(matches!(
            table.add_client("x-dup", "6"),
            Err(HarnessError::Unsendable(_))
        ));
    }
}
