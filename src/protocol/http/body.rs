//! Request bodies: counted off and thrown away as they arrive, never buffered. A
//! Content-Length body is a countdown; a chunked one is walked chunk line by chunk line
//! (RFC 9112 §7.1).

use super::chunked::{self, ChunkLine, Status, TrailerLine};
use super::head::MAX_HEAD_BYTES;
use super::Step;
use crate::protocol::responses::ErrorStatus;

/// A chunk-size line (`1a;name=value CRLF`) longer than this is refused. Real clients send a
/// few hex digits; the cap only stops a peer from making us buffer an endless extension.
pub(super) const MAX_CHUNK_SIZE_LINE: usize = 4096;

/// How far into a body we are. Bodies are never buffered: we only count bytes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BodyProgress {
    /// A Content-Length body with this many bytes still to come.
    Length(u64),
    /// At the start of a chunk-size line (RFC 9112 §7.1).
    ChunkSize,
    /// Inside a chunk's data.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkDataEnd,
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailers { scanned: usize },
    /// All of it is in (or there was none): the reply is owed now.
    Finished,
}

/// Count off body bytes in `rest`. Returns how many were used, or that more are needed.
pub(super) fn discard_body(body: &mut BodyProgress, rest: &[u8]) -> Step {
    match body {
        BodyProgress::Length(remaining) | BodyProgress::ChunkData(remaining) => {
            if rest.is_empty() {
                return Step::NeedMore;
            }
            // `used` is at most `rest.len()`, so neither the cast back nor the subtraction
            // can overflow, however large a length the peer announced.
            let used = (*remaining).min(rest.len() as u64);
            *remaining -= used;
            match body {
                BodyProgress::Length(0) => *body = BodyProgress::Finished,
                BodyProgress::ChunkData(0) => *body = BodyProgress::ChunkDataEnd,
                _ => {}
            }
            Step::Consumed(used as usize)
        }
        // The chunk-size line, held to RFC 9112 §7.1's grammar by `chunked`: a bare LF, a
        // bare CR or a control byte in it is a 400, never a line end and never content
        // (httparse's parse_chunk_size took them, and that was a smuggling desync; `chunked`
        // tells the story). Each call reads the line from its start again: it is at most
        // MAX_CHUNK_SIZE_LINE bytes, so even one dripped a byte per read costs little.
        BodyProgress::ChunkSize => match chunked::parse_chunk_line(rest, MAX_CHUNK_SIZE_LINE) {
            Ok(Status::Complete(ChunkLine { size: 0, len })) => {
                *body = BodyProgress::Trailers { scanned: 0 };
                Step::Consumed(len)
            }
            Ok(Status::Complete(ChunkLine { size, len })) => {
                *body = BodyProgress::ChunkData(size);
                Step::Consumed(len)
            }
            Ok(Status::Incomplete) => Step::NeedMore,
            Err(_) => Step::Fail(ErrorStatus::BadRequest),
        },
        // Chunk data ends in CRLF exactly. We are strict here, unlike in heads: a lenient
        // chunk parser behind a strict proxy is a classic smuggling pair.
        BodyProgress::ChunkDataEnd => match rest {
            [] | [b'\r'] => Step::NeedMore,
            [b'\r', b'\n', ..] => {
                *body = BodyProgress::ChunkSize;
                Step::Consumed(2)
            }
            _ => Step::Fail(ErrorStatus::BadRequest),
        },
        // on_input answers as soon as it sees this; nothing is left to read.
        BodyProgress::Finished => Step::Consumed(0),
        // Trailer lines until the empty one (RFC 9112 §7.1.2). Unlike a head's lines, each
        // must end in CRLF, and each must be a field line: `chunked` says why. `scanned`
        // counts the bytes of the lines already checked, so a dripped section is read once;
        // the section as a whole is bounded like a head, and answered 431 past that.
        BodyProgress::Trailers { scanned } => {
            let window = &rest[..rest.len().min(MAX_HEAD_BYTES)];
            loop {
                // The loop offers the same unconsumed bytes again, with more after them, so
                // the lines checked last time are still here; if not, we have lost our place.
                let Some(unchecked) = window.get(*scanned..) else {
                    return Step::Fail(ErrorStatus::BadRequest);
                };
                match chunked::parse_trailer_line(unchecked) {
                    Ok(Status::Complete(TrailerLine::Field(len))) => *scanned += len,
                    Ok(Status::Complete(TrailerLine::End)) => {
                        let section = *scanned + TrailerLine::END_LEN;
                        *body = BodyProgress::Finished;
                        return Step::Consumed(section);
                    }
                    Ok(Status::Incomplete) if window.len() == MAX_HEAD_BYTES => {
                        return Step::Fail(ErrorStatus::HeaderFieldsTooLarge)
                    }
                    Ok(Status::Incomplete) => return Step::NeedMore,
                    Err(_) => return Step::Fail(ErrorStatus::BadRequest),
                }
            }
        }
    }
}
