//! Handler routes from a Mongrel2 config database, the sqlite file `m2sh load` writes
//! (feature `config`).
//!
//! A handler can then be started as `--config config.sqlite --handler echo` and find its
//! endpoints and identity instead of repeating them in flags.
//!
//! **What a handler's name is.** m2sh's schema has no name for a handler: the variable name
//! in `mongrel2.conf` (`echo_handler = Handler(...)`) is lost on load, and the `handler`
//! table holds only `send_spec`, `send_ident`, `recv_spec`, `recv_ident`, `raw_payload` and
//! `protocol`. What survives are the routes that point at it, so [`ConfigDb::handler`]
//! looks a name up as, in this order of preference:
//! 1. a route path, exactly (`/echo`, `@chat`);
//! 2. a route path without its leading `/` and trailing `/` (`echo` for `/echo` or `/echo/`);
//! 3. a `send_ident`.
//!
//! The first rule that finds anything decides. Several routes to the one handler are
//! fine; routes to different handlers (the same path on two hosts) are
//! [`ConfigError::Ambiguous`]: use [`ConfigDb::handler_at`] with the host then.
//!
//! ```no_run
//! use mongrel2_transceiver::config::ConfigDb;
//!
//! # fn main() -> Result<(), mongrel2_transceiver::config::ConfigError> {
//! let db = ConfigDb::open("config.sqlite")?;
//! let echo = db.handler("echo")?;
//! println!("{} pulls from {}", echo.handler.send_ident, echo.handler.send_spec);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::request::HeaderProtocol;

/// Why the config database could not be read or did not have what was asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened as an sqlite database.
    #[error("config database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed: the file is not a database `m2sh load` wrote.
    #[error("config database {}: not an m2sh database? {source}", path.display())]
    Query {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// No route or handler goes by that name.
    #[error("config database {}: no handler {name:?}; handler routes: {}", path.display(), known.join(", "))]
    NotFound {
        /// The database file.
        path: PathBuf,
        /// The name looked up.
        name: String,
        /// The handler routes there are (`host path`).
        known: Vec<String>,
    },
    /// The name leads to more than one handler.
    #[error("config database {}: {name:?} names several handlers: {}", path.display(), candidates.join(", "))]
    Ambiguous {
        /// The database file.
        path: PathBuf,
        /// The name looked up.
        name: String,
        /// The matching routes (`host path -> send_ident`).
        candidates: Vec<String>,
    },
    /// A handler row holds something Mongrel2 would not accept.
    #[error("config database {}: handler {id}: {reason}", path.display())]
    Invalid {
        /// The database file.
        path: PathBuf,
        /// The handler's row id.
        id: i64,
        /// What is wrong.
        reason: String,
    },
}

/// One `Handler(...)` as Mongrel2 will use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HandlerSpec {
    /// The row id in the `handler` table.
    pub id: i64,
    /// Where Mongrel2 binds its PUSH: the handler's PULL connects here.
    pub send_spec: String,
    /// Mongrel2's identity there: the SENDER of every request, the handler's sender id.
    pub send_ident: String,
    /// Where Mongrel2 binds its SUB: the handler's PUB connects here.
    pub recv_spec: String,
    /// Mongrel2's subscription prefix; replies must start with it (empty: any).
    pub recv_ident: String,
    /// How request headers are encoded.
    #[serde(skip)]
    pub protocol: HeaderProtocol,
    /// `raw_payload`: raw-socket messages arrive without the JSON wrapper.
    pub raw_payload: bool,
}

/// A route that leads to a handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HandlerRoute {
    /// The route pattern, e.g. `/echo`.
    pub path: String,
    /// The host's name, e.g. `localhost`.
    pub host: String,
    /// The uuid of the server the host belongs to.
    pub server_uuid: String,
    /// The handler it leads to.
    pub handler: HandlerSpec,
}

/// One `Server(...)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerEntry {
    /// The uuid Mongrel2 is started with.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Its chroot (relative paths, such as the default control endpoint, start there).
    pub chroot: String,
    /// HTTP port.
    pub port: i64,
    /// Its control endpoint: the Server's `control_port`, else the `control_port` setting,
    /// else [`DEFAULT_ENDPOINT`](crate::control_port::DEFAULT_ENDPOINT) (both forms
    /// verified with Mongrel2 1.12.2).
    pub control_endpoint: String,
}

/// An open config database (read only).
#[derive(Debug)]
pub struct ConfigDb {
    path: PathBuf,
    db: Connection,
}

impl ConfigDb {
    /// Opens `path` read only. It must exist: SQLite would otherwise create an empty one.
    pub fn open(path: impl AsRef<Path>) -> Result<ConfigDb, ConfigError> {
        let path = path.as_ref().to_path_buf();
        let db = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| ConfigError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(ConfigDb { path, db })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every route that leads to a handler, in the order m2sh wrote them.
    pub fn routes(&self) -> Result<Vec<HandlerRoute>, ConfigError> {
        let mut statement = self
            .db
            .prepare(
                "SELECT route.path, host.name, server.uuid, handler.id, handler.send_spec, \
                        handler.send_ident, handler.recv_spec, handler.recv_ident, \
                        handler.protocol, handler.raw_payload \
                 FROM route JOIN handler ON route.target_id = handler.id \
                 LEFT JOIN host ON route.host_id = host.id \
                 LEFT JOIN server ON host.server_id = server.id \
                 WHERE route.target_type = 'handler' ORDER BY route.id",
            )
            .map_err(|e| self.query_error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    text(row, 0)?,
                    text(row, 1)?,
                    text(row, 2)?,
                    row.get::<_, i64>(3)?,
                    [text(row, 4)?, text(row, 5)?, text(row, 6)?, text(row, 7)?],
                    row.get::<_, Option<String>>(8)?,
                    row.get::<_, Option<i64>>(9)?.unwrap_or(0) != 0,
                ))
            })
            .map_err(|e| self.query_error(e))?;
        let mut routes = Vec::new();
        for row in rows {
            let (path, host, server_uuid, id, specs, protocol, raw_payload) =
                row.map_err(|e| self.query_error(e))?;
            let [send_spec, send_ident, recv_spec, recv_ident] = specs;
            // m2sh's column default: a handler without `protocol` speaks JSON.
            let protocol = match protocol.as_deref().unwrap_or("json") {
                "json" => HeaderProtocol::Json,
                "tnetstring" => HeaderProtocol::Tnetstring,
                other => {
                    return Err(ConfigError::Invalid {
                        path: self.path.clone(),
                        id,
                        reason: format!("unknown protocol {other:?}"),
                    })
                }
            };
            routes.push(HandlerRoute {
                path,
                host,
                server_uuid,
                handler: HandlerSpec {
                    id,
                    send_spec,
                    send_ident,
                    recv_spec,
                    recv_ident,
                    protocol,
                    raw_payload,
                },
            });
        }
        Ok(routes)
    }

    /// The handler `name` stands for; see the [module docs](self) for what a name is.
    pub fn handler(&self, name: &str) -> Result<HandlerRoute, ConfigError> {
        let routes = self.routes()?;
        let bare = |path: &str| {
            path.trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned()
        };
        let rules: [&dyn Fn(&HandlerRoute) -> bool; 3] = [
            &|r| r.path == name,
            &|r| !name.is_empty() && bare(&r.path) == name,
            &|r| r.handler.send_ident == name,
        ];
        for rule in rules {
            let found: Vec<&HandlerRoute> = routes.iter().filter(|r| rule(r)).collect();
            if !found.is_empty() {
                return self.one(name, found);
            }
        }
        Err(self.not_found(name, &routes))
    }

    /// The handler mounted at `path` on host `host` (its name, e.g. `localhost`).
    pub fn handler_at(&self, host: &str, path: &str) -> Result<HandlerRoute, ConfigError> {
        let routes = self.routes()?;
        let found: Vec<&HandlerRoute> = routes
            .iter()
            .filter(|r| r.host == host && r.path == path)
            .collect();
        if found.is_empty() {
            return Err(self.not_found(&format!("{host} {path}"), &routes));
        }
        self.one(&format!("{host} {path}"), found)
    }

    /// Every server.
    pub fn servers(&self) -> Result<Vec<ServerEntry>, ConfigError> {
        let setting: Option<String> = self
            .db
            .query_row(
                "SELECT value FROM setting WHERE key = 'control_port' ORDER BY id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(self.query_error(other)),
            })?;
        let mut statement = self
            .db
            .prepare("SELECT uuid, name, chroot, port, control_port FROM server ORDER BY id")
            .map_err(|e| self.query_error(e))?;
        let rows = statement
            .query_map([], |row| {
                let own = text(row, 4)?;
                Ok(ServerEntry {
                    uuid: text(row, 0)?,
                    name: text(row, 1)?,
                    chroot: text(row, 2)?,
                    port: row.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    control_endpoint: match (own.is_empty(), &setting) {
                        (false, _) => own,
                        (true, Some(setting)) if !setting.is_empty() => setting.clone(),
                        _ => crate::control_port::DEFAULT_ENDPOINT.to_owned(),
                    },
                })
            })
            .map_err(|e| self.query_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.query_error(e))
    }

    fn one(&self, name: &str, found: Vec<&HandlerRoute>) -> Result<HandlerRoute, ConfigError> {
        let first = found[0];
        if found.iter().all(|r| r.handler.id == first.handler.id) {
            return Ok(first.clone());
        }
        Err(ConfigError::Ambiguous {
            path: self.path.clone(),
            name: name.to_owned(),
            candidates: found
                .iter()
                .map(|r| format!("{} {} -> {}", r.host, r.path, r.handler.send_ident))
                .collect(),
        })
    }

    fn not_found(&self, name: &str, routes: &[HandlerRoute]) -> ConfigError {
        ConfigError::NotFound {
            path: self.path.clone(),
            name: name.to_owned(),
            known: routes
                .iter()
                .map(|r| format!("{} {}", r.host, r.path))
                .collect(),
        }
    }

    fn query_error(&self, source: rusqlite::Error) -> ConfigError {
        ConfigError::Query {
            path: self.path.clone(),
            source,
        }
    }
}

/// A text column that may be NULL (m2sh leaves unset ones empty or NULL).
fn text(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<String> {
    Ok(row.get::<_, Option<String>>(index)?.unwrap_or_default())
}
