//! The real-Mongrel2 fixture itself: what the integration tests rely on.

use mongrel2_test_fixture as common;

use common::{
    connect_reply_socket, connect_request_socket, recv_timeout, wait_subscription, HandlerConf,
    Mongrel2,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP request through Mongrel2 to the handler sockets and back.
fn round_trip(m2: &Mongrel2, pull: &zmq::Socket, publ: &zmq::Socket, path: &str) -> String {
    let mut c = TcpStream::connect(m2.http_addr()).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .expect("send");
    let msg = recv_timeout(pull, TIMEOUT)
        .expect("recv")
        .unwrap_or_else(|| panic!("no request\n{}", m2.log_tail(20)));
    let text = String::from_utf8_lossy(&msg).into_owned();
    let mut fields = text.splitn(4, ' ');
    let sender = fields.next().unwrap_or_default();
    assert_eq!(sender, m2.handler(0).send_ident);
    let id = fields.next().unwrap_or_default();
    assert_eq!(fields.next(), Some(path));
    let body = "hi";
    let reply = format!(
        "fixture {}:{id}, HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        id.len(),
        body.len()
    );
    publ.send(reply.as_bytes(), 0).expect("publish");
    // An empty body closes the connection once the response is written.
    publ.send(format!("fixture {}:{id}, ", id.len()).as_bytes(), 0)
        .expect("publish close");
    let mut response = String::new();
    c.read_to_string(&mut response).expect("read response");
    response
}

fn http_get(m2: &Mongrel2, path: &str) -> String {
    let mut c = TcpStream::connect(m2.http_addr()).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .expect("send");
    let mut response = String::new();
    c.read_to_string(&mut response).expect("read");
    response
}

fn process_gone(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie still would.
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn serves_handlers_and_survives_kill_and_restart() {
    let mut m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/handler"))
        .start();
    let port = m2.http_port();
    let ctx = zmq::Context::new();
    let pull = connect_request_socket(&ctx, &m2.handler(0).send_spec).expect("pull");
    let publ = connect_reply_socket(&ctx, &m2.handler(0).recv_spec).expect("pub");
    let response = round_trip(&m2, &pull, &publ, "/handler/a");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hi"), "{response}");

    let pid = m2.pid().expect("running");
    m2.kill();
    assert!(!m2.is_running());
    assert!(process_gone(pid), "killed Mongrel2 was not reaped");
    assert!(TcpStream::connect(m2.http_addr()).is_err());

    m2.start();
    assert_eq!(m2.http_port(), port);
    wait_subscription(&publ, TIMEOUT).expect("resubscribed after kill");
    let response = round_trip(&m2, &pull, &publ, "/handler/b");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

    let pid = m2.pid().expect("running");
    m2.restart();
    assert!(process_gone(pid), "stopped Mongrel2 was not reaped");
    wait_subscription(&publ, TIMEOUT).expect("resubscribed after restart");
    // The old server's goodbye (a disconnect for the open connection) may
    // still be queued; skip it.
    while let Ok(Some(_)) = recv_timeout(&pull, Duration::from_millis(100)) {}
    let response = round_trip(&m2, &pull, &publ, "/handler/c");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
}

#[test]
fn dir_routes_serve_files_from_the_chroot() {
    let m2 = Mongrel2::builder().dir("/static/", "web/").start();
    std::fs::write(m2.dir().join("web/hello.txt"), "hello from disk\n").expect("write");
    let response = http_get(&m2, "/static/hello.txt");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello from disk\n"), "{response}");
}

#[test]
fn control_port_answers() {
    let m2 = Mongrel2::builder().start();
    let mut port = mongrel2_transceiver::control_port::ControlPort::new(m2.control_endpoint())
        .expect("control port client")
        .timeout(TIMEOUT);
    assert_eq!(port.uuid().expect("control port answer"), m2.server_uuid());
}

#[test]
fn servers_in_parallel_get_their_own_ports_and_dirs() {
    let servers: Vec<Mongrel2> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Mongrel2::builder().dir("/", "web/").start()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start"))
            .collect()
    });
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            assert_ne!(a.http_port(), b.http_port());
            assert_ne!(a.dir(), b.dir());
        }
        assert!(http_get(a, "/missing").starts_with("HTTP/1.1 404"));
    }
}

#[test]
fn a_panicking_test_leaves_no_process_or_directory() {
    let (tx, rx) = std::sync::mpsc::channel::<(u32, PathBuf)>();
    let result = std::thread::spawn(move || {
        let m2 = Mongrel2::builder().start();
        tx.send((m2.pid().expect("running"), m2.dir().to_path_buf()))
            .expect("send");
        panic!("test failure with a running Mongrel2");
    })
    .join();
    assert!(result.is_err());
    let (pid, dir) = rx.recv().expect("pid");
    assert!(process_gone(pid), "Mongrel2 {pid} outlived the panic");
    assert!(!dir.exists(), "{dir:?} outlived the panic");
}

/// The repository's `mongrel2.conf` (used by the README and the examples)
/// must stay loadable; m2sh exits 0 even on syntax errors, so the loaded
/// server is checked.
#[test]
fn shipped_config_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("mongrel2.conf");
    let out = std::process::Command::new("m2sh")
        .args(["load", "-config"])
        .arg(&conf)
        .args(["-db", "config.sqlite"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run m2sh");
    assert!(
        out.status.success() && dir.path().join("config.sqlite").exists(),
        "m2sh load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("m2sh")
        .args(["servers", "-db", "config.sqlite"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run m2sh");
    let servers = String::from_utf8_lossy(&out.stdout);
    assert!(
        servers.contains("main localhost 8674e1cd-c50f-4190-a01a-1ef0931dfec6"),
        "{servers}"
    );
}
