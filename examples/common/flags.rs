//! Command-line flags shared by the small examples (hand-parsed: four flags do not need a
//! parser crate).

use std::time::Duration;

use mongrel2_transceiver::{Builder, Transceiver, Transport};

/// The echo handler's `send_ident` in the repository's mongrel2.conf.
pub const ECHO_SENDER_ID: &str = "75226238-c5fe-4cb0-ac5b-877fd841e97e";

pub struct Flags {
    pub sender_id: String,
    pub pull: String,
    pub publish: String,
    /// The control socket's endpoint: none unless `--control` is given.
    pub control: Option<String>,
    pub ping_interval: Duration,
    /// `--group-bind`: this process's endpoint in a handler group.
    pub group_bind: Option<String>,
    /// `--group-peer` (repeatable): the group's members' endpoints.
    pub group_peers: Vec<String>,
    /// `--transport direct|libzmq`: how Mongrel2's sockets are spoken.
    pub transport: Transport,
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
            control: None,
            ping_interval: Duration::from_secs(30),
            group_bind: None,
            group_peers: Vec::new(),
            transport: Transport::default(),
        };
        let mut args = args.into_iter();
        // (--config FILE, --handler NAME): applied after the other flags, replacing them.
        let mut from_config: (Option<String>, Option<String>) = (None, None);
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
                "--control" => flags.control = Some(value),
                "--group-bind" => flags.group_bind = Some(value),
                "--group-peer" => flags.group_peers.push(value),
                "--transport" => match value.as_str() {
                    "direct" => flags.transport = Transport::Direct,
                    "libzmq" => flags.transport = Transport::Libzmq,
                    _ => {
                        eprintln!("--transport is direct or libzmq");
                        usage(program, 2);
                    }
                },
                "--config" if cfg!(feature = "config") => from_config.0 = Some(value),
                "--handler" if cfg!(feature = "config") => from_config.1 = Some(value),
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
        match from_config {
            (None, None) => {}
            #[cfg(feature = "config")]
            (Some(file), Some(name)) => flags.use_config(program, &file, &name),
            _ => {
                eprintln!("--config and --handler go together");
                usage(program, 2);
            }
        }
        flags
    }

    /// Takes the sender id and endpoints of handler `name` (a route such as `/echo` or
    /// `echo`, or a send_ident) from the config database `file` that `m2sh load` wrote.
    #[cfg(feature = "config")]
    fn use_config(&mut self, program: &str, file: &str, name: &str) {
        let found =
            mongrel2_transceiver::config::ConfigDb::open(file).and_then(|db| db.handler(name));
        match found {
            Ok(route) => {
                self.sender_id = route.handler.send_ident;
                self.pull = route.handler.send_spec;
                self.publish = route.handler.recv_spec;
            }
            Err(err) => {
                eprintln!("{err}");
                usage(program, 2);
            }
        }
    }

    pub fn builder(&self) -> Builder {
        let builder = Transceiver::builder(&self.sender_id)
            .pull(&self.pull)
            .publish(&self.publish)
            .control(self.control.as_deref())
            .ping_interval(self.ping_interval)
            .transport(self.transport);
        match &self.group_bind {
            Some(bind) => builder.group(bind, &self.group_peers),
            None => builder,
        }
    }
}

fn usage(program: &str, code: i32) -> ! {
    eprintln!(
        "usage: {program} [--sender-id ID] [--pull ENDPOINT] [--pub ENDPOINT] \
         [--control ENDPOINT] [--ping-interval SECONDS] [--transport direct|libzmq] \
         [--group-bind ENDPOINT [--group-peer ENDPOINT]...] \
         [--config CONFIG.sqlite --handler NAME (feature \"config\")]\n\
         defaults: --sender-id {ECHO_SENDER_ID} --pull tcp://127.0.0.1:9989 \
         --pub tcp://127.0.0.1:9988 --ping-interval 30 --transport direct, no control socket \
         (--control tcp://127.0.0.1:9987 binds one)"
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
