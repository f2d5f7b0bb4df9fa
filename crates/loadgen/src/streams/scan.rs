//! Counting messages in a live stream's bytes without keeping them: a few bytes of state per
//! connection, whatever the message size.

/// Counts the messages in the bytes of one stream, fed in arbitrary pieces.
pub(super) enum Scanner {
    Sse(SseScanner),
    Ws(WsScanner),
}

impl Scanner {
    /// Messages completed or started in `bytes`.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> usize {
        match self {
            Scanner::Sse(scanner) => scanner.feed(bytes),
            Scanner::Ws(scanner) => scanner.feed(bytes),
        }
    }
}

/// SSE over a chunked body: one event per `data:` field at the start of a line. Chunk-size lines
/// are hex digits and JSON has no raw newline, so the pattern cannot occur anywhere else.
#[derive(Default)]
pub(super) struct SseScanner {
    matched: usize,
}

const DATA_LINE: &[u8] = b"\ndata:";

impl SseScanner {
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut events = 0;
        for &byte in bytes {
            if byte == DATA_LINE[self.matched] {
                self.matched += 1;
            } else {
                // The pattern's first byte occurs in it only once, so a mismatch restarts it.
                self.matched = usize::from(byte == DATA_LINE[0]);
            }
            if self.matched == DATA_LINE.len() {
                events += 1;
                self.matched = 0;
            }
        }
        events
    }
}

/// Server-to-client WebSocket frames (never masked, but a mask is skipped if present): counts
/// text frames, skips every payload.
#[derive(Default)]
pub(super) struct WsScanner {
    head: [u8; MAX_HEAD],
    have: usize,
    skip: u64,
}

/// Two bytes, an 8-byte extended length and a 4-byte mask at most.
const MAX_HEAD: usize = 14;
const OPCODE_TEXT: u8 = 0x1;

impl WsScanner {
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut texts = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let skipped = bytes.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                bytes = &bytes[skipped..];
                self.skip -= skipped as u64;
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let Some((opcode, payload)) = self.complete_head() else { continue };
            texts += usize::from(opcode == OPCODE_TEXT);
            self.skip = payload;
            self.have = 0;
        }
        texts
    }

    /// The opcode and payload length once the whole frame head is in.
    fn complete_head(&self) -> Option<(u8, u64)> {
        if self.have < 2 {
            return None;
        }
        let short = self.head[1] & 0x7f;
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 == 0 { 0 } else { 4 };
        if self.have < 2 + extended + mask {
            return None;
        }
        let length = match extended {
            2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            8 => self.head[2..10].iter().fold(0, |length, &byte| (length << 8) | u64::from(byte)),
            _ => u64::from(short),
        };
        Some((self.head[0] & 0x0f, length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_bytewise(scanner: &mut Scanner, bytes: &[u8]) -> usize {
        bytes.chunks(1).map(|byte| scanner.feed(byte)).sum()
    }

    const SSE: &[u8] = b"2a\r\nid: 1\nevent: sale\ndata: {\"a\":\"data:\"}\n\n\r\nf\r\n: heartbeat\n\n\r\n";

    #[test]
    fn sse_counts_data_lines_only() {
        assert_eq!(Scanner::Sse(SseScanner::default()).feed(SSE), 1);
        assert_eq!(feed_bytewise(&mut Scanner::Sse(SseScanner::default()), &SSE.repeat(3)), 3);
        assert_eq!(Scanner::Sse(SseScanner::default()).feed(b"\n\ndata: x\n\n"), 1);
    }

    fn frame(opcode: u8, payload_len: usize) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload_len {
            0..=125 => frame.push(payload_len as u8),
            126..=65535 => {
                frame.push(126);
                frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        frame.extend(std::iter::repeat_n(0x81, payload_len));
        frame
    }

    #[test]
    fn ws_counts_text_frames_of_every_length() {
        let mut bytes = frame(0x9, 0);
        for len in [0, 5, 125, 126, 700, 70_000] {
            bytes.extend(frame(OPCODE_TEXT, len));
        }
        bytes.extend(frame(0x9, 4));
        assert_eq!(Scanner::Ws(WsScanner::default()).feed(&bytes), 6);
        assert_eq!(feed_bytewise(&mut Scanner::Ws(WsScanner::default()), &bytes), 6);
    }

    #[test]
    fn ws_skips_a_masked_frame() {
        let mut bytes = vec![0x81, 0x80 | 3, 1, 2, 3, 4, b'a', b'b', b'c'];
        bytes.extend(frame(OPCODE_TEXT, 2));
        assert_eq!(Scanner::Ws(WsScanner::default()).feed(&bytes), 2);
    }
}
