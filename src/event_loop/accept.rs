//! Taking connections off the listening socket's queue: `accept(2)` until the kernel says
//! EAGAIN, `--max-conns`, and the reserve descriptor for when we run out of them.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use super::{interrupted, token, would_block, EventLoop};
use crate::connection::Connection;
use crate::protocol::{Mode, Session};
use crate::tcp_info::Kernel;
use crate::timers::Kind;

/// How soon to retry accept(2) after it failed for want of memory or descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The listening side of one loop.
pub struct Accepting {
    /// `None` once we stop accepting (shutdown).
    listener: Option<TcpListener>,
    /// A descriptor held in reserve for when accept(2) fails with EMFILE (see
    /// `shed_one_with_reserve_fd`).
    reserve_fd: Option<File>,
    /// accept(2) is paused (out of memory or descriptors); retry at this time, or as soon as
    /// a connection closes.
    retry_at: Option<Instant>,
    /// Rejections not yet logged: the log line is written at most once a second.
    rejected_unlogged: u64,
    rejected_logged_at: Option<Instant>,
}

/// What spending the reserve descriptor achieved.
enum Shed {
    /// One connection was taken off the queue and closed.
    One,
    /// There was nothing in the queue.
    QueueEmpty,
    /// No reserve descriptor is held (it could not be reopened).
    NoReserve,
}

impl Accepting {
    pub fn new(listener: TcpListener) -> Accepting {
        Accepting {
            listener: Some(listener),
            reserve_fd: open_reserve_fd(),
            retry_at: None,
            rejected_unlogged: 0,
            rejected_logged_at: None,
        }
    }

    /// Close the listening socket: no more connections (shutdown).
    pub fn stop(&mut self) {
        self.listener = None;
        self.retry_at = None;
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether accept is paused and waits for a descriptor to come free.
    pub fn paused(&self) -> bool {
        self.retry_at.is_some()
    }
}

impl EventLoop {
    /// Accept until the kernel's queue is empty. Edge-triggered: a connection left in the
    /// queue fires no new event, so stopping early means coming back on our own.
    pub(super) fn accept(&mut self, now: Instant) {
        self.accepting.retry_at = None;
        // The reserve can be lost (another thread or process took the freed slot as we
        // reopened it); take it back as soon as a descriptor is free again.
        if self.accepting.reserve_fd.is_none() {
            self.accepting.reserve_fd = open_reserve_fd();
        }
        loop {
            let Some(listener) = &self.accepting.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    trace!("accept → {peer}; {}", Kernel(stream.as_fd()));
                    self.admit(stream, peer, now);
                }
                Err(e) if would_block(&e) => {
                    trace!("accept → WouldBlock: accept queue empty");
                    return;
                }
                Err(e) if interrupted(&e) => continue,
                // ECONNABORTED: on BSD, a connection reset while it waited in the queue
                // (Stevens, UNP §5.11). Linux hands such a connection to accept(2) like any
                // other, and the reset shows on its first read (ECONNRESET); it returns
                // ECONNABORTED only in corner cases (`do_accept`, net/socket.c). Either way
                // the next one may be fine.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if out_of_descriptors(&e) => match self.shed_one_with_reserve_fd(now) {
                    Shed::One => continue,
                    // accept(2) fails with EMFILE before it looks at the queue, so an
                    // empty queue shows up only once a descriptor is free.
                    Shed::QueueEmpty => return,
                    Shed::NoReserve => {
                        debug!("accept: {e}; no reserve descriptor, pausing accept");
                        self.accepting.retry_at = Some(now + ACCEPT_RETRY);
                        return;
                    }
                },
                Err(e) => {
                    // ENOBUFS, ENOMEM, ...: the kernel is short of memory. Back off briefly
                    // rather than spin; the queued connections wait in the backlog.
                    warn!("accept: {e}; retrying in {ACCEPT_RETRY:?}");
                    self.accepting.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Out of descriptors (EMFILE/ENFILE), accept(2) fails before it looks at the queue
    /// (`__sys_accept4_file` takes a descriptor first), so the connection at its head can be
    /// neither accepted nor refused. epoll does report the listener again for each new
    /// arrival, but every retry fails the same way, and if nobody else connects nothing
    /// wakes us at all: the queued clients hang. The classic way out (libev and nginx-like
    /// servers do it): keep one descriptor in reserve; close it, accept the connection into
    /// the freed slot, close that at once, and take the reserve again. The client sees end
    /// of file if it had sent nothing; if its bytes were already queued, close(2) finds them
    /// unread and sends RST (`__tcp_close`). Either is better than a hang.
    fn shed_one_with_reserve_fd(&mut self, now: Instant) -> Shed {
        let Some(reserve) = self.accepting.reserve_fd.take() else {
            return Shed::NoReserve;
        };
        drop(reserve);
        let accepted = match &self.accepting.listener {
            Some(listener) => listener.accept(),
            None => return Shed::QueueEmpty,
        };
        let shed = match accepted {
            Ok((stream, peer)) => {
                trace!("accept → {peer} into the reserve descriptor's slot: closing it at once");
                self.reject(stream, "out of file descriptors", now);
                Shed::One
            }
            Err(e) if would_block(&e) => Shed::QueueEmpty,
            // Another error (ECONNABORTED, or another thread took the slot): try again
            // after a pause rather than spin.
            Err(e) => {
                debug!("accept into the reserve descriptor's slot: {e}");
                Shed::NoReserve
            }
        };
        // The shed connection is closed, so its descriptor number is free again.
        self.accepting.reserve_fd = open_reserve_fd();
        if self.accepting.reserve_fd.is_none() {
            warn!("could not take the reserve descriptor back; out of descriptors, accept pauses");
        }
        match shed {
            Shed::One if self.accepting.reserve_fd.is_none() => Shed::NoReserve,
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
        let token = token::pack(key, self.generations.next());
        // Registered once, for both directions, and never modified (see the module docs).
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            warn!("{peer}: epoll_ctl(ADD) failed: {e}");
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let session = Session::new(self.config.mode).with_max_message(self.config.max_message);
        entry.insert(Connection::new(stream, token, peer, session, now));
        // HTTP (and ws, which starts as HTTP): the first request head is due within
        // --header-timeout of connecting.
        let kind = if matches!(self.config.mode, Mode::Http | Mode::Ws) {
            Kind::Header
        } else {
            Kind::Idle
        };
        self.timers.schedule(&mut self.connections, key, kind, now);
        self.scratch.stats.connections += 1;
        debug!("{peer}: accepted as #{key} by loop {}", self.id);
    }

    /// Close a connection we cannot serve, after the few bytes its protocol gives a
    /// rejected client (http and ws: a 503). An empty send buffer takes those ~100 bytes
    /// in one write, so the write either goes or not.
    ///
    /// There is no lingering here, unlike an ordinary close: a client that already sent its
    /// request leaves unread input, so close(2) sends RST after our FIN (`__tcp_close`,
    /// RFC 2525 §2.17). Linux's receiver keeps the bytes it has already taken in (the 503
    /// stays readable, then read says 0); what an RST can destroy is an answer still in
    /// flight, or one a stack that discards more throws away (RFC 9112 §9.6). We accept that
    /// for connections we cannot afford to keep; the count says how many there were.
    fn reject(&mut self, mut stream: TcpStream, why: &str, now: Instant) {
        let rejection = self.config.mode.rejection(&self.scratch.responses);
        if !rejection.is_empty() {
            let _ = stream.write(rejection);
            let _ = stream.shutdown(Shutdown::Write);
        }
        drop(stream);
        self.scratch.stats.rejected += 1;
        let log = &mut self.accepting;
        log.rejected_unlogged += 1;
        // A flood of rejections must not become a flood of log lines: one a second.
        if log
            .rejected_logged_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            warn!("rejected {} connection(s): {why}", log.rejected_unlogged);
            log.rejected_unlogged = 0;
            log.rejected_logged_at = Some(now);
        }
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn open_reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}
