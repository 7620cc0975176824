//! The `zmtp_decode` target: a peer's ZMTP stream, read the way a socket reader reads it.

use mongrel2_transceiver::zmtp::{self, Decoder, Item, ZmtpError};

/// A decoded ZMTP item, owned so the items of different reads compare.
#[derive(Debug, PartialEq)]
enum ZmtpItem {
    Greeting,
    Command(Vec<u8>, Vec<u8>),
    Message(Vec<u8>, bool),
}

/// What a ZMTP reader sees: the items, then where it stopped (waiting for more bytes, or
/// the error that drops the connection).
type ZmtpStream = (Vec<ZmtpItem>, Result<(), ZmtpError>);

/// Checks one decoded item and keeps an owned copy.
fn zmtp_item(item: &Item<'_>, decoder: &Decoder, first: bool) -> ZmtpItem {
    // The greeting comes first, exactly once.
    assert_eq!(matches!(item, Item::Greeting), first, "{item:?}");
    assert!(decoder.greeted());
    let _ = zmtp::subscription(item);
    match *item {
        Item::Greeting => ZmtpItem::Greeting,
        Item::Command { name, body } => {
            if let Ok(Some(kind)) = zmtp::socket_type(body) {
                // What we would announce ourselves reads back the same.
                if let Ok(kind) = std::str::from_utf8(kind) {
                    let mut ready = Vec::new();
                    zmtp::write_ready(&mut ready, kind);
                    let mut decoder = Decoder::new(usize::MAX);
                    decoder.decode(&zmtp::greeting()).expect("our greeting");
                    let Ok(Some((Item::Command { name, body }, used))) = decoder.decode(&ready)
                    else {
                        panic!("our READY {kind:?} does not decode");
                    };
                    assert_eq!((name, used), (&b"READY"[..], ready.len()));
                    assert_eq!(zmtp::socket_type(body), Ok(Some(kind.as_bytes())));
                }
            }
            ZmtpItem::Command(name.to_vec(), body.to_vec())
        }
        Item::Message { body, more } => ZmtpItem::Message(body.to_vec(), more),
    }
}

/// Decodes `data` in one read: the decoder over the bytes not yet used.
fn zmtp_one_read(data: &[u8]) -> ZmtpStream {
    let mut decoder = Decoder::new(64 * 1024);
    let mut items = Vec::new();
    let mut at = 0;
    loop {
        let remaining = data.len() - at;
        match decoder.decode(&data[at..]) {
            Ok(Some((item, used))) => {
                assert!(used > 0 && used <= remaining, "{used} of {remaining}");
                items.push(zmtp_item(&item, &decoder, items.is_empty()));
                at += used;
            }
            Ok(None) => return (items, Ok(())),
            Err(err) => {
                let _ = err.to_string();
                return (items, Err(err));
            }
        }
    }
}

/// Decodes `data` as a socket reader does when it arrives in two reads: each read appended
/// to a buffer, decoded items drained from its front.
fn zmtp_two_reads(data: &[u8], split: usize) -> ZmtpStream {
    let mut decoder = Decoder::new(64 * 1024);
    let mut items = Vec::new();
    let mut buf = Vec::new();
    for read in [&data[..split], &data[split..]] {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&buf) {
                Ok(Some((item, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    items.push(zmtp_item(&item, &decoder, items.is_empty()));
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(err) => return (items, Err(err)),
            }
        }
    }
    (items, Ok(()))
}

/// `zmtp::Decoder` over a peer's stream (greeting, then frames), `socket_type` and
/// `subscription` on what it yields; the same items and outcome when the stream arrives in
/// two reads, split where its first byte says (and its last, since a greeting's first byte
/// is always 0xff).
pub fn zmtp_decode(data: &[u8]) {
    let whole = zmtp_one_read(data);
    for byte in [data.first(), data.last()].into_iter().flatten() {
        let split = usize::from(*byte) % (data.len() + 1);
        assert_eq!(zmtp_two_reads(data, split), whole, "split at {split}");
    }
}
