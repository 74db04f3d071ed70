//! The spine: one `mio::Poll`, one listening socket, a slab of connections.
//!
//! The shape is mio's `tcp_server` example: wait for readiness, then for each event either
//! accept until the kernel says WouldBlock, or move that one connection forward as far as
//! the kernel lets us. After the events, one named step, `before_sleep` (Redis's
//! `beforeSleep`), does what no event announces: connections that used up their turn,
//! timers, broadcasts, a paused accept, a periodic report, the end of a shutdown. The loop
//! knows sockets and readiness, never a protocol: the sessions (`crate::protocol`) only see
//! bytes.
//!
//! The rooms of this folder:
//! - `accept`: `accept(2)` until EAGAIN, `--max-conns`, the reserve descriptor;
//! - `io`: one connection moved forward: every read and write of a served connection;
//! - `signals`: SIGINT and SIGTERM through a self-pipe, and the shutdown they start;
//! - `room`: the ws chat room's broadcasts, across loops;
//! - `report`: the live view, on SIGUSR1 or every `--stats` seconds;
//! - `token`: how an event finds its connection.
//!
//! # Edge-triggered readiness
//! mio registers every socket with `EPOLLET` (`epoll(7)`). Level-triggered epoll reports a
//! socket at every `epoll_wait` while it is ready; edge-triggered reports it once per wakeup:
//! when data arrives (each segment, even if older data is still unread), when buffer space
//! is freed, on FIN or RST (`ep_poll_callback`, fs/eventpoll.c). Bytes we leave unread
//! cause no new report. Two rules follow, and most bugs in servers like this one break one
//! of them:
//! 1. After an event, keep going until the kernel says EAGAIN (WouldBlock). Data left in a
//!    socket after we stop fires no further event; the connection could hang for ever.
//! 2. If we choose to stop early (backpressure, fairness), we must remember to come back on
//!    our own; no event will remind us.
//!
//! Each socket is registered once, for reading and writing, and never modified: what we
//! want from it is derived from its state (`Connection::should_read`) each time it is
//! reported, which costs no `epoll_ctl(2)` per event.

mod accept;
mod io;
mod report;
mod room;
mod signals;
mod token;

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

pub use room::Shared;

use crate::cli::Config;
use crate::connection::Connection;
use crate::protocol::{Mode, Responses};
use crate::scratch::Scratch;
use crate::splice::Pipe;
use crate::stats::Stats;
use crate::tcp_info::Kernel;
use crate::timers::{Kind, Timers};
use accept::Accepting;
use io::{Step, Turn};
use report::Reporting;
use room::Inbox;
use signals::Signals;
use token::{Generations, INBOX, LISTENER, REPORT, SIGNAL};

/// How long a closing connection may go without progress: its last bytes must keep being
/// read, and then the peer's FIN must come (nginx's lingering_timeout is 5 s).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ended, for the debug log line and the counts.
#[derive(Debug)]
pub enum Exit {
    /// The conversation ended normally (an idle timeout too: its session's last word and
    /// our FIN go out as after any answer).
    Done,
    /// A closing connection made no progress: its peer stopped reading our last bytes, or
    /// never sent its FIN.
    LingerTimeout,
    /// The server is stopping and the shutdown timeout ran out.
    ShutdownTimeout,
    /// A second signal: the server stops now.
    CutShort,
    /// Dropped from a full room while stuck in a frame it does not read: closed now rather
    /// than at the linger timeout (`room`).
    RoomFull,
    /// A syscall failed: a reset (ECONNRESET, EPIPE) or worse.
    Failed(std::io::Error),
}

/// What a loop hands back when it ends.
#[derive(Debug)]
pub struct Finished {
    pub stats: Stats,
    /// A second signal cut the shutdown short: its number.
    pub cut_short_by: Option<i32>,
}

pub struct EventLoop {
    /// Which loop this is (0 for the first), for the log.
    id: usize,
    poll: Poll,
    accepting: Accepting,
    connections: Slab<Connection>,
    generations: Generations,
    /// What a connection's turn borrows: buffers, responses, counters, outbox, pipe.
    scratch: Scratch,
    timers: Timers,
    config: Arc<Config>,
    shared: Arc<Shared>,
    signals: Signals,
    reporting: Reporting,
    /// Set when shutdown began: the time by which every connection must be gone.
    shutdown: Option<Instant>,
    /// Set by a second signal: close everything now and end.
    cut_short_by: Option<i32>,
    /// Connections that used up their turn with input still waiting (see `io`), and the
    /// list being worked through; two, so that neither allocates after warming up.
    turn_again: Vec<Token>,
    turn_again_now: Vec<Token>,
    /// This loop's inbox, when other loops may broadcast to it.
    inbox: Option<Arc<Inbox>>,
}

impl EventLoop {
    pub fn new(
        id: usize,
        mut listener: TcpListener,
        config: Arc<Config>,
        shared: Arc<Shared>,
    ) -> std::io::Result<EventLoop> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let signals = Signals::register(poll.registry())?;
        // A chat room spans the loops: let the others reach ours.
        let inbox = if config.mode == Mode::Ws && config.threads > 1 {
            Some(Inbox::open(poll.registry(), &shared)?)
        } else {
            None
        };
        let pipe = if config.mode == Mode::Echo && config.splice {
            Pipe::new()
                .inspect_err(|e| warn!("pipe for splice(2): {e}; echo copies instead"))
                .ok()
        } else {
            None
        };
        let responses = Responses::new(&config.body, &config.content_type);
        Ok(EventLoop {
            id,
            poll,
            accepting: Accepting::new(listener),
            connections: Slab::new(),
            generations: Generations::default(),
            scratch: Scratch::new(responses, pipe),
            timers: Timers::new(config.idle_timeout, config.header_timeout, LINGER_TIMEOUT),
            signals,
            reporting: Reporting::new(config.stats_every, Instant::now()),
            shutdown: None,
            cut_short_by: None,
            turn_again: Vec::new(),
            turn_again_now: Vec::new(),
            inbox,
            config,
            shared,
        })
    }

    /// Run until shut down by a signal; returns this loop's totals.
    pub fn run(mut self) -> std::io::Result<Finished> {
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
        loop {
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal arrived while we slept in epoll_wait; the self-pipe has the news.
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
            now = Instant::now();
            self.scratch.refresh_date();
            trace!("epoll_wait → {} events", events.iter().count());

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNAL => self.on_signal(now),
                    REPORT => self.on_report_signal(now),
                    INBOX => self.on_inbox(now),
                    token => self.on_connection_event(token, event, now),
                }
            }

            if self.before_sleep(now) {
                return Ok(Finished {
                    stats: self.scratch.stats,
                    cut_short_by: self.cut_short_by,
                });
            }
        }
    }

    /// How long `epoll_wait` may sleep: until the earliest of a connection's deadline, the
    /// shutdown deadline and an accept retry. Zero when a connection is waiting for another
    /// turn, or a broadcast to be delivered: poll only to see who else is ready, then come
    /// back to it.
    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.turn_again.is_empty() || !self.scratch.outbox.is_empty() {
            return Some(Duration::ZERO);
        }
        let until = |at: Instant| at.saturating_duration_since(now);
        [
            self.timers.next_timeout(&mut self.connections, now),
            self.shutdown.map(until),
            self.accepting.retry_at().map(until),
            self.reporting.due_at().map(until),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What runs after the events, before the loop sleeps again. Returns true when the loop
    /// is finished: shutting down and no connection is left.
    fn before_sleep(&mut self, now: Instant) -> bool {
        self.drive_again(now);
        self.expire_timers(now);
        if !self.scratch.outbox.is_empty() {
            self.broadcast(now);
        }
        if self.accepting.retry_at().is_some_and(|at| at <= now) {
            self.accept(now);
        }
        if self.reporting.due_at().is_some_and(|at| at <= now) {
            self.report(now);
        }
        self.finish_shutdown(now)
    }

    /// Shutting down: once its deadline has passed, or a second signal came, close every
    /// connection left. Returns true when none is left: the loop is done.
    fn finish_shutdown(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown else {
            return false;
        };
        let cut_short = self.cut_short_by.is_some();
        if cut_short || deadline <= now {
            for key in self.connection_keys() {
                let exit = match cut_short {
                    true => Exit::CutShort,
                    false => Exit::ShutdownTimeout,
                };
                self.close(key, exit, now);
            }
        }
        self.connections.is_empty()
    }

    /// The slab keys of every connection, taken up front for the passes that may close
    /// some of them on the way (shutdown, broadcasts).
    fn connection_keys(&self) -> Vec<usize> {
        self.connections.iter().map(|(key, _)| key).collect()
    }

    fn on_connection_event(&mut self, token: Token, event: &Event, now: Instant) {
        let key = token::key_of(token);
        let conn = match self.connections.get_mut(key) {
            Some(conn) if conn.token() == token => conn,
            // The connection this event was for closed earlier in this batch.
            _ => {
                trace!("event for token {token:?}: connection already closed, ignored");
                return;
            }
        };
        trace!(
            "{}: event readable={} writable={} read_closed={} error={}",
            conn.peer(),
            event.is_readable(),
            event.is_writable(),
            event.is_read_closed(),
            event.is_error()
        );
        conn.note_event(event);
        // Its next turn is queued already, after these events (`drive_again`).
        if conn.awaiting_turn() {
            return;
        }
        self.drive(key, now);
    }

    /// Move a connection forward (`io`), then fix its timer or close it.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let traffic_before = conn.traffic();
        let step = Turn {
            conn,
            scratch: &mut self.scratch,
        }
        .advance();
        let again = match step {
            Step::Close(exit) => return self.close(key, exit, now),
            Step::Again => true,
            Step::Wait => false,
        };
        let conn = &mut self.connections[key];
        // Once in the list is enough (a timer or the room may drive it meanwhile).
        if again && !conn.awaiting_turn() {
            conn.set_awaiting_turn(true);
            self.turn_again.push(conn.token());
        }
        let active = conn.traffic() != traffic_before;
        if let Some(kind) = conn.wanted_timer(active) {
            self.timers.schedule(&mut self.connections, key, kind, now);
        }
    }

    /// Give another turn to the connections that used up theirs with input still waiting.
    fn drive_again(&mut self, now: Instant) {
        let mut turn = std::mem::take(&mut self.turn_again_now);
        std::mem::swap(&mut self.turn_again, &mut turn);
        for token in turn.drain(..) {
            let key = token::key_of(token);
            // It may have closed, and its slot been reused, since it was queued.
            match self.connections.get_mut(key) {
                Some(conn) if conn.token() == token => {
                    conn.set_awaiting_turn(false);
                    self.drive(key, now);
                }
                _ => {}
            }
        }
        self.turn_again_now = turn; // keep the allocation for the next round
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some((key, kind)) = self.timers.pop_expired(&mut self.connections, now) {
            match kind {
                Kind::Idle => {
                    let Some(conn) = self.connections.get_mut(key) else {
                        continue;
                    };
                    debug!(
                        "{}: nothing for {:?}: closing",
                        conn.peer(),
                        self.config.idle_timeout
                    );
                    // The session's last word first (ws: a close frame), then our FIN. The
                    // timeout is counted once, at close (`Connection::timed_out`).
                    conn.idle_timeout(&mut self.scratch);
                    self.drive(key, now);
                }
                Kind::Linger => self.close(key, Exit::LingerTimeout, now),
                Kind::Header => {
                    let Some(conn) = self.connections.get_mut(key) else {
                        continue;
                    };
                    debug!(
                        "{}: request head not complete within {:?}",
                        conn.peer(),
                        self.config.header_timeout
                    );
                    conn.header_timeout(&mut self.scratch);
                    self.drive(key, now);
                }
            }
        }
    }

    /// The one place a connection ends. Dropping the stream calls close(2), which also
    /// removes the socket from the epoll set (no other descriptor refers to it; `epoll(7)`
    /// Q6), so no `epoll_ctl(DEL)` is needed.
    fn close(&mut self, key: usize, exit: Exit, now: Instant) {
        if !self.connections.contains(key) {
            return;
        }
        self.timers.cancel(&mut self.connections, key);
        let mut conn = self.connections.remove(key);
        // What close(2) will do depends on what the kernel still holds: bytes unread (inq)
        // turn it into RST; otherwise a FIN if we have not sent ours.
        trace!(
            "{}: close(2); {}",
            conn.peer(),
            Kernel(conn.stream().as_fd())
        );
        conn.release_buffers(&mut self.scratch.pool);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let stats = &mut self.scratch.stats;
        match &exit {
            Exit::Failed(e) if is_reset(e) => stats.resets += 1,
            Exit::Failed(_) => stats.errors += 1,
            Exit::LingerTimeout | Exit::ShutdownTimeout => stats.timeouts += 1,
            // The idle timeout began it; whichever way it ended, it counts once.
            Exit::Done | Exit::CutShort | Exit::RoomFull if conn.timed_out() => stats.timeouts += 1,
            // Counted in room_drops when the room let it go.
            Exit::Done | Exit::CutShort | Exit::RoomFull => {}
        }
        let (bytes_in, bytes_out) = conn.traffic();
        debug!(
            "{}: closed ({}): {bytes_in} bytes in, {bytes_out} bytes out, open {:?}",
            conn.peer(),
            describe_exit(&exit),
            now.saturating_duration_since(conn.opened())
        );
        drop(conn);
        // A descriptor just came free: accept what waited for one.
        if self.accepting.paused() {
            self.accept(now);
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

fn interrupted(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}

/// A peer that vanished: RST received (ECONNRESET), or we wrote after it (EPIPE), or it
/// came before our shutdown(2), which then finds the socket no longer connected (ENOTCONN).
/// The last is common: a client that closes without reading its echo has its kernel answer
/// our write with an RST, which on loopback lands before our next syscall.
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
    )
}

fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::Done => "done".to_string(),
        Exit::LingerTimeout => "no progress while closing".to_string(),
        Exit::ShutdownTimeout => "shutdown timeout".to_string(),
        Exit::CutShort => "second signal".to_string(),
        Exit::RoomFull => "dropped from a full room".to_string(),
        Exit::Failed(e) if is_reset(e) => format!("reset by peer: {e}"),
        Exit::Failed(e) => format!("error: {e}"),
    }
}
