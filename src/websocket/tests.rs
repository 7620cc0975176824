use std::borrow::Cow;

use super::frame::apply_mask;
use super::*;

#[test]
fn rfc_accept_key_sample() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        accept_key(" dGhlIHNhbXBsZSBub25jZQ== "),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn flags_from_mongrel2() {
    let cases = [
        ("0x81", Opcode::Text, 0),
        ("0x82", Opcode::Binary, 0),
        ("0x88", Opcode::Close, 0),
        ("0x89", Opcode::Ping, 0),
        ("0x8A", Opcode::Pong, 0),
        ("0x8a", Opcode::Pong, 0),
        ("0XC1", Opcode::Text, 4),
    ];
    for (header, opcode, rsv) in cases {
        let flags = Flags::from_header(header).unwrap();
        assert!(flags.fin(), "{header}");
        assert_eq!(flags.opcode(), opcode, "{header}");
        assert_eq!(flags.rsv(), rsv, "{header}");
    }
    let rsv1 = Flags::from_header("0xC1").unwrap();
    assert!(rsv1.rsv1() && !rsv1.rsv2() && !rsv1.rsv3());
    assert_eq!(Flags::from_header("129"), Ok(Flags(0x81)));
    assert_eq!(Flags::from_header("0x0081"), Ok(Flags(0x81)));
    assert_eq!(Flags::from_header(" 0x81 "), Ok(Flags(0x81)));
    assert_eq!(Flags(0x8a).to_header(), "0x8A");
    assert_eq!(Flags::new(Opcode::Ping), Flags(0x89));
    assert_eq!("0x82".parse::<Flags>(), Ok(Flags(0x82)));
}

#[test]
fn flags_rejects_garbage() {
    assert_eq!(Flags::from_header(""), Err(FlagsError::Empty));
    assert_eq!(Flags::from_header("0x"), Err(FlagsError::Empty));
    assert_eq!(Flags::from_header("0x100"), Err(FlagsError::OutOfRange));
    assert_eq!(Flags::from_header("256"), Err(FlagsError::OutOfRange));
    assert_eq!(
        Flags::from_header("99999999999999999999999"),
        Err(FlagsError::OutOfRange)
    );
    for bad in [
        "0x+81", "+129", "-1", "0xg1", "81h", "0b1", "0x 81", "0x８１",
    ] {
        assert_eq!(
            Flags::from_header(bad),
            Err(FlagsError::InvalidDigit),
            "{bad}"
        );
    }
}

#[test]
fn opcodes() {
    for bits in 0..16u8 {
        let op = Opcode::from_u8(bits);
        assert_eq!(op.as_u8(), bits);
        assert_eq!(op.is_control(), bits >= 8);
        assert_eq!(op.is_reserved(), matches!(bits, 3..=7 | 11..=15));
    }
    assert_eq!(Opcode::from_u8(0x81), Opcode::Text);
}

fn encoded(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(Opcode::Binary, &vec![7u8; len], &mut out);
    out
}

#[test]
fn frame_length_boundaries() {
    assert_eq!(encoded(0), [0x82, 0]);
    assert_eq!(encoded(125)[..2], [0x82, 125]);
    assert_eq!(encoded(125).len(), 2 + 125);
    assert_eq!(encoded(126)[..4], [0x82, 126, 0, 126]);
    assert_eq!(encoded(126).len(), 4 + 126);
    assert_eq!(encoded(65535)[..4], [0x82, 126, 0xff, 0xff]);
    assert_eq!(encoded(65535).len(), 4 + 65535);
    assert_eq!(encoded(65536)[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(encoded(65536).len(), 10 + 65536);
    for len in [0, 125, 126, 65535, 65536] {
        let bytes = encoded(len);
        let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.payload.len(), len);
        assert!(matches!(frame.payload, Cow::Borrowed(_)));
        assert!(frame.fin);
        assert_eq!(frame.opcode, Opcode::Binary);
    }
}

#[test]
fn decode_needs_more_bytes() {
    let bytes = encoded(65536);
    for cut in [0, 1, 2, 5, 9, 10, 100, bytes.len() - 1] {
        assert_eq!(Frame::decode(&bytes[..cut]), Ok(None), "cut {cut}");
    }
    // Trailing bytes of the next frame are left alone.
    let mut two = encoded(3);
    two.extend_from_slice(&encoded(1));
    let (frame, used) = Frame::decode(&two).unwrap().unwrap();
    assert_eq!((frame.payload.len(), used), (3, 5));
}

#[test]
fn masked_decode() {
    // RFC 6455 5.7: a masked "Hello".
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(frame.opcode, Opcode::Text);
    assert_eq!(&*frame.payload, b"Hello");
    assert!(matches!(frame.payload, Cow::Owned(_)));
    let mut again = Vec::new();
    frame.encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut again);
    assert_eq!(again, bytes);
    // Masked header incomplete.
    assert_eq!(Frame::decode(&bytes[..5]), Ok(None));
}

#[test]
fn masked_long_round_trip() {
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let frame = Frame::new(Opcode::Binary, &payload[..]);
    let mut out = Vec::new();
    frame.encode(Some([1, 2, 3, 4]), &mut out);
    assert_eq!(out[1], 0x80 | 126);
    assert_eq!(out[8] ^ 1, payload[0]);
    let (back, _) = Frame::decode(&out).unwrap().unwrap();
    assert_eq!(back, frame);
}

#[test]
fn fragments() {
    let mut out = Vec::new();
    let first = Frame {
        fin: false,
        rsv: 0,
        opcode: Opcode::Text,
        payload: Cow::Borrowed(b"Hel"),
    };
    let last = Frame::new(Opcode::Continuation, &b"lo"[..]);
    first.encode(None, &mut out);
    last.encode(Some([9, 9, 9, 9]), &mut out);
    assert_eq!(&out[..5], b"\x01\x03Hel");
    let (a, n) = Frame::decode(&out).unwrap().unwrap();
    let (b, m) = Frame::decode(&out[n..]).unwrap().unwrap();
    assert_eq!((a, b), (first, last));
    assert_eq!(n + m, out.len());
}

#[test]
fn decode_errors() {
    assert_eq!(
        Frame::decode(&[0x82, 126, 0, 125]),
        Err(FrameError::NonMinimalLength(125))
    );
    assert_eq!(
        Frame::decode(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
        Err(FrameError::NonMinimalLength(0xffff))
    );
    assert_eq!(
        Frame::decode(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        Err(FrameError::LengthHighBit)
    );
    // A huge declared length fails at once, without waiting for (or allocating) it.
    let err =
        Frame::decode(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(err, FrameError::PayloadTooLarge { .. }));
    assert_eq!(err.close_code(), CloseCode::TOO_BIG);
    assert_eq!(
        Frame::decode_with_limit(&encoded(11), 10),
        Err(FrameError::PayloadTooLarge { len: 11, max: 10 })
    );
    assert!(Frame::decode_with_limit(&encoded(10), 10)
        .unwrap()
        .is_some());
    assert_eq!(
        Frame::decode(&[0x09, 0]),
        Err(FrameError::FragmentedControl)
    );
    assert_eq!(
        Frame::decode(&[0x89, 126, 0, 126]),
        Err(FrameError::ControlTooLong(126))
    );
    assert_eq!(
        FrameError::ControlTooLong(126).close_code(),
        CloseCode::PROTOCOL_ERROR
    );
    // RSV bits and reserved opcodes are framing-valid; validate() judges them.
    let (frame, _) = Frame::decode(&[0xf3, 0]).unwrap().unwrap();
    assert_eq!((frame.rsv, frame.opcode), (7, Opcode::Reserved(3)));
    assert_eq!(frame.flags(), Flags(0xf3));
}

#[test]
fn close_codes() {
    for valid in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        assert!(CloseCode(valid).is_valid(), "{valid}");
        assert!(CloseCode(valid).is_sendable(), "{valid}");
    }
    for invalid in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        assert!(!CloseCode(invalid).is_valid(), "{invalid}");
        assert!(!CloseCode(invalid).is_sendable(), "{invalid}");
    }
    // Registered after RFC 6455: sent (a relay asks clients to reconnect with 1012), but
    // still refused when received.
    for registered in [1012, 1013, 1014] {
        assert!(!CloseCode(registered).is_valid(), "{registered}");
        assert!(CloseCode(registered).is_sendable(), "{registered}");
    }
}

#[test]
fn close_payload_round_trip() {
    let close = CloseFrame::new(CloseCode::GOING_AWAY, "bye");
    let payload = close.to_payload();
    assert_eq!(payload, b"\x03\xe9bye");
    assert_eq!(decode_close(&payload), Ok(Some(close.clone())));
    let mut frame = Vec::new();
    close.encode_frame(&mut frame);
    assert_eq!(frame, b"\x88\x05\x03\xe9bye");
    assert_eq!(decode_close(b""), Ok(None));
    assert_eq!(
        decode_close(b"\x0f\xa0"),
        Ok(Some(CloseFrame::new(CloseCode(4000), "")))
    );
}

#[test]
fn close_payload_errors() {
    let cases: [(&[u8], CloseError, u16); 5] = [
        (b"\x03", CloseError::Truncated, 1002),
        (b"\x03\xed", CloseError::InvalidCode(CloseCode(1005)), 1002),
        (b"\x00\x00", CloseError::InvalidCode(CloseCode(0)), 1002),
        (b"\x03\xe8\xff\xfe", CloseError::InvalidUtf8, 1007),
        (&[b'a'; 126], CloseError::TooLong(126), 1002),
    ];
    for (payload, err, code) in cases {
        assert_eq!(decode_close(payload), Err(err.clone()));
        assert_eq!(err.close_code(), CloseCode(code));
    }
}

#[test]
fn close_reason_truncated_at_char_boundary() {
    // 61 two-byte characters = 122 bytes; one more would cross 123.
    let reason = "é".repeat(70);
    let close = CloseFrame::new(CloseCode::NORMAL, reason);
    assert_eq!(close.sent_reason().len(), 122);
    let payload = close.to_payload();
    assert_eq!(payload.len(), 124);
    let back = decode_close(&payload).unwrap().unwrap();
    assert_eq!(back.reason, "é".repeat(61));
    let ascii = CloseFrame::new(CloseCode::NORMAL, "x".repeat(200));
    assert_eq!(ascii.to_payload().len(), 125);
    let mut frame = Vec::new();
    ascii.encode_frame(&mut frame);
    assert_eq!(frame[..2], [0x88, 125]);
}

#[test]
fn unsendable_close_codes() {
    assert!(CloseFrame::new(CloseCode::NO_STATUS, "x")
        .to_payload()
        .is_empty());
    let mut frame = Vec::new();
    CloseFrame::new(CloseCode::NO_STATUS, "").encode_frame(&mut frame);
    assert_eq!(frame, [0x88, 0]);
    assert_eq!(
        CloseFrame::new(CloseCode::ABNORMAL, "x").to_payload(),
        b"\x03\xf3x"
    );
}

#[test]
fn handshake() {
    let bytes = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat.v2")).unwrap();
    assert_eq!(
        bytes,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          Sec-WebSocket-Protocol: chat.v2\r\n\r\n"
    );
    assert!(matches!(
        handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("a\r\nX: y")),
        Err(HandshakeError::InvalidProtocol(_))
    ));
    assert!(handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("")).is_err());
    assert!(handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xO\r\n", None).is_err());
    assert!(handshake_response("short=", None).is_err());
}

#[test]
fn validation() {
    let max = 1024;
    assert_eq!(validate(Flags(0x81), "héllo".as_bytes(), max), Ok(()));
    assert_eq!(validate(Flags(0x82), &[0xff, 0xfe], max), Ok(()));
    assert_eq!(validate(Flags(0x88), &[0x03, 0xe8], max), Ok(()));
    assert_eq!(validate(Flags(0x89), &[0; 125], max), Ok(()));

    let cases = [
        (Flags(0x81), vec![0xff], Violation::InvalidUtf8, 1007),
        (Flags(0xc1), b"x".to_vec(), Violation::ReservedBits, 1002),
        (Flags(0x92), vec![], Violation::ReservedBits, 1002),
        (Flags(0x83), vec![], Violation::ReservedOpcode(3), 1002),
        (Flags(0x8b), vec![], Violation::ReservedOpcode(11), 1002),
        (Flags(0x8f), vec![], Violation::ReservedOpcode(15), 1002),
        (Flags(0x80), vec![], Violation::UnexpectedContinuation, 1002),
        (
            Flags(0x89),
            vec![0; 126],
            Violation::ControlTooLong(126),
            1002,
        ),
        (
            Flags(0x82),
            vec![0; 1025],
            Violation::MessageTooBig {
                size: 1025,
                max: 1024,
            },
            1009,
        ),
    ];
    for (flags, payload, violation, code) in cases {
        assert_eq!(validate(flags, &payload, max), Err(violation.clone()));
        assert_eq!(violation.close_code(), CloseCode(code));
    }
    // Size is judged before UTF-8, so an oversized text message is never scanned.
    assert!(matches!(
        validate(Flags(0x81), &[0xff; 2000], max),
        Err(Violation::MessageTooBig { .. })
    ));
}

#[test]
fn mask_matches_bytewise_xor() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let key = [0xde, 0xad, 0xbe, 0xef];
        let mut fast = data.clone();
        apply_mask(&mut fast, key);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }
}
