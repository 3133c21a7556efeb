//! A cursor over gRPC length-prefixed messages split across data chunks.

/// The gRPC message prefix: one flag byte, then a big-endian `u32` length.
const PREFIX_LEN: usize = 5;

/// A message whose declared length is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Oversized {
    /// Where its prefix starts in the chunk (0 when it began in an earlier chunk).
    pub(super) offset: usize,
    /// Its declared length.
    pub(super) length: u64,
}

/// Tracks where message prefixes fall as chunks stream by.
#[derive(Debug, Default)]
pub(super) struct FrameCursor {
    prefix: [u8; PREFIX_LEN],
    filled: usize,
    remaining: u64,
}

impl FrameCursor {
    /// Advances over `chunk`; returns the first message declared longer than
    /// `limit`, if any.
    pub(super) fn scan(&mut self, chunk: &[u8], limit: usize) -> Option<Oversized> {
        let mut pos = 0;
        while pos < chunk.len() {
            let left = chunk.len() - pos;
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                pos += skip;
                self.remaining -= skip as u64;
                continue;
            }
            let start = if self.filled == 0 { pos } else { 0 };
            let take = (PREFIX_LEN - self.filled).min(left);
            self.prefix[self.filled..self.filled + take].copy_from_slice(&chunk[pos..pos + take]);
            self.filled += take;
            pos += take;
            if self.filled == PREFIX_LEN {
                self.filled = 0;
                let [_, a, b, c, d] = self.prefix;
                let length = u64::from(u32::from_be_bytes([a, b, c, d]));
                if length > limit as u64 {
                    return Some(Oversized {
                        offset: start,
                        length,
                    });
                }
                self.remaining = length;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len as usize));
        bytes
    }

    #[test]
    fn small_messages_pass() {
        let mut cursor = FrameCursor::default();
        let mut chunk = message(10);
        chunk.extend(message(0));
        chunk.extend(message(3));
        assert_eq!(cursor.scan(&chunk, 10), None);
    }

    #[test]
    fn oversized_message_is_found_at_its_offset() {
        let mut cursor = FrameCursor::default();
        let mut chunk = message(4);
        chunk.extend(message(11));
        assert_eq!(
            cursor.scan(&chunk, 10),
            Some(Oversized {
                offset: 9,
                length: 11
            })
        );
    }

    #[test]
    fn prefixes_split_across_chunks_are_joined() {
        let mut cursor = FrameCursor::default();
        let bytes = message(100);
        for split in 1..5 {
            let mut cursor2 = FrameCursor::default();
            assert_eq!(cursor2.scan(&bytes[..split], 10), None);
            assert_eq!(
                cursor2.scan(&bytes[split..], 10),
                Some(Oversized {
                    offset: 0,
                    length: 100
                })
            );
        }
        // Byte by byte, a message at the limit passes.
        for byte in message(10) {
            assert_eq!(cursor.scan(&[byte], 10), None);
        }
    }
}
