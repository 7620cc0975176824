//! The table every control-port answer is, and the typed rows read from it.

use serde::Serialize;

use crate::tnetstring::Value;

/// A control-port answer: column names and rows of tnetstring cells, as Mongrel2 sent them
/// (`{"headers": [...], "rows": [[...], ...]}`). Every row has one cell per header.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Value<'static>>>,
}

impl Table {
    /// Reads a table from a parsed answer; `Err` says what is wrong with it.
    pub(crate) fn from_value(value: &Value<'_>) -> Result<Table, String> {
        let dict = value.as_dict().ok_or("the answer is not a dict")?;
        let headers = dict
            .get("headers")
            .and_then(Value::as_list)
            .ok_or("no \"headers\" list")?
            .iter()
            .map(|h| h.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("a header is not a UTF-8 string")?;
        let rows = dict
            .get("rows")
            .and_then(Value::as_list)
            .ok_or("no \"rows\" list")?
            .iter()
            .map(|row| match row.as_list() {
                Some(cells) if cells.len() == headers.len() => {
                    Ok(cells.iter().cloned().map(Value::into_owned).collect())
                }
                Some(cells) => Err(format!(
                    "a row has {} cells for {} headers",
                    cells.len(),
                    headers.len()
                )),
                None => Err("a row is not a list".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Table { headers, rows })
    }

    /// The column names.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The rows, each with one cell per header.
    pub fn rows(&self) -> &[Vec<Value<'static>>] {
        &self.rows
    }

    /// The index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The cell of row `row` in the column called `name`.
    pub fn cell(&self, row: usize, name: &str) -> Option<&Value<'static>> {
        self.rows.get(row)?.get(self.column(name)?)
    }

    /// Every cell as text, for printing: strings as they are, numbers in decimal.
    pub fn text_rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| row.iter().map(cell_text).collect())
            .collect()
    }
}

/// A cell as text, for printing.
pub fn cell_text(cell: &Value<'_>) -> String {
    match cell {
        Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other
            .to_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
    }
}

/// One open client connection, a row of `status what=net`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Connection {
    /// The connection id handlers see (`ConnId::id`); `None` until Mongrel2 has given the
    /// connection one (it does so when the first request reaches a handler).
    pub id: Option<u64>,
    /// Mongrel2's file descriptor for the socket.
    pub fd: i64,
    /// Mongrel2's internal connection type number.
    pub kind: i64,
    /// Seconds since the last ping, 0 if never.
    pub last_ping: i64,
    /// Seconds since the last read, 0 if never.
    pub last_read: i64,
    /// Seconds since the last write, 0 if never.
    pub last_write: i64,
    /// Bytes read from the client.
    pub bytes_read: i64,
    /// Bytes written to the client.
    pub bytes_written: i64,
}

/// One Mongrel2 task (coroutine), a row of `status what=tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Task {
    /// The task number.
    pub id: i64,
    /// Whether it is a system task.
    pub system: bool,
    /// Its name, e.g. `control` or `HANDLER tcp://...`.
    pub name: String,
    /// What it is doing, e.g. `waiting`.
    pub state: String,
    /// Mongrel2's status word for it (`running`, `idle`, `ready`).
    pub status: String,
}

/// The server's configuration as it runs, the answer to `info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// HTTP port.
    pub port: i64,
    /// Address the HTTP listener is bound to.
    pub bind_addr: String,
    /// The server's uuid.
    pub uuid: String,
    /// Its chroot.
    pub chroot: String,
    /// Access log path (inside the chroot).
    pub access_log: String,
    /// Error log path (inside the chroot).
    pub error_log: String,
    /// Pid file path (inside the chroot).
    pub pid_file: String,
    /// The default host name.
    pub default_hostname: String,
}

/// One command the control port knows, a row of `help`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandHelp {
    /// The command name.
    pub name: String,
    /// Mongrel2's one-line description.
    pub help: String,
}

/// Reads the named columns of each row; `Err` names the first missing or mistyped one.
pub(crate) struct Rows<'t> {
    table: &'t Table,
}

impl<'t> Rows<'t> {
    pub(crate) fn new(table: &'t Table) -> Self {
        Rows { table }
    }

    pub(crate) fn int(&self, row: usize, name: &str) -> Result<i64, String> {
        self.table
            .cell(row, name)
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
            .ok_or_else(|| format!("no integer {name:?} column"))
    }

    pub(crate) fn text(&self, row: usize, name: &str) -> Result<String, String> {
        self.table
            .cell(row, name)
            .map(cell_text)
            .ok_or_else(|| format!("no {name:?} column"))
    }

    pub(crate) fn flag(&self, row: usize, name: &str) -> Result<bool, String> {
        let cell = self
            .table
            .cell(row, name)
            .ok_or_else(|| format!("no {name:?} column"))?;
        Ok(match cell {
            Value::Bool(b) => *b,
            Value::Integer(i) => *i != 0,
            other => matches!(cell_text(other).as_str(), "true" | "1"),
        })
    }
}

impl Connection {
    pub(crate) fn from_table(table: &Table) -> Result<Vec<Connection>, String> {
        let r = Rows::new(table);
        (0..table.rows().len())
            .map(|i| {
                Ok(Connection {
                    id: u64::try_from(r.int(i, "id")?).ok(),
                    fd: r.int(i, "fd")?,
                    kind: r.int(i, "type")?,
                    last_ping: r.int(i, "last_ping")?,
                    last_read: r.int(i, "last_read")?,
                    last_write: r.int(i, "last_write")?,
                    bytes_read: r.int(i, "bytes_read")?,
                    bytes_written: r.int(i, "bytes_written")?,
                })
            })
            .collect()
    }
}

impl Task {
    pub(crate) fn from_table(table: &Table) -> Result<Vec<Task>, String> {
        let r = Rows::new(table);
        (0..table.rows().len())
            .map(|i| {
                Ok(Task {
                    id: r.int(i, "id")?,
                    system: r.flag(i, "system")?,
                    name: r.text(i, "name")?,
                    state: r.text(i, "state")?,
                    status: r.text(i, "status")?,
                })
            })
            .collect()
    }
}

impl ServerInfo {
    pub(crate) fn from_table(table: &Table) -> Result<ServerInfo, String> {
        if table.rows().len() != 1 {
            return Err(format!("{} rows, expected 1", table.rows().len()));
        }
        let r = Rows::new(table);
        Ok(ServerInfo {
            port: r.int(0, "port")?,
            bind_addr: r.text(0, "bind_addr")?,
            uuid: r.text(0, "uuid")?,
            chroot: r.text(0, "chroot")?,
            access_log: r.text(0, "access_log")?,
            error_log: r.text(0, "error_log")?,
            pid_file: r.text(0, "pid_file")?,
            default_hostname: r.text(0, "default_hostname")?,
        })
    }
}

impl CommandHelp {
    pub(crate) fn from_table(table: &Table) -> Result<Vec<CommandHelp>, String> {
        let r = Rows::new(table);
        (0..table.rows().len())
            .map(|i| {
                Ok(CommandHelp {
                    name: r.text(i, "name")?,
                    help: r.text(i, "help")?,
                })
            })
            .collect()
    }
}
