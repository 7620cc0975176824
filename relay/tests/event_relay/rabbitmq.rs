//! A private RabbitMQ node for a test: Debian's `rabbitmq-server` run as this user in a temp
//! dir, on free ports, with its own Erlang port mapper (epmd) port so parallel nodes and a
//! system RabbitMQ never meet. Stopped on drop (`rabbitmqctl stop`, then the child is
//! killed if it lingers, then its epmd), even after a failed assertion.
//!
//! Without `rabbitmq-server` the tests that need it are skipped, loudly, unless `CI=true`
//! (then they fail: scripts/test installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mongrel2_test_fixture::free_tcp_port;

use super::*;

/// Debian's scripts that run RabbitMQ as the calling user (the ones in /usr/sbin switch to
/// the `rabbitmq` user).
const BIN: &str = "/usr/lib/rabbitmq/bin";
/// A node takes ~10 s to start on an idle machine; much longer on a loaded one.
const START_WAIT_SECS: u32 = 120;

/// A running RabbitMQ node.
pub struct RabbitMq {
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// `None` (skip) when RabbitMQ is not installed and this is not CI.
pub fn rabbitmq_installed() -> bool {
    if Path::new(BIN).join("rabbitmq-server").is_file() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "RabbitMQ tests need rabbitmq-server (apt-get install -y rabbitmq-server)"
    );
    eprintln!("SKIPPED: rabbitmq-server is not installed");
    false
}

impl RabbitMq {
    /// Starts a node and waits until it serves AMQP.
    pub fn start() -> RabbitMq {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_tcp_port();
        let base = dir.path();
        fs::write(base.join("rabbitmq.conf"), "loopback_users = none\n").expect("config");
        fs::write(base.join("enabled_plugins"), "[].\n").expect("plugins");
        let path = |name: &str| base.join(name).to_string_lossy().into_owned();
        let env = vec![
            ("HOME".to_owned(), path("")),
            (
                "RABBITMQ_NODENAME".to_owned(),
                format!("relaytest{port}@localhost"),
            ),
            ("RABBITMQ_NODE_PORT".to_owned(), port.to_string()),
            ("RABBITMQ_DIST_PORT".to_owned(), free_tcp_port().to_string()),
            ("ERL_EPMD_PORT".to_owned(), free_tcp_port().to_string()),
            ("RABBITMQ_MNESIA_BASE".to_owned(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".to_owned(), path("log")),
            ("RABBITMQ_CONFIG_FILE".to_owned(), path("rabbitmq")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".to_owned(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_PID_FILE".to_owned(), path("pid")),
        ];
        let mut node = RabbitMq {
            port,
            child: None,
            env,
            dir,
        };
        node.launch();
        node
    }

    /// Starts the node (again, on the same data: streams survive) and waits for it.
    pub fn launch(&mut self) {
        let base = self.dir.path();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join("server.log"))
            .expect("server log");
        let mut server = support::child::program(Path::new(BIN).join("rabbitmq-server"));
        server
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(base)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        self.child = Some(server.spawn().expect("start rabbitmq-server"));
        let pid = self.pid_file();
        let ok = self.ctl(&["wait", &pid, "--timeout", &START_WAIT_SECS.to_string()]);
        assert!(ok, "RabbitMQ did not start:\n{}", self.log_tail());
    }

    /// Stops the node (clients see their connections close) and waits for it to exit.
    pub fn stop(&mut self) {
        let pid = self.pid_file();
        assert!(self.ctl(&["stop", &pid]), "rabbitmqctl stop");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> String {
        self.dir.path().join("pid").to_string_lossy().into_owned()
    }

    /// Runs `rabbitmqctl ARGS` against this node; true if it succeeded.
    fn ctl(&self, args: &[&str]) -> bool {
        self.tool(&PathBuf::from(BIN).join("rabbitmqctl"), args)
    }

    fn tool(&self, program: &Path, args: &[&str]) -> bool {
        Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `rabbitmqctl list_queues name type arguments`, as text: what the relays declared.
    pub fn queues(&self) -> String {
        let output = Command::new(PathBuf::from(BIN).join("rabbitmqctl"))
            .args([
                "list_queues",
                "--no-table-headers",
                "name",
                "type",
                "arguments",
            ])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("rabbitmqctl list_queues");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The end of the node's startup output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = self.pid_file();
            self.ctl(&["stop", &pid]);
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // The node started a port mapper of its own (on its ERL_EPMD_PORT); stop it too.
        self.tool(Path::new("epmd"), &["-kill"]);
    }
}
