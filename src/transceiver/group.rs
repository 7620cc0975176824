//! Handler groups: many processes on one Mongrel2 route acting as one handler.
//!
//! Mongrel2 spreads a route's messages round robin over every process whose PULL is
//! connected to it, so one WebSocket session's frames, pongs and disconnect notice land on
//! any of them. A group gives each session one **owner**; the `Group` state machine here
//! (sans IO, like [`Core`](super::Core)) sits between the loop and the member's `Core`:
//!
//! - Membership: every member sends a heartbeat to every other member each
//!   [`GroupTiming::heartbeat`]; a member silent for [`GroupTiming::dead_after`] is dead.
//! - Owners: a new session's owner is chosen by rendezvous hashing of (sender id, conn id)
//!   over the live members, so every member agrees without a coordinator. The owner
//!   announces the session (with its handshake) to every member; from then on the owner is
//!   sticky: a member that joins later does not take sessions over, it is told the table.
//! - Routing: a WebSocket handshake or frame that lands on a non-owner is forwarded, in
//!   order, to the owner, whose `Core` handles it (so pongs count wherever they land, and
//!   only the owner pings). HTTP and other requests are served where they land. A session
//!   expires after two silent ping rounds instead of one: a pong Mongrel2 handed to a
//!   member just before it was killed is gone with it. A
//!   disconnect notice is handled where it lands and copied to every member, so every
//!   member's table forgets the session.
//! - Death: when an owner dies, each of its sessions gets the rendezvous owner among the
//!   survivors, whose `Core` adopts it (an [`Event::Opened`](super::Event::Opened) with the
//!   original handshake and `adopted: true`). Forwards are acknowledged in heartbeats; a forwarder re-delivers
//!   what a dead owner had not acknowledged to the new owner.
//! - `sessions()` and `broadcast` use the group table, which every member holds; any member
//!   may reply to any connection (Mongrel2 matches replies by sender id), so `deliver_*`
//!   needs no routing.
//!
//! # Wire format, version 1
//!
//! Members bind a PULL socket on their own endpoint and connect one PUSH socket to every
//! other member (`ZMQ_IMMEDIATE`, so nothing queues for a member that is not there).
//! Every message is multipart; frame 0 is the version tag `m2group/1`, frame 1 the kind,
//! frame 2 the sending member's name (its endpoint, `#`, a per-process nonce). Integers are
//! 8-byte big-endian.
//!
//! | kind    | further frames                                                         |
//! |---------|------------------------------------------------------------------------|
//! | `hb`    | sender's endpoint; highest `fwd` sequence received from the recipient; the recipient's name as the sender knows it (empty when unknown) |
//! | `fwd`   | sequence number (per sender and recipient, from 1); the Mongrel2 message as received |
//! | `disc`  | a Mongrel2 disconnect notice as received                               |
//! | `open`  | owner's name; the message (handshake or frame) that opened the session  |
//! | `close` | sender id; conn id                                                      |
//! | `app`   | one frame from the application ([`Transceiver::group_send`](super::Transceiver::group_send)), handed to the recipient's application as [`Event::GroupMessage`](super::Event::GroupMessage) |
//!
//! Unknown versions and kinds are logged and skipped, so a newer member can add kinds.

mod state;
pub(crate) mod wire;

pub use state::GroupTiming;

/// A 64-bit hash of `parts` (concatenated) that every member computes alike, whatever its
/// build or platform, for rendezvous hashing over the members (this module's owners, and
/// anything an application assigns to members the same way): FNV-1a, then a 64-bit
/// finaliser so inputs that differ in a few bits spread over the whole range.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}
pub(crate) use state::{Group, Local};
