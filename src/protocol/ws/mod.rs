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

use std::net::SocketAddr;

use log::{debug, info, trace};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::Utf8Bytes;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::http::{BodyLength, HeadScan, RequestHead, Version};
use super::responses::{self, ConnectionHeader, ErrorStatus};
use super::{Context, Delivery, Next, Outcome};

mod frames;

use frames::{close_with, read_frames, Wire};

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
                    ctx.stats.errors += 1;
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
            ctx.stats.errors += 1;
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
        held: usize,
        room_full: bool,
        out: &mut Vec<u8>,
        peer: SocketAddr,
    ) -> Delivery {
        // Only upgraded connections are in the room; a page download is not.
        let State::Open(open) = &mut self.state else {
            return Delivery::Skip;
        };
        let max_message = open.codec.get_config().max_message_size.unwrap_or(0);
        if held < MAX_UNREAD.max(max_message) && !room_full {
            return Delivery::Send;
        }
        // The frame in progress still goes out (the loop lets go of those not begun), so the
        // close frame lands on a frame boundary and the client learns why; from here on
        // nothing more is queued for it.
        info!("{peer}: too slow, {held} bytes not yet taken by the kernel: closing it with 1008");
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
            ctx.stats.errors += 1;
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
            ctx.stats.errors += 1;
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
        // A handshake has no body (RFC 6455 §4.1: the client sends a GET); bytes announced
        // as one would be read as the first frames.
        if head.body != BodyLength::Empty {
            return bad_handshake(out, ctx, "a body on the opening handshake");
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
