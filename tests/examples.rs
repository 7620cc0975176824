//! The example binaries against a real Mongrel2: they serve, and SIGTERM shuts them down
//! cleanly (close 1001 to open sessions, exit 0).

mod common;
mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use mongrel2_transceiver::websocket::Opcode;
use support::{close_code, get_eventually, RawWebSocket};

/// `cargo test` builds the examples next to the test binaries' `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is built by cargo test", path.display());
    path
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(name: &str, m2: &Mongrel2) -> Guard {
    let h = m2.handler(0);
    let control = common::free_endpoint();
    let child = Command::new(example(name))
        .args(["--sender-id", &h.send_ident])
        .args(["--pull", &h.send_spec, "--pub", &h.recv_spec])
        .args(["--control", &control])
        .spawn()
        .expect("example starts");
    Guard(child)
}

fn terminate_within(guard: &mut Guard, limit: Duration) -> std::process::ExitStatus {
    let pid = guard.0.id() as libc::pid_t;
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn hello_answers_hello_world() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/hello"))
        .start();
    let mut hello = start("hello", &m2);
    let response =
        get_eventually(m2.http_addr(), "/hello", Duration::from_secs(10)).expect("hello serves");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello world\n");
    assert!(terminate_within(&mut hello, Duration::from_secs(2)).success());
}

#[test]
fn echo_serves_and_sigterm_closes_sessions_with_1001() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start();
    let mut echo = start("echo", &m2);
    let response = get_eventually(m2.http_addr(), "/echo/x?q=1", Duration::from_secs(10))
        .expect("echo serves");
    assert_eq!(response.json()["path"], "/echo/x");
    assert_eq!(response.json()["query"], serde_json::json!([["q", "1"]]));

    let mut ws = RawWebSocket::connect(m2.http_addr(), "/echo");
    ws.send(true, Opcode::Text, b"ping me back");
    assert_eq!(
        ws.recv_data().unwrap(),
        (Opcode::Text, b"ping me back".to_vec())
    );
    ws.send(true, Opcode::Binary, &[1, 2, 3]);
    assert_eq!(ws.recv_data().unwrap(), (Opcode::Binary, vec![1, 2, 3]));

    let status = terminate_within(&mut echo, Duration::from_secs(1));
    assert!(status.success(), "exit status {status:?}");
    let (opcode, payload) = ws.recv_data().unwrap();
    assert_eq!(opcode, Opcode::Close);
    assert_eq!(close_code(&payload), Some(1001));
}
