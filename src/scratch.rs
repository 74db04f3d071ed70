//! The loop's working memory, lent to one connection at a time.
//!
//! A connection is served in turns, never two at once, so everything a turn needs for a
//! moment (somewhere to read into, somewhere to build the answer, the canned responses, the
//! counters) exists once per loop, not once per connection. This is what keeps an idle
//! connection down to its slab entry: it holds none of this between turns.

use std::sync::Arc;
use std::time::SystemTime;

use crate::broadcast::Said;
use crate::buffers::{BufferPool, PageAligned};
use crate::protocol::Responses;
use crate::splice::Pipe;
use crate::stats::Stats;

/// One read takes at most this much. A loopback skb carries up to 64 KiB, and a 64 KiB
/// message is a common size (echo_load's big case). With a buffer of exactly 64 KiB such a
/// read fills it, so the loop cannot tell the queue is empty and reads again, only to be
/// told EAGAIN: one wasted syscall per message. Twice that size makes the read short, and a
/// short read means drained (see `event_loop::io`).
pub const READ_BUFFER_SIZE: usize = 128 * 1024;

pub struct Scratch {
    /// Every read lands here first. It starts on a page boundary: 16 bytes into a page, the
    /// kernel's copy into it took up to 1.9× the time (see `PageAligned`).
    pub read_buffer: PageAligned,
    /// Every answer is built here, then written straight away. It is empty between turns:
    /// whatever the kernel did not take has moved to the connection's own buffer.
    pub output: Vec<u8>,
    /// Buffers a connection borrows while it holds bytes (see `buffers`).
    pub pool: BufferPool,
    /// The canned HTTP responses, their Date kept current by the loop.
    pub responses: Responses,
    /// This loop's counters, summed with the other loops' at exit.
    pub stats: Stats,
    /// Frames the session in its turn asked to broadcast (ws mode), which
    /// `Connection::offer` moves to the outbox with the sender's token.
    pub said: Vec<Arc<[u8]>>,
    /// Frames the sessions asked to broadcast this round (ws mode), each with its sender,
    /// delivered by the room once the round's events are handled.
    pub outbox: Vec<Said>,
    /// Echo's way around `read_buffer` and `output` with `--splice`: bytes go socket → pipe
    /// → socket without a copy (see `splice`). `None` in other modes, without `--splice`,
    /// or once the pipe has failed.
    pub pipe: Option<Pipe>,
}

impl Scratch {
    pub fn new(responses: Responses, pipe: Option<Pipe>) -> Scratch {
        Scratch {
            read_buffer: PageAligned::new(READ_BUFFER_SIZE),
            output: Vec::with_capacity(READ_BUFFER_SIZE),
            pool: BufferPool::new(),
            responses,
            stats: Stats::default(),
            said: Vec::new(),
            outbox: Vec::new(),
            pipe,
        }
    }

    /// Called once per wakeup: the responses' Date follows the clock.
    pub fn refresh_date(&mut self) {
        self.responses.refresh_date(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::responses::{DEFAULT_BODY, DEFAULT_CONTENT_TYPE};

    /// The guard on the speed of every read: a read buffer moved off its page boundary
    /// (back to a plain `vec!`, 16 bytes into its page) makes recv's copy twice as slow at
    /// 64 KiB a message (README, "How it works").
    #[test]
    fn the_read_buffer_starts_on_a_page_boundary() {
        let scratch = Scratch::new(Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE), None);
        let page = rustix::param::page_size();
        assert_eq!(scratch.read_buffer.as_ptr() as usize % page, 0);
        assert_eq!(scratch.read_buffer.len(), READ_BUFFER_SIZE);
    }
}
