//! gRPC's message framing (the length-prefixed messages of a request body): one flag byte
//! (bit 0: compressed), a 4-byte big-endian length, the message. Read incrementally, as
//! chunks arrive, so a message's size is judged from its 5-byte prefix before its bytes are
//! accepted, and a message is only held in memory when it is to be decoded.

use super::{GrpcCode, Violation};

/// Reads the messages of one request body.
#[derive(Debug)]
pub struct FrameReader {
    max_message: u32,
    /// Whether complete messages are handed over (buffered) or only sized.
    keep: bool,
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message not seen yet.
    remaining: usize,
    compressed: bool,
    message: Vec<u8>,
    /// Messages completed so far.
    pub messages: u64,
}

/// One complete message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub compressed: bool,
    /// Empty unless the reader keeps messages.
    pub bytes: &'a [u8],
}

impl FrameReader {
    /// A reader refusing messages over `max_message` bytes; `keep`: hand complete messages
    /// over (they are buffered up to their size).
    pub fn new(max_message: u32, keep: bool) -> Self {
        FrameReader {
            max_message,
            keep,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            compressed: false,
            message: Vec::new(),
            messages: 0,
        }
    }

    /// Reads `data`, calling `on_message` for every message it completes. The first violation
    /// (an oversize or malformed prefix, or one `on_message` returns) stops the reading.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_message: impl FnMut(Message<'_>) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        while !data.is_empty() {
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len < 5 {
                    break;
                }
                let flag = self.header[0];
                if flag > 1 {
                    return Err(Violation::new(
                        "grpc.frame",
                        GrpcCode::Internal,
                        format!("a message prefix has the unknown flag byte {flag:#04x}"),
                    ));
                }
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                if length > self.max_message {
                    return Err(Violation::new(
                        "grpc.message_size",
                        GrpcCode::ResourceExhausted,
                        format!(
                            "a request message of {length} bytes is larger than the limit of {} bytes",
                            self.max_message
                        ),
                    ));
                }
                self.compressed = flag == 1;
                self.remaining = length as usize;
                self.message.clear();
            }
            let take = self.remaining.min(data.len());
            if self.keep {
                self.message.extend_from_slice(&data[..take]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                self.header_len = 0;
                self.messages += 1;
                on_message(Message {
                    compressed: self.compressed,
                    bytes: &self.message,
                })?;
            }
        }
        Ok(())
    }

    /// The body ended: a violation when it ended inside a message.
    pub fn finish(&self) -> Result<(), Violation> {
        if self.header_len == 0 {
            return Ok(());
        }
        Err(Violation::new(
            "grpc.frame",
            GrpcCode::Internal,
            "the request body ended inside a message",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn read_all(reader: &mut FrameReader, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, Violation> {
        let mut seen = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, |m| {
                seen.push(m.bytes.to_vec());
                Ok(())
            })?;
        }
        reader.finish()?;
        Ok(seen)
    }

    #[test]
    fn messages_split_anywhere_are_reassembled() {
        let mut body = frame(0, b"hello");
        body.extend(frame(0, b""));
        body.extend(frame(1, b"zz"));
        for cut in 0..body.len() {
            let mut reader = FrameReader::new(10, true);
            let seen = read_all(&mut reader, &[&body[..cut], &body[cut..]]).unwrap();
            assert_eq!(
                seen,
                [b"hello".to_vec(), vec![], b"zz".to_vec()],
                "cut at {cut}"
            );
        }
        // One byte at a time.
        let mut reader = FrameReader::new(10, true);
        let chunks: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(read_all(&mut reader, &chunks).unwrap().len(), 3);
        assert_eq!(reader.messages, 3);
    }

    #[test]
    fn the_prefix_alone_refuses_an_oversize_message() {
        let mut reader = FrameReader::new(4, false);
        let at_limit = frame(0, b"abcd");
        assert!(read_all(&mut reader, &[&at_limit]).is_ok());
        let mut reader = FrameReader::new(4, false);
        let err = reader.feed(&[0, 0, 0, 0, 5], |_| Ok(())).unwrap_err();
        assert_eq!(err.code, GrpcCode::ResourceExhausted);
        assert_eq!(err.rule, "grpc.message_size");
    }

    #[test]
    fn malformed_framing_is_refused() {
        let mut reader = FrameReader::new(100, false);
        assert_eq!(
            reader.feed(&[2, 0, 0, 0, 0], |_| Ok(())).unwrap_err().rule,
            "grpc.frame"
        );
        let mut reader = FrameReader::new(100, false);
        reader.feed(&[0, 0, 0, 0, 3, b'a'], |_| Ok(())).unwrap();
        assert_eq!(reader.finish().unwrap_err().rule, "grpc.frame");
    }
}
