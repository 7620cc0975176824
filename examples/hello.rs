//! The smallest complete handler: every HTTP request gets `200 hello world`.
//!
//! `cargo run --release --example hello` (flags as the echo example; see mongrel2.conf).

#[path = "common/flags.rs"]
pub mod flags;

use mongrel2_transceiver::{http::Response, Error, Event};

fn main() -> Result<(), Error> {
    env_logger::init();
    run(&flags::Flags::parse("hello"))
}

/// Serves until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(flags: &flags::Flags) -> Result<(), Error> {
    let mut transceiver = flags.builder().build()?;
    transceiver.stop_on_signals()?;
    let hello = Response::ok()
        .header("Content-Type", "text/plain")
        .body("hello world\n");
    loop {
        match transceiver.recv() {
            Ok(Event::Http(request)) => transceiver.reply_http(&request, &hello)?,
            Ok(_) => {}
            // Dropping the Transceiver closes its sockets without hanging.
            Err(Error::Interrupted) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}
