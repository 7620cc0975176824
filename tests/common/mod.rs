//! A real Mongrel2 for integration tests.
//!
//! [`Mongrel2::builder`] writes a configuration into a private temporary
//! directory (which is also the server's chroot), loads it with `m2sh`, starts
//! `mongrel2` in the foreground and waits until it serves. Dropping the
//! [`Mongrel2`] stops the server (SIGTERM, then SIGKILL) and reaps it, also
//! when the test panics, so no test leaks a process.
//!
//! Every server gets its own directory and ports, so tests may run in parallel.
//!
//! Facts about Mongrel2 1.12 that tests run into:
//! - [`start`](Mongrel2Builder::start) returns once Mongrel2 has answered an
//!   HTTP request; before that its listener accepts but does not serve (its
//!   first event-loop cycle takes about half a second).
//! - Replies are subject to the PUB/SUB slow joiner; [`connect_reply_socket`]
//!   returns once Mongrel2 has subscribed, and [`wait_subscription`] waits for
//!   the new subscription after a [`restart`](Mongrel2::restart).
//! - A graceful [`stop`](Mongrel2::stop) closes open client connections and
//!   pushes a disconnect notice (`@*`) for each; a [`kill`](Mongrel2::kill)
//!   does not. A restarted Mongrel2 hands out the same connection ids again.
//! - As root Mongrel2 chroots into [`dir`](Mongrel2::dir), so the paths it
//!   reports (uploads) are relative to it. Not as root it runs in "test mode"
//!   without chroot and logs to stderr; absolute paths in settings such as
//!   [`UPLOAD_TEMP_STORE`] then point into the real file system.
//! - m2sh exits 0 even when the configuration does not parse; this fixture
//!   checks the loaded database instead.
//!
//! ```ignore
//! mod common;
//! use common::{HandlerConf, Mongrel2};
//!
//! let m2 = Mongrel2::builder()
//!     .handler(HandlerConf::new("/handler"))
//!     .setting("download.flow_control", 1)
//!     .start();
//! let h = m2.handler(0);
//! // connect a PULL to h.send_spec and a PUB to h.recv_spec,
//! // then talk HTTP to m2.base_url()
//! ```

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a freshly spawned Mongrel2 may take to serve.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd Mongrel2 may take to exit before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// A value for the `upload.temp_store` setting; the path is inside the chroot.
pub const UPLOAD_TEMP_STORE: &str = "/tmp/upload.XXXXXX";

const POLL_INTERVAL: Duration = Duration::from_millis(10);
const CONF_FILE: &str = "mongrel2.conf";
const DB_FILE: &str = "config.sqlite";
const STDOUT_FILE: &str = "mongrel2.stdout";
const STDERR_FILE: &str = "mongrel2.stderr";
const ERROR_LOG: &str = "logs/error.log";

/// The encoding of request headers Mongrel2 uses towards a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `protocol='tnetstring'`: headers are a tnetstring dict.
    Tnetstring,
    /// `protocol='json'`: headers are a netstring holding a JSON object.
    Json,
}

impl Protocol {
    /// Both protocols, for tests that must hold for each.
    pub const ALL: [Protocol; 2] = [Protocol::Tnetstring, Protocol::Json];

    /// The name used in the Mongrel2 configuration (and in capture file names).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tnetstring => "tnetstring",
            Protocol::Json => "json",
        }
    }
}

/// One `Handler` route of the server.
#[derive(Clone, Debug)]
pub struct HandlerConf {
    /// Route pattern, e.g. `/handler`.
    pub route: String,
    /// More routes to the same handler, e.g. `@chat` for JSON socket messages.
    pub extra_routes: Vec<String>,
    /// Where Mongrel2 binds its PUSH socket; the handler connects a PULL here.
    pub send_spec: String,
    /// Mongrel2's identity on that socket: the SENDER of every request.
    pub send_ident: String,
    /// Where Mongrel2 binds its SUB socket; the handler connects a PUB here.
    pub recv_spec: String,
    /// Mongrel2's subscription prefix (empty = every reply).
    pub recv_ident: String,
    /// Header encoding.
    pub protocol: Protocol,
}

impl HandlerConf {
    /// A tnetstring handler at `route` with fresh endpoints and a fresh send_ident.
    pub fn new(route: &str) -> Self {
        HandlerConf {
            route: route.to_string(),
            extra_routes: Vec::new(),
            send_spec: free_endpoint(),
            send_ident: new_uuid(),
            recv_spec: free_endpoint(),
            recv_ident: String::new(),
            protocol: Protocol::Tnetstring,
        }
    }

    /// Routes `route` to this handler too.
    pub fn also_route(mut self, route: &str) -> Self {
        self.extra_routes.push(route.to_string());
        self
    }

    /// Sets the header encoding.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the send_ident (the SENDER of requests).
    pub fn send_ident(mut self, ident: &str) -> Self {
        self.send_ident = ident.to_string();
        self
    }

    /// Sets the recv_ident (replies must start with it).
    pub fn recv_ident(mut self, ident: &str) -> Self {
        self.recv_ident = ident.to_string();
        self
    }

    /// Sets both endpoints.
    pub fn endpoints(mut self, send_spec: &str, recv_spec: &str) -> Self {
        self.send_spec = send_spec.to_string();
        self.recv_spec = recv_spec.to_string();
        self
    }
}

/// A value in the configuration's `settings` dict.
#[derive(Clone, Debug)]
pub enum Setting {
    /// A number, written bare.
    Int(i64),
    /// A string, written quoted.
    Str(String),
}

impl From<i64> for Setting {
    fn from(v: i64) -> Self {
        Setting::Int(v)
    }
}

impl From<i32> for Setting {
    fn from(v: i32) -> Self {
        Setting::Int(v.into())
    }
}

impl From<&str> for Setting {
    fn from(v: &str) -> Self {
        Setting::Str(v.to_string())
    }
}

impl From<String> for Setting {
    fn from(v: String) -> Self {
        Setting::Str(v)
    }
}

/// Configuration of a [`Mongrel2`]; see [`Mongrel2::builder`].
#[derive(Clone, Debug, Default)]
pub struct Mongrel2Builder {
    handlers: Vec<HandlerConf>,
    dirs: Vec<(String, String)>,
    settings: Vec<(String, Setting)>,
    http_port: Option<u16>,
}

impl Mongrel2Builder {
    /// Adds a handler route.
    pub fn handler(mut self, handler: HandlerConf) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Adds a `Dir` route serving `base` (relative to the chroot, ending in `/`).
    pub fn dir(mut self, route: &str, base: &str) -> Self {
        self.dirs.push((route.to_string(), base.to_string()));
        self
    }

    /// Adds or replaces a setting, e.g. `("upload.stream", 1)`.
    pub fn setting(mut self, key: &str, value: impl Into<Setting>) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.to_string(), value.into()));
        self
    }

    /// Serves HTTP on this port instead of a free one.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// Starts the server and waits until it serves; panics (with Mongrel2's
    /// output) if it does not.
    pub fn start(self) -> Mongrel2 {
        match self.try_start() {
            Ok(m2) => m2,
            Err(e) => panic!("Mongrel2 did not start: {e}"),
        }
    }

    /// Like [`start`](Self::start), returning the failure instead.
    pub fn try_start(self) -> Result<Mongrel2, String> {
        check_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("mongrel2-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        for sub in ["run", "logs", "tmp"] {
            fs::create_dir(dir.path().join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        for (_, base) in &self.dirs {
            fs::create_dir_all(dir.path().join(base)).map_err(|e| format!("mkdir {base}: {e}"))?;
        }
        let mut m2 = Mongrel2 {
            http_port: self.http_port.unwrap_or_else(free_tcp_port),
            server_uuid: new_uuid(),
            handlers: self.handlers,
            dirs: self.dirs,
            settings: self.settings,
            child: None,
            dir,
        };
        m2.write_config()?;
        m2.load_config()?;
        m2.try_spawn()?;
        Ok(m2)
    }
}

/// A running Mongrel2 in a private chroot; stopped and reaped on drop.
#[derive(Debug)]
pub struct Mongrel2 {
    http_port: u16,
    server_uuid: String,
    handlers: Vec<HandlerConf>,
    dirs: Vec<(String, String)>,
    settings: Vec<(String, Setting)>,
    child: Option<Child>,
    // Declared last: the directory must outlive the process using it.
    dir: tempfile::TempDir,
}

impl Mongrel2 {
    /// A server with no routes yet.
    pub fn builder() -> Mongrel2Builder {
        Mongrel2Builder::default()
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `127.0.0.1:PORT` of the HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's uuid (used to start it; not the SENDER of requests).
    pub fn server_uuid(&self) -> &str {
        &self.server_uuid
    }

    /// The `i`-th handler route, in the order they were added.
    pub fn handler(&self, i: usize) -> &HandlerConf {
        &self.handlers[i]
    }

    /// Every handler route.
    pub fn handlers(&self) -> &[HandlerConf] {
        &self.handlers
    }

    /// The chroot: files Mongrel2 names (uploads, logs) are relative to it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The host path of a path Mongrel2 reports inside its chroot, such as
    /// an `x-mongrel2-upload-done` file.
    pub fn chroot_path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    /// Mongrel2's control port (a ZeroMQ REP socket; requests are tnetstrings).
    pub fn control_endpoint(&self) -> String {
        format!("ipc://{}/run/control", self.dir.path().display())
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL after [`STOP_TIMEOUT`]).
    /// Mongrel2 closes open client connections and pushes a disconnect notice
    /// for each to their handler.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would: clients see their
    /// connections closed and handlers hear nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped (or killed) server again, on the same ports and
    /// with the same configuration. Handlers' sockets reconnect by
    /// themselves; connection ids start again from the same numbers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "Mongrel2 is already running");
        if let Err(e) = self.try_spawn() {
            panic!("Mongrel2 did not restart: {e}");
        }
    }

    /// [`stop`](Self::stop), then [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// The last `lines` lines of Mongrel2's error log and stderr, for
    /// diagnostics in assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in [ERROR_LOG, STDERR_FILE, STDOUT_FILE] {
            let text = tail_file(&self.dir.path().join(name), 64 * 1024);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let _ = writeln!(out, "--- {name} (last {} lines) ---", all.len() - start);
            for line in &all[start..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    fn write_config(&self) -> Result<(), String> {
        // m2sh rejects trailing commas, so entries are joined.
        let mut conf = String::new();
        let mut routes = Vec::new();
        for (i, h) in self.handlers.iter().enumerate() {
            let _ = writeln!(
                conf,
                "handler_{i} = Handler(send_spec={}, send_ident={}, recv_spec={}, recv_ident={}, protocol={})",
                quote(&h.send_spec)?,
                quote(&h.send_ident)?,
                quote(&h.recv_spec)?,
                quote(&h.recv_ident)?,
                quote(h.protocol.name())?,
            );
            for route in std::iter::once(&h.route).chain(&h.extra_routes) {
                routes.push(format!("        {}: handler_{i}", quote(route)?));
            }
        }
        for (i, (route, base)) in self.dirs.iter().enumerate() {
            let _ = writeln!(
                conf,
                "dir_{i} = Dir(base={}, index_file=\"index.html\", default_ctype=\"text/plain\")",
                quote(base)?
            );
            routes.push(format!("        {}: dir_{i}", quote(route)?));
        }
        let mut settings = vec![r#"    "server.daemonize": 0"#.to_string()];
        for (key, value) in &self.settings {
            let value = match value {
                Setting::Int(v) => v.to_string(),
                Setting::Str(s) => quote(s)?,
            };
            settings.push(format!("    {}: {value}", quote(key)?));
        }
        let _ = write!(
            conf,
            r#"
main = Server(
    uuid={uuid},
    name="main",
    bind_addr="127.0.0.1",
    port={port},
    chroot="./",
    access_log="/logs/access.log",
    error_log="/logs/error.log",
    pid_file="/run/mongrel2.pid",
    default_host="localhost",
    hosts=[Host(name="localhost", routes={{
{routes}
    }})]
)

servers = [main]

settings = {{
{settings}
}}
"#,
            uuid = quote(&self.server_uuid)?,
            port = self.http_port,
            routes = routes.join(",\n"),
            settings = settings.join(",\n"),
        );
        fs::write(self.dir.path().join(CONF_FILE), conf).map_err(|e| format!("write conf: {e}"))
    }

    fn load_config(&self) -> Result<(), String> {
        let out = Command::new("m2sh")
            .args(["load", "-config", CONF_FILE, "-db", DB_FILE])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running m2sh: {e}"))?;
        if !out.status.success() || !self.dir.path().join(DB_FILE).exists() {
            return Err(format!(
                "m2sh load failed ({}):\n{}{}\nconfig:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(self.dir.path().join(CONF_FILE)).unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let open = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .map_err(|e| format!("open {name}: {e}"))
        };
        let child = Command::new("mongrel2")
            .args([DB_FILE, &self.server_uuid])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(open(STDOUT_FILE)?)
            .stderr(open(STDERR_FILE)?)
            .spawn()
            .map_err(|e| format!("spawning mongrel2: {e}"))?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(format!("{e}\n{}", self.log_tail(40)))
            }
        }
    }

    /// Waits until Mongrel2 answers HTTP and every handler's TCP endpoints
    /// accept connections: then requests reach handlers and replies reach
    /// Mongrel2 (the handler tasks bind their sockets only once it runs).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        // The listener accepts before Mongrel2's event loop runs (its first
        // cycle takes ~0.5 s), so only an answer proves it serves. A malformed
        // request is answered with 400 without touching any route or handler.
        let http = self.http_addr();
        while !http_answers(http) {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("no HTTP answer on {http} after {START_TIMEOUT:?}"));
            }
            thread::sleep(POLL_INTERVAL);
        }
        let mut pending: Vec<SocketAddr> = Vec::new();
        for h in &self.handlers {
            pending.extend(tcp_addr(&h.send_spec));
            pending.extend(tcp_addr(&h.recv_spec));
        }
        while let Some(addr) = pending.last().copied() {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                pending.pop();
                continue;
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("nothing listens on {addr} after {START_TIMEOUT:?}"));
            }
            thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => {
                self.child = None;
                Err(format!("mongrel2 exited early ({status})"))
            }
            Some(Err(e)) => Err(format!("waiting for mongrel2: {e}")),
            None => Err("mongrel2 is not running".to_string()),
        }
    }
}

/// Whether an HTTP server at `addr` answers a malformed request.
fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let mut head = [0u8; 5];
    s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && s.write_all(b"PROBE\r\n\r\n").is_ok()
        && s.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

impl Drop for Mongrel2 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM (Mongrel2's graceful shutdown), wait, then SIGKILL; always reaps.
fn stop_child(mut child: Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own unreaped child, so it cannot have been recycled.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn check_tools() -> Result<(), String> {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            for tool in ["mongrel2", "m2sh"] {
                let found = std::env::var_os("PATH")
                    .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
                    .unwrap_or(false);
                if !found {
                    return Err(format!(
                        "`{tool}` is not installed: `apt-get install mongrel2-core` (scripts/test does it)"
                    ));
                }
            }
            Ok(())
        })
        .clone()
}

/// Quotes a string for the m2sh config language, which has no escapes.
fn quote(s: &str) -> Result<String, String> {
    if s.contains(['"', '\\', '\n']) {
        return Err(format!("cannot write {s:?} into a Mongrel2 config"));
    }
    Ok(format!("\"{s}\""))
}

fn tcp_addr(spec: &str) -> Option<SocketAddr> {
    spec.strip_prefix("tcp://")?.parse().ok()
}

fn tail_file(path: &Path, max: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A random version-4 style uuid string.
pub fn new_uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on, never handed out twice
/// by this process.
///
/// Ports come from below the kernel's ephemeral range so that outgoing
/// connections (which take ephemeral ports) cannot occupy them between this
/// call and the moment the server binds them.
pub fn free_tcp_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (low, high) = port_range();
    for _ in 0..10_000 {
        let port = low + (random_u64() % u64::from(high - low)) as u16;
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        let used = used.get_or_insert_with(HashSet::new);
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free TCP port in {low}..{high}");
}

/// `tcp://127.0.0.1:PORT` with a [`free_tcp_port`].
pub fn free_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_tcp_port())
}

/// Ports to pick from: the 12000 below the ephemeral range.
fn port_range() -> (u16, u16) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.max(13_024);
    (high - 12_000, high)
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Connects a socket for replies to Mongrel2's `recv_spec` and waits until
/// Mongrel2's subscription has arrived, so nothing sent on it is lost to the
/// PUB/SUB slow-joiner problem.
///
/// It is an XPUB, which behaves as a PUB but reports subscriptions; it is
/// verbose, so after a [`Mongrel2::restart`] the new server's subscription is
/// reported too (see [`wait_subscription`]).
pub fn connect_reply_socket(ctx: &zmq::Context, recv_spec: &str) -> io::Result<zmq::Socket> {
    let sock = ctx.socket(zmq::XPUB)?;
    sock.set_linger(0)?;
    sock.set_xpub_verbose(true)?;
    sock.connect(recv_spec)?;
    wait_subscription(&sock, START_TIMEOUT)?;
    Ok(sock)
}

/// Waits for the next subscription on a socket from [`connect_reply_socket`],
/// e.g. from a restarted Mongrel2.
pub fn wait_subscription(sock: &zmq::Socket, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no subscription from Mongrel2",
            ));
        }
        if sock.poll(zmq::POLLIN, left.as_millis() as i64)? > 0 {
            // A subscription message is 0x01 followed by the prefix.
            if sock.recv_bytes(0)?.first() == Some(&1) {
                return Ok(());
            }
        }
    }
}

/// Connects a PULL to Mongrel2's `send_spec`.
pub fn connect_request_socket(ctx: &zmq::Context, send_spec: &str) -> io::Result<zmq::Socket> {
    let sock = ctx.socket(zmq::PULL)?;
    sock.set_linger(0)?;
    sock.connect(send_spec)?;
    Ok(sock)
}

/// Receives one message within `timeout`, or `None`.
pub fn recv_timeout(sock: &zmq::Socket, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    if sock.poll(zmq::POLLIN, timeout.as_millis() as i64)? > 0 {
        Ok(Some(sock.recv_bytes(0)?))
    } else {
        Ok(None)
    }
}
