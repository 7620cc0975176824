//! Property tests for the WebSocket codec: round trips and robustness on arbitrary input.

use std::borrow::Cow;

use mongrel2_transceiver::websocket::{
    decode_close, encode_frame, validate, CloseCode, CloseFrame, Flags, Frame, FrameError, Opcode,
    MAX_CLOSE_REASON,
};
use proptest::prelude::*;

/// A deterministic payload, so that long payloads cost no shrinking or random bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A frame that obeys the framing rules `Frame::decode` enforces: control frames are
/// final and carry at most 125 bytes.
fn frame_strategy(lengths: impl Strategy<Value = usize>) -> impl Strategy<Value = Frame<'static>> {
    (0u8..16, 0u8..8, any::<bool>(), lengths, any::<u8>()).prop_map(|(op, rsv, fin, len, seed)| {
        let opcode = Opcode::from_u8(op);
        let (fin, len) = if opcode.is_control() {
            (true, len % 126)
        } else {
            (fin, len)
        };
        Frame {
            fin,
            rsv,
            opcode,
            payload: Cow::Owned(payload(len, seed)),
        }
    })
}

fn check_round_trip(frame: &Frame<'_>, mask: Option<[u8; 4]>, cut: usize) {
    let mut bytes = Vec::new();
    frame.encode(mask, &mut bytes);
    let header = match frame.payload.len() {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    } + if mask.is_some() { 4 } else { 0 };
    assert_eq!(bytes.len(), header + frame.payload.len());

    let (decoded, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(&decoded, frame);
    assert_eq!(used, bytes.len());
    assert_eq!(matches!(decoded.payload, Cow::Borrowed(_)), mask.is_none());

    // Any strict prefix asks for more bytes.
    assert_eq!(Frame::decode(&bytes[..cut % bytes.len()]), Ok(None));

    // Bytes after the frame are not consumed.
    bytes.extend_from_slice(&[0x81, 0x00]);
    let (_, used_with_tail) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(used_with_tail, used);
}

fn valid_close_code() -> impl Strategy<Value = CloseCode> {
    prop_oneof![
        (1000u16..=1003).prop_map(CloseCode),
        (1007u16..=1011).prop_map(CloseCode),
        (3000u16..=4999).prop_map(CloseCode),
    ]
}

proptest! {
    #[test]
    fn frame_round_trip_short(
        frame in frame_strategy(0usize..300),
        mask in proptest::option::of(any::<[u8; 4]>()),
        cut in any::<usize>(),
    ) {
        check_round_trip(&frame, mask, cut);
    }

    #[test]
    fn server_frame_matches_frame_encode(op in 0u8..16, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let opcode = Opcode::from_u8(op);
        let mut fast = Vec::new();
        encode_frame(opcode, &data, &mut fast);
        let mut general = Vec::new();
        Frame::new(opcode, &data[..]).encode(None, &mut general);
        prop_assert_eq!(fast, general);
    }

    #[test]
    fn close_round_trip(code in valid_close_code(), reason in ".{0,80}") {
        let close = CloseFrame::new(code, reason.as_str());
        let payload = close.to_payload();
        prop_assert!(payload.len() <= 125);
        let decoded = decode_close(&payload).unwrap().unwrap();
        prop_assert_eq!(decoded.code, code);
        prop_assert!(decoded.reason.len() <= MAX_CLOSE_REASON);
        prop_assert!(reason.starts_with(&*decoded.reason));
        if reason.len() <= MAX_CLOSE_REASON {
            prop_assert_eq!(&*decoded.reason, reason.as_str());
        } else {
            // Truncation keeps as many whole characters as fit.
            let next = reason[decoded.reason.len()..].chars().next().unwrap();
            prop_assert!(decoded.reason.len() + next.len_utf8() > MAX_CLOSE_REASON);
        }

        let mut frame = Vec::new();
        close.encode_frame(&mut frame);
        let (decoded_frame, _) = Frame::decode(&frame).unwrap().unwrap();
        prop_assert_eq!(decoded_frame.opcode, Opcode::Close);
        prop_assert_eq!(&*decoded_frame.payload, &payload[..]);
    }

    #[test]
    fn flags_header_round_trip(byte in any::<u8>()) {
        let flags = Flags(byte);
        prop_assert_eq!(Flags::from_header(&flags.to_header()), Ok(flags));
        prop_assert_eq!(Flags::from_header(&flags.to_header().to_lowercase()), Ok(flags));
        prop_assert_eq!(Flags::from_header(&byte.to_string()), Ok(flags));
    }

    #[test]
    fn flags_hex_matches_value(digits in "[0-9a-fA-F]{1,6}") {
        let value = u32::from_str_radix(&digits, 16).unwrap();
        let parsed = Flags::from_header(&format!("0x{digits}"));
        if value <= 0xff {
            prop_assert_eq!(parsed, Ok(Flags(value as u8)));
        } else {
            prop_assert!(parsed.is_err());
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), limit in 0u64..200) {
        if let Ok(Some((frame, used))) = Frame::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert!(frame.payload.len() < used);
        }
        match Frame::decode_with_limit(&bytes, limit) {
            Ok(Some((frame, _))) => prop_assert!(frame.payload.len() as u64 <= limit),
            Ok(None) | Err(FrameError::PayloadTooLarge { .. }) => {}
            Err(other) => { let _ = other.close_code(); }
        }
    }

    #[test]
    fn decode_close_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        match decode_close(&bytes) {
            Ok(Some(close)) => prop_assert!(close.code.is_valid()),
            Ok(None) => prop_assert!(bytes.is_empty()),
            Err(err) => {
                let code = err.close_code();
                prop_assert!(code == CloseCode::PROTOCOL_ERROR || code == CloseCode::INVALID_PAYLOAD);
            }
        }
    }

    #[test]
    fn flags_never_panics(value in any::<String>()) {
        let _ = Flags::from_header(&value);
    }

    #[test]
    fn validate_never_panics(byte in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
        if let Err(violation) = validate(Flags(byte), &bytes, max) {
            let _ = violation.close_code();
        }
    }
}

proptest! {
    // Payloads around the 16- and 64-bit length boundaries are large; a few cases do.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn frame_round_trip_length_boundaries(
        frame in frame_strategy(prop_oneof![65_530usize..=65_541, 70_000usize..=70_001]),
        mask in proptest::option::of(any::<[u8; 4]>()),
        cut in any::<usize>(),
    ) {
        check_round_trip(&frame, mask, cut);
    }
}
