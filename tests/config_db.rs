//! Handler routes read from the config database `m2sh load` writes, and the echo example
//! started as `--config config.sqlite --handler echo` behind a real Mongrel2 1.12.2 loaded
//! from the repository's mongrel2.conf (its fixed ports swapped for free ones, so tests may
//! run in parallel).
#![cfg(feature = "config")]

use mongrel2_test_fixture as common;
use mongrel2_test_fixture::support;

#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mongrel2_transceiver::config::{ConfigDb, ConfigError};
use mongrel2_transceiver::control_port::{ControlPort, DEFAULT_ENDPOINT};
use mongrel2_transceiver::request::HeaderProtocol;
use support::get_eventually;

const WAIT: Duration = Duration::from_secs(10);
const CHILD: &str = "MONGREL2_TRANSCEIVER_CONFIG_DB_CHILD";
const SERVER_UUID: &str = "8674e1cd-c50f-4190-a01a-1ef0931dfec6";
const ECHO_IDENT: &str = "75226238-c5fe-4cb0-ac5b-877fd841e97e";
const EVENTS_IDENT: &str = "b7c1e3a2-6f0d-4c1e-9a57-3e0b8d2f4a61";

/// In a normal run: nothing. In the child: the echo example with the given flags.
#[test]
fn example_child_process() {
    let Some(args) = support::child::child_args(CHILD) else {
        return;
    };
    let result = echo::run(&echo::flags::Flags::parse_from("echo", args));
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// A child process killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own unreaped child; SIGTERM lets Mongrel2 clean up.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let stopped = common::wait_for(common::STOP_TIMEOUT, || self.0.try_wait().ok()?);
        if stopped.is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A directory holding the repository's mongrel2.conf (ports swapped for free ones, plus
/// `extra` appended) loaded into config.sqlite.
struct Loaded {
    dir: tempfile::TempDir,
    http_port: u16,
}

impl Loaded {
    fn repository_conf(edit: impl FnOnce(String) -> String) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["run", "logs", "tmp", "web"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let http_port = common::free_tcp_port();
        let mut conf =
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mongrel2.conf"))
                .unwrap()
                .replace("port=6767", &format!("port={http_port}"));
        for fixed in ["9989", "9988", "9999", "9998"] {
            conf = conf.replace(
                &format!("127.0.0.1:{fixed}'"),
                &format!("127.0.0.1:{}'", common::free_tcp_port()),
            );
        }
        let conf = edit(conf);
        fs::write(dir.path().join("mongrel2.conf"), conf).unwrap();
        let out = Command::new("m2sh")
            .args(["load", "-config", "mongrel2.conf", "-db", "config.sqlite"])
            .current_dir(dir.path())
            .output()
            .expect("m2sh runs");
        // m2sh exits 0 even when the conf does not parse; only the database tells.
        assert!(dir.path().join("config.sqlite").exists(), "{out:?}");
        Loaded { dir, http_port }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("config.sqlite")
    }

    fn start_mongrel2(&self) -> Guard {
        let child = Command::new("mongrel2")
            .args(["config.sqlite", SERVER_UUID])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mongrel2 starts");
        let guard = Guard(child);
        // The `/` route serves web/, so a missing file is a quick 404 once it serves.
        assert!(get_eventually(self.addr(), "/missing", WAIT).is_some());
        guard
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.http_port).into()
    }
}

#[test]
fn the_repository_config_names_handlers_by_route_and_send_ident() {
    let loaded = Loaded::repository_conf(|conf| conf);
    let db = ConfigDb::open(loaded.db()).unwrap();

    let echo = db.handler("echo").unwrap();
    assert_eq!(echo.path, "/echo");
    assert_eq!(echo.host, "localhost");
    assert_eq!(echo.server_uuid, SERVER_UUID);
    assert_eq!(echo.handler.send_ident, ECHO_IDENT);
    assert_eq!(echo.handler.recv_ident, "");
    assert_eq!(echo.handler.protocol, HeaderProtocol::Tnetstring);
    assert!(echo.handler.send_spec.starts_with("tcp://127.0.0.1:"));
    assert_ne!(echo.handler.send_spec, echo.handler.recv_spec);

    assert_eq!(db.handler("/echo").unwrap(), echo);
    assert_eq!(db.handler(ECHO_IDENT).unwrap(), echo);
    assert_eq!(db.handler_at("localhost", "/echo").unwrap(), echo);
    assert_eq!(
        db.handler("events").unwrap().handler.send_ident,
        EVENTS_IDENT
    );
    // `/` is a Dir, not a handler; the conf's variable names are not in the database.
    for missing in ["/", "echo_handler", "nope"] {
        match db.handler(missing) {
            Err(ConfigError::NotFound { known, .. }) => {
                assert_eq!(known, ["localhost /echo", "localhost /events"])
            }
            other => panic!("{missing}: {other:?}"),
        }
    }
    assert!(matches!(
        db.handler_at("elsewhere", "/echo"),
        Err(ConfigError::NotFound { .. })
    ));

    let servers = db.servers().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].uuid, SERVER_UUID);
    assert_eq!(servers[0].port, i64::from(loaded.http_port));
    assert_eq!(servers[0].control_endpoint, DEFAULT_ENDPOINT);
}

#[test]
fn echo_started_from_the_config_serves_through_mongrel2() {
    let loaded = Loaded::repository_conf(|conf| conf);
    let _mongrel2 = loaded.start_mongrel2();
    let flags = [
        "--config",
        loaded.db().to_str().unwrap(),
        "--handler",
        "echo",
        "--control",
        &common::free_endpoint(),
    ]
    .join("\n");
    let _echo = Guard(
        support::child::command("example_child_process", CHILD, &flags)
            .stdout(Stdio::null())
            .spawn()
            .expect("echo starts"),
    );
    let response =
        get_eventually(loaded.addr(), "/echo/from-config?x=1", WAIT).expect("echo serves /echo");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/echo/from-config");
    assert_eq!(response.json()["query"], serde_json::json!([["x", "1"]]));
}

#[test]
fn the_control_port_setting_is_found_and_answers() {
    let endpoint = common::free_endpoint();
    let loaded = Loaded::repository_conf(|conf| {
        conf.replace(
            "settings = {",
            &format!("settings = {{\n    \"control_port\": \"{endpoint}\","),
        )
    });
    let db = ConfigDb::open(loaded.db()).unwrap();
    let server = &db.servers().unwrap()[0];
    assert_eq!(server.control_endpoint, endpoint);
    let _mongrel2 = loaded.start_mongrel2();
    let mut port = ControlPort::new(&server.control_endpoint)
        .unwrap()
        .timeout(WAIT);
    assert_eq!(port.uuid().unwrap(), SERVER_UUID);
}

#[test]
fn one_path_on_two_hosts_is_ambiguous_until_the_host_is_named() {
    let loaded = Loaded::repository_conf(|conf| conf);
    let conf = fs::read_to_string(loaded.dir.path().join("mongrel2.conf"))
        .unwrap()
        .replace(
            "'/events': events_handler,",
            // m2sh rejects a trailing comma before `}`.
            "'/events': events_handler\n        }), Host(name=\"other\", routes={\n            '/echo': events_handler,",
        );
    fs::write(loaded.dir.path().join("two.conf"), conf).unwrap();
    let out = Command::new("m2sh")
        .args(["load", "-config", "two.conf", "-db", "two.sqlite"])
        .current_dir(loaded.dir.path())
        .output()
        .unwrap();
    assert!(loaded.dir.path().join("two.sqlite").exists(), "{out:?}");
    let db = ConfigDb::open(loaded.dir.path().join("two.sqlite")).unwrap();
    match db.handler("echo") {
        Err(ConfigError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.handler_at("other", "/echo").unwrap().handler.send_ident,
        EVENTS_IDENT
    );
    assert_eq!(
        db.handler_at("localhost", "/echo")
            .unwrap()
            .handler
            .send_ident,
        ECHO_IDENT
    );
}

#[test]
fn missing_and_foreign_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sqlite");
    assert!(matches!(
        ConfigDb::open(&missing),
        Err(ConfigError::Open { .. })
    ));
    assert!(!missing.exists(), "opening must not create the file");

    let garbage = dir.path().join("garbage.sqlite");
    fs::write(
        &garbage,
        b"this is not a database at all, not even close......",
    )
    .unwrap();
    let err = ConfigDb::open(&garbage)
        .and_then(|db| db.handler("echo"))
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Open { .. } | ConfigError::Query { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.sqlite"), "{err}");

    // A zero-byte file is a valid sqlite database, just without m2sh's tables.
    let empty = dir.path().join("empty.sqlite");
    fs::write(&empty, b"").unwrap();
    let err = ConfigDb::open(&empty).unwrap().handler("echo").unwrap_err();
    assert!(matches!(err, ConfigError::Query { .. }), "{err:?}");
}
