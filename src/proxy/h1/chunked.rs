//! Finding where a chunked message body ends (RFC 9112 §7.1) without
//! decoding it: the relay forwards the bytes as they are and only needs to
//! know when the message is over. Sans-IO: feed bytes, get how many belong
//! to the body and whether it ended.

/// Longest chunk-size line or trailer section we accept (extensions and
/// trailers are passed through, but not without bound).
const MAX_META: usize = 16 * 1024;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size too large")]
    Overflow,
    #[error("missing CRLF after chunk data")]
    DataEnd,
    #[error("chunk extension or trailer section too long")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `any` once at least one digit was seen.
    Size {
        any: bool,
    },
    /// Whitespace or an extension after the size, up to the line end.
    Ext,
    /// A CR ended the size line: LF must follow.
    SizeLf,
    /// Chunk data bytes still to come.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// A CR at the start of a line: the final LF must follow.
    FinalLf,
    Done,
}

/// Tracks a chunked body across reads.
#[derive(Debug, Clone)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    meta: usize,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            state: State::Size { any: false },
            size: 0,
            meta: 0,
        }
    }
}

impl ChunkScanner {
    /// True once the last chunk and the trailer section were seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scan `buf`; returns how many of its bytes belong to the body (all of
    /// them unless the body ends inside `buf`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let Some(&b) = buf.get(i) else { break };
            i += 1;
            self.state = match self.state {
                State::Size { any } => match hex(b) {
                    Some(d) => {
                        if self.size >> 60 != 0 {
                            return Err(ChunkError::Overflow);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        State::Size { any: true }
                    }
                    None if !any => return Err(ChunkError::Size),
                    None => match b {
                        b'\r' => State::SizeLf,
                        b'\n' => self.end_size_line(),
                        b' ' | b'\t' | b';' => State::Ext,
                        _ => return Err(ChunkError::Size),
                    },
                },
                State::Ext => {
                    self.meta += 1;
                    if self.meta > MAX_META {
                        return Err(ChunkError::TooLong);
                    }
                    match b {
                        b'\r' => State::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => State::Ext,
                    }
                }
                State::SizeLf => match b {
                    b'\n' => self.end_size_line(),
                    _ => return Err(ChunkError::Size),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    b'\n' => State::Size { any: false },
                    _ => return Err(ChunkError::DataEnd),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { any: false },
                    _ => return Err(ChunkError::DataEnd),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => State::Done,
                    _ => self.trailer_byte()?,
                },
                State::Trailer => match b {
                    b'\n' => State::TrailerStart,
                    _ => self.trailer_byte()?,
                },
                State::FinalLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkError::DataEnd),
                },
                // Both handled at the top of the loop.
                State::Data | State::Done => self.state,
            };
        }
        Ok(i)
    }

    fn end_size_line(&mut self) -> State {
        self.meta = 0;
        if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }

    fn trailer_byte(&mut self) -> Result<State, ChunkError> {
        self.meta += 1;
        if self.meta > MAX_META {
            return Err(ChunkError::TooLong);
        }
        Ok(State::Trailer)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut s = ChunkScanner::default();
        let n = s.scan(input)?;
        Ok((n, s.is_done()))
    }

    #[test]
    fn simple_body_ends_exactly() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(whole(body), Ok((body.len(), true)));
    }

    #[test]
    fn stops_at_the_end_leaving_the_next_message() {
        let mut input = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
        let end = input.len();
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(whole(&input), Ok((end, true)));
    }

    #[test]
    fn extensions_and_trailers_pass() {
        let body = b"a;name=value\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        assert_eq!(whole(body), Ok((body.len(), true)));
    }

    #[test]
    fn every_split_point_gives_the_same_answer() {
        let body = b"1F\r\n0123456789abcdef0123456789abcde\r\n2;x\r\nhi\r\n0\r\nT: v\r\n\r\nNEXT";
        let end = body.len() - 4;
        for cut in 0..body.len() {
            let mut s = ChunkScanner::default();
            let a = s.scan(&body[..cut]).unwrap();
            assert_eq!(a, cut.min(end), "cut {cut}");
            let b = s.scan(&body[cut.min(end)..]).unwrap();
            assert_eq!(a + b, end, "cut {cut}");
            assert!(s.is_done());
        }
    }

    #[test]
    fn byte_by_byte() {
        let body = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut s = ChunkScanner::default();
        for (i, b) in body.iter().enumerate() {
            assert!(!s.is_done(), "done early at {i}");
            assert_eq!(s.scan(std::slice::from_ref(b)), Ok(1));
        }
        assert!(s.is_done());
        assert_eq!(s.scan(b"x"), Ok(0));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(whole(b"zz\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"3\r\nabcX"), Err(ChunkError::DataEnd));
        assert_eq!(whole(b"3\rX"), Err(ChunkError::Size));
        assert_eq!(
            whole(b"fffffffffffffffff\r\n"),
            Err(ChunkError::Overflow),
            "17 hex digits overflow u64"
        );
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_META + 1));
        assert_eq!(whole(&long), Err(ChunkError::TooLong));
    }

    /// The fuzz target's property (fuzz/fuzz_targets/h1_heads.rs), on a
    /// seeded stream of inputs made of the bytes that matter to the grammar.
    #[test]
    fn split_reads_agree_with_one_read() {
        let alphabet = b"0123456789abcdefAF\r\n; \tx=";
        let mut rng = fastrand::Rng::with_seed(8);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            let mut whole = ChunkScanner::default();
            let one = whole.scan(&data);
            let cut = rng.usize(0..=len);
            let mut split = ChunkScanner::default();
            let two = split.scan(&data[..cut]).and_then(|a| {
                if split.is_done() {
                    Ok(a)
                } else {
                    split.scan(&data[cut..]).map(|b| a + b)
                }
            });
            assert_eq!(
                one,
                two,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(&data)
            );
            assert_eq!(whole.is_done(), split.is_done());
        }
    }

    #[test]
    fn largest_size_does_not_overflow() {
        let mut s = ChunkScanner::default();
        assert_eq!(s.scan(b"fffffffffffffff\r\n"), Ok(17));
        assert!(!s.is_done());
    }
}
