//! SIGINT and SIGTERM, handled in ordinary code: the self-pipe trick.
//!
//! A signal handler may do almost nothing (`signal-safety(7)`), but `write(2)` is allowed.
//! Each loop registers one end of a socket pair with signal-hook, whose handler writes a
//! byte to it for every signal; the other end is in the loop's epoll set, so `epoll_wait`
//! wakes with the `SIGNAL` token and the shutdown runs here, between events, where it may
//! allocate, log and close sockets like any other code.
//!
//! SIGUSR1 asks for a report (`report`): it has a pipe of its own, so that it never counts
//! as a second SIGTERM.
//!
//! The first signal starts a graceful shutdown: the listener closes, every connection is
//! asked to finish, and the loop ends when the last one is gone or `--shutdown-timeout`
//! runs out. A second signal cuts that short: every connection is closed now and the loop
//! ends at once, still through the one close door and the totals.

use std::io::{self, Read};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::token::{REPORT, SIGNAL};
use super::EventLoop;

/// This loop's ends of its self-pipes.
pub struct Signals {
    /// SIGINT and SIGTERM: stop.
    stop: UnixStream,
    /// The number of the last of those to arrive, stored by signal-hook's handler.
    last: Arc<AtomicUsize>,
    /// SIGUSR1: report what this loop and the kernel hold (see `report`).
    report: UnixStream,
}

impl Signals {
    pub fn register(registry: &Registry) -> io::Result<Signals> {
        let last = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register_usize(signal, Arc::clone(&last), signal as usize)?;
        }
        Ok(Signals {
            stop: self_pipe(registry, SIGNAL, &[SIGINT, SIGTERM])?,
            last,
            report: self_pipe(registry, REPORT, &[SIGUSR1])?,
        })
    }

    /// Empty the stop pipe. Returns how many signals came (two may have come before we
    /// woke), and the number of the last.
    fn drain_stop(&mut self) -> (usize, i32) {
        let count = drain(&mut self.stop);
        (count, self.last.load(Ordering::Relaxed) as i32)
    }
}

/// A socket pair whose write end signal-hook's handler writes one byte to for each of
/// `signals`; the read end is registered under `token`.
fn self_pipe(registry: &Registry, token: Token, signals: &[i32]) -> io::Result<UnixStream> {
    let (reader, writer) = StdUnixStream::pair()?;
    reader.set_nonblocking(true)?;
    // Non-blocking so that a handler never blocks on a full pipe: a dropped byte is
    // harmless, the loop wakes for the ones already there.
    writer.set_nonblocking(true)?;
    let mut pipe = UnixStream::from_std(reader);
    registry.register(&mut pipe, token, Interest::READABLE)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
    }
    Ok(pipe)
}

/// Read a self-pipe empty; returns how many bytes (signals) it held.
fn drain(pipe: &mut UnixStream) -> usize {
    let mut bytes = [0u8; 64];
    let mut count = 0;
    while let Ok(n @ 1..) = pipe.read(&mut bytes) {
        count += n;
    }
    count
}

impl EventLoop {
    /// The self-pipe is readable: a signal came.
    pub(super) fn on_signal(&mut self, now: Instant) {
        let (count, signal) = self.signals.drain_stop();
        if self.shutdown.is_some() || count > 1 {
            warn!(
                "second signal ({signal}): exiting now with {} connection(s) open",
                self.connections.len()
            );
            self.cut_short_by = Some(signal);
            self.shutdown.get_or_insert(now);
            self.accepting.stop();
            return;
        }
        info!(
            "signal {signal}: shutting down; {} connection(s) open, {:?} to finish",
            self.connections.len(),
            self.config.shutdown_timeout
        );
        self.shutdown = Some(now + self.config.shutdown_timeout);
        // Closing the listening socket makes the kernel refuse new connections (RST to their
        // SYN) once no listener is left on the port; with --threads, SO_REUSEPORT siblings
        // take them until each loop has closed its own. Connections already waiting in this
        // listener's queue are reset (`inet_csk_listen_stop`), unless
        // net.ipv4.tcp_migrate_req=1 moves them to a sibling.
        self.accepting.stop();
        for key in self.connection_keys() {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.server_stopping(&mut self.scratch) {
                self.drive(key, now);
            }
        }
    }
}

impl EventLoop {
    /// The report pipe is readable: SIGUSR1 came.
    pub(super) fn on_report_signal(&mut self, now: Instant) {
        drain(&mut self.signals.report);
        self.report(now);
    }
}
