//! The protocols: pure functions of bytes.
//!
//! Nothing in this module touches a socket or a `Poll`. The event loop reads bytes from the
//! kernel and hands them to a [`Session`]; the session appends its answer to an output buffer
//! and says what should happen next. That split (Redis keeps `ae.c` apart from
//! `networking.c` the same way) is what lets every protocol be unit-tested and fuzzed
//! without a network.
//!
//! The contract of [`Session::on_input`]:
//! - `input` is every byte the peer sent that no earlier call consumed, in order.
//! - The session appends its replies to `out` and returns how many bytes of `input` it
//!   consumed. Bytes it did not consume (half a request, or the rest of a pipeline once
//!   `out` has reached [`Context::out_budget`]) are kept by the loop and offered again,
//!   with whatever arrives next appended.
//! - [`Next`] says whether the connection stays open once `out` is written, and
//!   [`Outcome::answered`] whether a request was completed (the header deadline restarts).
//! - A WebSocket text message goes to every client, not just this one: the session writes
//!   the sender's copy to `out` like any answer, but it can't reach the others, so it leaves
//!   the encoded frame in [`Context::broadcast`] and the loop delivers it to every client
//!   but the sender (see [`Session::on_broadcast`]).

pub mod echo;
pub mod http;
pub mod responses;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::stats::Stats;
pub use responses::Responses;

/// What the loop does with a connection once the output produced so far is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading: the conversation goes on.
    Continue,
    /// Write everything pending, then shut down our write side and close.
    CloseAfterFlush,
}

/// What a session does with a frame for the room ([`Session::on_broadcast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not in the room (not a WebSocket, or not upgraded yet): nothing to send.
    Skip,
    /// Send it: the loop queues the frame, shared, after what the connection owes.
    Send,
    /// Too far behind: the session has appended its close frame (1008) to `out`, and the
    /// connection closes once that is written. Nothing more is sent to it.
    Close,
}

/// The result of offering bytes to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How many bytes at the front of `input` were used up.
    pub consumed: usize,
    pub next: Next,
    /// A request was answered: the loop restarts the header deadline for the next one.
    pub answered: bool,
}

impl Outcome {
    pub fn new(consumed: usize, next: Next) -> Outcome {
        Outcome {
            consumed,
            next,
            answered: false,
        }
    }

    /// The same outcome, saying whether a request was answered.
    pub fn answered(self, answered: bool) -> Outcome {
        Outcome { answered, ..self }
    }
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write back exactly the bytes each client sends.
    Echo,
    /// Answer every HTTP/1.x request with one canned page.
    Http,
    /// Serve the chat page and run its WebSocket chat room.
    Ws,
}

impl Mode {
    /// The port the seed notes used for this mode: their client.c dials 8888, their
    /// server.c listens on 8889, and their chat page connects to 3000.
    pub fn default_port(self) -> u16 {
        match self {
            Mode::Echo => 8888,
            Mode::Http => 8889,
            Mode::Ws => 3000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::Ws => "ws",
        }
    }

    /// What a client we cannot serve (over --max-conns, out of descriptors) hears before
    /// the close: http and ws clients speak HTTP first, so they get a 503; an echo client
    /// gets nothing, since any byte would be taken for an echo.
    pub fn rejection(self, responses: &Responses) -> &[u8] {
        match self {
            Mode::Echo => &[],
            Mode::Http | Mode::Ws => responses.unavailable(),
        }
    }
}

/// What a session may read or update besides its own state. One per loop, lent to each call.
pub struct Context<'a> {
    /// The canned HTTP responses with the current Date (http and ws modes).
    pub responses: &'a Responses,
    /// Stop producing once `out` holds this many bytes: the rest of the input waits until
    /// the peer has read what it was already sent (backpressure).
    pub out_budget: usize,
    /// The peer, for log lines.
    pub peer: SocketAddr,
    pub stats: &'a mut Stats,
    /// Frames for every other WebSocket client of every loop (ws mode); the sender has its
    /// copy in `out` already, in order with the rest of its output. A server's frames are
    /// not masked (RFC 6455 §5.1), so one encoding serves every recipient: the loops pass it
    /// around by reference, and each recipient's output queue holds a reference to it, never
    /// a copy (`crate::broadcast`).
    pub broadcast: &'a mut Vec<Arc<[u8]>>,
}

/// One connection's protocol state. An enum rather than a trait object: the loop is
/// monomorphic and the size of every slab entry is known.
#[derive(Debug)]
pub enum Session {
    Echo,
    Http(http::HttpSession),
    Ws(ws::WsSession),
}

impl Session {
    pub fn new(mode: Mode) -> Session {
        match mode {
            Mode::Echo => Session::Echo,
            Mode::Http => Session::Http(http::HttpSession::new()),
            Mode::Ws => Session::Ws(ws::WsSession::default()),
        }
    }

    /// The largest WebSocket message a ws session takes (`--max-message`); the other modes
    /// have no messages to cap.
    pub fn with_max_message(self, bytes: u32) -> Session {
        match self {
            Session::Ws(_) => Session::Ws(ws::WsSession::new(bytes)),
            other => other,
        }
    }

    /// Offer the bytes the peer sent; see the module comment for the contract.
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
        match self {
            Session::Echo => echo::on_input(input, out, ctx),
            Session::Http(http) => http.on_input(input, out, ctx),
            Session::Ws(ws) => ws.on_input(input, out, ctx),
        }
    }

    /// Whether every byte in is answered by itself, unchanged (echo). The loop then writes
    /// input straight back from where it was read, instead of copying it into the output
    /// buffer through `on_input`.
    pub fn echoes(&self) -> bool {
        matches!(self, Session::Echo)
    }

    /// True while an HTTP request head is incomplete: the header timeout runs then.
    pub fn in_request_head(&self) -> bool {
        match self {
            Session::Echo => false,
            Session::Http(http) => http.in_request_head(),
            Session::Ws(ws) => ws.in_request_head(),
        }
    }

    /// The header timeout fired: say so (HTTP answers 408) and close.
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        match self {
            Session::Echo => Next::CloseAfterFlush,
            Session::Http(http) => http.on_header_timeout(out, ctx),
            Session::Ws(ws) => ws.on_header_timeout(out, ctx),
        }
    }

    /// Nothing came for `--idle-timeout`: the session's last word, if its protocol has one
    /// (a WebSocket close frame); http and echo say nothing. The connection then closes.
    pub fn on_idle_timeout(&mut self, out: &mut Vec<u8>) -> Next {
        match self {
            Session::Echo | Session::Http(_) => Next::CloseAfterFlush,
            Session::Ws(ws) => ws.on_idle_timeout(out),
        }
    }

    /// The server is shutting down. Returns `CloseAfterFlush` when the connection can go as
    /// soon as its pending output is written; `Continue` when it is mid-request and should
    /// close after answering it.
    pub fn on_shutdown(&mut self, unconsumed: usize, out: &mut Vec<u8>) -> Next {
        match self {
            Session::Echo => Next::CloseAfterFlush,
            Session::Http(http) => http.on_shutdown(unconsumed),
            // A WebSocket client gets a close frame with 1001, "going away".
            Session::Ws(ws) => ws.on_shutdown(out),
        }
    }

    /// Another client said something to the room: whether this connection takes the frame
    /// (`Delivery::Send`; the loop queues it, shared) if it is an open WebSocket. `held` is
    /// what we hold for it that the kernel has not taken yet (bytes, and a little for each
    /// queued frame): a client too far behind is closed
    /// rather than buffered for without end, and so is one the room drops (`room_full`: the
    /// room's memory is over `--room-bytes`, and this client is among the furthest behind).
    pub fn on_broadcast(
        &mut self,
        held: usize,
        room_full: bool,
        out: &mut Vec<u8>,
        peer: SocketAddr,
    ) -> Delivery {
        match self {
            Session::Echo | Session::Http(_) => Delivery::Skip,
            Session::Ws(ws) => ws.on_broadcast(held, room_full, out, peer),
        }
    }
}
