//! A chat room and a slow route on tokio: every text message goes to every WebSocket
//! session, `/slow` awaits a 100 ms call (standing in for a database) in its own task while
//! other requests keep flowing, and any other HTTP request gets `hello world`.
//!
//! `cargo run --release --features tokio --example async-chat` (flags as the echo example,
//! whose place it takes in the repository's mongrel2.conf: chat on ws://localhost:6767/echo,
//! the slow route at http://localhost:6767/echo/slow).

#[path = "common/flags.rs"]
pub mod flags;

use std::time::Duration;

use futures_util::StreamExt;
use mongrel2_transceiver::asynchronous::{AsyncHandle, AsyncTransceiver};
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::request::OwnedRequest;
use mongrel2_transceiver::{Error, Event, Message};

/// How long the stand-in for a database takes to answer.
pub const SLOW_CALL: Duration = Duration::from_millis(100);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    env_logger::init();
    let transceiver = flags::Flags::parse("async-chat").builder().build_async()?;
    // SIGINT/SIGTERM: every session gets close 1001, then the stream ends.
    transceiver.stop_on_signals()?;
    serve(transceiver).await
}

/// Serves until the transceiver stops (a signal, or its cancellation token).
pub async fn serve(mut transceiver: AsyncTransceiver) -> Result<(), Error> {
    let hello = Response::ok()
        .header("Content-Type", "text/plain")
        .body("hello world\n");
    while let Some(event) = transceiver.next().await {
        match event {
            Event::Http(request) if request.path().ends_with("/slow") => {
                // The task owns the request; the loop goes straight back to the stream.
                tokio::spawn(answer_slowly(transceiver.handle(), request));
            }
            Event::Http(request) => transceiver.reply_http(&request, &hello).await?,
            Event::Message {
                message: Message::Text(text),
                ..
            } => transceiver.broadcast_text(&text).await?,
            Event::Closed { conn, reason } => log::debug!("{conn}: {reason}"),
            _ => {}
        }
    }
    Ok(())
}

async fn answer_slowly(handle: AsyncHandle, request: OwnedRequest) {
    tokio::time::sleep(SLOW_CALL).await;
    let answer = Response::ok()
        .header("Content-Type", "text/plain")
        .body(format!("slow answer for {}\n", request.path()));
    // Fails only once the transceiver is gone, when nobody is left to answer.
    if let Err(err) = handle.reply_http(&request, &answer).await {
        log::debug!("slow answer dropped: {err}");
    }
}
