//! Operates a running Mongrel2 through its control port and prints the answers as tables.
//!
//! ```text
//! m2ctl                                # status net: the open connections
//! m2ctl status tasks
//! m2ctl kill 42                        # close connection 42
//! m2ctl --endpoint tcp://127.0.0.1:9990 info
//! m2ctl --config config.sqlite uuid    # the endpoint from m2sh's database (feature "config")
//! ```
//!
//! Commands: `status [net|tasks]`, `time`, `uuid`, `info`, `kill ID`, `reload`, `stop`,
//! `terminate`, `control_stop`, `help`. The flags are hand-parsed like the other examples':
//! three flags and a command do not need a parser crate.

use std::time::Duration;

use mongrel2_transceiver::control_port::{self, ControlPort, StatusWhat, Table};
use mongrel2_transceiver::tnetstring::Dict;

const USAGE: &str = "usage: m2ctl [--endpoint ENDPOINT] [--config CONFIG.sqlite [--server UUID]] \
     [--timeout SECONDS] [status [net|tasks] | time | uuid | info | kill ID | reload | stop | \
     terminate | control_stop | help]\n\
     default endpoint: ipc://run/control (run from Mongrel2's directory)";

fn main() {
    env_logger::init();
    match run(std::env::args().skip(1)) {
        Ok(output) => print!("{output}"),
        Err(message) => {
            eprintln!("m2ctl: {message}");
            std::process::exit(1);
        }
    }
}

/// Runs one command as the command line `args` says; returns what to print.
pub fn run(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    let mut endpoint = None;
    let mut config = None;
    let mut server = None;
    let mut timeout = control_port::DEFAULT_TIMEOUT;
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--endpoint" => endpoint = Some(value("--endpoint")?),
            "--config" => config = Some(value("--config")?),
            "--server" => server = Some(value("--server")?),
            "--timeout" => {
                let secs: f64 = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout wants seconds".to_owned())?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err("--timeout wants a positive number of seconds".into());
                }
                timeout = Duration::from_secs_f64(secs);
            }
            "--help" | "-h" => return Ok(format!("{USAGE}\n")),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}\n{USAGE}")),
            _ => words.push(arg),
        }
    }
    let endpoint = match (endpoint, config) {
        (Some(endpoint), _) => endpoint,
        (None, Some(config)) => endpoint_from_config(&config, server.as_deref())?,
        (None, None) => control_port::DEFAULT_ENDPOINT.to_owned(),
    };
    let mut port = ControlPort::new(&endpoint)
        .map_err(|e| e.to_string())?
        .timeout(timeout);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let table = match words.as_slice() {
        [] | ["status"] | ["status", "net"] => port.status(StatusWhat::Net),
        ["status", "tasks"] => port.status(StatusWhat::Tasks),
        ["kill", id] => {
            let id: i64 = id
                .parse()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or(format!("kill wants a connection id, not {id:?}"))?;
            port.call("kill", [("id", id)].into_iter().collect())
        }
        [command @ ("time" | "uuid" | "info" | "reload" | "stop" | "terminate" | "control_stop"
        | "help")] => port.call(command, Dict::new()),
        other => return Err(format!("unknown command {:?}\n{USAGE}", other.join(" "))),
    };
    table.map(|t| render(&t)).map_err(|e| e.to_string())
}

#[cfg(feature = "config")]
fn endpoint_from_config(config: &str, server: Option<&str>) -> Result<String, String> {
    let servers = mongrel2_transceiver::config::ConfigDb::open(config)
        .and_then(|db| db.servers())
        .map_err(|e| e.to_string())?;
    let chosen: Vec<_> = servers
        .iter()
        .filter(|s| server.is_none_or(|uuid| s.uuid == uuid))
        .collect();
    match chosen.as_slice() {
        [one] => Ok(one.control_endpoint.clone()),
        [] => Err(format!("no such server in {config}")),
        _ => Err(format!(
            "{config} has several servers: pick one with --server UUID"
        )),
    }
}

#[cfg(not(feature = "config"))]
fn endpoint_from_config(_config: &str, _server: Option<&str>) -> Result<String, String> {
    Err("--config needs m2ctl built with the \"config\" feature".into())
}

/// The table with columns padded to their widest cell.
pub fn render(table: &Table) -> String {
    let rows = table.text_rows();
    let widths: Vec<usize> = table
        .headers()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(table.headers());
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}
