//! Reading HTTP responses off a raw client socket, byte for byte as Mongrel2 relays them.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;

/// One response: the head as text (status line and headers), and the body as framed by
/// `Content-Length`, or everything up to the close when there is none. A chunked body is
/// returned still chunked.
pub fn read_response(client: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "connection ended inside the head ({other:?}): {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8(buf).expect("a text head");
    let body = match header(&head, "content-length") {
        Some(len) => {
            let mut body = vec![0; len.parse().expect("a length")];
            client.read_exact(&mut body).expect("the body");
            body
        }
        None if header(&head, "transfer-encoding").is_some() => read_chunked(client),
        None => read_to_close(client),
    };
    (head, body)
}

/// The first value of header `name` (case-insensitive) in a response head.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Everything until the server closes the connection.
pub fn read_to_close(client: &mut TcpStream) -> Vec<u8> {
    let mut body = Vec::new();
    client.read_to_end(&mut body).expect("read until the close");
    body
}

/// A chunked body, raw, up to and including the last chunk's empty line.
fn read_chunked(client: &mut TcpStream) -> Vec<u8> {
    let mut body = Vec::new();
    let mut byte = [0u8; 1];
    while !body.ends_with(b"\r\n0\r\n\r\n") && body != b"0\r\n\r\n" {
        match client.read(&mut byte) {
            Ok(1) => body.push(byte[0]),
            other => panic!("chunked body cut short ({other:?})"),
        }
    }
    body
}

/// Whether the server closed the connection (no more bytes, EOF within the read timeout).
pub fn closed_by_server(client: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(client.read(&mut byte), Ok(0))
}
