//! WebSocket mode: the seed notes' chat room, and the page that talks to it.
//!
//! A connection starts out as HTTP/1.1. A request with `Upgrade: websocket`, at any path
//! (as the notes' Node server, the `ws` package, does), gets the opening handshake of
//! RFC 6455 §4.2.2: `101 Switching Protocols` and the `Sec-WebSocket-Accept` proof that we
//! read the client's key. Without the Upgrade, `GET /` gets the chat page (the notes'
//! index.html, made usable) and any other path 404. From the 101 on, the same TCP
//! connection carries WebSocket frames both ways, and the first one says
//! "hello, I am a server", as the notes' server.js did.
//!
//! The frames are decoded and encoded by tungstenite, which works over any `Read + Write`.
//! Ours is not the socket: [`Wire`] hands tungstenite the bytes the loop has read
//! (WouldBlock once they run out, as a non-blocking socket would say) and appends what
//! tungstenite writes to our output. tungstenite does the framing, unmasking, reassembly of
//! fragments and UTF-8 checks; the socket, and when to read or write it, stay the loop's.
//!
//! The wire reads each frame's header before tungstenite may take the frame (see
//! [`Ahead`]), for two things tungstenite 0.30 gets wrong: a 64-bit length with its top bit
//! set, which it calls too big (1009) where RFC 6455 §5.2 makes it a protocol error (1002);
//! and close frames, whose code it checks against an incomplete list (1014, which IANA
//! registered, gets 1002). Close frames never reach tungstenite: we answer them ourselves.
//! (tungstenite gives us a frame only once all of it is in, so invalid UTF-8 in a text
//! frame that arrives in pieces is found when the last piece comes, not at the first bad
//! byte; RFC 6455 §8.1 allows either.)
//!
//! What the room does with each message:
//! - text: logged, and sent to every client, the sender included: a chat room. The
//!   sender's own copy goes into its output at once, in order with the rest of its output;
//!   the loop delivers the others' (see `Context::broadcast`). So a message followed in the
//!   same read by a broken frame still reaches everyone, its sender included, before the
//!   close frame that the broken one earns;
//! - binary: echoed to its sender only;
//! - ping: answered with a pong (tungstenite queues it, we write it);
//! - close: answered with a close frame, then the connection closes (RFC 6455 §5.5.1);
//! - anything broken: a close frame whose code says why (RFC 6455 §7.4.1), then close;
//! - silence for `--idle-timeout`: a close frame with 1001, then close.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, info, trace};
use tungstenite::error::Error;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, Utf8Bytes};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::http::{BodyLength, HeadScan, RequestHead, Version};
use super::responses::{self, ConnectionHeader, ErrorStatus};
use super::{Context, Delivery, Next, Outcome};

/// The largest message we take unless the operator says otherwise (`--max-message`), in one
/// frame or in fragments; a bigger one gets 1009.
pub const DEFAULT_MAX_MESSAGE: u32 = 1024 * 1024;
/// The least `--max-message` may be: every control frame (a ping, a close) may carry 125
/// bytes (RFC 6455 §5.5), and tungstenite applies the frame cap to them too.
pub const MIN_MAX_MESSAGE: u32 = 125;
/// A client with this much of the room's traffic still unread when the next message comes
/// is closed with 1008 instead; with a `--max-message` above it, a client may have one
/// whole message unread, never two. What we hold for it stays under this plus one message,
/// and one stuck browser tab can neither grow our memory without end nor hold up the others.
pub const MAX_UNREAD: usize = 1024 * 1024;
/// What every client hears first, as in the seed notes' server.js.
pub const GREETING: &str = "hello, I am a server";
/// The chat page, compiled into the binary.
pub const CHAT_PAGE: &[u8] = include_bytes!("chat.html");

/// Text messages are logged up to this many characters.
const LOGGED_CHARS: usize = 100;

/// One connection of ws mode.
#[derive(Debug, Default)]
pub struct WsSession {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Reading HTTP request heads with the HTTP mode's parser: the page, a 404, or the
    /// opening handshake. The scan remembers how far a dripping head was searched; the cap
    /// on messages waits here for the handshake, which hands it to the codec. (A u32, so
    /// that it fits beside the enum's tag and the session stays two words.)
    Http { scan: HeadScan, max_message: u32 },
    /// The handshake is done: WebSocket frames, through tungstenite's codec. Boxed: the
    /// codec is a few hundred bytes, and every slab entry of every mode would pay for it.
    Open(Box<Open>),
    /// Our close frame is written (or the connection is otherwise done); the codec and its
    /// buffers are already freed, and nothing more is read.
    Closed,
}

impl Default for State {
    fn default() -> State {
        State::Http {
            scan: HeadScan::default(),
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// An open WebSocket: the codec, and where the client's bytes are in their frames.
#[derive(Debug)]
struct Open {
    codec: WebSocketContext,
    /// Bytes of the current frame (header and payload) not yet handed to the codec; 0 at
    /// a frame boundary, where the wire reads the next header before the codec may.
    frame_left: u64,
}

impl WsSession {
    /// A session that takes messages of up to `max_message` bytes (`--max-message`), and
    /// never fewer than [`MIN_MAX_MESSAGE`].
    pub fn new(max_message: u32) -> WsSession {
        WsSession {
            state: State::Http {
                scan: HeadScan::default(),
                max_message: max_message.max(MIN_MAX_MESSAGE),
            },
        }
    }

    /// Offer the bytes the peer sent; see `protocol` for the contract.
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
        let mut consumed = 0;
        let mut answered = false;
        // HTTP request heads, one after another on a keep-alive connection, until one of
        // them upgrades the connection or closes it.
        while let State::Http { scan, .. } = &mut self.state {
            if out.len() >= ctx.out_budget {
                return Outcome::new(consumed, Next::Continue).answered(answered);
            }
            let rest = &input[consumed..];
            let (len, next) = match scan.parse(rest) {
                Ok(Some(head)) => {
                    answered = true;
                    (head.len, self.answer(&head, out, ctx))
                }
                Ok(None) => return Outcome::new(consumed, Next::Continue).answered(answered),
                Err(status) => {
                    debug!("{}: bad request head: {}", ctx.peer, status.status_line());
                    out.extend_from_slice(ctx.responses.error(status));
                    (rest.len(), Next::CloseAfterFlush)
                }
            };
            consumed += len;
            if next == Next::CloseAfterFlush {
                self.state = State::Closed;
            }
        }

        let next = match &mut self.state {
            State::Http { .. } => unreachable!("the loop above runs until the state changes"),
            // Whatever followed the handshake in the same read is already frames.
            State::Open(open) => {
                let (taken, next) = read_frames(open, &input[consumed..], out, ctx);
                consumed += taken;
                next
            }
            State::Closed => {
                consumed = input.len();
                Next::CloseAfterFlush
            }
        };
        if next == Next::CloseAfterFlush {
            self.state = State::Closed;
        }
        Outcome::new(consumed, next).answered(answered)
    }

    /// True while a request head may be arriving: the header timeout applies then.
    pub fn in_request_head(&self) -> bool {
        matches!(self.state, State::Http { .. })
    }

    /// The header timeout fired before the request head was complete: 408.
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        if let State::Http { .. } = self.state {
            out.extend_from_slice(ctx.responses.error(ErrorStatus::RequestTimeout));
        }
        self.state = State::Closed;
        Next::CloseAfterFlush
    }

    /// The server is going away: an open WebSocket gets a close frame with 1001.
    pub fn on_shutdown(&mut self, out: &mut Vec<u8>) -> Next {
        if let State::Open(open) = &mut self.state {
            close_with(
                &mut open.codec,
                out,
                CloseCode::Away,
                "server shutting down",
            );
        }
        self.state = State::Closed;
        Next::CloseAfterFlush
    }

    /// Nothing came for `--idle-timeout`: an open WebSocket learns why before the close,
    /// with 1001, "going away" (RFC 6455 §7.4.1), as at shutdown: the server is leaving this
    /// connection. A connection still speaking HTTP gets nothing, as in http mode.
    pub fn on_idle_timeout(&mut self, out: &mut Vec<u8>) -> Next {
        if let State::Open(open) = &mut self.state {
            close_with(&mut open.codec, out, CloseCode::Away, "idle timeout");
        }
        self.state = State::Closed;
        Next::CloseAfterFlush
    }

    /// A message for the room: send it on, unless this client is `MAX_UNREAD` (or one
    /// `--max-message`, if larger) behind or the room is dropping it (`room_full`).
    pub fn on_broadcast(
        &mut self,
        unsent: usize,
        room_full: bool,
        out: &mut Vec<u8>,
        peer: SocketAddr,
    ) -> Delivery {
        // Only upgraded connections are in the room; a page download is not.
        let State::Open(open) = &mut self.state else {
            return Delivery::Skip;
        };
        let max_message = open.codec.get_config().max_message_size.unwrap_or(0);
        if unsent < MAX_UNREAD.max(max_message) && !room_full {
            return Delivery::Send;
        }
        // The frame in progress still goes out (the loop lets go of those not begun), so the
        // close frame lands on a frame boundary and the client learns why; from here on
        // nothing more is queued for it.
        info!("{peer}: too slow, {unsent} bytes unread: closing it with 1008");
        close_with(
            &mut open.codec,
            out,
            CloseCode::Policy,
            "too slow to keep up",
        );
        self.state = State::Closed;
        Delivery::Close
    }

    /// One complete request head: the page, a 404, or the WebSocket handshake.
    fn answer(&mut self, head: &RequestHead, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        ctx.stats.requests += 1;
        trace!("{}: {} {}", ctx.peer, head.method, head.path);
        // At any path: the room is the same whichever URL a client dials, as with Node's
        // `ws` server, which the notes' server.js used.
        if head.upgrade_websocket {
            return self.upgrade(head, out, ctx);
        }
        let path = head.path.split('?').next().unwrap_or("");
        let page = ctx.responses;
        if !matches!(head.method, "GET" | "HEAD") {
            // Nothing here takes a body, and one we did not read would be taken for the
            // next request.
            let headers = [("Allow", "GET, HEAD")];
            responses::write_response(
                out,
                page,
                "405 Method Not Allowed",
                ConnectionHeader::Close,
                &headers,
                None,
            );
            return Next::CloseAfterFlush;
        }
        if head.body != BodyLength::Empty {
            out.extend_from_slice(page.error(ErrorStatus::BadRequest));
            return Next::CloseAfterFlush;
        }
        let connection = head.connection();
        if path == "/" {
            let body = Some(("text/html; charset=utf-8", CHAT_PAGE));
            responses::write_response(out, page, "200 OK", connection, &[], body);
            if head.method == "HEAD" {
                // The same head, no body (RFC 9110 §9.3.2).
                out.truncate(out.len() - CHAT_PAGE.len());
            }
        } else {
            let body = Some(("text/plain; charset=utf-8", b"not found\n".as_slice()));
            responses::write_response(out, page, "404 Not Found", connection, &[], body);
        }
        match connection {
            ConnectionHeader::Close => Next::CloseAfterFlush,
            _ => Next::Continue,
        }
    }

    /// The opening handshake, RFC 6455 §4.2.1 and §4.2.2.
    fn upgrade(&mut self, head: &RequestHead, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        let key = match head.websocket_key {
            Some(key) if is_valid_key(key) => key,
            _ => return bad_handshake(out, ctx, "missing or malformed Sec-WebSocket-Key"),
        };
        if head.method != "GET" || head.version != Version::Http11 {
            return bad_handshake(out, ctx, "not an HTTP/1.1 GET");
        }
        if head.websocket_version != Some(b"13".as_slice()) {
            return bad_handshake(out, ctx, "Sec-WebSocket-Version is not 13");
        }
        // The accept key is base64(SHA-1(key + a GUID)): proof that a WebSocket server, not
        // some HTTP server that ignored the Upgrade, read this very request.
        let accept = derive_accept_key(key);
        let headers = [
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Accept", accept.as_str()),
        ];
        responses::write_response(
            out,
            ctx.responses,
            "101 Switching Protocols",
            ConnectionHeader::Upgrade,
            &headers,
            None,
        );

        let max_message = match self.state {
            State::Http { max_message, .. } => max_message as usize,
            _ => DEFAULT_MAX_MESSAGE as usize,
        };
        let config = WebSocketConfig::default()
            // tungstenite allocates its read buffer up front, 128 KiB by default: most of an
            // idle client's memory for nothing. It grows by itself for a big frame.
            .read_buffer_size(4 * 1024)
            // Each frame goes straight into our output; the loop batches the writes.
            .write_buffer_size(0)
            // One cap for a message and for a frame, which is at most a message.
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let mut codec = WebSocketContext::new(Role::Server, Some(config));
        let greeting = Message::Text(Utf8Bytes::from_static(GREETING));
        if let Err(e) = codec.write(&mut Wire::writer(out), greeting) {
            debug!("{}: could not queue the greeting: {e}", ctx.peer);
        }
        debug!("{}: WebSocket open; state Http→Open", ctx.peer);
        self.state = State::Open(Box::new(Open {
            codec,
            frame_left: 0,
        }));
        Next::Continue
    }
}

/// tungstenite's view of the connection. Reading serves the bytes the loop read, then says
/// WouldBlock, as a drained non-blocking socket would; writing appends to our output.
///
/// It serves a frame only once it has read the frame's header itself ([`Ahead`]), and stops
/// at a frame it keeps from tungstenite: tungstenite then hands us every message before
/// that frame, and says WouldBlock. It also stops serving input once the output reaches the
/// loop's budget (backpressure): the rest stays with the loop, which offers it again when
/// the peer has read some.
struct Wire<'a> {
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
    fn new(input: &'a [u8], frame_left: u64, out: &'a mut Vec<u8>, out_budget: usize) -> Self {
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
    fn writer(out: &'a mut Vec<u8>) -> Self {
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
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// An open WebSocket was offered `input`: read messages until the input runs out or the
/// connection is done. Returns how many bytes of `input` were used, and what next.
fn read_frames(
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
fn close_with(ws: &mut WebSocketContext, out: &mut Vec<u8>, code: CloseCode, reason: &'static str) {
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
fn for_log(text: &str) -> String {
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

/// RFC 6455 §4.2.1: the key must be "a base64-encoded value that, when decoded, is 16 bytes
/// in length". 16 bytes are 128 bits: 21 base64 digits carry 6 bits each (126), a 22nd
/// carries the last 2 and four zero bits (so it is A, Q, g or w), and "==" pads to 24.
fn is_valid_key(key: &[u8]) -> bool {
    let is_digit = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24
        && key[..21].iter().all(is_digit)
        && b"AQgw".contains(&key[21])
        && &key[22..] == b"=="
}

/// 400, with the version we speak (RFC 6455 §4.4), and close.
fn bad_handshake(out: &mut Vec<u8>, ctx: &mut Context, why: &str) -> Next {
    debug!("{}: bad WebSocket handshake: {why}", ctx.peer);
    ctx.stats.errors += 1;
    responses::write_response(
        out,
        ctx.responses,
        "400 Bad Request",
        ConnectionHeader::Close,
        &[("Sec-WebSocket-Version", "13")],
        Some(("text/plain; charset=utf-8", b"bad WebSocket handshake\n")),
    );
    Next::CloseAfterFlush
}

#[cfg(test)]
mod tests;
