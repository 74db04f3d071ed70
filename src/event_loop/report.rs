//! The live view: what this loop and the kernel hold, on SIGUSR1 or every `--stats SECONDS`.
//!
//! One line per loop at info: connections, requests and bytes per second since the last
//! report, and the loop thread's CPU time over the same span. At debug, one line per
//! connection: sockloop's view (phase, bytes, what it holds) next to the kernel's
//! (`tcp_info`: state, round-trip time, congestion window, bytes queued each way), what
//! `ss -ti` shows, but from inside the server.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, Level};
use rustix::time::{clock_gettime, ClockId};

use super::EventLoop;
use crate::protocol::Mode;
use crate::stats::Stats;
use crate::tcp_info::Kernel;

/// When reports are due, and what the last one saw, for the rates.
pub struct Reporting {
    every: Option<Duration>,
    next_at: Option<Instant>,
    last_at: Instant,
    last: Stats,
    last_cpu: Duration,
}

impl Reporting {
    pub fn new(every: Option<Duration>, now: Instant) -> Reporting {
        Reporting {
            every,
            next_at: every.map(|every| now + every),
            last_at: now,
            last: Stats::default(),
            last_cpu: thread_cpu_time(),
        }
    }

    /// When the next periodic report is due (`--stats`), if any.
    pub fn due_at(&self) -> Option<Instant> {
        self.next_at
    }
}

impl EventLoop {
    /// Log this loop's line, and at debug one line per connection.
    pub(super) fn report(&mut self, now: Instant) {
        let stats = self.scratch.stats;
        let cpu = thread_cpu_time();
        let span = now.saturating_duration_since(self.reporting.last_at);
        let last = self.reporting.last;
        let seconds = span.as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let busy = cpu.saturating_sub(self.reporting.last_cpu).as_secs_f64() / seconds;
        // ws mode: what the chat room holds, over all loops (see `room`).
        let room = match self.config.mode {
            Mode::Ws => format!(
                "; room {} B held, {} B pinned",
                self.shared.room.held(),
                self.shared.room.pinned()
            ),
            _ => String::new(),
        };
        info!(
            "loop {}: {} connections; over {:.1} s: {:.0} requests/s, {:.0} messages/s, \
             {:.0} B/s in, {:.0} B/s out, CPU {:.0}%{room}",
            self.id,
            self.connections.len(),
            span.as_secs_f64(),
            rate(stats.requests, last.requests),
            rate(stats.messages, last.messages),
            rate(stats.bytes_in, last.bytes_in),
            rate(stats.bytes_out, last.bytes_out),
            busy * 100.0,
        );
        if log_enabled!(Level::Debug) {
            for (key, conn) in &self.connections {
                let kernel = Kernel(conn.stream().as_fd());
                debug!("loop {} #{key} {}: {conn} | {kernel}", self.id, conn.peer());
            }
        }
        self.reporting.last_at = now;
        self.reporting.last = stats;
        self.reporting.last_cpu = cpu;
        self.reporting.next_at = self.reporting.every.map(|every| now + every);
    }
}

/// CPU time this thread has used, user and system (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`):
/// each loop is one thread, so this is the loop's.
fn thread_cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
