//! Encoding and decoding the group's messages (see the module docs for the format).

use thiserror::Error;

/// Frame 0 of every group message.
pub(crate) const VERSION_TAG: &[u8] = b"m2group/1";
/// The most frames a group message has; more is a broken or hostile peer.
const MAX_FRAMES: usize = 8;

/// One decoded group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerMessage {
    Heartbeat {
        from: String,
        endpoint: String,
        acked: u64,
        to: String,
    },
    Forward {
        from: String,
        seq: u64,
        message: Vec<u8>,
    },
    Disconnect {
        from: String,
        message: Vec<u8>,
    },
    Open {
        from: String,
        owner: String,
        message: Vec<u8>,
    },
    Close {
        from: String,
        sender: String,
        id: u64,
    },
    App {
        from: String,
        body: Vec<u8>,
    },
}

/// Why a group message was skipped.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("not a group message of version 1")]
    Version,
    #[error("unknown kind {0:?}")]
    Kind(String),
    #[error("wrong number of frames")]
    Frames,
    #[error("a text frame is not UTF-8")]
    Text,
    #[error("an integer frame is not 8 bytes")]
    Integer,
}

impl PeerMessage {
    pub(crate) fn encode(&self) -> Vec<Vec<u8>> {
        let mut frames = vec![VERSION_TAG.to_vec()];
        let mut push = |frame: &[u8]| frames.push(frame.to_vec());
        match self {
            PeerMessage::Heartbeat {
                from,
                endpoint,
                acked,
                to,
            } => {
                push(b"hb");
                push(from.as_bytes());
                push(endpoint.as_bytes());
                push(&acked.to_be_bytes());
                push(to.as_bytes());
            }
            PeerMessage::Forward { from, seq, message } => {
                push(b"fwd");
                push(from.as_bytes());
                push(&seq.to_be_bytes());
                push(message);
            }
            PeerMessage::Disconnect { from, message } => {
                push(b"disc");
                push(from.as_bytes());
                push(message);
            }
            PeerMessage::Open {
                from,
                owner,
                message,
            } => {
                push(b"open");
                push(from.as_bytes());
                push(owner.as_bytes());
                push(message);
            }
            PeerMessage::Close { from, sender, id } => {
                push(b"close");
                push(from.as_bytes());
                push(sender.as_bytes());
                push(&id.to_be_bytes());
            }
            PeerMessage::App { from, body } => {
                push(b"app");
                push(from.as_bytes());
                push(body);
            }
        }
        frames
    }

    pub(crate) fn decode(frames: &[Vec<u8>]) -> Result<PeerMessage, WireError> {
        if frames.len() > MAX_FRAMES || frames.first().map(Vec::as_slice) != Some(VERSION_TAG) {
            return Err(WireError::Version);
        }
        let kind = frames.get(1).ok_or(WireError::Frames)?;
        let rest = &frames[2..];
        let text = |i: usize| -> Result<String, WireError> {
            let frame = rest.get(i).ok_or(WireError::Frames)?;
            String::from_utf8(frame.clone()).map_err(|_| WireError::Text)
        };
        let int = |i: usize| -> Result<u64, WireError> {
            let frame = rest.get(i).ok_or(WireError::Frames)?;
            let bytes: [u8; 8] = frame
                .as_slice()
                .try_into()
                .map_err(|_| WireError::Integer)?;
            Ok(u64::from_be_bytes(bytes))
        };
        let bytes = |i: usize| rest.get(i).cloned().ok_or(WireError::Frames);
        let expect = |n: usize| {
            if rest.len() == n {
                Ok(())
            } else {
                Err(WireError::Frames)
            }
        };
        match kind.as_slice() {
            b"hb" => {
                expect(4)?;
                Ok(PeerMessage::Heartbeat {
                    from: text(0)?,
                    endpoint: text(1)?,
                    acked: int(2)?,
                    to: text(3)?,
                })
            }
            b"fwd" => {
                expect(3)?;
                Ok(PeerMessage::Forward {
                    from: text(0)?,
                    seq: int(1)?,
                    message: bytes(2)?,
                })
            }
            b"disc" => {
                expect(2)?;
                Ok(PeerMessage::Disconnect {
                    from: text(0)?,
                    message: bytes(1)?,
                })
            }
            b"open" => {
                expect(3)?;
                Ok(PeerMessage::Open {
                    from: text(0)?,
                    owner: text(1)?,
                    message: bytes(2)?,
                })
            }
            b"close" => {
                expect(3)?;
                Ok(PeerMessage::Close {
                    from: text(0)?,
                    sender: text(1)?,
                    id: int(2)?,
                })
            }
            b"app" => {
                expect(2)?;
                Ok(PeerMessage::App {
                    from: text(0)?,
                    body: bytes(1)?,
                })
            }
            other => Err(WireError::Kind(String::from_utf8_lossy(other).into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let messages = [
            PeerMessage::Heartbeat {
                from: "a#1".into(),
                endpoint: "tcp://127.0.0.1:1".into(),
                acked: 7,
                to: String::new(),
            },
            PeerMessage::Forward {
                from: "a#1".into(),
                seq: 3,
                message: b"x 1 / 2:{},0:,".to_vec(),
            },
            PeerMessage::Disconnect {
                from: "a#1".into(),
                message: b"d".to_vec(),
            },
            PeerMessage::Open {
                from: "a#1".into(),
                owner: "b#2".into(),
                message: b"h".to_vec(),
            },
            PeerMessage::Close {
                from: "a#1".into(),
                sender: "s".into(),
                id: 9,
            },
            PeerMessage::App {
                from: "a#1".into(),
                body: b"{}".to_vec(),
            },
        ];
        for message in messages {
            assert_eq!(PeerMessage::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn broken_messages_are_errors() {
        assert_eq!(PeerMessage::decode(&[]), Err(WireError::Version));
        assert_eq!(
            PeerMessage::decode(&[b"m2group/2".to_vec(), b"hb".to_vec()]),
            Err(WireError::Version)
        );
        assert_eq!(
            PeerMessage::decode(&[VERSION_TAG.to_vec(), b"fwd".to_vec(), b"a".to_vec()]),
            Err(WireError::Frames)
        );
        let bad_int = [
            VERSION_TAG.to_vec(),
            b"close".to_vec(),
            b"a".to_vec(),
            b"s".to_vec(),
            b"123".to_vec(),
        ];
        assert_eq!(PeerMessage::decode(&bad_int), Err(WireError::Integer));
    }
}
