//! One client: its socket, the bytes we hold for it, and what happens next.
//!
//! Per-connection state is one struct with named flags, as Redis keeps a `client` with
//! `CLIENT_CLOSE_AFTER_REPLY`. What the loop wants from the kernel (read? wait for
//! writable?) is never stored: it is derived from these fields when needed, so it can't
//! drift out of step with them.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use crate::protocol::Session;
use crate::timers::{Link, Linked};

/// Stop reading from a peer once this many of our bytes wait for it to read. The peer keeps
/// sending into its own socket buffer, then TCP's window closes and its writes block: the
/// backpressure goes all the way back to the sender, and our memory stays bounded at this
/// plus one read. 256 KiB is a few round trips of a loopback window.
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// Where a connection is on its way from `accept(2)` to `close(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and answering.
    Open,
    /// The session is done: write what is pending, then shut down our side.
    Flushing,
    /// Our FIN is sent (`shutdown(SHUT_WR)`). Read and discard until the peer's FIN, so that
    /// the kernel never closes with unread input, which would send RST and could destroy
    /// the response we just wrote before the peer reads it (RFC 9112 §9.6).
    Lingering,
}

#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    /// The token this connection is registered under: slab key + generation (see
    /// `event_loop`). An event whose token differs belongs to a closed predecessor.
    pub token: Token,
    pub peer: SocketAddr,
    pub session: Session,
    pub phase: Phase,
    /// Input the session has not consumed yet: half a request. Unallocated when empty.
    pub pending_input: Vec<u8>,
    /// Output the kernel would not take yet; `output_sent` bytes of it are already written.
    /// Unallocated when empty.
    pub pending_output: Vec<u8>,
    pub output_sent: usize,
    /// The peer sent FIN: read(2) returned 0. The socket is in CLOSE_WAIT.
    pub peer_closed: bool,
    /// epoll reported input that we have not read to the end yet. With edge-triggered
    /// readiness no second report comes, so this must be remembered while we hold off
    /// reading (backpressure, flushing) and cleared only when a read drains the socket.
    pub input_ready: bool,
    /// epoll reported the peer's FIN (EPOLLRDHUP), urgent data (EPOLLPRI) or an error: a
    /// short read does not mean drained this time, so read on until EAGAIN or EOF.
    pub read_to_eagain: bool,
    /// The session stopped consuming because our output hit its budget; the unconsumed
    /// input must be offered again once the peer has read some of it.
    pub input_stalled: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub opened: Instant,
    pub timer: Link,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        token: Token,
        peer: SocketAddr,
        session: Session,
        now: Instant,
    ) -> Connection {
        Connection {
            stream,
            token,
            peer,
            session,
            phase: Phase::Open,
            pending_input: Vec::new(),
            pending_output: Vec::new(),
            output_sent: 0,
            peer_closed: false,
            input_ready: false,
            read_to_eagain: false,
            input_stalled: false,
            bytes_in: 0,
            bytes_out: 0,
            opened: now,
            timer: Link::default(),
        }
    }

    /// Bytes written by the session that the kernel has not taken yet.
    pub fn unsent(&self) -> &[u8] {
        &self.pending_output[self.output_sent..]
    }

    /// Whether the loop should read from the socket now. Derived, never stored.
    pub fn wants_read(&self) -> bool {
        !self.peer_closed
            && match self.phase {
                Phase::Open => !self.input_stalled && self.unsent().len() < MAX_PENDING_OUTPUT,
                Phase::Flushing => false,
                Phase::Lingering => true,
            }
    }
}

impl Linked for Connection {
    fn link(&mut self) -> &mut Link {
        &mut self.timer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection costs one slab entry and nothing else in our heap, and the target
    /// is 0.25 KiB of RSS per idle connection: keep the entry well under it.
    #[test]
    fn a_connection_fits_the_idle_memory_budget() {
        let entry =
            std::mem::size_of::<slab::Slab<Connection>>().max(std::mem::size_of::<Connection>());
        assert!(entry <= 216, "Connection is {entry} bytes");
    }
}
