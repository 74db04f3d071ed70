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
//! What the room does with each message:
//! - text: logged, and sent to every client, the sender included: a chat room. The
//!   sender's own copy goes into its output at once, in order with the rest of its output;
//!   the loop delivers the others' (see `Context::broadcast`). So a message followed in the
//!   same read by a broken frame still reaches everyone, its sender included, before the
//!   close frame that the broken one earns;
//! - binary: echoed to its sender only;
//! - ping: answered with a pong (tungstenite queues it, we write it);
//! - close: answered with a close frame, then the connection closes (RFC 6455 §5.5.1);
//! - anything broken: a close frame whose code says why (RFC 6455 §7.4.1), then close.

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
use super::{Context, Next, Outcome};

/// The largest message we take, in one frame or in fragments; a bigger one gets 1009.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// A client with this much of the room's traffic still unread when the next message comes
/// is closed with 1008 instead. What we hold for it stays under this plus one message, and
/// one stuck browser tab can neither grow our memory without end nor hold up the others.
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
    /// opening handshake. The scan remembers how far a dripping head was searched.
    Http(HeadScan),
    /// The handshake is done: WebSocket frames, through tungstenite's codec. Boxed: the
    /// codec is a few hundred bytes, and every slab entry of every mode would pay for it.
    Open(Box<WebSocketContext>),
    /// Our close frame is written (or the connection is otherwise done); the codec and its
    /// buffers are already freed, and nothing more is read.
    Closed,
}

impl Default for State {
    fn default() -> State {
        State::Http(HeadScan::default())
    }
}

impl WsSession {
    /// Offer the bytes the peer sent; see `protocol` for the contract.
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
        let mut consumed = 0;
        let mut answered = false;
        // HTTP request heads, one after another on a keep-alive connection, until one of
        // them upgrades the connection or closes it.
        while let State::Http(scan) = &mut self.state {
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
            State::Http(_) => unreachable!("the loop above runs until the state changes"),
            // Whatever followed the handshake in the same read is already frames.
            State::Open(ws) => {
                let mut wire = Wire::new(&input[consumed..], out, ctx.out_budget);
                let next = read_frames(ws, &mut wire, ctx);
                consumed += wire.taken;
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
        matches!(self.state, State::Http(_))
    }

    /// The header timeout fired before the request head was complete: 408.
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        if let State::Http(_) = self.state {
            out.extend_from_slice(ctx.responses.error(ErrorStatus::RequestTimeout));
        }
        self.state = State::Closed;
        Next::CloseAfterFlush
    }

    /// The server is going away: an open WebSocket gets a close frame with 1001.
    pub fn on_shutdown(&mut self, out: &mut Vec<u8>) -> Next {
        if let State::Open(ws) = &mut self.state {
            close_with(ws, out, CloseCode::Away, "server shutting down");
        }
        self.state = State::Closed;
        Next::CloseAfterFlush
    }

    /// A message for the room: send `frame` on, unless this client is `MAX_UNREAD` behind.
    pub fn on_broadcast(
        &mut self,
        frame: &[u8],
        unsent: usize,
        out: &mut Vec<u8>,
        peer: SocketAddr,
    ) -> Next {
        // Only upgraded connections are in the room; a page download is not.
        let State::Open(ws) = &mut self.state else {
            return Next::Continue;
        };
        if unsent < MAX_UNREAD {
            out.extend_from_slice(frame);
            return Next::Continue;
        }
        // What is queued still goes out, so the close frame lands on a frame boundary and
        // the client learns why; from here on nothing more is queued for it.
        info!("{peer}: too slow, {unsent} bytes unread: closing it with 1008");
        close_with(ws, out, CloseCode::Policy, "too slow to keep up");
        self.state = State::Closed;
        Next::CloseAfterFlush
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

        let config = WebSocketConfig::default()
            // tungstenite allocates its read buffer up front, 128 KiB by default: most of an
            // idle client's memory for nothing. It grows by itself for a big frame.
            .read_buffer_size(4 * 1024)
            // Each frame goes straight into our output; the loop batches the writes.
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE_SIZE))
            .max_frame_size(Some(MAX_MESSAGE_SIZE));
        let mut ws = Box::new(WebSocketContext::new(Role::Server, Some(config)));
        let greeting = Message::Text(Utf8Bytes::from_static(GREETING));
        if let Err(e) = ws.write(&mut Wire::new(&[], out, usize::MAX), greeting) {
            debug!("{}: could not queue the greeting: {e}", ctx.peer);
        }
        debug!("{}: WebSocket open; state Http→Open", ctx.peer);
        self.state = State::Open(ws);
        Next::Continue
    }
}

/// tungstenite's view of the connection. Reading serves the bytes the loop read, then says
/// WouldBlock, as a drained non-blocking socket would; writing appends to our output. It
/// stops serving input once the output reaches the loop's budget (backpressure): the rest
/// stays with the loop, which offers it again when the peer has read some.
struct Wire<'a> {
    input: &'a [u8],
    /// How many bytes of `input` tungstenite has taken.
    taken: usize,
    out: &'a mut Vec<u8>,
    out_budget: usize,
}

impl<'a> Wire<'a> {
    fn new(input: &'a [u8], out: &'a mut Vec<u8>, out_budget: usize) -> Wire<'a> {
        Wire {
            input,
            taken: 0,
            out,
            out_budget,
        }
    }
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.taken..];
        if rest.is_empty() || self.out.len() >= self.out_budget {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
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

/// Read messages until the input runs out (WouldBlock) or the connection is done.
fn read_frames(ws: &mut WebSocketContext, wire: &mut Wire, ctx: &mut Context) -> Next {
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
                debug!("{}: close frame {frame:?}: answering it", ctx.peer);
                // Writes tungstenite's answering close frame, then reports the closing
                // handshake complete (ConnectionClosed): nothing else to do.
                let _ = ws.flush(wire);
                return Next::CloseAfterFlush;
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // All input is read. Write whatever tungstenite still holds (a pong).
                return match ws.flush(wire) {
                    Ok(()) => Next::Continue,
                    Err(e) => fail(ws, wire, ctx, &e),
                };
            }
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return Next::CloseAfterFlush,
            Err(e) => return fail(ws, wire, ctx, &e),
        }
    }
}

/// "Fail the WebSocket Connection" (RFC 6455 §7.1.7): a close frame whose code says what
/// was wrong (§7.4.1), then close.
fn fail(ws: &mut WebSocketContext, wire: &mut Wire, ctx: &mut Context, error: &Error) -> Next {
    let (code, reason) = match error {
        Error::Capacity(_) => (CloseCode::Size, "message too big"),
        Error::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
        Error::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        _ => (CloseCode::Error, "internal error"),
    };
    debug!("{}: {error}: closing with {}", ctx.peer, u16::from(code));
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
    let _ = ws.close(&mut Wire::new(&[], out, usize::MAX), Some(frame));
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
