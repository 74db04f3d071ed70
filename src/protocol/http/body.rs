//! Request bodies: counted off and thrown away as they arrive, never buffered. A
//! Content-Length body is a countdown; a chunked one is walked chunk line by chunk line
//! (RFC 9112 §7.1).

use super::head::{find_empty_line, MAX_HEAD_BYTES};
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
        BodyProgress::ChunkSize => match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((used, 0))) => {
                *body = BodyProgress::Trailers { scanned: 0 };
                Step::Consumed(used)
            }
            Ok(httparse::Status::Complete((used, size))) => {
                *body = BodyProgress::ChunkData(size);
                Step::Consumed(used)
            }
            Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_SIZE_LINE => Step::NeedMore,
            Ok(httparse::Status::Partial) | Err(_) => Step::Fail(ErrorStatus::BadRequest),
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
        BodyProgress::Trailers { scanned } => {
            let window = &rest[..rest.len().min(MAX_HEAD_BYTES)];
            match find_empty_line(window, scanned) {
                Some(end) => {
                    *body = BodyProgress::Finished;
                    Step::Consumed(end)
                }
                None if window.len() == MAX_HEAD_BYTES => {
                    Step::Fail(ErrorStatus::HeaderFieldsTooLarge)
                }
                None => Step::NeedMore,
            }
        }
    }
}
