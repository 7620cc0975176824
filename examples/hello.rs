//! The smallest complete handler: every HTTP request gets `200 hello world`.
//!
//! `cargo run --release --example hello` (flags as the echo example; see mongrel2.conf).

#[path = "common/flags.rs"]
pub mod flags;

use mongrel2_transceiver::{http::Response, Event};

fn main() -> Result<(), mongrel2_transceiver::Error> {
    env_logger::init();
    run(&flags::Flags::parse("hello"))
}

/// Serves until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(flags: &flags::Flags) -> Result<(), mongrel2_transceiver::Error> {
    let mut transceiver = flags.builder().build()?;
    let stop = flags::stop_on_signal(&transceiver);
    let hello = Response::ok()
        .header("Content-Type", "text/plain")
        .body("hello world\n");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(Event::Http(request)) =
            transceiver.recv_timeout(std::time::Duration::from_secs(1))?
        {
            transceiver.reply_http(&request, &hello)?;
        }
    }
    transceiver.shutdown();
    Ok(())
}
