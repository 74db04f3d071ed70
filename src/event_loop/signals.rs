//! SIGINT and SIGTERM, handled in ordinary code: the self-pipe trick.
//!
//! A signal handler may do almost nothing (`signal-safety(7)`), but `write(2)` is allowed.
//! Each loop registers one end of a socket pair with signal-hook, whose handler writes a
//! byte to it for every signal; the other end is in the loop's epoll set, so `epoll_wait`
//! wakes with the `SIGNAL` token and the shutdown runs here, between events, where it may
//! allocate, log and close sockets like any other code.
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
use mio::{Interest, Registry};

use super::token::SIGNAL;
use super::EventLoop;

/// This loop's end of the self-pipe.
pub struct Signals {
    pipe: UnixStream,
    /// The number of the last signal that arrived, stored by signal-hook's handler.
    last: Arc<AtomicUsize>,
}

impl Signals {
    pub fn register(registry: &Registry) -> io::Result<Signals> {
        let (reader, writer) = StdUnixStream::pair()?;
        reader.set_nonblocking(true)?;
        // Non-blocking so that a handler never blocks on a full pipe: a dropped byte is
        // harmless, the loop wakes for the ones already there.
        writer.set_nonblocking(true)?;
        let mut pipe = UnixStream::from_std(reader);
        registry.register(&mut pipe, SIGNAL, Interest::READABLE)?;
        let last = Arc::new(AtomicUsize::new(0));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(signal, Arc::clone(&last), signal as usize)?;
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }
        Ok(Signals { pipe, last })
    }

    /// Empty the pipe: each signal wrote one byte, and two may have come before we woke.
    /// Returns how many came, and the number of the last.
    fn drain(&mut self) -> (usize, i32) {
        let mut bytes = [0u8; 64];
        let mut count = 0;
        while let Ok(n @ 1..) = self.pipe.read(&mut bytes) {
            count += n;
        }
        (count, self.last.load(Ordering::Relaxed) as i32)
    }
}

impl EventLoop {
    /// The self-pipe is readable: a signal came.
    pub(super) fn on_signal(&mut self, now: Instant) {
        let (count, signal) = self.signals.drain();
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
        // Closing the listening socket makes the kernel refuse new connections (RST to
        // their SYN). Those already waiting in its backlog are reset too.
        self.accepting.stop();
        for key in self.connection_keys() {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.shutdown(&mut self.scratch) {
                self.drive(key, now);
            }
        }
    }
}
