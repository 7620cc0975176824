use super::*;

/// A decoder past the greeting.
fn greeted(max_frame: usize) -> Decoder {
    let mut decoder = Decoder::new(max_frame);
    assert_eq!(
        decoder.decode(&greeting()),
        Ok(Some((Item::Greeting, GREETING_LEN)))
    );
    decoder
}

/// A greeting with the given version and mechanism (NUL-padded to 20 bytes).
fn greeting_with(major: u8, minor: u8, mechanism: &[u8], as_server: u8) -> Vec<u8> {
    let mut g = vec![0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = major;
    g[11] = minor;
    g[12..12 + mechanism.len()].copy_from_slice(mechanism);
    g[32] = as_server;
    g
}

/// Every item in `bytes`, decoded like a reader does, and the result that stopped it.
fn decode_all(bytes: &[u8]) -> (Vec<Item<'_>>, Result<usize, ZmtpError>) {
    let mut decoder = Decoder::new(1 << 20);
    let mut items = Vec::new();
    let mut at = 0;
    loop {
        match decoder.decode(&bytes[at..]) {
            Ok(Some((item, used))) => {
                assert!(used > 0 && used <= bytes.len() - at);
                items.push(item);
                at += used;
            }
            Ok(None) => return (items, Ok(at)),
            Err(err) => return (items, Err(err)),
        }
    }
}

#[test]
fn our_greeting_decodes() {
    let ours = greeting();
    let mut decoder = Decoder::new(1024);
    assert!(!decoder.greeted());
    // Bytes after the greeting are left for the next call.
    let mut wire = ours.to_vec();
    wire.extend_from_slice(&[0, 0]);
    assert_eq!(
        decoder.decode(&wire),
        Ok(Some((Item::Greeting, GREETING_LEN)))
    );
    assert!(decoder.greeted());
    assert_eq!(&ours[..11], b"\xff\0\0\0\0\0\0\0\0\x7f\x03");
    assert_eq!(&ours[12..17], b"NULL\0");
    // After the greeting the same decoder reads frames.
    let expected = Item::Message {
        body: b"",
        more: false,
    };
    assert_eq!(decoder.decode(&wire[64..]), Ok(Some((expected, 2))));
}

#[test]
fn greeting_byte_by_byte() {
    let ours = greeting();
    let mut decoder = Decoder::new(1024);
    for n in 0..GREETING_LEN {
        assert_eq!(decoder.decode(&ours[..n]), Ok(None), "{n} bytes");
        assert!(!decoder.greeted());
    }
    assert_eq!(
        decoder.decode(&ours),
        Ok(Some((Item::Greeting, GREETING_LEN)))
    );
}

#[test]
fn bad_signature_refused_on_ten_bytes() {
    // An HTTP client talking to the wrong port.
    let http = b"GET / HTTP/1.1\r\n";
    assert_eq!(
        Decoder::new(1024).decode(&http[..10]),
        Err(ZmtpError::Signature([b'G', b'P']))
    );
    // The right first byte, but the signature's last byte has bit 0 clear.
    let mut bad = greeting();
    bad[9] = 0x7e;
    assert_eq!(
        Decoder::new(1024).decode(&bad[..10]),
        Err(ZmtpError::Signature([0xff, 0x7e]))
    );
    assert_eq!(
        Decoder::new(1024).decode(&bad),
        Err(ZmtpError::Signature([0xff, 0x7e]))
    );
}

#[test]
fn zmtp2_refused() {
    // libzmq 3.x: the signature, then revision 1 (ZMTP 2.0) and its socket type.
    let mut old = greeting()[..10].to_vec();
    old.extend_from_slice(&[0x01, 0x07]);
    assert_eq!(Decoder::new(1024).decode(&old), Err(ZmtpError::Version(1)));
    assert_eq!(
        Decoder::new(1024).decode(&greeting_with(2, 0, b"NULL", 0)[..11]),
        Err(ZmtpError::Version(2))
    );
}

#[test]
fn other_mechanisms_refused() {
    for mechanism in ["CURVE", "PLAIN", "NUL", "NULLX"] {
        let g = greeting_with(3, 0, mechanism.as_bytes(), 0);
        let expected = Err(ZmtpError::Mechanism(mechanism.to_owned()));
        // Refused as soon as the mechanism field is in.
        assert_eq!(Decoder::new(1024).decode(&g[..32]), expected);
        assert_eq!(Decoder::new(1024).decode(&g), expected);
    }
}

#[test]
fn libzmq_43_greeting_accepted() {
    let theirs = greeting_with(3, 1, b"NULL", 1);
    let mut decoder = Decoder::new(1024);
    assert_eq!(decoder.decode(&theirs[..63]), Ok(None));
    assert_eq!(
        decoder.decode(&theirs),
        Ok(Some((Item::Greeting, GREETING_LEN)))
    );
    assert!(decoder.greeted());
    // A later minor (or major) version is accepted too.
    assert_eq!(
        Decoder::new(1024).decode(&greeting_with(4, 0, b"NULL", 0)),
        Ok(Some((Item::Greeting, GREETING_LEN)))
    );
}

#[test]
fn short_and_long_frames() {
    let short = vec![7u8; 255];
    let long = vec![9u8; 256];
    let mut wire = Vec::new();
    write_message(&mut wire, &short);
    assert_eq!(&wire[..2], &[0x00, 0xff]);
    assert_eq!(wire.len(), 2 + 255);
    let mut long_wire = Vec::new();
    write_message(&mut long_wire, &long);
    assert_eq!(&long_wire[..9], &[0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x00]);
    assert_eq!(long_wire.len(), 9 + 256);
    wire.extend_from_slice(&long_wire);

    let mut decoder = greeted(1024);
    let first = Item::Message {
        body: &short[..],
        more: false,
    };
    assert_eq!(decoder.decode(&wire), Ok(Some((first, 257))));
    let second = Item::Message {
        body: &long[..],
        more: false,
    };
    assert_eq!(decoder.decode(&wire[257..]), Ok(Some((second, 265))));
    // A header alone, or part of the long length, is not yet a frame.
    assert_eq!(decoder.decode(&wire[257..257 + 5]), Ok(None));
    assert_eq!(decoder.decode(&wire[257..257 + 9 + 255]), Ok(None));
}

#[test]
fn more_flag_and_long_form_of_a_short_frame() {
    let mut decoder = greeted(1024);
    let more = Item::Message {
        body: b"abc",
        more: true,
    };
    assert_eq!(decoder.decode(b"\x01\x03abcdef"), Ok(Some((more, 5))));
    // The long form for a short body is accepted (RFC 23 only says SHOULD).
    let long = b"\x03\0\0\0\0\0\0\0\x02hi";
    let expected = Item::Message {
        body: b"hi",
        more: true,
    };
    assert_eq!(decoder.decode(long), Ok(Some((expected, 11))));
}

#[test]
fn reserved_flag_bits_refused() {
    let mut decoder = greeted(1024);
    for flags in [0x08u8, 0x10, 0x80, 0xff] {
        // Refused on the flags byte alone.
        assert_eq!(decoder.decode(&[flags]), Err(ZmtpError::Flags(flags)));
        assert_eq!(decoder.decode(&[flags, 0]), Err(ZmtpError::Flags(flags)));
    }
}

#[test]
fn frames_over_the_limit_refused() {
    let mut decoder = greeted(16);
    let at_limit = [&[0u8, 16][..], &[b'x'; 16]].concat();
    let expected = Item::Message {
        body: &at_limit[2..],
        more: false,
    };
    assert_eq!(decoder.decode(&at_limit), Ok(Some((expected, 18))));
    // Refused on the header, before the body arrives.
    assert_eq!(
        decoder.decode(&[0, 17]),
        Err(ZmtpError::TooLarge { size: 17, max: 16 })
    );
    let mut huge = vec![0x02];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(
        decoder.decode(&huge),
        Err(ZmtpError::TooLarge {
            size: u64::MAX,
            max: 16
        })
    );
    // Even with no limit to speak of, u64::MAX neither overflows nor allocates.
    let mut unlimited = greeted(usize::MAX);
    assert_eq!(unlimited.decode(&huge), Ok(None));
    let mut command = vec![0x06];
    command.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert_eq!(
        decoder.decode(&command),
        Err(ZmtpError::TooLarge {
            size: 1 << 40,
            max: 16
        })
    );
}

#[test]
fn every_prefix_decodes_to_items_or_none() {
    let mut wire = greeting_with(3, 1, b"NULL", 1);
    write_ready(&mut wire, "PUSH");
    write_message(&mut wire, b"hello");
    wire.extend_from_slice(b"\x01\x01a");
    write_message(&mut wire, &[5u8; 300]);
    wire.extend_from_slice(b"\x04\x0c\x09SUBSCRIBEab");
    let (all, end) = decode_all(&wire);
    assert_eq!(end, Ok(wire.len()));
    assert_eq!(all.len(), 6);
    for n in 0..=wire.len() {
        let (items, end) = decode_all(&wire[..n]);
        assert!(end.is_ok(), "{n} bytes: {end:?}");
        assert_eq!(items, all[..items.len()], "{n} bytes");
    }
}

#[test]
fn malformed_commands_refused() {
    let mut decoder = greeted(1024);
    // The name is said to be 5 bytes, the frame holds 2 after the length.
    assert_eq!(decoder.decode(b"\x04\x03\x05RE"), Err(ZmtpError::Command));
    // A command frame with no name length at all.
    assert_eq!(decoder.decode(b"\x04\x00"), Err(ZmtpError::Command));
    assert_eq!(
        decoder.decode(b"\x06\0\0\0\0\0\0\0\0"),
        Err(ZmtpError::Command)
    );
    // A name filling the frame exactly is fine: an empty body.
    let ping = Item::Command {
        name: b"PING",
        body: b"",
    };
    assert_eq!(decoder.decode(b"\x04\x05\x04PING"), Ok(Some((ping, 7))));
}

#[test]
fn ready_round_trip() {
    let mut wire = Vec::new();
    write_ready(&mut wire, "PULL");
    let mut decoder = greeted(1024);
    let Ok(Some((item, used))) = decoder.decode(&wire) else {
        panic!("READY does not decode: {:?}", decoder.decode(&wire));
    };
    assert_eq!(used, wire.len());
    assert_eq!(wire[0], FLAG_COMMAND);
    let Item::Command { name, body } = item else {
        panic!("not a command: {item:?}");
    };
    assert_eq!(name, b"READY");
    assert_eq!(socket_type(body), Ok(Some(&b"PULL"[..])));
    assert_eq!(subscription(&item), None);
}

/// A property: name length, name, 4-byte value length, value.
fn property(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = vec![name.len() as u8];
    p.extend_from_slice(name);
    p.extend_from_slice(&(value.len() as u32).to_be_bytes());
    p.extend_from_slice(value);
    p
}

#[test]
fn socket_type_among_other_properties() {
    let mut body = property(b"Identity", b"");
    body.extend(property(b"socket-TYPE", b"SUB"));
    body.extend(property(b"X-Later", b"v"));
    assert_eq!(socket_type(&body), Ok(Some(&b"SUB"[..])));
    // No Socket-Type at all, or an empty body.
    assert_eq!(socket_type(&property(b"Identity", b"me")), Ok(None));
    assert_eq!(socket_type(b""), Ok(None));
}

#[test]
fn socket_type_truncated_refused() {
    let full = property(b"Socket-Type", b"PUB");
    // Cut in the value, in the value length, and in the name.
    for cut in [full.len() - 1, 1 + 11 + 3, 1 + 5] {
        assert_eq!(socket_type(&full[..cut]), Err(ZmtpError::Command), "{cut}");
    }
    // A value length far past the body (and near u32::MAX) is refused, not trusted.
    let mut lying = full[..12].to_vec();
    lying.extend_from_slice(&u32::MAX.to_be_bytes());
    lying.extend_from_slice(b"PUB");
    assert_eq!(socket_type(&lying), Err(ZmtpError::Command));
    // More properties than any ZeroMQ socket sends.
    let many: Vec<u8> = (0..40).flat_map(|_| property(b"X", b"")).collect();
    assert_eq!(socket_type(&many), Err(ZmtpError::Command));
}

#[test]
fn subscriptions() {
    let message = |body, more| Item::Message { body, more };
    assert_eq!(
        subscription(&message(b"\x01abc", false)),
        Some((true, &b"abc"[..]))
    );
    assert_eq!(
        subscription(&message(b"\x00", false)),
        Some((false, &b""[..]))
    );
    assert_eq!(subscription(&message(b"\x01abc", true)), None);
    assert_eq!(subscription(&message(b"", false)), None);
    assert_eq!(subscription(&message(b"\x02abc", false)), None);

    let command = |name, body| Item::Command { name, body };
    assert_eq!(
        subscription(&command(b"SUBSCRIBE", b"topic")),
        Some((true, &b"topic"[..]))
    );
    assert_eq!(
        subscription(&command(b"CANCEL", b"")),
        Some((false, &b""[..]))
    );
    assert_eq!(subscription(&command(b"PING", b"\x01abc")), None);
    assert_eq!(subscription(&command(b"subscribe", b"x")), None);
    assert_eq!(subscription(&Item::Greeting), None);

    // From the wire: a SUBSCRIBE command frame as libzmq 4.3 sends it to a 3.1 peer.
    let mut decoder = greeted(1024);
    let Ok(Some((item, 14))) = decoder.decode(b"\x04\x0c\x09SUBSCRIBEab") else {
        panic!("SUBSCRIBE does not decode");
    };
    assert_eq!(subscription(&item), Some((true, &b"ab"[..])));
}
