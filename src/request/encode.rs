//! Writing requests as Mongrel2 sends them (test harnesses, handler chaining).

use crate::tnetstring::{self, write_bytes, write_len_prefix, DecimalBuf};

use super::{HeaderProtocol, HeaderValue, Request};

impl Request<'_> {
    /// The message as Mongrel2 would send it, in this request's header protocol.
    ///
    /// Every header and value is written: a request built with more headers than
    /// [`DEFAULT_MAX_HEADERS`](super::DEFAULT_MAX_HEADERS), more values per header than
    /// [`DEFAULT_MAX_VALUES_PER_HEADER`](super::DEFAULT_MAX_VALUES_PER_HEADER) or more bytes
    /// than [`DEFAULT_MAX_REQUEST_SIZE`](super::DEFAULT_MAX_REQUEST_SIZE) encodes, and
    /// [`Request::parse`](super::Request::parse) refuses it; read it back with
    /// [`Request::parse_with_limits`](super::Request::parse_with_limits).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded message to `out`. Headers are written in order; a
    /// repeated header is a list. JSON headers use Mongrel2's exact form: a
    /// compact object where only `"` and `\` are escaped.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.sender.as_bytes());
        out.push(b' ');
        out.extend_from_slice(DecimalBuf::new().format_u64(self.conn_id));
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.push(b' ');
        let start = out.len();
        match self.protocol {
            HeaderProtocol::Tnetstring => {
                for (name, value) in self.headers.iter() {
                    write_bytes(out, name.as_bytes());
                    match value {
                        HeaderValue::One(v) => write_bytes(out, v.as_bytes()),
                        HeaderValue::Many(vs) => {
                            let list_start = out.len();
                            for v in vs {
                                write_bytes(out, v.as_bytes());
                            }
                            tnetstring::close_container(out, list_start, b']');
                        }
                    }
                }
                tnetstring::close_container(out, start, b'}');
            }
            HeaderProtocol::Json => {
                out.push(b'{');
                for (i, (name, value)) in self.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_string(out, name);
                    out.push(b':');
                    match value {
                        HeaderValue::One(v) => json_string(out, v),
                        HeaderValue::Many(vs) => {
                            out.push(b'[');
                            for (j, v) in vs.iter().enumerate() {
                                if j > 0 {
                                    out.push(b',');
                                }
                                json_string(out, v);
                            }
                            out.push(b']');
                        }
                    }
                }
                out.push(b'}');
                tnetstring::close_container(out, start, b',');
            }
        }
        write_len_prefix(out, self.body.len());
        out.extend_from_slice(&self.body);
        out.push(b',');
    }
}

/// Mongrel2's JSON string form: quotes, with only `"` and `\` escaped.
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}
