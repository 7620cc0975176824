//! The hello and echo examples against a real Mongrel2: they serve, and SIGTERM shuts them
//! down cleanly (close 1001 to open sessions, exit 0).
//!
//! Each example runs as a CHILD PROCESS so signals and exit codes are real. The child is
//! this test binary: both examples are compiled in, and the test `example_child_process`
//! runs one of them when [`CHILD`] is set (in a normal run it does nothing). That way the
//! example under test is always built from the current sources; a separate example binary
//! may be missing or stale depending on how `cargo test` was invoked.

// Both examples include examples/common/flags.rs; each keeps its own copy, as in its binary.
#![allow(clippy::duplicate_mod)]

use mongrel2_test_fixture as common;
use mongrel2_test_fixture::support;

#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;

#[allow(dead_code)]
#[path = "../examples/hello.rs"]
mod hello;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use mongrel2_transceiver::websocket::Opcode;
use support::{close_code, get_eventually, RawWebSocket};

/// Set in the child: the example's name, then its flags, one per line.
const CHILD: &str = "MONGREL2_TRANSCEIVER_EXAMPLE_CHILD";

/// In a normal run: nothing. In the child: the example's `main`.
#[test]
fn example_child_process() {
    let Some(args) = support::child::child_args(CHILD) else {
        return;
    };
    let mut lines = args.into_iter();
    let name = lines.next().unwrap_or_default();
    let result = match name.as_str() {
        "echo" => echo::run(&echo::flags::Flags::parse_from("echo", lines)),
        "hello" => hello::run(&hello::flags::Flags::parse_from("hello", lines)),
        other => panic!("no example {other}"),
    };
    std::process::exit(if result.is_ok() { 0 } else { 1 });
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
    let spec = [
        name,
        "--sender-id",
        &h.send_ident,
        "--pull",
        &h.send_spec,
        "--pub",
        &h.recv_spec,
        "--control",
        &control,
    ]
    .join("\n");
    let child = support::child::command("example_child_process", CHILD, &spec)
        .stdout(Stdio::null())
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
