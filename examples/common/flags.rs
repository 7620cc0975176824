//! Command-line flags shared by the small examples (hand-parsed: four flags do not need a
//! parser crate).

use std::time::Duration;

use mongrel2_transceiver::{Builder, Transceiver};

/// The echo handler's `send_ident` in the repository's mongrel2.conf.
pub const ECHO_SENDER_ID: &str = "75226238-c5fe-4cb0-ac5b-877fd841e97e";

pub struct Flags {
    pub sender_id: String,
    pub pull: String,
    pub publish: String,
    pub control: String,
    pub ping_interval: Duration,
}

impl Flags {
    /// Parses the command line's `--flag value` pairs; prints usage and exits on anything
    /// else.
    pub fn parse(program: &str) -> Flags {
        Flags::parse_from(program, std::env::args().skip(1))
    }

    /// Parses `--flag value` pairs from `args` (without the program name).
    pub fn parse_from(program: &str, args: impl IntoIterator<Item = String>) -> Flags {
        let mut flags = Flags {
            sender_id: ECHO_SENDER_ID.to_owned(),
            pull: "tcp://127.0.0.1:9989".to_owned(),
            publish: "tcp://127.0.0.1:9988".to_owned(),
            control: "tcp://127.0.0.1:9987".to_owned(),
            ping_interval: Duration::from_secs(30),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                usage(program, 0);
            }
            let Some(value) = args.next() else {
                eprintln!("{flag} needs a value");
                usage(program, 2);
            };
            match flag.as_str() {
                "--sender-id" => flags.sender_id = value,
                "--pull" => flags.pull = value,
                "--pub" => flags.publish = value,
                "--control" => flags.control = value,
                "--ping-interval" => match value.parse::<f64>() {
                    Ok(secs) if secs > 0.0 && secs.is_finite() => {
                        flags.ping_interval = Duration::from_secs_f64(secs)
                    }
                    _ => {
                        eprintln!("--ping-interval wants a positive number of seconds");
                        usage(program, 2);
                    }
                },
                _ => {
                    eprintln!("unknown flag {flag}");
                    usage(program, 2);
                }
            }
        }
        flags
    }

    pub fn builder(&self) -> Builder {
        Transceiver::builder(&self.sender_id)
            .pull(&self.pull)
            .publish(&self.publish)
            .control(Some(&self.control))
            .ping_interval(self.ping_interval)
    }
}

fn usage(program: &str, code: i32) -> ! {
    eprintln!(
        "usage: {program} [--sender-id ID] [--pull ENDPOINT] [--pub ENDPOINT] \
         [--control ENDPOINT] [--ping-interval SECONDS]\n\
         defaults: --sender-id {ECHO_SENDER_ID} --pull tcp://127.0.0.1:9989 \
         --pub tcp://127.0.0.1:9988 --control tcp://127.0.0.1:9987 --ping-interval 30"
    );
    std::process::exit(code)
}

/// Makes SIGINT/SIGTERM interrupt the loop, which then shuts down cleanly.
pub fn stop_on_signal(transceiver: &Transceiver) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = transceiver.handle();
    if let Err(err) = ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        let _ = handle.interrupt();
    }) {
        log::warn!("cannot install the signal handler: {err}");
    }
    stop
}
