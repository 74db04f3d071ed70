//! The listening socket, built one syscall at a time with socket2.
//!
//! `std::net::TcpListener::bind` does all of this in one call and hides the choices; here
//! each step is visible, because each one is a decision:
//!
//! 1. `socket(2)`: a TCP socket of the address's family (IPv4 or IPv6).
//! 2. `SO_REUSEADDR`: after a restart, connections of the old process may sit in TIME_WAIT
//!    (on the side that closed first; Linux holds it 60 s, `TCP_TIMEWAIT_LEN`). Without this
//!    option `bind` fails with EADDRINUSE until they expire; with it, the new process can
//!    listen at once. Linux checks both sides: the TIME_WAIT connections must have had it
//!    too (`inet_bind_conflict`; accepted sockets inherit it from the listener), which they
//!    do, since sockloop always sets it. It never lets two live listeners share a port;
//!    that is what the next option is for.
//! 3. `SO_REUSEPORT` (when asked, and always with more than one loop): several sockets bind
//!    the same address, each with its own accept queue, and the kernel picks one for each
//!    incoming connection by a hash of its addresses and ports
//!    (`reuseport_select_sock_by_hash`). That spreads connections evenly on average, but it
//!    is blind to load: a busy loop gets its share, and a listener whose queue is full drops
//!    its share of SYNs while the others have room. Closing one listener resets the
//!    connections still waiting in its queue, unless `net.ipv4.tcp_migrate_req=1`.
//! 4. `bind(2)`, then `listen(2)` with the backlog: the length of the accept queue, where
//!    connections that finished the three-way handshake wait for `accept(2)` (Linux holds
//!    backlog + 1, `sk_acceptq_is_full`). When it is full, an arriving SYN is dropped and
//!    the client retransmits it (on Linux 6.18 once a second for the first few tries, then
//!    backing off; `tcp_syn_linear_timeouts`): `connect` just takes longer. A handshake
//!    whose last ACK finds the queue full is kept half-open and that ACK dropped, though
//!    the client already believes it is connected; only with
//!    `net.ipv4.tcp_abort_on_overflow=1` does the client get RST instead (`tcp_check_req`).
//!    Half-open connections wait in a second queue, capped by the same backlog; beyond it
//!    Linux answers with SYN cookies (`net.ipv4.tcp_syncookies=1`), keeping no state and
//!    rebuilding the connection from the client's final ACK. Cookies protect against SYN
//!    floods; they do not help a full accept queue, which drops the SYN either way. The
//!    kernel clamps the backlog to `net.core.somaxconn` without a word, so we read that
//!    value and say so (`listen(2)`, NOTES).
//! 5. `O_NONBLOCK`: `accept` must return EAGAIN rather than sleep, so the loop can go on.

use std::fs;
use std::io;
use std::net::SocketAddr;

use log::warn;
use socket2::{Domain, Protocol, Socket, Type};

/// A bound, listening, non-blocking socket and what the kernel made of our request.
#[derive(Debug)]
pub struct Listener {
    pub socket: mio::net::TcpListener,
    /// The address really bound: with port 0 the kernel picked the port.
    pub local_addr: SocketAddr,
    /// The backlog the kernel will really use: ours, clamped to somaxconn.
    pub effective_backlog: u32,
}

/// A failure to set up the listening socket, naming the address it was for.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub step: &'static str,
    pub source: io::Error,
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "cannot listen on {}: {} failed: {}",
            self.addr, self.step, self.source
        )
    }
}

impl std::error::Error for ListenError {}

/// Make a listening socket on `addr`, following the steps in the module comment.
pub fn listen(addr: SocketAddr, backlog: u32, reuse_port: bool) -> Result<Listener, ListenError> {
    let fail = |step| move |source| ListenError { addr, step, source };

    // socket2 opens the socket with SOCK_CLOEXEC, so no child process inherits it.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(fail("socket"))?;
    if addr.is_ipv6() {
        // Listen on IPv6 only: "[::]:8888" then means IPv6, and a separate IPv4 listener on
        // the same port stays possible. Linux's default (net.ipv6.bindv6only=0) would
        // otherwise claim the IPv4 port too.
        socket
            .set_only_v6(true)
            .map_err(fail("setsockopt(IPV6_V6ONLY)"))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(fail("setsockopt(SO_REUSEADDR)"))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(fail("setsockopt(SO_REUSEPORT)"))?;
    }
    // TCP_NODELAY turns off Nagle's algorithm (tcp(7)), which would hold a small answer back
    // until the previous one is acknowledged; our answers are already batched into one
    // write each. Set on the listener, it is inherited by every socket accept(2) returns
    // (Linux copies the listener into each new connection), which saves a setsockopt(2)
    // per connection.
    socket
        .set_tcp_nodelay(true)
        .map_err(fail("setsockopt(TCP_NODELAY)"))?;
    socket.bind(&addr.into()).map_err(fail("bind"))?;
    // listen(2) takes an int; a backlog past i32::MAX means "as long as the kernel allows".
    socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(fail("listen"))?;
    socket
        .set_nonblocking(true)
        .map_err(fail("fcntl(O_NONBLOCK)"))?;

    let local_addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let effective_backlog = match somaxconn() {
        Some(max) if backlog > max => {
            warn!(
                "backlog {backlog} is larger than net.core.somaxconn ({max}): \
                 the kernel uses {max}; raise it with `sysctl net.core.somaxconn={backlog}`"
            );
            max
        }
        _ => backlog,
    };
    let std_listener: std::net::TcpListener = socket.into();
    Ok(Listener {
        socket: mio::net::TcpListener::from_std(std_listener),
        local_addr,
        effective_backlog,
    })
}

/// `net.core.somaxconn`, the ceiling the kernel puts on every listen backlog (Linux only).
pub fn somaxconn() -> Option<u32> {
    fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The options as the kernel reports them back (getsockopt), for the start-up line: what we
/// asked for is one thing, what the socket really has is another.
pub fn describe_options(listener: &mio::net::TcpListener) -> String {
    let socket = socket2::SockRef::from(listener);
    let flag = |r: io::Result<bool>| match r {
        Ok(true) => "1",
        Ok(false) => "0",
        Err(_) => "?",
    };
    format!(
        "SO_REUSEADDR={} SO_REUSEPORT={} TCP_NODELAY={}",
        flag(socket.reuse_address()),
        flag(socket.reuse_port()),
        flag(socket.tcp_nodelay())
    )
}
