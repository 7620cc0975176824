//! HTTP replies straight from the Core: encoded into reused buffers, closing when asked,
//! and nothing queued for a response that cannot be encoded.

use std::sync::Arc;
use std::time::Instant;

use super::tests::core;
use crate::http::Response;
use crate::request::{OwnedRequest, Request};
use crate::{ConnId, Error, Event};

fn http_request(core: &mut super::Core, id: u64, version: &str) -> Result<OwnedRequest, String> {
    let message = Request::new("s1", id, "/hello")
        .with_header("METHOD", "GET")
        .with_header("VERSION", version)
        .with_header("PATH", "/hello")
        .with_header("URI", "/hello")
        .with_header("host", "example.org")
        .encode();
    core.handle_message("s1", &message);
    match core.poll_event() {
        Some(Event::Http(request)) => Ok(request),
        other => Err(format!("expected an HTTP event, got {other:?}")),
    }
}

fn expected(request: &Request<'_>, response: &Response) -> Result<Vec<u8>, Error> {
    let body = response.encode_for(request)?;
    Ok(crate::reply::reply("s1", &[request.conn_id()], &body)?)
}

#[test]
fn replies_reuse_written_buffers_and_carry_no_stale_bytes() -> Result<(), Box<dyn std::error::Error>>
{
    let mut core = core(Instant::now());
    let long = Response::ok().body("x".repeat(2000));
    let short = Response::ok().body("hi");

    let first = http_request(&mut core, 3, "HTTP/1.1")?;
    core.reply_http(&first, &long)?;
    let out = core.poll_outgoing().ok_or("no reply")?;
    assert_eq!(out.message, expected(&first, &long)?);
    let reused = out.message.as_ptr();
    core.recycle(out.message);

    let second = http_request(&mut core, 4, "HTTP/1.1")?;
    core.reply_http(&second, &short)?;
    let out = core.poll_outgoing().ok_or("no reply")?;
    assert_eq!(out.message, expected(&second, &short)?);
    assert_eq!(
        out.message.as_ptr(),
        reused,
        "the recycled buffer was not reused"
    );
    assert!(core.poll_outgoing().is_none());
    Ok(())
}

#[test]
fn a_request_that_asks_to_close_gets_the_response_then_the_close(
) -> Result<(), Box<dyn std::error::Error>> {
    let mut core = core(Instant::now());
    // HTTP/1.0 without keep-alive closes after the response.
    let request = http_request(&mut core, 5, "HTTP/1.0")?;
    let response = Response::ok().body("bye");
    core.reply_http(&request, &response)?;
    let out = core.poll_outgoing().ok_or("no reply")?;
    assert_eq!(out.message, expected(&request, &response)?);
    assert!(out
        .message
        .windows(19)
        .any(|w| w == b"Connection: close\r\n"));
    let close = core.poll_outgoing().ok_or("no close")?;
    assert_eq!(close.message, b"s1 1:5, ");
    assert!(core.poll_outgoing().is_none());
    Ok(())
}

#[test]
fn a_response_that_cannot_be_encoded_queues_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let mut core = core(Instant::now());
    let request = http_request(&mut core, 6, "HTTP/1.1")?;
    let bad = Response::ok().header("Bad Name", "x");
    assert!(matches!(
        core.reply_http(&request, &bad),
        Err(Error::Http(crate::http::HttpError::InvalidHeaderName(_)))
    ));
    assert!(core.poll_outgoing().is_none());
    // The connection is still usable.
    core.reply_http(&request, &Response::ok())?;
    assert!(core.poll_outgoing().is_some());
    Ok(())
}

#[test]
fn requests_share_their_servers_sender() -> Result<(), Box<dyn std::error::Error>> {
    let mut core = core(Instant::now());
    let first = http_request(&mut core, 7, "HTTP/1.1")?;
    let second = http_request(&mut core, 8, "HTTP/1.1")?;
    assert_eq!(first.sender(), "s1");
    assert!(Arc::ptr_eq(
        &ConnId::of(&first).sender,
        &ConnId::of(&second).sender
    ));
    Ok(())
}
