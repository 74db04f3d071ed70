//! WebSocket frames on the wire: what tungstenite is shown of the client's bytes, one
//! checked frame header at a time, and what the session does with each message
//! (RFC 6455 §5). The close frame is handled here, not by tungstenite (see
//! `is_valid_close_code`).

use std::io::{self, Read, Write};
use std::sync::Arc;

use log::{debug, info};
use tungstenite::error::Error;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, Utf8Bytes};
use tungstenite::protocol::WebSocketContext;
use tungstenite::Message;

use super::{Open, LOGGED_CHARS};
use crate::protocol::{Context, Next};

/// tungstenite's view of the connection. Reading serves the bytes the loop read, then says
/// WouldBlock, as a drained non-blocking socket would; writing appends to our output.
///
/// It serves a frame only once it has read the frame's header itself ([`Ahead`]), and stops
/// at a frame it keeps from tungstenite: tungstenite then hands us every message before
/// that frame, and says WouldBlock. It also stops serving input once the output reaches the
/// loop's budget (backpressure): the rest stays with the loop, which offers it again when
/// the peer has read some.
pub(super) struct Wire<'a> {
    input: &'a [u8],
    /// How many bytes of `input` tungstenite has taken (or we have, for a close frame).
    taken: usize,
    /// Bytes of the current frame not yet served; see `Open::frame_left`.
    frame_left: u64,
    /// The frame serving stopped at, when it stopped for a frame rather than for want of
    /// bytes or of room: a close frame, or a header no frame may have.
    stopped_at: Option<Ahead>,
    out: &'a mut Vec<u8>,
    out_budget: usize,
}

impl<'a> Wire<'a> {
    pub(super) fn new(
        input: &'a [u8],
        frame_left: u64,
        out: &'a mut Vec<u8>,
        out_budget: usize,
    ) -> Self {
        Wire {
            input,
            taken: 0,
            frame_left,
            stopped_at: None,
            out,
            out_budget,
        }
    }

    /// A wire for writing only: the greeting, a close frame.
    pub(super) fn writer(out: &'a mut Vec<u8>) -> Self {
        Wire::new(&[], 0, out, usize::MAX)
    }

    /// The input tungstenite has not taken.
    fn rest(&self) -> &'a [u8] {
        &self.input[self.taken..]
    }
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out.len() >= self.out_budget {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let rest = self.rest();
        if self.frame_left == 0 {
            match look_ahead(rest) {
                Ahead::Frame(len) => self.frame_left = len,
                Ahead::Partial => return Err(io::ErrorKind::WouldBlock.into()),
                kept => {
                    self.stopped_at = Some(kept);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
            }
        }
        let frame_left = usize::try_from(self.frame_left).unwrap_or(usize::MAX);
        let n = rest.len().min(buf.len()).min(frame_left);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        buf[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
        self.frame_left -= n as u64;
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the next frame's header says (RFC 6455 §5.2), read before tungstenite may take any
/// of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// Not all of the header is here yet.
    Partial,
    /// A frame for tungstenite: this many bytes, header and payload.
    Frame(u64),
    /// A well-formed close frame, ours to answer (see `answer_close`).
    Close {
        header_len: usize,
        payload_len: usize,
        mask: [u8; 4],
    },
    /// A header no valid frame has: fail the connection with 1002, saying this.
    Broken(&'static str),
}

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0f;
const OPCODE_CLOSE: u8 = 0x8;
const MASKED: u8 = 0x80;

/// Read the header at the start of `bytes`, as far as it is there.
///
/// ```text
/// 0                   1                   2                   3
/// 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-------+-+-------------+-------------------------------+
/// |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
/// |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
/// |N|V|V|V|       |S|             |   (if payload len==126/127)   |
/// | |1|2|3|       |K|             |                               |
/// +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
/// |     Extended payload length continued, if payload len == 127  |
/// + - - - - - - - - - - - - - - - +-------------------------------+
/// |                               | Masking-key, if MASK set to 1 |
/// +-------------------------------+-------------------------------+
/// ```
fn look_ahead(bytes: &[u8]) -> Ahead {
    let [first, second, rest @ ..] = bytes else {
        return Ahead::Partial;
    };
    let is_close = first & OPCODE == OPCODE_CLOSE;
    if is_close {
        // What makes a close frame invalid whatever its length: reserved bits without an
        // extension that defines them (§5.2), a fragmented control frame (§5.5), a client
        // frame without a mask (§5.1), and a control frame over 125 bytes (§5.5), which a
        // length byte of 126 or 127 announces.
        if first & RSV != 0 {
            return Ahead::Broken("reserved bits set");
        }
        if first & FIN == 0 {
            return Ahead::Broken("a fragmented close frame");
        }
        if second & MASKED == 0 {
            return Ahead::Broken("an unmasked client frame");
        }
        if second & 0x7f > 125 {
            return Ahead::Broken("a close frame over 125 bytes");
        }
    }
    let (payload_len, rest) = match second & 0x7f {
        126 => match rest.split_first_chunk::<2>() {
            Some((len, rest)) => (u64::from(u16::from_be_bytes(*len)), rest),
            None => return Ahead::Partial,
        },
        127 => match rest.split_first_chunk::<8>() {
            // "the most significant bit MUST be 0" (§5.2). tungstenite would compare the
            // length with our cap and answer 1009, too big; it is a protocol error.
            Some((len, _)) if len[0] & 0x80 != 0 => {
                return Ahead::Broken("a 64-bit length with its top bit set")
            }
            Some((len, rest)) => (u64::from_be_bytes(*len), rest),
            None => return Ahead::Partial,
        },
        len => (u64::from(len), rest),
    };
    let mask = if second & MASKED != 0 {
        match rest.split_first_chunk::<4>() {
            Some((mask, _)) => Some(*mask),
            None => return Ahead::Partial,
        }
    } else {
        None
    };
    let header_len = bytes.len() - rest.len() + if mask.is_some() { 4 } else { 0 };
    match mask {
        // (The checks above made it masked, and at most 125 bytes.)
        Some(mask) if is_close => Ahead::Close {
            header_len,
            payload_len: payload_len as usize,
            mask,
        },
        // Below 2^63, so adding at most 14 cannot overflow.
        _ => Ahead::Frame(header_len as u64 + payload_len),
    }
}

/// Whether a client may send `code` in its close frame: RFC 6455 §7.4.1 defines 1000–1003
/// and 1007–1011; IANA's WebSocket Close Code Number Registry (§11.7) has since added 1012
/// (service restart), 1013 (try again later) and 1014 (bad gateway); 3000–3999 are for
/// libraries and frameworks to register and 4000–4999 for private use (§7.4.2), valid
/// whatever they mean. 1004 is reserved; 1005, 1006 and 1015 stand for "no code", "closed
/// without a close frame" and "TLS failed", and "MUST NOT be set as a status code in a
/// Close control frame by an endpoint" (§7.4.1). The rest of 1000–2999 is kept for future
/// revisions of the protocol, and codes below 1000 or above 4999 are not used (§7.4.2).
///
/// tungstenite 0.30's own list (`CloseCode::is_allowed`) lacks 1014, and answers it with
/// 1002: that is why close frames are ours to answer.
pub(super) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// An open WebSocket was offered `input`: read messages until the input runs out or the
/// connection is done. Returns how many bytes of `input` were used, and what next.
pub(super) fn read_frames(
    open: &mut Open,
    input: &[u8],
    out: &mut Vec<u8>,
    ctx: &mut Context,
) -> (usize, Next) {
    let mut wire = Wire::new(input, open.frame_left, out, ctx.out_budget);
    let next = read_messages(&mut open.codec, &mut wire, ctx);
    open.frame_left = wire.frame_left;
    (wire.taken, next)
}

fn read_messages(ws: &mut WebSocketContext, wire: &mut Wire, ctx: &mut Context) -> Next {
    loop {
        match ws.read(wire) {
            Ok(Message::Text(text)) => {
                ctx.stats.messages += 1;
                info!("received from {}: {}", ctx.peer, for_log(&text));
                // The sender's own copy goes out now, in order with the rest of its output
                // and before any close frame a later frame of this read may earn; the room
                // takes the others' and skips the sender (see `Context::broadcast`).
                let frame = text_frame(text);
                wire.out.extend_from_slice(&frame);
                ctx.broadcast.push(frame);
            }
            Ok(Message::Binary(data)) => {
                ctx.stats.messages += 1;
                if let Err(e) = ws.write(wire, Message::Binary(data)) {
                    return fail(ws, wire, ctx, &e);
                }
            }
            // tungstenite has queued the pong; it writes it first thing in the next read.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(frame)) => {
                // Not expected: close frames are kept from tungstenite (`answer_close`).
                // Should one get through, tungstenite answers it as it did before.
                debug!("{}: close frame {frame:?}: answering it", ctx.peer);
                let _ = ws.flush(wire);
                return Next::CloseAfterFlush;
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // All input is read, or the wire stopped at a frame it keeps. Write whatever
                // tungstenite still holds first (a pong): it answers an earlier frame.
                if let Err(e) = ws.flush(wire) {
                    return fail(ws, wire, ctx, &e);
                }
                return match wire.stopped_at.take() {
                    Some(Ahead::Close {
                        header_len,
                        payload_len,
                        mask,
                    }) => answer_close(ws, wire, ctx, header_len, payload_len, mask),
                    Some(Ahead::Broken(why)) => fail_with(ws, wire, ctx, CloseCode::Protocol, why),
                    Some(Ahead::Partial | Ahead::Frame(_)) | None => Next::Continue,
                };
            }
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return Next::CloseAfterFlush,
            Err(e) => return fail(ws, wire, ctx, &e),
        }
    }
}

/// The client's close frame (RFC 6455 §5.5.1), its header read and found sound: once it is
/// all here, check its body as §7.1.5 and §7.4 say, answer it, and close. The answer echoes
/// the client's code and reason, as the RFC says endpoints typically do (and Node's `ws`
/// and tungstenite do); a close frame without a body is answered with one without a body.
/// What follows the close frame is not read: "the endpoint MUST NOT send any more data
/// frames after sending a Close frame", so it can only be noise.
fn answer_close(
    ws: &mut WebSocketContext,
    wire: &mut Wire,
    ctx: &mut Context,
    header_len: usize,
    payload_len: usize,
    mask: [u8; 4],
) -> Next {
    let Some(frame) = wire.rest().get(..header_len + payload_len) else {
        return Next::Continue; // the rest of it is on its way
    };
    // At most 125 bytes (checked with the header), unmasked as §5.3 says.
    let mut body = [0u8; 125];
    let body = &mut body[..payload_len];
    for (i, (b, masked)) in body.iter_mut().zip(&frame[header_len..]).enumerate() {
        *b = masked ^ mask[i % 4];
    }
    wire.taken = wire.input.len();
    let reply = match &*body {
        [] => None,
        [_] => return fail_with(ws, wire, ctx, CloseCode::Protocol, "a 1-byte close body"),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                debug!(
                    "{}: close code {code} is not one a client may send",
                    ctx.peer
                );
                return fail_with(ws, wire, ctx, CloseCode::Protocol, "invalid close code");
            }
            // §5.5.1: the reason "is not guaranteed to be human readable" but is UTF-8;
            // §8.1: bytes that are not valid UTF-8 fail the connection (1007).
            let Ok(reason) = std::str::from_utf8(reason) else {
                return fail_with(ws, wire, ctx, CloseCode::Invalid, "invalid UTF-8");
            };
            Some(CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from(reason),
            })
        }
    };
    debug!("{}: close frame {reply:?}: answering it", ctx.peer);
    // Our Wire never refuses a write; the codec was open, so the close frame is queued.
    let _ = ws.close(wire, reply);
    Next::CloseAfterFlush
}

/// "Fail the WebSocket Connection" (RFC 6455 §7.1.7) for what tungstenite found: a close
/// frame whose code says what was wrong (§7.4.1), then close.
fn fail(ws: &mut WebSocketContext, wire: &mut Wire, ctx: &mut Context, error: &Error) -> Next {
    let (code, reason) = match error {
        Error::Capacity(_) => (CloseCode::Size, "message too big"),
        Error::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
        Error::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        _ => (CloseCode::Error, "internal error"),
    };
    debug!("{}: {error}", ctx.peer);
    fail_with(ws, wire, ctx, code, reason)
}

/// Fail the connection with `code`, saying `reason` (§7.1.7).
fn fail_with(
    ws: &mut WebSocketContext,
    wire: &mut Wire,
    ctx: &mut Context,
    code: CloseCode,
    reason: &'static str,
) -> Next {
    debug!("{}: {reason}: closing with {}", ctx.peer, u16::from(code));
    ctx.stats.errors += 1;
    close_with(ws, wire.out, code, reason);
    Next::CloseAfterFlush
}

/// Append a close frame with `code` to `out`.
pub(super) fn close_with(
    ws: &mut WebSocketContext,
    out: &mut Vec<u8>,
    code: CloseCode,
    reason: &'static str,
) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    // Our Wire never refuses a write, so this cannot fail short of a closed codec, which
    // has nothing left to send anyway.
    let _ = ws.close(&mut Wire::writer(out), Some(frame));
}

/// A text frame as a server sends it: FIN set, opcode 1, no mask (RFC 6455 §5.2).
fn text_frame(text: Utf8Bytes) -> Arc<[u8]> {
    let frame = Frame::message(text, OpCode::Data(Data::Text), true);
    let mut bytes = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut bytes);
    bytes.into()
}

/// A message as the log shows it: cut after `LOGGED_CHARS` characters, and with control
/// characters escaped so that a message cannot forge log lines.
pub(super) fn for_log(text: &str) -> String {
    let mut shown = String::with_capacity(text.len().min(LOGGED_CHARS + 16));
    for c in text.chars().take(LOGGED_CHARS) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if text.chars().nth(LOGGED_CHARS).is_some() {
        shown.push_str(&format!("… ({} bytes)", text.len()));
    }
    shown
}
