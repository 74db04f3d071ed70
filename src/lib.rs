//! sockloop: a readiness-loop server written to be read.
//!
//! # The map
//! - [`cli`]: the command line, and the [`Config`](cli::Config) every loop is built from.
//! - [`listener`]: the listening socket, made by hand with socket2: `socket`, `SO_REUSEADDR`,
//!   `SO_REUSEPORT`, `bind`, `listen(backlog)`.
//! - [`event_loop`]: the spine. One `mio::Poll`, one listener, a slab of connections; the only
//!   module that does I/O.
//! - [`connection`]: one client's socket, its pending bytes and what happens next.
//! - [`buffers`]: the pool that lends a connection a buffer only while it has bytes waiting.
//! - [`splice`]: `--splice`, echo without copying: socket → pipe → socket with `splice(2)`.
//! - [`timers`]: idle, header and linger deadlines as O(1) lists.
//! - [`protocol`]: echo, HTTP and WebSocket as pure functions of bytes, no socket in sight.
//! - [`server`]: starts one loop per thread and adds up their totals at exit.
//! - [`stats`]: the counters behind the exit line.
//!
//! # The path of one request
//! `accept(2)` in [`event_loop`] hands over a socket; it goes into the slab and is registered
//! with epoll once, for both directions. When epoll says it is readable, the loop reads into
//! its one scratch buffer until the kernel has nothing more; the bytes go to the
//! connection's [`protocol::Session`], which appends its answer to the loop's output buffer.
//! The loop writes that answer straight away; only if the kernel's send buffer is full does
//! the unsent tail move into a buffer of the connection's own, written when epoll says the
//! socket is writable again. When the session says so, or the peer leaves, the connection is
//! closed, in one place: [`event_loop`]'s `close`.

pub mod buffers;
pub mod cli;
pub mod connection;
pub mod event_loop;
pub mod listener;
pub mod protocol;
pub mod server;
pub mod splice;
pub mod stats;
pub mod tcp_info;
pub mod timers;
