//! The link sockets, and which endpoints stay on this host.

use super::auth::Auth;
use super::{LinkOptions, TOPIC_EVENT, TOPIC_HELLO, TOPIC_ID};

/// Is `endpoint` reachable from this host only (loopback TCP, IPC, in-process)?
pub fn is_local(endpoint: &str) -> bool {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return false;
    };
    match scheme {
        "ipc" | "inproc" => true,
        "tcp" => {
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            // A connect may name a source address first (`src;dst`): the peer is `dst`.
            let host = host.rsplit_once(';').map_or(host, |(_, h)| h);
            host == "localhost"
                || host == "[::1]"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Refuses a link publisher bound beyond this host without a secret (anyone reaching it
/// would receive every event, token-protected exchanges included), and warns about links to
/// other hosts without one.
pub fn check_exposure(bind: Option<&str>, peers: &[String], secret: bool) -> Result<(), String> {
    if secret {
        return Ok(());
    }
    if let Some(bind) = bind.filter(|b| !is_local(b)) {
        return Err(format!(
            "--link-bind {bind} is reachable from other hosts, but no link secret is set: \
             set one (--link-secret-file, RELAY_LINK_SECRET or the config's link_secret) \
             or bind to loopback"
        ));
    }
    for peer in peers.iter().filter(|p| !is_local(p)) {
        log::warn!(
            "--link {peer} leaves this host without a link secret: whatever answers there \
             can inject events; set a link secret"
        );
    }
    Ok(())
}

pub fn xpub(context: &zmq::Context, endpoint: &str, queue: i32) -> zmq::Result<zmq::Socket> {
    let mut socket = context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    socket.set_sndhwm(queue)?;
    // Subscription messages are short; nothing big is ever read from this socket.
    socket.set_maxmsgsize(1024)?;
    set_manual(&mut socket)?;
    socket.bind(endpoint)?;
    Ok(socket)
}

/// ZMQ_XPUB_MANUAL, which the `zmq` crate does not wrap: subscriptions are reported to us
/// and applied only by us (see the module docs).
fn set_manual(socket: &mut zmq::Socket) -> zmq::Result<()> {
    let on: std::ffi::c_int = 1;
    // SAFETY: the socket pointer is live (we own the socket), and ZMQ_XPUB_MANUAL takes an
    // int, whose address and size we pass; libzmq copies the value before returning.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_MANUAL as std::ffi::c_int,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of_val(&on),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno only reads the calling thread's errno.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

pub fn sub(
    context: &zmq::Context,
    endpoint: &str,
    options: &LinkOptions<'_>,
    nonce: &str,
) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::SUB)?;
    socket.set_linger(0)?;
    socket.set_rcvhwm(options.queue)?;
    socket.set_maxmsgsize(i64::try_from(options.max_frame).unwrap_or(i64::MAX))?;
    // Our own filter: only these topics get through to us, whatever the publisher sends.
    socket.set_subscribe(TOPIC_EVENT)?;
    socket.set_subscribe(TOPIC_HELLO)?;
    if options.secret.is_some() {
        socket.set_subscribe(&Auth::challenge_topic(nonce))?;
    } else {
        socket.set_subscribe(&[TOPIC_ID, options.relay_id.as_bytes()].concat())?;
    }
    socket.connect(endpoint)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_endpoints() {
        for local in [
            "tcp://127.0.0.1:1",
            "tcp://127.3.2.1:9",
            "tcp://localhost:2",
            "tcp://[::1]:3",
            "ipc:///tmp/x",
            "inproc://y",
            "tcp://10.0.0.1:4;127.0.0.1:5",
        ] {
            assert!(is_local(local), "{local}");
        }
        for remote in [
            "tcp://*:1",
            "tcp://0.0.0.0:1",
            "tcp://10.0.0.1:1",
            "tcp://eth0:1",
            "tcp://example:1",
            "tcp://[::]:1",
            "pgm://x",
            "nonsense",
        ] {
            assert!(!is_local(remote), "{remote}");
        }
    }

    #[test]
    fn exposure_needs_a_secret_beyond_loopback() {
        assert!(check_exposure(Some("tcp://127.0.0.1:1"), &[], false).is_ok());
        let err = check_exposure(Some("tcp://*:1"), &[], false).unwrap_err();
        assert!(err.contains("link secret"), "{err}");
        assert!(check_exposure(Some("tcp://*:1"), &[], true).is_ok());
        assert!(check_exposure(None, &["tcp://10.0.0.1:1".into()], false).is_ok());
    }
}
