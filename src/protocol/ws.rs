//! WebSocket mode: the seed notes' chat room, and the page that talks to it.
//!
//! A connection starts out as HTTP/1.1. `GET /` gets the chat page (the notes' index.html,
//! made usable), any other path gets 404, and a request with `Upgrade: websocket` gets the
//! opening handshake of RFC 6455 §4.2.2: `101 Switching Protocols` and the
//! `Sec-WebSocket-Accept` proof that we read the client's key. From then on the same TCP
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
//! - text: logged, and broadcast to every client, the sender included: a chat room;
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

use super::http::{self, BodyLength, Connection, ErrorStatus, HeadScan, RequestHead, Version};
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
        // HTTP request heads, one after another on a keep-alive connection, until one of
        // them upgrades the connection or closes it.
        while let State::Http(scan) = &mut self.state {
            if out.len() >= ctx.out_budget {
                return Outcome::new(consumed, Next::Continue);
            }
            let rest = &input[consumed..];
            let (len, next) = match scan.parse(rest) {
                Ok(Some(head)) => (head.len, self.answer(&head, out, ctx)),
                Ok(None) => return Outcome::new(consumed, Next::Continue),
                Err(status) => {
                    debug!("{}: bad request head: {}", ctx.peer, status.status_line());
                    out.extend_from_slice(ctx.page.error(status));
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
        Outcome::new(consumed, next)
    }

    /// True while a request head may be arriving: the header timeout applies then.
    pub fn in_request_head(&self) -> bool {
        matches!(self.state, State::Http(_))
    }

    /// The header timeout fired before the request head was complete: 408.
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        if let State::Http(_) = self.state {
            out.extend_from_slice(ctx.page.error(ErrorStatus::RequestTimeout));
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
        let path = head.path.split('?').next().unwrap_or("");
        if head.upgrade_websocket && path == "/" {
            return self.upgrade(head, out, ctx);
        }
        let page = ctx.page;
        if !matches!(head.method, "GET" | "HEAD") {
            // Nothing here takes a body, and one we did not read would be taken for the
            // next request.
            let headers = [("Allow", "GET, HEAD")];
            http::write_response(
                out,
                page,
                "405 Method Not Allowed",
                Connection::Close,
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
            http::write_response(out, page, "200 OK", connection, &[], body);
            if head.method == "HEAD" {
                // The same head, no body (RFC 9110 §9.3.2).
                out.truncate(out.len() - CHAT_PAGE.len());
            }
        } else {
            let body = Some(("text/plain; charset=utf-8", b"not found\n".as_slice()));
            http::write_response(out, page, "404 Not Found", connection, &[], body);
        }
        match connection {
            Connection::Close => Next::CloseAfterFlush,
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
        http::write_response(
            out,
            ctx.page,
            "101 Switching Protocols",
            Connection::Upgrade,
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
                ctx.broadcast.push(text_frame(text));
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
    http::write_response(
        out,
        ctx.page,
        "400 Bad Request",
        Connection::Close,
        &[("Sec-WebSocket-Version", "13")],
        Some(("text/plain; charset=utf-8", b"bad WebSocket handshake\n")),
    );
    Next::CloseAfterFlush
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::CannedPage;
    use crate::stats::Stats;

    /// The example of RFC 6455 §1.3.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// What one call produced.
    struct Call {
        outcome: Outcome,
        out: Vec<u8>,
        broadcast: Vec<Arc<[u8]>>,
        stats: Stats,
    }

    fn offer_with_budget(session: &mut WsSession, input: &[u8], out_budget: usize) -> Call {
        let page = CannedPage::new(b"", "text/plain");
        let mut stats = Stats::default();
        let mut broadcast = Vec::new();
        let mut out = Vec::new();
        let mut ctx = Context {
            page: &page,
            out_budget,
            peer: "127.0.0.1:9".parse().unwrap(),
            stats: &mut stats,
            broadcast: &mut broadcast,
        };
        let outcome = session.on_input(input, &mut out, &mut ctx);
        Call {
            outcome,
            out,
            broadcast,
            stats,
        }
    }

    fn offer(session: &mut WsSession, input: &[u8]) -> Call {
        offer_with_budget(session, input, usize::MAX)
    }

    fn upgrade_request(key: &str, version: &str) -> Vec<u8> {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
        .into_bytes()
    }

    /// A session past the handshake, and the greeting it sent.
    fn open_session() -> WsSession {
        let mut session = WsSession::default();
        let call = offer(&mut session, &upgrade_request(KEY, "13"));
        assert_eq!(call.outcome.next, Next::Continue);
        session
    }

    /// A frame as a client sends it (RFC 6455 §5.2): masked, payload under 126 bytes.
    fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first_byte, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// A frame as the server sends it: unmasked.
    fn server_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first_byte, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    fn close_code(out: &[u8]) -> u16 {
        assert_eq!(out[0], 0x88, "not a close frame: {out:?}");
        u16::from_be_bytes([out[2], out[3]])
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn the_handshake_answers_101_with_the_accept_key_then_greets() {
        let mut session = WsSession::default();
        let request = upgrade_request(KEY, "13");
        let call = offer(&mut session, &request);
        assert_eq!(call.outcome, Outcome::new(request.len(), Next::Continue));
        let head_end = call.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = text(&call.out[..head_end]);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{head}"
        );
        assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
        assert_eq!(
            call.out[head_end..],
            server_frame(0x81, GREETING.as_bytes())
        );
        assert_eq!(call.stats.requests, 1);
    }

    #[test]
    fn any_split_of_the_handshake_gives_the_same_answer() {
        let request = upgrade_request(KEY, "13");
        let mut whole = request.clone();
        whole.extend(client_frame(0x81, b"hi"));
        let expected = {
            let mut session = WsSession::default();
            let call = offer(&mut session, &whole);
            (call.out, call.broadcast)
        };
        for chunk in [1, 2, 3, 7, 50, 190] {
            // Play the loop's part: keep what was not consumed, append what arrives next.
            let mut session = WsSession::default();
            let (mut held, mut out, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
            for piece in whole.chunks(chunk) {
                held.extend_from_slice(piece);
                let call = offer(&mut session, &held);
                held.drain(..call.outcome.consumed);
                out.extend(call.out);
                broadcast.extend(call.broadcast);
            }
            assert!(held.is_empty(), "chunk {chunk}");
            assert_eq!((out, broadcast), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_bad_handshake_gets_400_with_the_version_we_speak() {
        let requests = [
            upgrade_request("c2hvcnQ=", "13"), // 5 bytes, not 16
            upgrade_request("dGhlIHNhbXBsZSBub25jZR==", "13"), // trailing bits set
            upgrade_request("dGhlIHNhbXBsZSBub25jZQ=", "13"), // padding cut
            upgrade_request("dGhlIHNhbXBsZSBub25j*Q==", "13"), // not base64
            upgrade_request(KEY, "12"),        // another version
            text(&upgrade_request(KEY, "13")) // too old
                .replace("HTTP/1.1", "HTTP/1.0")
                .into_bytes(),
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n"
                .to_vec(),
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_vec(),
        ];
        for request in requests {
            let mut session = WsSession::default();
            let call = offer(&mut session, &request);
            let out = text(&call.out);
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
            assert!(out.contains("Sec-WebSocket-Version: 13\r\n"), "{out}");
            assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{out}");
        }
    }

    #[test]
    fn get_slash_serves_the_page_and_keeps_the_connection() {
        let mut session = WsSession::default();
        let call = offer(&mut session, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = text(&call.out);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(out.contains(&format!("Content-Length: {}\r\n", CHAT_PAGE.len())));
        assert!(call.out.ends_with(CHAT_PAGE));
        assert_eq!(call.outcome.next, Next::Continue);

        // The same connection may then upgrade.
        let call = offer(&mut session, &upgrade_request(KEY, "13"));
        assert!(text(&call.out).starts_with("HTTP/1.1 101 "));
    }

    #[test]
    fn head_gets_the_page_headers_only() {
        let mut session = WsSession::default();
        let call = offer(&mut session, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = text(&call.out);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }

    #[test]
    fn other_paths_get_404_and_other_methods_405() {
        let mut session = WsSession::default();
        let call = offer(&mut session, b"GET /chat HTTP/1.1\r\n\r\n");
        assert!(text(&call.out).starts_with("HTTP/1.1 404 "));
        assert_eq!(call.outcome.next, Next::Continue);
        let call = offer(&mut session, b"GET /x HTTP/1.0\r\n\r\n");
        assert!(text(&call.out).starts_with("HTTP/1.1 404 "));
        assert_eq!(call.outcome.next, Next::CloseAfterFlush, "HTTP/1.0 closes");

        let mut session = WsSession::default();
        let call = offer(
            &mut session,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert!(text(&call.out).starts_with("HTTP/1.1 405 "));
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);
    }

    #[test]
    fn a_get_with_a_body_is_refused_and_a_stalled_head_gets_408() {
        let mut session = WsSession::default();
        let call = offer(
            &mut session,
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(text(&call.out).starts_with("HTTP/1.1 400 "));
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);

        let mut session = WsSession::default();
        let call = offer(&mut session, b"GET / HTTP/1.1\r\nHost:");
        assert_eq!(call.outcome, Outcome::new(0, Next::Continue));
        assert!(session.in_request_head());
        let page = CannedPage::new(b"", "text/plain");
        let (mut stats, mut broadcast, mut out) = (Stats::default(), Vec::new(), Vec::new());
        let mut ctx = Context {
            page: &page,
            out_budget: usize::MAX,
            peer: "127.0.0.1:9".parse().unwrap(),
            stats: &mut stats,
            broadcast: &mut broadcast,
        };
        let next = session.on_header_timeout(&mut out, &mut ctx);
        assert!(text(&out).starts_with("HTTP/1.1 408 "));
        assert_eq!(next, Next::CloseAfterFlush);
    }

    #[test]
    fn garbage_gets_400_and_an_endless_head_431() {
        let mut session = WsSession::default();
        let call = offer(&mut session, b"\x16\x03\x01 hello\r\n\r\n");
        assert!(text(&call.out).starts_with("HTTP/1.1 400 "));
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);

        let mut session = WsSession::default();
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.resize(http::MAX_HEAD_BYTES + 1, b'a');
        let call = offer(&mut session, &head);
        assert!(text(&call.out).starts_with("HTTP/1.1 431 "));
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);
    }

    #[test]
    fn a_text_message_is_broadcast_not_answered() {
        let mut session = open_session();
        let call = offer(&mut session, &client_frame(0x81, b"Client message: Hi!"));
        assert!(call.out.is_empty());
        assert_eq!(call.broadcast.len(), 1);
        assert_eq!(
            &call.broadcast[0][..],
            &server_frame(0x81, b"Client message: Hi!")[..]
        );
        assert_eq!(call.stats.messages, 1);
    }

    #[test]
    fn a_binary_message_is_echoed_to_its_sender() {
        let mut session = open_session();
        let call = offer(&mut session, &client_frame(0x82, &[0, 1, 2, 255]));
        assert_eq!(call.out, server_frame(0x82, &[0, 1, 2, 255]));
        assert!(call.broadcast.is_empty());
    }

    #[test]
    fn a_ping_gets_a_pong_with_its_payload() {
        let mut session = open_session();
        let call = offer(&mut session, &client_frame(0x89, b"are you there"));
        assert_eq!(call.out, server_frame(0x8a, b"are you there"));
        assert_eq!(call.outcome.next, Next::Continue);
    }

    #[test]
    fn a_close_frame_is_answered_then_the_connection_closes() {
        let mut session = open_session();
        let call = offer(&mut session, &client_frame(0x88, &1000u16.to_be_bytes()));
        assert_eq!(close_code(&call.out), 1000);
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);
    }

    #[test]
    fn broken_frames_get_the_close_code_that_says_why() {
        let too_big = {
            // A text frame announcing 1 MiB + 1 bytes: refused at its header.
            let mut frame = vec![0x81, 0x80 | 127];
            frame.extend_from_slice(&(MAX_MESSAGE_SIZE as u64 + 1).to_be_bytes());
            frame.extend_from_slice(&[1, 2, 3, 4]);
            frame
        };
        let cases: [(&str, Vec<u8>, u16); 5] = [
            (
                "invalid UTF-8",
                client_frame(0x81, &[b'a', 0xff, 0xfe]),
                1007,
            ),
            ("unmasked", server_frame(0x81, b"hi"), 1002),
            ("reserved opcode", client_frame(0x83, b""), 1002),
            ("reserved bit", client_frame(0xc1, b"hi"), 1002),
            ("too big", too_big, 1009),
        ];
        for (what, input, code) in cases {
            let mut session = open_session();
            let call = offer(&mut session, &input);
            assert_eq!(close_code(&call.out), code, "{what}");
            assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{what}");
            assert_eq!(call.stats.errors, 1, "{what}");
        }
    }

    #[test]
    fn a_fragmented_message_over_the_limit_gets_1009() {
        let mut session = open_session();
        // 17 fragments of 64 KiB: 1 MiB + 64 KiB in all.
        let fragment = vec![b'a'; 64 * 1024];
        let mut input = Vec::new();
        for i in 0..17 {
            let opcode = if i == 0 { 0x01 } else { 0x00 };
            let fin = if i == 16 { 0x80 } else { 0 };
            input.extend_from_slice(&[fin | opcode, 0x80 | 127]);
            input.extend_from_slice(&(fragment.len() as u64).to_be_bytes());
            input.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
            input.extend_from_slice(&fragment);
        }
        let call = offer(&mut session, &input);
        assert_eq!(close_code(&call.out), 1009);
    }

    #[test]
    fn output_past_the_budget_leaves_the_rest_of_the_input_for_later() {
        let mut session = open_session();
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend(client_frame(0x82, &[7; 100]));
        }
        let call = offer_with_budget(&mut session, &input, 1000);
        assert!(call.outcome.consumed < input.len());
        assert!(call.out.len() >= 1000);
        // Offered again with room, the rest is echoed: nothing lost, nothing twice.
        let again = offer(&mut session, &input[call.outcome.consumed..]);
        assert_eq!(call.out.len() + again.out.len(), 100 * 102);
    }

    #[test]
    fn a_broadcast_is_sent_on_until_the_client_is_too_far_behind() {
        let frame = server_frame(0x81, b"news");
        let peer = "127.0.0.1:9".parse().unwrap();

        let mut page_viewer = WsSession::default();
        let mut out = Vec::new();
        assert_eq!(
            page_viewer.on_broadcast(&frame, 0, &mut out, peer),
            Next::Continue
        );
        assert!(
            out.is_empty(),
            "a connection that never upgraded is not in the room"
        );

        let mut session = open_session();
        let next = session.on_broadcast(&frame, MAX_UNREAD - 1, &mut out, peer);
        assert_eq!((next, out.as_slice()), (Next::Continue, frame.as_slice()));

        out.clear();
        let next = session.on_broadcast(&frame, MAX_UNREAD, &mut out, peer);
        assert_eq!(next, Next::CloseAfterFlush);
        assert_eq!(close_code(&out), 1008);
    }

    #[test]
    fn shutdown_sends_1001() {
        let mut session = open_session();
        let mut out = Vec::new();
        assert_eq!(session.on_shutdown(&mut out), Next::CloseAfterFlush);
        assert_eq!(close_code(&out), 1001);
    }

    #[test]
    fn a_session_is_two_words_in_the_slab() {
        assert!(std::mem::size_of::<WsSession>() <= 2 * std::mem::size_of::<usize>());
    }

    #[test]
    fn keys_must_be_base64_of_16_bytes() {
        assert!(is_valid_key(KEY.as_bytes()));
        assert!(is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(is_valid_key(b"+/+/+/+/+/+/+/+/+/+/+w=="));
        assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAB=="));
        assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_valid_key(b""));
    }

    #[test]
    fn log_lines_show_short_messages_whole_and_cut_long_ones() {
        assert_eq!(for_log("Client message: Hi!"), "Client message: Hi!");
        assert_eq!(for_log("two\nlines"), "two\\nlines");
        let long = "é".repeat(150);
        let shown = for_log(&long);
        assert!(shown.starts_with(&"é".repeat(LOGGED_CHARS)));
        assert!(shown.ends_with("… (300 bytes)"), "{shown}");
    }
}
