//! One connection moved forward: what we ask the kernel, in order, and what its answers
//! mean. Every read and write of a connection being served happens here (`splice` makes
//! the two splice calls of `--splice` on its behalf; a rejected client's 503 is written in
//! `accept`).
//!
//! A turn is a short list of verbs, repeated until the kernel has nothing more for us:
//! 1. **write what we owe**: the bytes the kernel refused last time and the answer just
//!    built, in one `sendmsg(2)` of many iovecs, or `write(2)` of the answer alone when
//!    nothing is owed ("write first, poll later", as Redis does);
//! 2. **finish flushing**: a closing connection with everything written sends its FIN with
//!    `shutdown(SHUT_WR)`;
//! 3. **resume stalled input**: input held back because the peer was not reading our
//!    answers is offered again once it has read some;
//! 4. **finish after the peer**: once the peer has sent its FIN and every request it sent
//!    is answered, the connection starts closing;
//! 5. **read once**: `read(2)` (or `splice(2)` for echo with `--splice`), and hand what came
//!    to the protocol, whose answer step 1 writes on the next round.
//!
//! Edge-triggered epoll reports new input once, so a turn goes on until a read says EAGAIN
//! (or stops short, which means the same; see `short_read`). A level-triggered server such
//! as Redis or nginx's default may read once per event and be woken again for the rest; we
//! would not be, so a turn that stops early for fairness says `Again` and the loop comes
//! back to the connection on its own.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::ops::ControlFlow::{self, Break, Continue};

use log::{log_enabled, trace, warn, Level};
use mio::net::TcpStream;
use socket2::SockRef;

use super::{interrupted, would_block, Exit};
use crate::buffers::BufferPool;
use crate::connection::{Connection, Phase};
use crate::scratch::{Scratch, READ_BUFFER_SIZE};
use crate::splice::PipeError;
use crate::stats::Stats;
use crate::tcp_info::{self, Taken, TcpState};

/// Reads one connection may make before the others get a turn: 16 × 128 KiB = 2 MiB. A
/// peer that sends as fast as we answer would otherwise keep us here for ever, and every
/// other client, timer and signal would wait.
const MAX_READS_PER_TURN: usize = 16;

/// iovecs in one `sendmsg(2)`: one per chunk owed (see `output`). The kernel takes up to
/// UIO_MAXIOV (1024); 64 is 1 KiB on our stack. It bounds one call, not what is written:
/// the loop calls `sendmsg` again until everything is out or the kernel says EAGAIN.
const MAX_IOVECS: usize = 64;

/// What a turn came to: what the loop does with the connection next.
pub enum Step {
    /// Nothing more to do until epoll reports the socket again.
    Wait,
    /// Input is still waiting, but this connection has had its turn: come back to it
    /// after polling, since epoll will not report it again.
    Again,
    Close(Exit),
}

/// One connection and the loop's scratch space, for the length of a turn.
pub struct Turn<'a> {
    pub conn: &'a mut Connection,
    pub scratch: &'a mut Scratch,
}

impl Turn<'_> {
    /// Move the connection forward until the kernel has nothing more for us, it has had
    /// its fair share, or it is done.
    pub fn advance(&mut self) -> Step {
        debug_assert!(self.scratch.output.is_empty(), "an answer left behind");
        let mut reads = 0;
        loop {
            if let Break(step) = self.round(&mut reads) {
                return step;
            }
        }
    }

    /// The verbs, in order. Each lets the next one run (`Continue`) or ends the turn with
    /// what the loop does next (`Break`).
    fn round(&mut self, reads: &mut usize) -> ControlFlow<Step> {
        self.write_what_we_owe()?;
        self.finish_flushing()?;
        // Each of the next two may produce output or change the phase: if it does, back to
        // the top, to write.
        if self.conn.resume_stalled_input(self.scratch) {
            return Continue(());
        }
        if self.conn.finish_after_peer() {
            return Continue(());
        }
        if !self.conn.should_read() {
            return Break(Step::Wait);
        }
        if *reads == MAX_READS_PER_TURN {
            return Break(Step::Again);
        }
        *reads += 1;
        self.read_once()
    }

    /// Write what the connection owes until it is all sent or the kernel's send buffer is
    /// full: first the bytes the kernel refused earlier, then the answer in the loop's
    /// output buffer, straight from there. Usually nothing is owed, the kernel takes the
    /// whole answer in one `write(2)`, and it is never copied; only a tail the kernel
    /// refuses moves into the connection's queue. The output buffer is every connection's,
    /// so it leaves here empty whatever happens: otherwise the next connection would send
    /// this one's answer.
    fn write_what_we_owe(&mut self) -> ControlFlow<Step> {
        // Most rounds have nothing to write (the one before a read, the one after a read that
        // was echoed straight back): say so in two compares.
        if self.scratch.output.is_empty() && self.conn.owes_nothing() {
            return Continue(());
        }
        let result = self.write_owed();
        self.scratch.output.clear();
        match result {
            Ok(()) => Continue(()),
            Err(e) => Break(Step::Close(Exit::Failed(e))),
        }
    }

    /// Write what the connection owes now, outside a turn: the room does this before it
    /// queues more frames for a client that owes `MAX_PENDING_OUTPUT` already, so that what
    /// the kernel would take does not count against it. Err: the write failed, close it.
    pub fn write_now(&mut self) -> Result<(), Exit> {
        match self.write_what_we_owe() {
            Break(Step::Close(exit)) => Err(exit),
            _ => Ok(()),
        }
    }

    fn write_owed(&mut self) -> io::Result<()> {
        let conn = &mut *self.conn;
        let scratch = &mut *self.scratch;
        let answer = &scratch.output;
        let sent = if conn.owes_nothing() {
            let sent = write_until_blocked(conn.stream(), conn.peer(), answer)?;
            scratch.stats.bytes_out += sent as u64;
            conn.count_sent(sent);
            sent
        } else {
            send_owed_until_blocked(conn, answer, &mut scratch.pool, &mut scratch.stats)?
        };
        conn.queue_output(&answer[sent..], &mut scratch.pool);
        Ok(())
    }

    /// A closing connection: once everything is written, `shutdown(SHUT_WR)` sends our FIN.
    /// The peer reads the whole answer, then end-of-file.
    fn finish_flushing(&mut self) -> ControlFlow<Step> {
        if self.conn.phase() != Phase::Flushing {
            return Continue(());
        }
        if !self.conn.owes_nothing() {
            return Break(Step::Wait); // epoll says when the send buffer has room again
        }
        if let Err(e) = self.conn.stream().shutdown(Shutdown::Write) {
            trace!("{}: shutdown(SHUT_WR) → {e}", self.conn.peer());
            return Break(Step::Close(Exit::Failed(e)));
        }
        if log_enabled!(Level::Trace) {
            trace_shutdown(self.conn);
        }
        if self.conn.fin_sent(&mut self.scratch.pool) {
            return Break(Step::Close(Exit::Done));
        }
        Continue(())
    }

    /// One `read(2)` into the loop's read buffer, or, for an echo connection with
    /// `--splice` and nothing owed, one `splice(2)` that moves the bytes straight back out
    /// through the loop's pipe, reading and answering in one go. Not in a round epoll
    /// flagged (see `Connection::note_event`): when TCP's urgent byte is next in the queue,
    /// splice says EAGAIN with data still queued behind it, where read(2) steps over it.
    fn read_once(&mut self) -> ControlFlow<Step> {
        let spliced = self.scratch.pipe.is_some() && self.conn.may_splice();
        let call = if spliced { "splice" } else { "read" };
        let got = if spliced {
            self.splice_echo()
        } else {
            let mut stream = self.conn.stream();
            stream.read(&mut self.scratch.read_buffer)
        };
        let peer = self.conn.peer();
        match got {
            Ok(0) => {
                // FIN: the peer will send nothing more. In every mode that ends the
                // conversation: finish writing what we owe (an echo server's half-close
                // contract), then close.
                if log_enabled!(Level::Trace) {
                    trace_fin(self.conn, call);
                }
                if self.conn.peer_sent_fin() {
                    return Break(Step::Close(Exit::Done));
                }
            }
            Ok(n) => {
                // (A splice already counted, and answered, what it moved.)
                if !spliced {
                    trace!("{peer}: read → {n} bytes");
                    if let Err(e) = self.hand_to_protocol(n) {
                        return Break(Step::Close(Exit::Failed(e)));
                    }
                }
                if self.short_read(n, spliced) {
                    self.conn.drained();
                }
            }
            Err(e) if would_block(&e) => {
                trace!("{peer}: {call} → WouldBlock");
                self.conn.would_block();
                return Break(Step::Wait);
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                trace!("{peer}: {call} → {e}");
                return Break(Step::Close(Exit::Failed(e)));
            }
        }
        Continue(())
    }

    /// `n` bytes arrived: count them and, while the conversation is open, hand them to the
    /// session. A lingering connection only reads to discard. Echo with nothing owed takes
    /// a shortcut: the bytes are written straight back.
    fn hand_to_protocol(&mut self, n: usize) -> io::Result<()> {
        self.conn.received(n);
        self.scratch.stats.bytes_in += n as u64;
        if self.conn.may_echo_straight_back() {
            return self.echo_straight_back(n);
        }
        if self.conn.phase() == Phase::Open {
            self.conn.offer(n, self.scratch);
        }
        Ok(())
    }

    /// Echo, with nothing owed: `write(2)` the bytes from the read buffer they arrived in,
    /// with no copy into the output buffer. The kernel then copies from a page-aligned
    /// buffer in both directions; only what it does not take is copied, into the
    /// connection's own buffer, as the tail of any answer is (at most one read, so the
    /// backpressure bound holds).
    fn echo_straight_back(&mut self, n: usize) -> io::Result<()> {
        let (conn, scratch) = (&mut *self.conn, &mut *self.scratch);
        let bytes = &scratch.read_buffer[..n];
        let sent = write_until_blocked(conn.stream(), conn.peer(), bytes)?;
        scratch.stats.bytes_out += sent as u64;
        scratch.stats.messages += 1;
        conn.count_sent(sent);
        conn.queue_output(&bytes[sent..], &mut scratch.pool);
        Ok(())
    }

    /// Whether a read of `n` bytes emptied the socket's receive queue. A short read does:
    /// `tcp_recvmsg` copies all it has, up to our length, so another read now would only
    /// return EAGAIN. And whatever arrives after it wakes the socket again, and on Linux
    /// every wakeup is a new event, edge-triggered or not (`ep_poll_callback`, even on a
    /// socket that is already readable; epoll(7) says so under EPOLLONESHOT): that is what
    /// makes stopping here safe. The exceptions, a queued FIN and TCP urgent data (a read
    /// stops at the urgent mark), come flagged by epoll, and `Connection::drained` reads on
    /// then. A splice can also stop short for want of room in the pipe: `Pipe::drained`.
    fn short_read(&self, n: usize, spliced: bool) -> bool {
        match &self.scratch.pipe {
            Some(pipe) if spliced => pipe.drained(n, READ_BUFFER_SIZE),
            _ => n < self.scratch.read_buffer.len(),
        }
    }

    /// Echo one read's worth of bytes through the loop's pipe (see `splice`): returns how
    /// many were read, 0 at end of stream. What the socket would not take back at once
    /// becomes the connection's pending output, written as any other.
    fn splice_echo(&mut self) -> io::Result<usize> {
        let Some(pipe) = self.scratch.pipe.as_mut() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let mut unsent = self.scratch.pool.take();
        let result = pipe.echo(
            self.conn.stream(),
            self.conn.peer(),
            READ_BUFFER_SIZE,
            &mut unsent,
        );
        self.conn.owe_buffer(unsent, &mut self.scratch.pool);
        match result {
            Ok(echoed) => {
                self.conn.received(echoed.read);
                self.conn.count_sent(echoed.written);
                let stats = &mut self.scratch.stats;
                stats.bytes_in += echoed.read as u64;
                stats.bytes_out += echoed.written as u64;
                stats.messages += u64::from(echoed.read > 0);
                match echoed.write_error {
                    Some(e) => Err(e),
                    None => Ok(echoed.read),
                }
            }
            Err(PipeError::Socket(e)) => Err(e),
            Err(PipeError::Pipe(e)) => {
                // It may hold another connection's bytes now: never use it again. The error
                // is passed on as a failure of this connection, never as "would block",
                // which would leave the bytes lost in the pipe unnoticed.
                warn!("splice pipe failed: {e}; echo copies from now on");
                self.scratch.pipe = None;
                Err(io::Error::other(format!("splice pipe: {e}")))
            }
        }
    }
}

/// What the connection owes, then `answer`, to the kernel in one `sendmsg(2)` after
/// another, until all of it is written or the kernel says EAGAIN; returns how much of
/// `answer` was written.
///
/// One call carries an iovec per chunk owed, and the answer last: the kernel copies them
/// into the socket's send queue in array order, each whole before the next (writev(2);
/// `tcp_sendmsg` walks the iovecs the same way), and stops where the send buffer is full,
/// which can be anywhere, at a chunk's edge or inside one. It says how many bytes it took
/// and nothing else, so `Connection::unsent_written` finds where that leaves us. sendmsg(2)
/// is writev(2) with flags, and the flag is why: MSG_NOSIGNAL, so that a peer gone since
/// makes the call fail with EPIPE instead of raising SIGPIPE, as every other write here
/// does (send(2) with the same flag, through mio), except `--splice`'s, for which
/// `server::run` ignores SIGPIPE.
fn send_owed_until_blocked(
    conn: &mut Connection,
    answer: &[u8],
    pool: &mut BufferPool,
    stats: &mut Stats,
) -> io::Result<usize> {
    let peer = conn.peer();
    let mut answer_sent = 0;
    loop {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = conn.gather_unsent(&mut slices);
        // The answer goes after the last chunk owed, never before: only if every chunk fit.
        if count < MAX_IOVECS && answer_sent < answer.len() {
            slices[count] = IoSlice::new(&answer[answer_sent..]);
            count += 1;
        }
        if count == 0 {
            return Ok(answer_sent);
        }
        let offered: usize = slices[..count].iter().map(|slice| slice.len()).sum();
        let sent = SockRef::from(conn.stream())
            .send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL);
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                trace!("{peer}: write → {n} of {offered} bytes ({count} iovecs, sendmsg)");
                stats.bytes_out += n as u64;
                answer_sent += conn.unsent_written(n, pool);
            }
            Err(e) if would_block(&e) => {
                trace!("{peer}: write → WouldBlock ({offered} bytes and more wait, sendmsg)");
                return Ok(answer_sent);
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                trace!("{peer}: write → {e} (sendmsg)");
                return Err(e);
            }
        }
    }
}

/// The trace of a read that returned 0, with what the peer's FIN means for TIME_WAIT, in
/// the kernel's words: who closed first is the socket's state to say, not our phase's (a
/// FIN can wait unread in the queue while we flush and send ours). If the peer closed
/// first, CLOSE_WAIT until we close too, then LAST_ACK once our FIN has gone, and CLOSE
/// once the peer has acknowledged it; TIME_WAIT is then the peer's. If we did, the peer's
/// FIN made the kernel move the 4-tuple into a TIME_WAIT socket of its own, the one `ss`
/// shows, and leave ours in CLOSE too (`tcp_fin` → `tcp_time_wait` → `tcp_done`,
/// net/ipv4/). So CLOSE alone does not say who was first: the state our FIN left us in
/// does (`trace_shutdown`).
fn trace_fin(conn: &Connection, call: &str) {
    let taken = tcp_info::snapshot(conn.stream());
    let state = taken.as_ref().ok().map(|snapshot| snapshot.state);
    let meaning = match (state, conn.closed_first()) {
        (Some(TcpState::CloseWait), _) => "the peer closed first;",
        (Some(TcpState::LastAck), _) => {
            "the peer closed first, read after our FIN left: TIME_WAIT at the peer;"
        }
        (Some(TcpState::Close), Some(false)) => {
            "the peer closed first, read after both FINs were acknowledged: TIME_WAIT at \
             the peer;"
        }
        (Some(TcpState::Close), _) => {
            "after ours: the 4-tuple is in TIME_WAIT, see ss; this socket's"
        }
        (Some(TcpState::Closing), _) => "crossing ours: a simultaneous close;",
        _ => "",
    };
    trace!(
        "{}: {call} → 0 (FIN, {meaning} {})",
        conn.peer(),
        Taken(&taken)
    );
}

/// The trace of our FIN leaving, with the state it put the socket in, which the trace of
/// the peer's FIN needs (`Connection::note_closed_first`). If we close first, FIN_WAIT1
/// until the peer acknowledges our FIN, FIN_WAIT2 after it, until the peer's own FIN; if
/// the peer closed first (CLOSE_WAIT), LAST_ACK until it acknowledges ours, then CLOSE
/// (`tcp_rcv_state_process`, net/ipv4/tcp_input.c). The state is read after the call
/// returns, and the two cases differ on loopback: a peer that has closed (FIN_WAIT2)
/// acknowledges our FIN at once (`tcp_fin` → `tcp_send_ack`), so LAST_ACK has usually
/// become CLOSE already; a peer still open (ESTABLISHED) enters CLOSE_WAIT and delays its
/// ACK, in the hope of sending it with data (`inet_csk_enter_pingpong_mode`), so we are
/// still in FIN_WAIT1.
fn trace_shutdown(conn: &mut Connection) {
    let taken = tcp_info::snapshot(conn.stream());
    let (meaning, we_closed_first) = match taken.as_ref().map(|snapshot| snapshot.state) {
        Ok(TcpState::FinWait1) => ("we close first, waiting for the peer's ACK;", Some(true)),
        Ok(TcpState::FinWait2) => (
            "we close first, acknowledged already; the peer's FIN next;",
            Some(true),
        ),
        Ok(TcpState::LastAck) => ("after the peer's, waiting for its ACK;", Some(false)),
        Ok(TcpState::Close) => (
            "after the peer's, acknowledged already: done at our end;",
            Some(false),
        ),
        _ => ("", None),
    };
    trace!(
        "{}: shutdown(SHUT_WR) → FIN sent ({meaning} {})",
        conn.peer(),
        Taken(&taken)
    );
    if let Some(we_did) = we_closed_first {
        conn.note_closed_first(we_did);
    }
}

/// `write(2)` `bytes` until all of it is written or the kernel says EAGAIN; returns how
/// much was written.
fn write_until_blocked(stream: &TcpStream, peer: SocketAddr, bytes: &[u8]) -> io::Result<usize> {
    let mut stream = stream;
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                trace!("{peer}: write → {n} of {} bytes", rest.len());
                written += n;
            }
            // EAGAIN: the socket's send buffer is full (a short write, above, usually came
            // just before). The rest waits for the peer to acknowledge; EPOLLOUT tells us
            // when there is room.
            Err(e) if would_block(&e) => {
                trace!("{peer}: write → WouldBlock ({} bytes wait)", rest.len());
                break;
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                trace!("{peer}: write → {e}");
                return Err(e);
            }
        }
    }
    Ok(written)
}
