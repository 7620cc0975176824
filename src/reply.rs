//! Replies: what a handler sends Mongrel2.
//!
//! The wire format is `UUID SP LEN:ID ID ID, SP BODY`. The body goes to each
//! listed connection as raw bytes (an HTTP response, websocket frame bytes, ...);
//! an empty body closes the connections. Mongrel2 silently drops a whole message
//! that lists more than `limits.handler_targets` ids (default 128), so long
//! target lists must be split: see [`batched`].
//!
//! Extended replies (`LEN:X ID ID,`, body a tnetstring `[key, value]`) carry
//! control requests; see [`ctl_keep_alive`], [`ctl_credits`] and [`ctl_cancel`].
//!
//! ```
//! use mongrel2_transceiver::reply;
//!
//! let msg = reply::reply("handler-1", &[7, 12], b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
//! assert_eq!(&msg[..19], b"handler-1 4:7 12, H");
//! assert_eq!(reply::batched("h", &(0..1000).collect::<Vec<u64>>(), b"x", 128).unwrap().len(), 8);
//! ```

use crate::tnetstring::{
    self, decimal_len, split_element, write_decimal, write_decimal_backwards, Dict, Value,
};

/// Mongrel2's default `limits.handler_targets`: most ids one message may list.
pub const DEFAULT_HANDLER_TARGETS: usize = 128;

/// Why a reply could not be encoded or parsed. Parse offsets count from the
/// start of the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// No connection ids: Mongrel2 refuses a message with zero targets.
    #[error("a reply needs at least one connection id")]
    EmptyTargets,
    /// The uuid is empty or holds a space, a control character or DEL, any of which would
    /// break the framing.
    #[error(
        "invalid reply uuid {0:?}: it must be non-empty, without spaces or control characters"
    )]
    InvalidUuid(String),
    /// `max_targets` was 0.
    #[error("max_targets must be at least 1")]
    InvalidMaxTargets,
    /// Credits above what Mongrel2 can count (`int`, at most 2147483647).
    #[error("{0} credits exceed Mongrel2's limit of 2147483647")]
    InvalidCredits(u64),
    /// The extended value could not be encoded, or the targets netstring is malformed.
    #[error(transparent)]
    Tnetstring(#[from] tnetstring::Error),
    /// A space separator is missing.
    #[error("reply has no space after its {field} at byte {offset}")]
    MissingSpace {
        /// The field before the missing space: "uuid" or "targets".
        field: &'static str,
        /// Where the space should be.
        offset: usize,
    },
    /// The targets are not a `,` netstring of space-separated decimal ids.
    #[error("invalid target list at byte {offset}")]
    InvalidTargets {
        /// Where the problem is.
        offset: usize,
    },
    /// More ids than the limit Mongrel2 enforces.
    #[error("reply lists more than {max} connection ids")]
    TooManyTargets {
        /// The limit.
        max: usize,
    },
    /// An extended body is not a tnetstring `[string, value]`.
    #[error("invalid extended reply body: {0}")]
    InvalidExtended(&'static str),
}

/// Checks that `uuid` can be framed as a reply's sender: non-empty, without spaces,
/// control characters or DEL. A Mongrel2 `send_ident` is a free-form string and other
/// peers of the protocol (the seed's Python Server, e.g. `python_server`) use such ids, so
/// this is all the framing needs. A real Mongrel2 is stricter: see [`is_mongrel2_uuid`].
pub fn validate_uuid(uuid: &str) -> Result<(), ReplyError> {
    check_uuid(uuid)
}

/// Whether a real Mongrel2 accepts `uuid` as a reply's sender: its reply parser takes ASCII
/// letters, digits and `-` only and silently drops any other reply. (It must also start
/// with the Handler's `recv_ident` when that is set, which only the configuration knows.)
pub fn is_mongrel2_uuid(uuid: &str) -> bool {
    !uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn check_uuid(uuid: &str) -> Result<(), ReplyError> {
    // No early exit, so the loop vectorizes: this runs on every reply.
    let ok = uuid
        .bytes()
        .fold(!uuid.is_empty(), |ok, b| ok & (b > b' ') & (b != 0x7f));
    if ok {
        Ok(())
    } else {
        Err(ReplyError::InvalidUuid(uuid.to_owned()))
    }
}

/// Length of `ID ID ID` (plus `X ` when extended); `ids` is non-empty.
fn ids_len(ids: &[u64], extended: bool) -> usize {
    let digits: usize = ids.iter().map(|&id| decimal_len(id)).sum();
    digits + ids.len() - 1 + if extended { 2 } else { 0 }
}

/// Appends `UUID SP LEN:[X ]ID ID, SP BODY`; `ids` is non-empty and `uuid`
/// checked. The message is allocated once, at its exact size.
fn write_message(uuid: &str, ids: &[u64], extended: bool, body: &[u8], out: &mut Vec<u8>) {
    // A few ids: measuring them first and formatting in place is cheapest.
    if ids.len() <= FEW_IDS {
        return write_message_exact(uuid, ids, extended, body, out);
    }
    // The id list is formatted last to first into a scratch buffer (digits come out of a
    // number backwards, so no per-id length pass is needed), then copied once into a
    // message sized exactly. Lists longer than the stack buffer take a heap one.
    const STACK_IDS: usize = DEFAULT_HANDLER_TARGETS;
    let mut stack = [0u8; STACK_IDS * ID_ROOM];
    let mut heap = Vec::new();
    let scratch: &mut [u8] = if ids.len() <= STACK_IDS {
        &mut stack[..ids.len() * ID_ROOM]
    } else {
        heap.resize(ids.len() * ID_ROOM, 0);
        &mut heap
    };
    let mut start = scratch.len();
    for (i, &id) in ids.iter().enumerate().rev() {
        start = write_decimal_backwards(&mut scratch[..start], id);
        if i > 0 {
            start -= 1;
            scratch[start] = b' ';
        }
    }
    let list = &scratch[start..];
    let id_len = list.len() + if extended { 2 } else { 0 };
    let mut len_buf = [0u8; 20];
    let len_text = &mut len_buf[..decimal_len(id_len as u64)];
    write_decimal(len_text, id_len as u64);
    let len_text = &*len_text;
    out.reserve_exact(uuid.len() + 1 + len_text.len() + 1 + id_len + 2 + body.len());
    out.extend_from_slice(uuid.as_bytes());
    out.push(b' ');
    out.extend_from_slice(len_text);
    out.push(b':');
    if extended {
        out.extend_from_slice(b"X ");
    }
    out.extend_from_slice(list);
    out.extend_from_slice(b", ");
    out.extend_from_slice(body);
}

/// [`write_message`] for a few ids: measures them, then fills the header in place.
fn write_message_exact(uuid: &str, ids: &[u64], extended: bool, body: &[u8], out: &mut Vec<u8>) {
    let id_len = ids_len(ids, extended);
    let len_digits = decimal_len(id_len as u64);
    let header_len = uuid.len() + 1 + len_digits + 1 + id_len + 2;
    out.reserve_exact(header_len + body.len());
    let start = out.len();
    out.resize(start + header_len, 0);
    let buf = &mut out[start..];
    let mut pos = uuid.len();
    buf[..pos].copy_from_slice(uuid.as_bytes());
    buf[pos] = b' ';
    pos += 1;
    write_decimal(&mut buf[pos..pos + len_digits], id_len as u64);
    pos += len_digits;
    buf[pos] = b':';
    pos += 1;
    if extended {
        buf[pos..pos + 2].copy_from_slice(b"X ");
        pos += 2;
    }
    // Ids are written last to first, each ending where the next one's space is:
    // digits come out of a number backwards, so no per-id length is needed.
    let mut end = pos + id_len - if extended { 2 } else { 0 };
    buf[end] = b',';
    buf[end + 1] = b' ';
    for (i, &id) in ids.iter().enumerate().rev() {
        end = write_decimal_backwards(&mut buf[..end], id);
        if i > 0 {
            end -= 1;
            buf[end] = b' ';
        }
    }
    out.extend_from_slice(body);
}

/// Up to this many ids a message is measured first and formatted in place; above it the
/// length pass costs more than formatting into scratch and copying.
const FEW_IDS: usize = 16;

/// Room for one id in the scratch buffer: 20 digits of a u64 and its separating space.
const ID_ROOM: usize = 21;

/// Appends one reply message to `out`: `UUID SP LEN:ID ID, SP BODY`.
///
/// All `ids` go in this one message: if they may exceed Mongrel2's
/// `limits.handler_targets`, use [`batched`] instead. An empty body closes the
/// connections.
pub fn encode_reply(
    uuid: &str,
    ids: &[u64],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ReplyError> {
    check_uuid(uuid)?;
    if ids.is_empty() {
        return Err(ReplyError::EmptyTargets);
    }
    write_message(uuid, ids, false, body, out);
    Ok(())
}

/// One reply message in a new, exactly sized buffer. See [`encode_reply`].
pub fn reply(uuid: &str, ids: &[u64], body: &[u8]) -> Result<Vec<u8>, ReplyError> {
    let mut out = Vec::new();
    encode_reply(uuid, ids, body, &mut out)?;
    Ok(out)
}

/// Appends a close message (empty body) to `out`: Mongrel2 closes each
/// connection once its queued data is written.
pub fn encode_close(uuid: &str, ids: &[u64], out: &mut Vec<u8>) -> Result<(), ReplyError> {
    encode_reply(uuid, ids, b"", out)
}

/// `UUID 2:-1, BODY`: a reply to the seed's control connection id `-1` (its Server reads the
/// body of a `__ping__` answer from it). Never meant for a real Mongrel2.
pub(crate) fn to_control_connection(uuid: &str, body: &[u8]) -> Result<Vec<u8>, ReplyError> {
    check_uuid(uuid)?;
    let mut out = Vec::with_capacity(uuid.len() + 7 + body.len());
    out.extend_from_slice(uuid.as_bytes());
    out.extend_from_slice(b" 2:-1, ");
    out.extend_from_slice(body);
    Ok(out)
}

/// A close message (empty body) in a new buffer.
pub fn close(uuid: &str, ids: &[u64]) -> Result<Vec<u8>, ReplyError> {
    reply(uuid, ids, b"")
}

/// The same body for many connections, split into messages of at most
/// `max_targets` ids (set it to Mongrel2's `limits.handler_targets`).
///
/// ```
/// use mongrel2_transceiver::reply::{batched, DEFAULT_HANDLER_TARGETS};
/// let ids: Vec<u64> = (1..=300).collect();
/// let msgs = batched("h", &ids, b"hi", DEFAULT_HANDLER_TARGETS).unwrap();
/// assert_eq!(msgs.len(), 3); // 128 + 128 + 44
/// ```
pub fn batched(
    uuid: &str,
    ids: &[u64],
    body: &[u8],
    max_targets: usize,
) -> Result<Vec<Vec<u8>>, ReplyError> {
    Ok(batches(uuid, ids, body, max_targets)?.collect())
}

/// Like [`batched`], lazily: each item is one exactly sized message.
pub fn batches<'a>(
    uuid: &'a str,
    ids: &'a [u64],
    body: &'a [u8],
    max_targets: usize,
) -> Result<Batches<'a>, ReplyError> {
    check_uuid(uuid)?;
    if max_targets == 0 {
        return Err(ReplyError::InvalidMaxTargets);
    }
    if ids.is_empty() {
        return Err(ReplyError::EmptyTargets);
    }
    Ok(Batches {
        uuid,
        chunks: ids.chunks(max_targets),
        body,
    })
}

/// Iterator of reply messages, see [`batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    uuid: &'a str,
    chunks: std::slice::Chunks<'a, u64>,
    body: &'a [u8],
}

impl Batches<'_> {
    /// Appends the next message to `out` instead of allocating one; `false` when done.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        match self.chunks.next() {
            Some(ids) => {
                write_message(self.uuid, ids, false, self.body, out);
                true
            }
            None => false,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let ids = self.chunks.next()?;
        let mut out = Vec::new();
        write_message(self.uuid, ids, false, self.body, &mut out);
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Appends an extended reply: `UUID SP LEN:X ID ID, SP [key, value]` with the
/// body a tnetstring list. Mongrel2 handles key `ctl` itself and disconnects
/// clients targeted with keys it has no dispatcher for.
///
/// The value is written at any depth (see [`tnetstring::encode`](crate::tnetstring::encode())):
/// nesting deeper than [`DEFAULT_MAX_DEPTH`](crate::tnetstring::DEFAULT_MAX_DEPTH) is not
/// refused here, though a reader with default limits refuses it.
pub fn encode_extended(
    uuid: &str,
    ids: &[u64],
    key: &str,
    value: &Value<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ReplyError> {
    check_uuid(uuid)?;
    if ids.is_empty() {
        return Err(ReplyError::EmptyTargets);
    }
    let start = out.len();
    write_message(uuid, ids, true, b"", out);
    let body_start = out.len();
    tnetstring::write_bytes(out, key.as_bytes());
    if let Err(e) = tnetstring::encode(value, out) {
        out.truncate(start);
        return Err(e.into());
    }
    tnetstring::close_container(out, body_start, b']');
    Ok(())
}

fn ctl(uuid: &str, ids: &[u64], name: &str, value: Value<'_>) -> Result<Vec<u8>, ReplyError> {
    let mut args = Dict::with_capacity(1);
    args.push(name, value);
    let mut out = Vec::new();
    encode_extended(uuid, ids, "ctl", &Value::Dict(args), &mut out)?;
    Ok(out)
}

/// `ctl {keep-alive: true}`: resets the connections' idle timers.
pub fn ctl_keep_alive(uuid: &str, ids: &[u64]) -> Result<Vec<u8>, ReplyError> {
    ctl(uuid, ids, "keep-alive", Value::Bool(true))
}

/// `ctl {credits: n}`: lets Mongrel2 read `n` more bytes of a streamed upload.
/// Mongrel2 counts credits in a C `int`, so `n` must not exceed 2147483647.
pub fn ctl_credits(uuid: &str, ids: &[u64], credits: u64) -> Result<Vec<u8>, ReplyError> {
    let n = i32::try_from(credits).map_err(|_| ReplyError::InvalidCredits(credits))?;
    ctl(uuid, ids, "credits", Value::Integer(i64::from(n)))
}

/// `ctl {cancel: true}`: drops the clients at once (no disconnect notice follows).
pub fn ctl_cancel(uuid: &str, ids: &[u64]) -> Result<Vec<u8>, ReplyError> {
    ctl(uuid, ids, "cancel", Value::Bool(true))
}

/// A reply as Mongrel2 reads it (for test harnesses), borrowing from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The sender uuid.
    pub sender: &'a str,
    /// Target connection ids, in order.
    pub ids: Vec<u64>,
    /// Whether the ids were prefixed with `X` (an extended reply).
    pub extended: bool,
    /// Everything after the targets: raw bytes, or the tnetstring of an extended reply.
    pub body: &'a [u8],
}

impl<'a> Reply<'a> {
    /// Parses a reply, accepting at most [`DEFAULT_HANDLER_TARGETS`] ids.
    pub fn parse(input: &'a [u8]) -> Result<Reply<'a>, ReplyError> {
        Reply::parse_with_max_targets(input, DEFAULT_HANDLER_TARGETS)
    }

    /// Parses a reply with Mongrel2's grammar: more than `max_targets` ids is
    /// an error, as Mongrel2 would drop the message.
    pub fn parse_with_max_targets(
        input: &'a [u8],
        max_targets: usize,
    ) -> Result<Reply<'a>, ReplyError> {
        let uuid_len = input
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ReplyError::MissingSpace {
                field: "uuid",
                offset: input.len(),
            })?;
        let sender = std::str::from_utf8(&input[..uuid_len]).map_err(|_| {
            ReplyError::InvalidUuid(String::from_utf8_lossy(&input[..uuid_len]).into_owned())
        })?;
        check_uuid(sender)?;

        let targets_at = uuid_len + 1;
        let el = split_element(&input[targets_at..], targets_at)?;
        if el.tag != b',' {
            return Err(ReplyError::InvalidTargets {
                offset: el.payload_offset + el.payload.len(),
            });
        }
        let (extended, list, list_offset) = match el.payload.strip_prefix(b"X ") {
            Some(rest) => (true, rest, el.payload_offset + 2),
            None => (false, el.payload, el.payload_offset),
        };
        let ids = parse_ids(list, list_offset, max_targets)?;

        let space_at = targets_at + el.consumed;
        if input.get(space_at) != Some(&b' ') {
            return Err(ReplyError::MissingSpace {
                field: "targets",
                offset: space_at,
            });
        }
        Ok(Reply {
            sender,
            ids,
            extended,
            body: &input[space_at + 1..],
        })
    }

    /// Whether this closes the connections (a plain reply with an empty body).
    pub fn is_close(&self) -> bool {
        !self.extended && self.body.is_empty()
    }

    /// The `[key, value]` of an extended reply, checked the way Mongrel2 does.
    pub fn extended_value(&self) -> Result<(&'a str, Value<'a>), ReplyError> {
        if !self.extended {
            return Err(ReplyError::InvalidExtended("not an extended reply"));
        }
        let mut value = tnetstring::parse_complete(self.body)?;
        let Value::List(items) = &mut value else {
            return Err(ReplyError::InvalidExtended("body is not a list"));
        };
        let mut items = std::mem::take(items);
        if items.len() != 2 {
            return Err(ReplyError::InvalidExtended(
                "list does not have two elements",
            ));
        }
        let value = items.pop().unwrap_or(Value::Null);
        // The parser borrows every string, so a key is always `Cow::Borrowed`.
        let key = match items.pop() {
            Some(Value::Bytes(std::borrow::Cow::Borrowed(k))) => std::str::from_utf8(k)
                .map_err(|_| ReplyError::InvalidExtended("key is not UTF-8"))?,
            _ => return Err(ReplyError::InvalidExtended("key is not a string")),
        };
        Ok((key, value))
    }
}

/// `ID ID ID`: single spaces, an optional trailing space (Mongrel2's grammar).
fn parse_ids(list: &[u8], base: usize, max_targets: usize) -> Result<Vec<u64>, ReplyError> {
    // Grown as ids parse, never sized from the claimed length.
    let mut ids = Vec::new();
    let mut pos = 0;
    while pos < list.len() {
        if ids.len() == max_targets {
            return Err(ReplyError::TooManyTargets { max: max_targets });
        }
        let start = pos;
        let mut id: u64 = 0;
        while let Some(&b) = list.get(pos).filter(|b| b.is_ascii_digit()) {
            id = id
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or(ReplyError::InvalidTargets {
                    offset: base + start,
                })?;
            pos += 1;
        }
        if pos == start {
            return Err(ReplyError::InvalidTargets { offset: base + pos });
        }
        ids.push(id);
        if list.get(pos) == Some(&b' ') {
            pos += 1;
        } else if pos < list.len() {
            return Err(ReplyError::InvalidTargets { offset: base + pos });
        }
    }
    if ids.is_empty() {
        return Err(ReplyError::EmptyTargets);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
