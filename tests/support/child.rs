//! Running code compiled into a test binary as a real child process (so signals and exit
//! codes are real, and the code is never a stale separately built binary).
//!
//! A test binary declares one `#[test]` entry point that calls [`child_args`] and does
//! nothing in a normal run; the parent starts it with [`command`].

use std::process::Command;

/// In the child (when `var` is set): its arguments, one per line of `var`. Also makes the
/// child go when the test that started it dies. `None` in a normal test run.
pub fn child_args(var: &str) -> Option<Vec<String>> {
    let args = std::env::var_os(var)?;
    // SAFETY: PR_SET_PDEATHSIG only sets a flag on this process; no memory is involved.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    Some(
        args.to_string_lossy()
            .split('\n')
            .map(str::to_owned)
            .collect(),
    )
}

/// This test binary, set to run only the entry point `test`, with the child's arguments
/// (one per line) in `var`.
pub fn command(test: &str, var: &str, args_by_line: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, args_by_line);
    command
}
