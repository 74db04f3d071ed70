//! sockloop: a readiness-loop server written to be read.
//!
//! # The map
//! - [`cli`]: the command line, and the [`Config`](cli::Config) every loop is built from.
//! - [`server`]: start-up and exit: binds the listeners, runs one loop per thread, adds up
//!   their totals.
//! - [`listener`]: the listening socket, made by hand with socket2: `socket`, `SO_REUSEADDR`,
//!   `SO_REUSEPORT`, `bind`, `listen(backlog)`.
//! - [`event_loop`]: the spine. One `mio::Poll`, one listener, a slab of connections. Its
//!   folder: `mod.rs` (the loop, `before_sleep`, the one close door), `accept.rs`, `io.rs`
//!   (one connection moved forward), `signals.rs`, `room.rs` (ws broadcasts), `report.rs`
//!   (SIGUSR1, `--stats`), `token.rs`.
//! - [`connection`]: one client: its socket, the bytes we hold for it, what happens next;
//!   `session.rs` beside it, what passes between it and its protocol session.
//! - [`output`]: what a connection owes its peer, a queue of its own bytes and the room's
//!   shared frames, written with one `sendmsg(2)` of many iovecs.
//! - [`broadcast`]: a chat message's frame, one in memory however many clients send it,
//!   and the room's count of what it holds (`--room-bytes`).
//! - [`scratch`]: the loop's working memory, lent to one connection at a time.
//! - [`buffers`]: the pool that lends a connection a buffer only while it has bytes waiting.
//! - [`splice`]: `--splice`, echo without copying: socket → pipe → socket with `splice(2)`.
//! - [`timers`]: idle, header and linger deadlines as O(1) lists.
//! - [`protocol`]: echo, HTTP and WebSocket as pure functions of bytes, no socket in sight;
//!   `responses.rs` holds the canned answers both HTTP and ws send; `http/` reads request
//!   heads (`head.rs`, `grammar.rs`) and bodies (`body.rs`, `chunked/`); `ws/` runs the chat
//!   room's protocol (`mod.rs`) and its frames (`frames.rs`).
//! - [`tcp_info`]: the kernel's own view of a TCP socket (`TCP_INFO`, `SIOCINQ`,
//!   `SIOCOUTQ`), for the trace and the reports.
//! - [`stats`]: the counters behind the exit line.
//!
//! # The path of one request
//! 1. `server::run` binds the listener (`listener::listen`) and starts `EventLoop::run`
//!    (`event_loop/mod.rs`), which sleeps in `epoll_wait`.
//! 2. The listener is readable: `EventLoop::accept` (`event_loop/accept.rs`) takes every
//!    queued connection; `admit` puts each in the slab under a token (`token.rs`) and
//!    registers it with epoll once, for both directions.
//! 3. The socket is readable: `on_connection_event` notes it (`Connection::note_event`) and
//!    `drive` gives the connection a turn: `Turn::advance` (`event_loop/io.rs`), a short list
//!    of verbs. `read_once` reads into the loop's one read buffer ([`scratch`]);
//!    `hand_to_protocol` passes the bytes to `Connection::offer`, which calls the
//!    connection's [`protocol::Session`]; the session appends its answer to the loop's output
//!    buffer.
//! 4. `write_what_we_owe` writes that answer straight away; only if the kernel's send buffer
//!    is full does the unsent tail move into the connection's output queue
//!    (`Connection::queue_output`, [`output`]), written when epoll says the socket is
//!    writable again.
//! 5. When the session says so, or the peer sends FIN, `finish_flushing` sends our FIN with
//!    `shutdown(SHUT_WR)` and the connection lingers until the peer's; then
//!    `EventLoop::close` (`event_loop/mod.rs`), the one place a connection ends, drops the
//!    socket, which is `close(2)`.

pub mod broadcast;
pub mod buffers;
pub mod cli;
pub mod connection;
pub mod event_loop;
pub mod listener;
pub mod output;
pub mod protocol;
pub mod scratch;
pub mod server;
pub mod splice;
pub mod stats;
pub mod tcp_info;
pub mod timers;
