//! The spine: one `mio::Poll`, one listening socket, a slab of connections.
//!
//! The shape is mio's `tcp_server` example: wait for readiness, then for each event either
//! accept until the kernel says WouldBlock, or move that one connection forward as far as
//! the kernel lets us. This is the only module that makes I/O syscalls; the protocols
//! (`crate::protocol`) only see bytes.
//!
//! # Edge-triggered readiness
//! mio registers every socket with `EPOLLET` (`epoll(7)`): the kernel reports a socket when
//! its state *changes* (new data, buffer space freed, FIN, RST), not while it stays ready.
//! Two rules follow, and most bugs in servers like this one break one of them:
//! 1. After an event, keep going until the kernel says EAGAIN (WouldBlock). Data left in a
//!    socket after we stop fires no further event; the connection would hang for ever.
//! 2. If we choose to stop early (backpressure), we must remember to come back on our own;
//!    no event will remind us.
//!
//! Each socket is registered once, for reading and writing, and never modified: what we
//! want from it is derived from its state ([`Connection::wants_read`]) each time it is
//! reported, which costs no `epoll_ctl(2)` per event.
//!
//! # Tokens
//! A connection's token is its slab key in the low 32 bits and a generation count in the
//! high ones. When a connection closes and a new one gets the same slab key within one
//! batch of events, a stale event for the old one carries the old generation and is
//! dropped instead of being delivered to the newcomer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffers::BufferPool;
use crate::cli::Config;
use crate::connection::{Connection, Phase, MAX_PENDING_OUTPUT};
use crate::protocol::{http::CannedPage, Context, Mode, Next, Session};
use crate::splice::{Pipe, PipeError};
use crate::stats::Stats;
use crate::timers::{Kind, Timers};

/// The listening socket's token: above any slab key with any generation (see module docs).
const LISTENER: Token = Token(usize::MAX);
/// The read end of the self-pipe that signal handlers write to.
const SIGNAL: Token = Token(usize::MAX - 1);
/// Another loop left broadcasts in this loop's inbox (ws mode with --threads above 1).
const INBOX: Token = Token(usize::MAX - 2);

/// One read takes at most this much. A loopback skb carries up to 64 KiB, and a 64 KiB
/// message is a common size (echo_load's big case). With a buffer of exactly 64 KiB such a
/// read fills it, so the loop cannot tell the queue is empty and reads again, only to be
/// told EAGAIN: one wasted syscall per message. Twice that size makes the read short, and a
/// short read means drained (see `advance`). It is one buffer per loop, not per connection.
const READ_BUFFER_SIZE: usize = 128 * 1024;
/// How long a closing connection may go without progress: its last bytes must keep being
/// read, and then the peer's FIN must come (nginx's lingering_timeout is 5 s).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// How soon to retry accept(2) after it failed for want of memory or descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Reads one connection may make before the others get a turn: 16 × 128 KiB = 2 MiB.
const MAX_READS_PER_TURN: usize = 16;

/// What every loop of the process shares. Touched on accept and close only, never per
/// request.
#[derive(Debug, Default)]
pub struct Shared {
    /// Connections open across all loops, for --max-conns.
    pub open_connections: AtomicUsize,
    /// Every loop's inbox, for broadcasts to reach the WebSocket clients of all loops. Only
    /// ws mode with more than one loop registers any; it is locked once per broadcast.
    pub inboxes: Mutex<Vec<Arc<Inbox>>>,
}

/// Where the other loops leave a loop's share of their broadcasts, and the eventfd
/// (`mio::Waker`) they poke so that its `epoll_wait` returns to deliver them.
#[derive(Debug)]
pub struct Inbox {
    frames: Mutex<Vec<Arc<[u8]>>>,
    waker: Waker,
}

/// Why a connection ended, for the debug log line and the error count.
#[derive(Debug)]
enum Exit {
    /// The conversation ended normally.
    Done,
    IdleTimeout,
    /// A closing connection made no progress: its peer stopped reading our last bytes, or
    /// never sent its FIN.
    LingerTimeout,
    /// The server is stopping and the shutdown timeout ran out.
    ShutdownTimeout,
    /// A syscall failed: a reset (ECONNRESET, EPIPE) or worse.
    Failed(io::Error),
}

/// What spending the reserve descriptor achieved.
enum Shed {
    /// One connection was taken off the backlog and closed.
    One,
    /// There was nothing in the backlog.
    BacklogEmpty,
    /// No reserve descriptor is held (it could not be reopened).
    NoReserve,
}

/// What moving a connection forward came to.
enum Step {
    /// Nothing more to do until the kernel reports the socket again.
    Wait,
    /// Input is still waiting, but this connection has had its turn: come back to it
    /// after polling, since epoll will not report it again.
    Again,
    Close(Exit),
}

pub struct EventLoop {
    poll: Poll,
    /// `None` once we stop accepting (shutdown).
    listener: Option<TcpListener>,
    connections: Slab<Connection>,
    generation: usize,
    /// Every read lands here first: one buffer per loop, not per connection.
    read_buffer: Box<[u8]>,
    /// Every answer is built here, then written straight away.
    output: Vec<u8>,
    /// Echo mode's way around `read_buffer` and `output`: bytes go socket → pipe → socket
    /// without a copy (see `splice`). `None` in other modes, without `--splice`, or if the
    /// pipe could not be made or failed.
    pipe: Option<Pipe>,
    pool: BufferPool,
    timers: Timers,
    page: CannedPage,
    /// The Unix second the page's Date header shows.
    page_second: u64,
    config: Arc<Config>,
    shared: Arc<Shared>,
    /// A descriptor held in reserve for when accept(2) fails with EMFILE (see `accept`).
    reserve_fd: Option<File>,
    /// accept(2) is paused (out of memory or descriptors); retry at this time or when a
    /// connection closes.
    accept_retry: Option<Instant>,
    signal_pipe: UnixStream,
    last_signal: Arc<AtomicUsize>,
    /// Set when shutdown began: the time by which every connection must be gone.
    shutdown_deadline: Option<Instant>,
    /// Rejected connections not yet logged: the log line is written at most once a second.
    rejected_unlogged: u64,
    rejected_logged_at: Option<Instant>,
    /// Frames the sessions asked to broadcast this round, delivered at the end of it.
    outbox: Vec<Arc<[u8]>>,
    /// Connections that used up their turn with input still waiting (see `advance`), and
    /// the list being worked through; two, so that neither allocates after warming up.
    ready: Vec<Token>,
    ready_now: Vec<Token>,
    /// This loop's inbox, when other loops may broadcast to it.
    inbox: Option<Arc<Inbox>>,
    stats: Stats,
}

impl EventLoop {
    pub fn new(
        listener: TcpListener,
        config: Arc<Config>,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;

        // The self-pipe trick: a signal handler may do almost nothing (signal-safety(7)),
        // but write(2) is allowed. It writes a byte to this socket pair, epoll wakes us,
        // and the shutdown runs here, in ordinary code.
        let (reader, writer) = StdUnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let mut signal_pipe = UnixStream::from_std(reader);
        poll.registry()
            .register(&mut signal_pipe, SIGNAL, Interest::READABLE)?;
        let last_signal = Arc::new(AtomicUsize::new(0));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(signal, Arc::clone(&last_signal), signal as usize)?;
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }

        // A chat room spans the loops: let the others reach ours.
        let inbox = if config.mode == Mode::Ws && config.threads > 1 {
            let inbox = Arc::new(Inbox {
                frames: Mutex::new(Vec::new()),
                waker: Waker::new(poll.registry(), INBOX)?,
            });
            lock(&shared.inboxes).push(Arc::clone(&inbox));
            Some(inbox)
        } else {
            None
        };

        let pipe = if config.mode == Mode::Echo && config.splice {
            // Every other write passes MSG_NOSIGNAL, but splice(2) into a socket can't: a
            // peer that is gone would raise SIGPIPE, whose default action kills the
            // process. Rust's runtime ignores SIGPIPE before main; say so here too, for
            // whoever runs this loop from elsewhere.
            // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            Pipe::new()
                .inspect_err(|e| warn!("pipe for splice(2): {e}; echo copies instead"))
                .ok()
        } else {
            None
        };

        let mut page = CannedPage::new(&config.body, &config.content_type);
        let page_second = unix_second();
        page.set_date(SystemTime::now());
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            connections: Slab::new(),
            generation: 0,
            read_buffer: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            output: Vec::with_capacity(READ_BUFFER_SIZE),
            pipe,
            pool: BufferPool::new(),
            timers: Timers::new(config.idle_timeout, config.header_timeout, LINGER_TIMEOUT),
            page,
            page_second,
            reserve_fd: open_reserve_fd(),
            accept_retry: None,
            signal_pipe,
            last_signal,
            shutdown_deadline: None,
            rejected_unlogged: 0,
            rejected_logged_at: None,
            outbox: Vec::new(),
            ready: Vec::new(),
            ready_now: Vec::new(),
            inbox,
            config,
            shared,
            stats: Stats::default(),
        })
    }

    /// Run until shut down by a signal; returns this loop's totals.
    pub fn run(mut self) -> io::Result<Stats> {
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
        loop {
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal arrived while we slept in epoll_wait; the self-pipe has the news.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            now = Instant::now();
            self.refresh_date();
            trace!("epoll_wait → {} events", events.iter().count());

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNAL => self.on_signal(now),
                    INBOX => self.on_inbox(now),
                    token => self.on_connection_event(token, event, now),
                }
            }

            self.drive_ready(now);
            self.expire_timers(now);
            if !self.outbox.is_empty() {
                self.broadcast(now);
            }
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if deadline <= now {
                    let keys = self.connection_keys();
                    for key in keys {
                        self.close(key, Exit::ShutdownTimeout, now);
                    }
                }
                if self.connections.is_empty() {
                    return Ok(self.stats);
                }
            }
        }
    }

    /// The slab keys of every connection, taken up front for the passes that may close
    /// some of them on the way (shutdown, broadcasts).
    fn connection_keys(&self) -> Vec<usize> {
        self.connections.iter().map(|(key, _)| key).collect()
    }

    /// The earliest of: a connection's deadline, the shutdown deadline, an accept retry.
    /// Zero when a connection is waiting for another turn, or a broadcast to be delivered:
    /// poll only to see who else is ready, then come back to it.
    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || !self.outbox.is_empty() {
            return Some(Duration::ZERO);
        }
        let until = |at: Instant| at.saturating_duration_since(now);
        [
            self.timers.next_timeout(&mut self.connections, now),
            self.shutdown_deadline.map(until),
            self.accept_retry.map(until),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Re-render the Date header when the second has changed: once a second at most, and
    /// never per request.
    fn refresh_date(&mut self) {
        let second = unix_second();
        if second != self.page_second {
            self.page_second = second;
            self.page.set_date(SystemTime::now());
        }
    }

    // ----- accepting -----

    /// Accept until the kernel's queue is empty. Edge-triggered: a connection left in the
    /// backlog fires no new event, so stopping early means coming back on our own.
    fn accept(&mut self, now: Instant) {
        self.accept_retry = None;
        // The reserve can be lost (another thread or process took the freed slot as we
        // reopened it); take it back as soon as a descriptor is free again.
        if self.reserve_fd.is_none() {
            self.reserve_fd = open_reserve_fd();
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    trace!("accept → {peer}");
                    self.admit(stream, peer, now);
                }
                Err(e) if would_block(&e) => {
                    trace!("accept → WouldBlock: backlog empty");
                    return;
                }
                Err(e) if interrupted(&e) => continue,
                // The client reset the connection while it waited in the backlog.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if out_of_descriptors(&e) => match self.shed_one_with_reserve_fd(now) {
                    Shed::One => continue,
                    // accept(2) fails with EMFILE before it looks at the queue, so an
                    // empty backlog shows up only once a descriptor is free.
                    Shed::BacklogEmpty => return,
                    Shed::NoReserve => {
                        debug!("accept: {e}; no reserve descriptor, pausing accept");
                        self.accept_retry = Some(now + ACCEPT_RETRY);
                        return;
                    }
                },
                Err(e) => {
                    // ENOBUFS, ENOMEM, ...: the kernel is short of memory. Back off briefly
                    // rather than spin; the queued connections wait in the backlog.
                    warn!("accept: {e}; retrying in {ACCEPT_RETRY:?}");
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Out of descriptors (EMFILE/ENFILE), the connection at the head of the backlog can
    /// be neither accepted nor refused, and epoll will not report it again. The classic
    /// way out (libev and nginx-like servers do it): keep one descriptor in reserve; close
    /// it, accept the connection into the freed slot, close that at once (the client sees
    /// an orderly close instead of a hang), and take the reserve again.
    fn shed_one_with_reserve_fd(&mut self, now: Instant) -> Shed {
        let Some(reserve) = self.reserve_fd.take() else {
            return Shed::NoReserve;
        };
        drop(reserve);
        let accepted = match &self.listener {
            Some(listener) => listener.accept(),
            None => return Shed::BacklogEmpty,
        };
        let shed = match accepted {
            Ok((stream, peer)) => {
                trace!("accept → {peer} into the reserve descriptor's slot: closing it at once");
                self.reject(stream, "out of file descriptors", now);
                Shed::One
            }
            Err(e) if would_block(&e) => Shed::BacklogEmpty,
            // Another error (ECONNABORTED, or another thread took the slot): try again
            // after a pause rather than spin.
            Err(e) => {
                debug!("accept into the reserve descriptor's slot: {e}");
                Shed::NoReserve
            }
        };
        // The shed connection is closed, so its descriptor number is free again.
        self.reserve_fd = open_reserve_fd();
        if self.reserve_fd.is_none() {
            warn!("could not take the reserve descriptor back; out of descriptors, accept pauses");
        }
        match shed {
            Shed::One if self.reserve_fd.is_none() => Shed::NoReserve,
            shed => shed,
        }
    }

    /// Take a freshly accepted socket into the slab, or turn it away at --max-conns.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let open = self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
        if open >= self.config.max_conns {
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            self.reject(stream, "--max-conns reached", now);
            return;
        }
        // No setsockopt(TCP_NODELAY) here: the socket inherited it from the listener.
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        self.generation = (self.generation + 1) & 0x7fff_ffff;
        let token = Token(key | (self.generation << 32));
        // Registered once, for both directions, and never modified (see module docs).
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            warn!("{peer}: epoll_ctl(ADD) failed: {e}");
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        entry.insert(Connection::new(
            stream,
            token,
            peer,
            Session::new(self.config.mode),
            now,
        ));
        // HTTP (and ws, which starts as HTTP): the first request head is due within
        // --header-timeout of connecting.
        let kind = if matches!(self.config.mode, Mode::Http | Mode::Ws) {
            Kind::Header
        } else {
            Kind::Idle
        };
        self.timers.schedule(&mut self.connections, key, kind, now);
        self.stats.connections += 1;
        debug!("{peer}: accepted as #{key}");
    }

    /// Close a connection we cannot serve. In http and ws mode (whose clients speak HTTP
    /// first) it gets a 503: an empty send buffer takes those ~100 bytes in one write, so
    /// the write either goes or not.
    ///
    /// There is no lingering here, unlike an ordinary close: a client that already sent its
    /// request leaves unread input, so close(2) sends RST, and a reset can in principle
    /// overtake the 503. We accept that for connections we cannot afford to keep (on
    /// loopback the client read the 503 in every trial); the count says how many there were.
    fn reject(&mut self, mut stream: TcpStream, why: &str, now: Instant) {
        if matches!(self.config.mode, Mode::Http | Mode::Ws) {
            let _ = stream.write(self.page.unavailable());
            let _ = stream.shutdown(Shutdown::Write);
        }
        drop(stream);
        self.stats.rejected += 1;
        self.rejected_unlogged += 1;
        // A flood of rejections must not become a flood of log lines: one a second.
        if self
            .rejected_logged_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            warn!("rejected {} connection(s): {why}", self.rejected_unlogged);
            self.rejected_unlogged = 0;
            self.rejected_logged_at = Some(now);
        }
    }

    // ----- connections -----

    fn on_connection_event(&mut self, token: Token, event: &Event, now: Instant) {
        let key = token.0 & 0xffff_ffff;
        let conn = match self.connections.get_mut(key) {
            Some(conn) if conn.token == token => conn,
            // The connection this event was for closed earlier in this batch.
            _ => {
                trace!("event for token {token:?}: connection already closed, ignored");
                return;
            }
        };
        trace!(
            "{}: event readable={} writable={} read_closed={} error={}",
            conn.peer,
            event.is_readable(),
            event.is_writable(),
            event.is_read_closed(),
            event.is_error()
        );
        // Edge-triggered: this is the only time we hear that input arrived, so remember it
        // until a read drains it. A writable-only event (the one right after registration,
        // or buffer space freed) brings no input, and reading would only get EAGAIN.
        if event.is_readable() || event.is_read_closed() || event.is_priority() || event.is_error()
        {
            conn.input_ready = true;
        }
        // EPOLLRDHUP: the peer's FIN is queued behind the data; EPOLLPRI: urgent data, at
        // whose mark a read stops short. Either way a short read does not mean drained, so
        // this round reads on until EAGAIN or end of stream. (An error is read out too.)
        if event.is_read_closed() || event.is_priority() || event.is_error() {
            conn.read_to_eagain = true;
        }
        self.drive(key, now);
    }

    /// Move a connection forward, then fix its timer or close it.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        let bytes_before = conn.bytes_in + conn.bytes_out;
        let requests_before = self.stats.requests;
        let step = self.advance(key);
        if let Step::Close(exit) = step {
            self.close(key, exit, now);
            return;
        }
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if matches!(step, Step::Again) {
            self.ready.push(conn.token);
        }
        let active = conn.bytes_in + conn.bytes_out != bytes_before;
        let answered = self.stats.requests != requests_before;
        if let Some(kind) = wanted_timer(conn, active, answered) {
            self.timers.schedule(&mut self.connections, key, kind, now);
        }
    }

    /// Give another turn to the connections that used up theirs with input still waiting.
    fn drive_ready(&mut self, now: Instant) {
        let mut turn = std::mem::take(&mut self.ready_now);
        std::mem::swap(&mut self.ready, &mut turn);
        for token in turn.drain(..) {
            let key = token.0 & 0xffff_ffff;
            // It may have closed, and its slot been reused, since it was queued.
            if self.connections.get(key).is_some_and(|c| c.token == token) {
                self.drive(key, now);
            }
        }
        self.ready_now = turn; // keep the allocation for the next round
    }

    /// The heart of the loop: write what we owe, read what we are sent, hand it to the
    /// protocol, and repeat until the kernel says WouldBlock or the connection is done.
    fn advance(&mut self, key: usize) -> Step {
        let Some(conn) = self.connections.get_mut(key) else {
            return Step::Wait;
        };
        debug_assert!(
            self.output.is_empty(),
            "another connection's answer left behind"
        );
        let mut reads = 0;
        loop {
            // 1. Write first: bytes the kernel refused last time go before anything new, then
            //    the answer `offer` just built.
            if let Err(e) = flush(conn, &mut self.output, &mut self.pool, &mut self.stats) {
                return Step::Close(Exit::Failed(e));
            }
            let unsent = conn.unsent().len();
            if conn.phase == Phase::Flushing {
                if unsent > 0 {
                    return Step::Wait; // epoll says when the send buffer has room again
                }
                // Everything is written: send our FIN. The peer reads the whole answer, then
                // end-of-file.
                if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
                    trace!("{}: shutdown(SHUT_WR) → {e}", conn.peer);
                    return Step::Close(Exit::Failed(e));
                }
                trace!(
                    "{}: shutdown(SHUT_WR) → FIN sent; phase Flushing→Lingering",
                    conn.peer
                );
                conn.phase = Phase::Lingering;
                if conn.peer_closed {
                    return Step::Close(Exit::Done);
                }
                self.pool.give_back(&mut conn.pending_input);
            }

            // 2. Input held back for lack of output room goes first, once there is room.
            if conn.input_stalled && conn.phase == Phase::Open && unsent < MAX_PENDING_OUTPUT {
                conn.input_stalled = false;
                self.output.clear();
                offer(
                    conn,
                    &[],
                    &mut self.output,
                    &mut self.pool,
                    &self.page,
                    &mut self.stats,
                    &mut self.outbox,
                );
                continue;
            }
            // The peer has said all it will say, and every complete request it sent is
            // answered (or queued): finish writing, then close.
            if conn.peer_closed && conn.phase == Phase::Open && !conn.input_stalled {
                set_phase(conn, Phase::Flushing);
                continue;
            }
            if !conn.wants_read() || !conn.input_ready {
                return Step::Wait;
            }
            // A peer that sends as fast as we answer would keep us here for ever, and every
            // other client, timer and signal would wait. After a fair share, it queues for
            // another turn behind the others (Redis caps its writes per event the same way).
            if reads == MAX_READS_PER_TURN {
                return Step::Again;
            }
            reads += 1;

            // 3. Read. With --splice, an echo connection with nothing owed moves the bytes
            //    straight back out through the loop's pipe instead, which reads and answers
            //    in one go. Not in a round epoll flagged (see `read_to_eagain`): when TCP's
            //    urgent byte is next in the queue, splice says EAGAIN with data still
            //    queued behind it, where read(2) steps over it. FIN and error rounds read
            //    too, only because one rule is simpler than two.
            let spliced = self.pipe.is_some()
                && conn.phase == Phase::Open
                && conn.unsent().is_empty()
                && conn.pending_input.is_empty()
                && !conn.read_to_eagain;
            let got = if spliced {
                splice_echo(&mut self.pipe, conn, &mut self.pool, &mut self.stats)
            } else {
                conn.stream.read(&mut self.read_buffer)
            };
            match got {
                Ok(0) => {
                    // FIN: the peer will send nothing more; our socket is in CLOSE_WAIT
                    // until we close. In every mode that ends the conversation: finish
                    // writing what we owe (an echo server's half-close contract), then close.
                    trace!(
                        "{}: read → 0 (EOF: peer sent FIN, we are in CLOSE_WAIT)",
                        conn.peer
                    );
                    conn.peer_closed = true;
                    conn.input_ready = false;
                    if conn.phase == Phase::Lingering {
                        return Step::Close(Exit::Done);
                    }
                }
                Ok(n) => {
                    // (A splice already counted, and answered, what it moved.)
                    if !spliced {
                        trace!("{}: read → {n} bytes", conn.peer);
                        conn.bytes_in += n as u64;
                        self.stats.bytes_in += n as u64;
                        if conn.phase == Phase::Open {
                            self.output.clear();
                            let input = &self.read_buffer[..n];
                            offer(
                                conn,
                                input,
                                &mut self.output,
                                &mut self.pool,
                                &self.page,
                                &mut self.stats,
                                &mut self.outbox,
                            );
                        }
                    }
                    // A short read emptied the socket's receive queue (tcp_recvmsg copies
                    // all it has, up to our length). Anything arriving later is a new edge
                    // and a new event, so another read now would only return EAGAIN. The
                    // exceptions, a queued FIN and TCP urgent data (a read stops at the
                    // urgent mark), come flagged by epoll: see `read_to_eagain`. A splice
                    // can also stop short for want of room in the pipe: `Pipe::drained`.
                    let drained = match &self.pipe {
                        Some(pipe) if spliced => pipe.drained(n, READ_BUFFER_SIZE),
                        _ => n < self.read_buffer.len(),
                    };
                    if drained && !conn.read_to_eagain {
                        conn.input_ready = false;
                    }
                }
                Err(e) if would_block(&e) => {
                    let call = if spliced { "splice" } else { "read" };
                    trace!("{}: {call} → WouldBlock", conn.peer);
                    conn.input_ready = false;
                    conn.read_to_eagain = false;
                    return Step::Wait;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    let call = if spliced { "splice" } else { "read" };
                    trace!("{}: {call} → {e}", conn.peer);
                    return Step::Close(Exit::Failed(e));
                }
            }
        }
    }

    fn on_signal(&mut self, now: Instant) {
        // Empty the pipe: each signal wrote one byte, and two may have come before we woke.
        let mut bytes = [0u8; 64];
        let mut signals = 0;
        while let Ok(n @ 1..) = self.signal_pipe.read(&mut bytes) {
            signals += n;
        }
        let signal = self.last_signal.load(Ordering::Relaxed) as i32;
        if self.shutdown_deadline.is_some() || signals > 1 {
            warn!(
                "second signal ({signal}): exiting now with {} connection(s) open",
                self.connections.len()
            );
            std::process::exit(128 + signal);
        }
        info!(
            "signal {signal}: shutting down; {} connection(s) open, {:?} to finish",
            self.connections.len(),
            self.config.shutdown_timeout
        );
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout);
        // Closing the listening socket makes the kernel refuse new connections (RST to
        // their SYN). Those already waiting in its backlog are reset too.
        self.listener = None;
        self.accept_retry = None;
        let keys = self.connection_keys();
        for key in keys {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            self.output.clear();
            let next = conn
                .session
                .on_shutdown(conn.pending_input.len(), &mut self.output);
            queue_output(conn, &self.output, &mut self.pool);
            self.output.clear();
            if next == Next::CloseAfterFlush {
                set_phase(conn, Phase::Flushing);
            }
            self.drive(key, now);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some((key, kind)) = self.timers.pop_expired(&mut self.connections, now) {
            match kind {
                Kind::Idle => self.close(key, Exit::IdleTimeout, now),
                Kind::Linger => self.close(key, Exit::LingerTimeout, now),
                Kind::Header => {
                    let Some(conn) = self.connections.get_mut(key) else {
                        continue;
                    };
                    debug!(
                        "{}: request head not complete within {:?}",
                        conn.peer, self.config.header_timeout
                    );
                    self.output.clear();
                    let mut ctx = Context {
                        page: &self.page,
                        out_budget: MAX_PENDING_OUTPUT,
                        peer: conn.peer,
                        stats: &mut self.stats,
                        broadcast: &mut self.outbox,
                    };
                    conn.session.on_header_timeout(&mut self.output, &mut ctx);
                    queue_output(conn, &self.output, &mut self.pool);
                    self.output.clear();
                    set_phase(conn, Phase::Flushing);
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
        self.pool.give_back(&mut conn.pending_input);
        self.pool.give_back(&mut conn.pending_output);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let lifetime = now.saturating_duration_since(conn.opened);
        match &exit {
            Exit::Done => {}
            Exit::Failed(e) if is_reset(e) => self.stats.resets += 1,
            Exit::Failed(_) => self.stats.errors += 1,
            Exit::IdleTimeout | Exit::LingerTimeout | Exit::ShutdownTimeout => {
                self.stats.timeouts += 1
            }
        }
        debug!(
            "{}: closed ({}): {} bytes in, {} bytes out, open {:?}",
            conn.peer,
            describe_exit(&exit),
            conn.bytes_in,
            conn.bytes_out,
            lifetime
        );
        drop(conn);
        // A descriptor just came free: accept what waited for one.
        if self.accept_retry.is_some() {
            self.accept(now);
        }
    }

    // ----- broadcasts (ws mode) -----
    //
    // A chat message must reach every WebSocket client, but a session sees only its own
    // connection. So it leaves the encoded frame in `outbox`; at the end of the round the
    // loop posts it to the other loops' inboxes and delivers it to its own clients.

    /// Deliver this round's broadcasts here, and post them to every other loop.
    fn broadcast(&mut self, now: Instant) {
        let frames = std::mem::take(&mut self.outbox);
        if let Some(own) = &self.inbox {
            for inbox in lock(&self.shared.inboxes).iter() {
                if Arc::ptr_eq(inbox, own) {
                    continue;
                }
                lock(&inbox.frames).extend(frames.iter().cloned());
                // An eventfd write: the other loop's epoll_wait returns with INBOX.
                if let Err(e) = inbox.waker.wake() {
                    warn!("could not wake another loop for a broadcast: {e}");
                }
            }
        }
        self.deliver(&frames, now);
    }

    /// Another loop posted broadcasts for our clients.
    fn on_inbox(&mut self, now: Instant) {
        let frames = match &self.inbox {
            Some(inbox) => std::mem::take(&mut *lock(&inbox.frames)),
            None => return,
        };
        self.deliver(&frames, now);
    }

    /// Queue `frames` on every open connection whose session takes them, and write them
    /// now: "write first" here too. A client too far behind is closed by its session (1008)
    /// rather than buffered for; nobody is waited for.
    fn deliver(&mut self, frames: &[Arc<[u8]>], now: Instant) {
        let keys = self.connection_keys();
        for key in keys {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let sent_before = conn.bytes_out;
            let mut next = Next::Continue;
            for frame in frames {
                self.output.clear();
                let unsent = conn.unsent().len();
                next = conn
                    .session
                    .on_broadcast(frame, unsent, &mut self.output, conn.peer);
                queue_output(conn, &self.output, &mut self.pool);
                self.output.clear();
                if next == Next::CloseAfterFlush {
                    break;
                }
            }
            if next == Next::CloseAfterFlush {
                // Flush, shut down, linger: the usual way out, through `advance`.
                set_phase(conn, Phase::Flushing);
                self.drive(key, now);
            } else if let Err(e) = flush(conn, &mut self.output, &mut self.pool, &mut self.stats) {
                self.close(key, Exit::Failed(e), now);
            } else if conn.bytes_out != sent_before {
                // Traffic: a client that only listens is not idle.
                self.timers
                    .schedule(&mut self.connections, key, Kind::Idle, now);
            }
        }
    }
}

/// Lock a mutex of the broadcast plumbing. If another loop panicked while holding it, what
/// it guards is still a list of whole frames: carry on with it rather than panic too.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hand input to the session and keep what it did not consume. Its answer stays in
/// `output`, for the `flush` that the loop calls next.
fn offer(
    conn: &mut Connection,
    new_input: &[u8],
    output: &mut Vec<u8>,
    pool: &mut BufferPool,
    page: &CannedPage,
    stats: &mut Stats,
    broadcast: &mut Vec<Arc<[u8]>>,
) {
    // Usually nothing is held over and the session reads straight from the read buffer;
    // only after a partial request are the new bytes appended to the held ones.
    let held_over = !conn.pending_input.is_empty();
    if held_over {
        conn.pending_input.extend_from_slice(new_input);
    }
    let input: &[u8] = if held_over {
        &conn.pending_input
    } else {
        new_input
    };
    let out_budget = MAX_PENDING_OUTPUT.saturating_sub(conn.unsent().len());
    let mut ctx = Context {
        page,
        out_budget,
        peer: conn.peer,
        stats,
        broadcast,
    };
    let outcome = conn.session.on_input(input, output, &mut ctx);
    let consumed = outcome.consumed.min(input.len());
    conn.input_stalled = consumed < input.len() && output.len() >= out_budget;
    if held_over {
        conn.pending_input.drain(..consumed);
        if conn.pending_input.is_empty() {
            pool.give_back(&mut conn.pending_input);
        }
    } else if consumed < new_input.len() {
        conn.pending_input = pool.take();
        conn.pending_input.extend_from_slice(&new_input[consumed..]);
    }
    if outcome.next == Next::CloseAfterFlush {
        set_phase(conn, Phase::Flushing);
    }
}

/// Echo one read's worth of bytes through the loop's pipe (see `splice`): returns how many
/// were read, 0 at end of stream. What the socket would not take back at once becomes the
/// connection's pending output, written by `flush` as any other.
fn splice_echo(
    pipe: &mut Option<Pipe>,
    conn: &mut Connection,
    pool: &mut BufferPool,
    stats: &mut Stats,
) -> io::Result<usize> {
    let Some(p) = pipe.as_mut() else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    // Only called when nothing is owed, and a connection that owes nothing holds no buffer.
    debug_assert!(conn.pending_output.capacity() == 0 || conn.unsent().is_empty());
    let mut unsent = pool.take();
    let result = p.echo(
        conn.stream.as_raw_fd(),
        conn.peer,
        READ_BUFFER_SIZE,
        &mut unsent,
    );
    if unsent.is_empty() {
        pool.give_back(&mut unsent);
    } else {
        pool.give_back(&mut conn.pending_output);
        conn.pending_output = unsent;
        conn.output_sent = 0;
    }
    match result {
        Ok(echoed) => {
            conn.bytes_in += echoed.read as u64;
            stats.bytes_in += echoed.read as u64;
            count_sent(conn, stats, echoed.written);
            stats.messages += u64::from(echoed.read > 0);
            match echoed.write_error {
                Some(e) => Err(e),
                None => Ok(echoed.read),
            }
        }
        Err(PipeError::Socket(e)) => Err(e),
        Err(PipeError::Pipe(e)) => {
            // It may hold another connection's bytes now: never use it again. The error is
            // passed on as a failure of this connection, never as "would block", which
            // would leave the bytes lost in the pipe unnoticed.
            warn!("splice pipe failed: {e}; echo copies from now on");
            *pipe = None;
            Err(io::Error::other(format!("splice pipe: {e}")))
        }
    }
}

/// Make `output` the connection's to send, after what it already owes. The next `flush`
/// writes it. Used where the answer is not written straight away (shutdown, timeouts) and
/// for the tail of one the kernel did not take.
fn queue_output(conn: &mut Connection, output: &[u8], pool: &mut BufferPool) {
    if output.is_empty() {
        return;
    }
    if conn.pending_output.is_empty() {
        conn.pending_output = pool.take();
    } else if conn.output_sent > 0 {
        // Drop the bytes already sent so the buffer never grows past the backpressure bound
        // plus one answer.
        conn.pending_output.drain(..conn.output_sent);
        conn.output_sent = 0;
    }
    conn.pending_output.extend_from_slice(output);
}

/// Write what the connection owes until it is all sent or the kernel's send buffer is full:
/// first the bytes the kernel refused earlier, then the loop's `output` (the answer `offer`
/// just built), straight from the loop's buffer. "Write first, poll later": usually the
/// kernel takes the whole answer and it is never copied; only a tail the kernel refuses
/// moves into a buffer of the connection's own.
///
/// `output` is the loop's, shared by every connection, so it leaves here empty whatever
/// happens: otherwise the next connection would send this one's answer.
fn flush(
    conn: &mut Connection,
    output: &mut Vec<u8>,
    pool: &mut BufferPool,
    stats: &mut Stats,
) -> io::Result<()> {
    let result = write_owed(conn, output, pool, stats);
    output.clear();
    result
}

fn write_owed(
    conn: &mut Connection,
    output: &[u8],
    pool: &mut BufferPool,
    stats: &mut Stats,
) -> io::Result<()> {
    if !conn.unsent().is_empty() {
        let unsent = &conn.pending_output[conn.output_sent..];
        let sent = write_until_blocked(&mut conn.stream, conn.peer, unsent)?;
        count_sent(conn, stats, sent);
        conn.output_sent += sent;
        if !conn.unsent().is_empty() {
            // Still owing older bytes: the new answer queues behind them.
            queue_output(conn, output, pool);
            return Ok(());
        }
        pool.give_back(&mut conn.pending_output);
        conn.output_sent = 0;
    }
    let sent = write_until_blocked(&mut conn.stream, conn.peer, output)?;
    count_sent(conn, stats, sent);
    queue_output(conn, &output[sent..], pool);
    Ok(())
}

fn count_sent(conn: &mut Connection, stats: &mut Stats, sent: usize) {
    conn.bytes_out += sent as u64;
    stats.bytes_out += sent as u64;
}

/// Write `bytes` until all of it is written or the kernel says WouldBlock; returns how much
/// was written.
fn write_until_blocked(
    stream: &mut TcpStream,
    peer: SocketAddr,
    bytes: &[u8],
) -> io::Result<usize> {
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

/// Which deadline a connection should be running after a turn, or `None` to leave its
/// timer as it is. `active`: bytes moved this turn; `answered`: a request was completed.
fn wanted_timer(conn: &Connection, active: bool, answered: bool) -> Option<Kind> {
    let current = conn.timer.kind();
    // Half a request head is buffered and nothing holds it back but the peer.
    let waiting_for_head = conn.phase == Phase::Open
        && conn.session.in_request_head()
        && !conn.pending_input.is_empty()
        && !conn.input_stalled;
    match conn.phase {
        // Waiting for the peer's FIN: the linger deadline is not extended by anything.
        Phase::Lingering if current == Some(Kind::Linger) => None,
        Phase::Lingering => Some(Kind::Linger),
        // A closing connection whose peer stops reading (a stuck tab behind a 1008, a
        // client that never reads its 408) must not hold its unsent bytes for a whole idle
        // timeout: each write must make progress within the linger time.
        Phase::Flushing if current == Some(Kind::Linger) && !active => None,
        Phase::Flushing => Some(Kind::Linger),
        // The header deadline runs from a request's first byte: more bytes of the same head
        // do not extend it (slowloris drips one a second), a completed request restarts it.
        Phase::Open if waiting_for_head && current == Some(Kind::Header) && !answered => None,
        Phase::Open if waiting_for_head => Some(Kind::Header),
        // A new connection that has sent nothing yet keeps its first header deadline.
        Phase::Open if current == Some(Kind::Header) && !active => None,
        Phase::Open if active => Some(Kind::Idle),
        Phase::Open => None,
    }
}

fn set_phase(conn: &mut Connection, phase: Phase) {
    if conn.phase != phase {
        trace!("{}: phase {:?}→{:?}", conn.peer, conn.phase, phase);
        conn.phase = phase;
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A peer that vanished: RST received (ECONNRESET), or we wrote after it (EPIPE), or it
/// came before our shutdown(2), which then finds the socket no longer connected (ENOTCONN).
/// The last is common: a client that closes without reading its echo has its kernel answer
/// our write with an RST, which on loopback lands before our next syscall.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::Done => "done".to_string(),
        Exit::IdleTimeout => "idle timeout".to_string(),
        Exit::LingerTimeout => "no progress while closing".to_string(),
        Exit::ShutdownTimeout => "shutdown timeout".to_string(),
        Exit::Failed(e) if is_reset(e) => format!("reset by peer: {e}"),
        Exit::Failed(e) => format!("error: {e}"),
    }
}

fn open_reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
