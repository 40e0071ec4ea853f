//! The RESP2 codec: commands written straight into a buffer, replies parsed in place into
//! frames that point into the read buffer, and the rules for growing and shrinking those
//! buffers. No I/O here.

use std::ops::Range;

use crate::error::{ErrorCode, StoreError};

/// Appends one command to `out` in RESP's array-of-bulk-strings form.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(digits.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(digits.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP2 reply, pointing into the read buffer where it carries bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Status(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    /// `$-1` or `*-1`.
    Nil,
    Array(Vec<Frame>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply and the bytes it took.
    Frame(Frame, usize),
    /// More bytes are needed; at least this many in all, where a header says so.
    Incomplete(usize),
}

/// The most a length header may announce: Redis's own ceiling for a bulk string
/// (`proto-max-bulk-len` is 512 MB by default), and for an array the most elements a reply can
/// hold (an `mget` or `xrange` may ask for millions; room is made as elements arrive, never
/// from the header). A header past them is a broken or hostile peer, not a reply to wait for.
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_ELEMENTS: i64 = i32::MAX as i64;
/// Arrays within arrays: CLUSTER SLOTS and XREADGROUP replies nest four deep; past this a
/// peer is sending something no command gets.
const MAX_DEPTH: usize = 8;
/// Status and error lines are short; this bounds the search for a line's end.
const MAX_LINE: usize = 1024 * 1024;
/// Sockets are read in chunks of this much; a buffer that grew past `KEEP_BUFFER` for a big
/// value shrinks back once it is drained (read buffers, and the buffer a batch is encoded in).
const READ_CHUNK: usize = 64 * 1024;
const KEEP_BUFFER: usize = 1024 * 1024;
/// A reply announced as this big or bigger is given room in steps, as its bytes arrive.
const GROW_STEP: usize = 16 * 1024 * 1024;

/// Room to read into: a chunk at least, and more toward a big reply's announced size.
pub fn make_room(buf: &mut Vec<u8>, wanted: usize) {
    let more = wanted.saturating_sub(buf.len()).min(GROW_STEP);
    if buf.capacity() - buf.len() < (READ_CHUNK / 2).max(more) {
        buf.reserve(READ_CHUNK.max(more));
    }
}

/// Drops the first `used` bytes (parsed, or written), and lets go of the room a big value needed.
pub fn consume(buf: &mut Vec<u8>, used: usize) {
    buf.drain(..used);
    if buf.capacity() > KEEP_BUFFER && buf.len() < READ_CHUNK {
        buf.shrink_to(READ_CHUNK);
    }
}

/// The text in `bytes[range]`. Other clients may write bytes that are not UTF-8: they arrive
/// as replacement characters.
pub fn text(bytes: &[u8], range: &Range<usize>) -> String {
    String::from_utf8_lossy(&bytes[range.clone()]).into_owned()
}

/// Hands each whole reply at the start of `buf` to `take`, with the bytes its ranges point
/// into. Returns the bytes they took and what the next, incomplete one needs in all (0 when its
/// header has not arrived), both counted from where the unread part will start.
pub fn parse_each(
    buf: &[u8],
    mut take: impl FnMut(Frame, &[u8]) -> Result<(), StoreError>,
) -> Result<(usize, usize), StoreError> {
    let mut at = 0;
    loop {
        match parse(&buf[at..])? {
            Parsed::Frame(frame, used) => {
                take(frame, &buf[at..])?;
                at += used;
            }
            Parsed::Incomplete(needed) => return Ok((at, needed)),
        }
    }
}

/// Parses the reply at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, StoreError> {
    parse_at(buf, 0, 0)
}

/// Parses the reply at `at`, `depth` arrays down; ranges and sizes count from the start of `buf`.
fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Parsed, StoreError> {
    let rest = &buf[at..];
    let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > MAX_LINE {
            return Err(protocol_error("a line with no end"));
        }
        return Ok(Parsed::Incomplete(0));
    };
    let Some(&kind) = rest.first() else {
        return Ok(Parsed::Incomplete(0));
    };
    let line = at + 1..at + line_end;
    let after_line = at + line_end + 2;
    let frame = match kind {
        b'+' => Frame::Status(line),
        b'-' => Frame::Error(line),
        b':' => Frame::Integer(integer(&buf[line])?),
        b'$' => {
            let len = integer(&buf[line])?;
            if len == -1 {
                return Ok(Parsed::Frame(Frame::Nil, after_line));
            }
            if len < 0 {
                return Err(protocol_error("a negative string length"));
            }
            if len > MAX_BULK {
                return Err(protocol_error("a string longer than 512 MB"));
            }
            let end = after_line + len as usize;
            if buf.len() < end + 2 {
                return Ok(Parsed::Incomplete(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol_error("a string of the wrong length"));
            }
            return Ok(Parsed::Frame(Frame::Bulk(after_line..end), end + 2));
        }
        b'*' => {
            let count = integer(&buf[line])?;
            if count == -1 {
                return Ok(Parsed::Frame(Frame::Nil, after_line));
            }
            if count < 0 {
                return Err(protocol_error("a negative array length"));
            }
            if count > MAX_ELEMENTS {
                return Err(protocol_error("an array too long for any reply"));
            }
            if depth >= MAX_DEPTH {
                return Err(protocol_error("arrays nested deeper than any reply"));
            }
            let mut items = Vec::with_capacity(count.min(16) as usize);
            let mut next = after_line;
            for _ in 0..count {
                match parse_at(buf, next, depth + 1)? {
                    Parsed::Frame(item, end) => {
                        items.push(item);
                        next = end;
                    }
                    incomplete => return Ok(incomplete),
                }
            }
            return Ok(Parsed::Frame(Frame::Array(items), next));
        }
        _ => return Err(protocol_error("a reply of a type these commands never get")),
    };
    Ok(Parsed::Frame(frame, after_line))
}

fn integer(digits: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("a malformed number"))
}

pub fn protocol_error(what: &str) -> StoreError {
    StoreError::new(
        ErrorCode::Connection,
        format!("the server sent {what}; the connection was dropped"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(input: &[u8]) -> Frame {
        match parse(input) {
            Ok(Parsed::Frame(frame, used)) => {
                assert_eq!(used, input.len(), "{:?}", String::from_utf8_lossy(input));
                frame
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn refused(input: &[u8]) -> String {
        match parse(input) {
            Err(err) => err.message,
            other => panic!("{:?} parsed: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn every_reply_type() {
        let table: &[(&[u8], Frame)] = &[
            (b"+OK\r\n", Frame::Status(1..3)),
            (b"+\r\n", Frame::Status(1..1)),
            (b"-ERR no\r\n", Frame::Error(1..7)),
            (b":0\r\n", Frame::Integer(0)),
            (b":-42\r\n", Frame::Integer(-42)),
            (b":9223372036854775807\r\n", Frame::Integer(i64::MAX)),
            (b"$0\r\n\r\n", Frame::Bulk(4..4)),
            (b"$5\r\nhe\r\nl\r\n", Frame::Bulk(4..9)),
            (b"$-1\r\n", Frame::Nil),
            (b"*-1\r\n", Frame::Nil),
            (b"*0\r\n", Frame::Array(vec![])),
            (
                b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n",
                Frame::Array(vec![
                    Frame::Bulk(8..15),
                    Frame::Bulk(21..22),
                    Frame::Bulk(28..30),
                ]),
            ),
            (
                b"*2\r\n*1\r\n:1\r\n$-1\r\n",
                Frame::Array(vec![Frame::Array(vec![Frame::Integer(1)]), Frame::Nil]),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(
                &frame(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn only_minus_one_is_nil() {
        for input in [&b"$-2\r\n"[..], b"*-2\r\n", b"$-100\r\n"] {
            assert!(refused(input).contains("negative"), "{input:?}");
        }
    }

    #[test]
    fn refuses_what_no_reply_looks_like() {
        assert!(refused(b":12x\r\n").contains("malformed number"));
        assert!(refused(b"$3\r\nabcd\r\n").contains("wrong length"));
        assert!(refused(b"$999999999999\r\n").contains("512 MB"));
        assert!(refused(b"*2147483648\r\n").contains("too long"));
        assert!(refused(b"%1\r\n").contains("type"));
        let endless = vec![b'+'; MAX_LINE + 2];
        assert!(refused(&endless).contains("no end"));
    }

    #[test]
    fn nesting_is_bounded() {
        let within = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert!(matches!(parse(&within), Ok(Parsed::Frame(..))));
        let past = [b"*1\r\n".repeat(MAX_DEPTH + 1), b":1\r\n".to_vec()].concat();
        assert!(refused(&past).contains("nested"));
    }

    /// A reply cut at any byte parses as incomplete (never as a different frame), and the
    /// same bytes whole parse as the frame.
    #[test]
    fn incomplete_at_every_boundary() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-BUSY Redis is busy\r\n",
            b":123\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*2\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$0\r\n\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
        ];
        for whole in replies {
            let expected = frame(whole);
            for cut in 0..whole.len() {
                match parse(&whole[..cut]) {
                    Ok(Parsed::Incomplete(needed)) => {
                        assert!(needed == 0 || needed > cut, "{whole:?} cut at {cut}")
                    }
                    other => panic!("{whole:?} cut at {cut}: {other:?}"),
                }
            }
            // Followed by more input, the first frame is the same and takes the same bytes.
            let two = [*whole, *whole].concat();
            assert_eq!(parse(&two), Ok(Parsed::Frame(expected, whole.len())));
        }
    }

    #[test]
    fn parse_each_reports_progress() {
        let input = b"+OK\r\n:1\r\n$5\r\nhel";
        let mut seen = Vec::new();
        let (used, needed) = parse_each(input, |frame, _| {
            seen.push(frame);
            Ok(())
        })
        .expect("parses");
        assert_eq!(seen, vec![Frame::Status(1..3), Frame::Integer(1)]);
        assert_eq!(used, 9);
        assert_eq!(needed, 11);
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
