//! One client: its socket, the bytes we hold for it, and what happens next.
//!
//! Per-connection state is one struct with named flags, as Redis keeps a `client` with
//! `CLIENT_CLOSE_AFTER_REPLY`, and as in Redis only the functions that change it touch the
//! flags: here, the methods below. The loop asks ("should I read?", "which timer?") and
//! reports ("the read returned 0", "n bytes went out"); it never sets a field. What the loop
//! wants from the kernel is never stored: it is derived from these fields when needed, so it
//! can't drift out of step with them.
//!
//! No method here makes a syscall: the socket is lent to `event_loop::io`, which does.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Instant;

use log::trace;
use mio::event::Event;
use mio::net::TcpStream;
use mio::Token;

use crate::buffers::BufferPool;
use crate::output::Output;
use crate::protocol::Session;
use crate::timers::{Kind, Link, Linked};

mod session;

/// Stop reading from a peer once this many of our bytes wait for it to read. Its further
/// requests then stay in our socket's receive buffer; when that is full we advertise a zero
/// window, and from then on what the peer writes piles up in its own send buffer until its
/// writes block (tcp(7); RFC 9293 §3.8.6). So the backpressure reaches the sender, and our
/// memory stays bounded at this plus one read. 256 KiB is a few round trips of a loopback
/// window.
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// Where a connection is on its way from `accept(2)` to `close(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and answering.
    Open,
    /// The session is done: write what is pending, then shut down our side.
    Flushing,
    /// Our FIN is sent (`shutdown(SHUT_WR)`). Read and discard until the peer's FIN, so that
    /// the kernel never closes with unread input, which would send RST instead (RFC 2525
    /// §2.17, `__tcp_close`): the end of our answer still in flight would be lost with the
    /// socket, and some stacks discard what the peer received but has not read yet
    /// (RFC 9112 §9.6).
    Lingering,
}

#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// The token this connection is registered under: slab key + generation (see
    /// `event_loop::token`). An event whose token differs belongs to a closed predecessor.
    token: Token,
    peer: SocketAddr,
    session: Session,
    phase: Phase,
    /// Input the session has not consumed yet: half a request. Unallocated when empty.
    pending_input: Vec<u8>,
    /// Output the kernel would not take yet: our own bytes and the room's shared frames, in
    /// order (see `output`). One word, and no allocation, while nothing is owed.
    pending_output: Output,
    /// The peer sent FIN: read(2) returned 0.
    peer_closed: bool,
    /// epoll reported input that we have not read to the end yet. Edge-triggered readiness
    /// reports new arrivals, not the state of the queue, so nothing reminds us of bytes we
    /// leave behind: this must be remembered while we hold off reading (backpressure,
    /// flushing) and cleared only when a read drains the socket.
    input_ready: bool,
    /// epoll reported the peer's FIN (EPOLLRDHUP), urgent data (EPOLLPRI) or an error: a
    /// short read does not mean drained this time, so read on until EAGAIN or EOF.
    read_to_eagain: bool,
    /// The session stopped consuming because our output hit its budget; the unconsumed
    /// input must be offered again once the peer has read some of it.
    input_stalled: bool,
    /// The session completed a request since the timer was last chosen: the header
    /// deadline restarts for the next one.
    answered: bool,
    /// Closing because the idle timeout fired: counted as a timeout once, at close.
    timed_out: bool,
    /// Whether our FIN was the first, as `TCP_INFO` said when it left: read only when the
    /// trace is on, for the trace of the peer's FIN (see `event_loop::io::trace_fin`).
    closed_first: Option<bool>,
    /// Its last turn ended with input still waiting (`Step::Again`), and it is in the
    /// loop's list for another turn after this round's events.
    awaiting_turn: bool,
    bytes_in: u64,
    bytes_out: u64,
    opened: Instant,
    timer: Link,
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
            pending_output: Output::default(),
            peer_closed: false,
            input_ready: false,
            read_to_eagain: false,
            input_stalled: false,
            answered: false,
            timed_out: false,
            closed_first: None,
            awaiting_turn: false,
            bytes_in: 0,
            bytes_out: 0,
            opened: now,
            timer: Link::default(),
        }
    }

    // ----- what the loop may look at -----

    /// The socket, for the loop's syscalls. `&TcpStream` is enough: mio implements `Read`
    /// and `Write` for a shared reference, as `std` does, since the kernel serializes them.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn token(&self) -> Token {
        self.token
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes in and out so far, for the close line and for telling an active turn.
    pub fn traffic(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Whether the idle timeout started this connection's close.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Whether the kernel has taken everything we had for this peer.
    pub fn owes_nothing(&self) -> bool {
        self.pending_output.is_empty()
    }

    /// How many bytes the kernel has not taken yet.
    pub fn unsent(&self) -> usize {
        self.pending_output.unsent()
    }

    /// Fill `slices` with what is owed, in order, for one `sendmsg(2)`; returns how many.
    pub fn gather_unsent<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.pending_output.gather(slices)
    }

    /// How far behind the room this connection is: the room offset of the oldest broadcast
    /// frame it has not begun to send, if any (see `event_loop::room`).
    pub fn oldest_unstarted_frame(&self) -> Option<u64> {
        self.pending_output.oldest_unstarted_frame()
    }

    /// Whether the loop should read from the socket now: epoll said there is input we have
    /// not drained, and we want it. Derived, never stored.
    pub fn should_read(&self) -> bool {
        self.input_ready && self.wants_read()
    }

    fn wants_read(&self) -> bool {
        !self.peer_closed
            && match self.phase {
                Phase::Open => !self.input_stalled && self.unsent() < MAX_PENDING_OUTPUT,
                Phase::Flushing => false,
                Phase::Lingering => true,
            }
    }

    /// Whether the next bytes read can go straight back out: the session echoes, and
    /// nothing is owed or held that they would have to wait behind.
    pub fn may_echo_straight_back(&self) -> bool {
        self.session.echoes()
            && self.phase == Phase::Open
            && self.owes_nothing()
            && self.pending_input.is_empty()
    }

    /// Whether echo's splice path may take the next read: as `may_echo_straight_back`, and
    /// epoll flagged nothing that needs `read(2)`.
    pub fn may_splice(&self) -> bool {
        self.may_echo_straight_back() && !self.read_to_eagain
    }

    /// The room offset of the frame this connection was dropped from the room in the
    /// middle of, while it is still writing it (see `output`).
    pub fn pinned_frame(&self) -> Option<u64> {
        self.pending_output.pinned_frame()
    }

    // ----- what the kernel told us -----

    /// epoll reported the socket. This is the only time we hear that input arrived, so it
    /// is remembered until a read drains it. A writable-only event (the one right after
    /// registration, or buffer space freed) brings no input, and reading would only get
    /// EAGAIN. EPOLLRDHUP (the peer's FIN is queued behind the data) and EPOLLPRI (urgent
    /// data, at whose mark a read stops short) mean a short read does not prove the queue
    /// empty, so that round reads on until EAGAIN or end of stream; an error is read out too.
    pub fn note_event(&mut self, event: &Event) {
        let flagged = event.is_read_closed() || event.is_priority() || event.is_error();
        if event.is_readable() || flagged {
            self.input_ready = true;
        }
        if flagged {
            self.read_to_eagain = true;
        }
    }

    /// Whether our FIN went first, if the trace asked the kernel when it left.
    pub fn closed_first(&self) -> Option<bool> {
        self.closed_first
    }

    /// What the kernel's state said as our FIN left: FIN_WAIT1/2, we closed first;
    /// LAST_ACK or CLOSE, the peer did.
    pub fn note_closed_first(&mut self, we_did: bool) {
        self.closed_first = Some(we_did);
    }

    /// Whether it is in the loop's list for another turn (see `set_awaiting_turn`).
    pub fn awaiting_turn(&self) -> bool {
        self.awaiting_turn
    }

    /// Put in, or taken from, the loop's list for another turn. Once there, an event for it
    /// is only noted: driving it then too would give it two turns in one round, more than
    /// its share, and a second place in the list.
    pub fn set_awaiting_turn(&mut self, awaiting: bool) {
        self.awaiting_turn = awaiting;
    }

    /// A read returned `n` > 0 bytes.
    pub fn received(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }

    /// A read (or splice) stopped short, which drains the receive queue unless epoll
    /// flagged this round (`read_to_eagain`).
    pub fn drained(&mut self) {
        if !self.read_to_eagain {
            self.input_ready = false;
        }
    }

    /// A read said EAGAIN: the receive queue is empty, whatever epoll flagged.
    pub fn would_block(&mut self) {
        self.input_ready = false;
        self.read_to_eagain = false;
    }

    /// A read returned 0: the peer sent FIN and will send nothing more. Returns whether that
    /// ends the connection now: it does when we had sent our FIN already (Lingering).
    pub fn peer_sent_fin(&mut self) -> bool {
        self.peer_closed = true;
        self.input_ready = false;
        self.phase == Phase::Lingering
    }

    /// The kernel took `n` bytes of output (from the loop's buffer or from ours).
    pub fn count_sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// A `sendmsg(2)` of what `gather_unsent` gave, and perhaps more after it, took `n`
    /// bytes. What it finished leaves the queue; once everything has, the queue goes: a
    /// connection that owes nothing holds nothing. Returns how many of the `n` bytes came
    /// after the queue.
    pub fn unsent_written(&mut self, n: usize, pool: &mut BufferPool) -> usize {
        self.count_sent(n);
        self.pending_output.advance(n, pool)
    }

    // ----- output the kernel has not taken -----

    /// Make `output` ours to send, after what we already owe: copied, since it lies in the
    /// loop's buffer, which the next connection needs.
    pub fn queue_output(&mut self, output: &[u8], pool: &mut BufferPool) {
        self.pending_output.push_bytes(output, pool);
    }

    /// Take `buffer`, from the pool, as the bytes owed; splice's leftovers arrive this way,
    /// without a copy. Only when nothing is owed yet (`may_splice`).
    pub fn owe_buffer(&mut self, buffer: Vec<u8>, pool: &mut BufferPool) {
        debug_assert!(self.owes_nothing(), "owe_buffer behind owed bytes");
        self.pending_output.push_buffer(buffer, pool);
    }

    /// The peer has said all it will say, and every complete request it sent is answered
    /// (or queued): from here, finish writing, then close. Returns whether that began now.
    pub fn finish_after_peer(&mut self) -> bool {
        if self.peer_closed && self.phase == Phase::Open && !self.input_stalled {
            self.set_phase(Phase::Flushing);
            return true;
        }
        false
    }

    /// Our FIN is out (`shutdown(SHUT_WR)`): linger, reading and discarding, until the
    /// peer's. Returns whether the peer's FIN came already, which ends the connection.
    pub fn fin_sent(&mut self, pool: &mut BufferPool) -> bool {
        self.set_phase(Phase::Lingering);
        pool.give_back(&mut self.pending_input);
        self.peer_closed
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase {
            trace!("{}: phase {:?}→{:?}", self.peer, self.phase, phase);
            self.phase = phase;
        }
    }

    /// The connection is closing: give its buffers back.
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        pool.give_back(&mut self.pending_input);
        self.pending_output.release(pool);
    }

    // ----- deadlines -----

    /// Which deadline this connection should be running after a turn, or `None` to leave
    /// its timer as it is. `active`: bytes moved this turn.
    pub fn wanted_timer(&mut self, active: bool) -> Option<Kind> {
        let answered = std::mem::take(&mut self.answered);
        let current = self.timer.kind();
        // Half a request head is buffered and nothing holds it back but the peer.
        let waiting_for_head = self.phase == Phase::Open
            && self.session.in_request_head()
            && !self.pending_input.is_empty()
            && !self.input_stalled;
        match self.phase {
            // Waiting for the peer's FIN: the linger deadline is not extended by anything.
            Phase::Lingering if current == Some(Kind::Linger) => None,
            Phase::Lingering => Some(Kind::Linger),
            // A closing connection whose peer stops reading (a stuck tab behind a 1008, a
            // client that never reads its 408) must not hold its unsent bytes for a whole
            // idle timeout: each write must make progress within the linger time.
            Phase::Flushing if current == Some(Kind::Linger) && !active => None,
            Phase::Flushing => Some(Kind::Linger),
            // The header deadline runs from a request's first byte: more bytes of the same
            // head do not extend it (slowloris drips one a second), a completed request
            // restarts it.
            Phase::Open if waiting_for_head && current == Some(Kind::Header) && !answered => None,
            Phase::Open if waiting_for_head => Some(Kind::Header),
            // A new connection that has sent nothing yet keeps its first header deadline.
            Phase::Open if current == Some(Kind::Header) && !active => None,
            Phase::Open if active => Some(Kind::Idle),
            Phase::Open => None,
        }
    }
}

/// sockloop's view of the connection, for a report line: `Open, 120 B in, 3400 B out,
/// 0 B unsent, 0 B held`.
impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:?}, {} B in, {} B out, {} B unsent, {} B held",
            self.phase,
            self.bytes_in,
            self.bytes_out,
            self.unsent(),
            self.pending_input.len()
        )
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
        // A slab entry is an enum of a vacant slot's next-free index and the connection:
        // at most the connection plus one word for the tag.
        let entry = std::mem::size_of::<Connection>() + std::mem::size_of::<usize>();
        assert!(entry <= 216, "a slab entry is up to {entry} bytes");
    }
}
