//! Counters a loop keeps for its exit line. Plain integers: each loop owns its own, and the
//! totals are summed once, at exit, so nothing on the hot path is shared between threads.

use std::fmt;
use std::ops::AddAssign;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections accepted only to be closed at once (--max-conns, out of descriptors).
    pub rejected: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Echo reads echoed, or WebSocket messages received.
    pub messages: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Peers that vanished mid-conversation (RST, EPIPE): normal on the Internet, counted
    /// apart from errors.
    pub resets: u64,
    /// Connections closed by the idle, linger or shutdown timeout. (The header timeout is
    /// answered with a 408, counted in `errors`, and the connection then closes as usual.)
    pub timeouts: u64,
    /// Bad requests answered with an error status, and syscalls that failed otherwise.
    pub errors: u64,
    /// WebSocket clients the chat room closed (1008) because it held more than
    /// `--room-bytes` and they were the furthest behind.
    pub room_drops: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.connections += other.connections;
        self.rejected += other.rejected;
        self.requests += other.requests;
        self.messages += other.messages;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        self.room_drops += other.room_drops;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "connections={} rejected={} requests={} messages={} bytes_in={} bytes_out={} \
             resets={} timeouts={} errors={} room_drops={}",
            self.connections,
            self.rejected,
            self.requests,
            self.messages,
            self.bytes_in,
            self.bytes_out,
            self.resets,
            self.timeouts,
            self.errors,
            self.room_drops
        )
    }
}
