//! What the kernel says, read from outside the server: `/proc/net/tcp`, a client socket's
//! `TCP_INFO`, and the few lines of sockloop's own log that the lessons match.
#![allow(dead_code)] // not every test binary uses every helper

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sockloop::tcp_info::{self, TcpState};

/// One line of `/proc/net/tcp` (IPv4; the lessons' servers bind 127.0.0.1). The kernel
/// writes it in `get_tcp4_sock`, `get_openreq4` and `get_timewait4_sock`
/// (net/ipv4/tcp_ipv4.c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: TcpState,
    /// Bytes written and not acknowledged (0 for a listener or a TIME_WAIT entry).
    pub tx_queue: u32,
    /// Bytes received and not read; for a LISTEN entry, the connections waiting in its
    /// accept queue (`sk_ack_backlog`).
    pub rx_queue: u32,
    /// The socket's inode, as in `/proc/PID/fd/N -> socket:[INODE]`; 0 for TIME_WAIT and
    /// SYN_RECV entries, which belong to no descriptor.
    pub inode: u64,
}

/// Every IPv4 TCP socket the kernel lists.
pub fn proc_net_tcp() -> Vec<Entry> {
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (tx, rx) = fields.get(4)?.split_once(':')?;
    Some(Entry {
        local: parse_addr(fields.get(1)?)?,
        remote: parse_addr(fields.get(2)?)?,
        state: TcpState::from_kernel(u8::from_str_radix(fields.get(3)?, 16).ok()?),
        tx_queue: u32::from_str_radix(tx, 16).ok()?,
        rx_queue: u32::from_str_radix(rx, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90` → 127.0.0.1:8080 (the address is a little-endian u32 in hex).
fn parse_addr(field: &str) -> Option<SocketAddrV4> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_le_bytes()), port))
}

/// The entries whose local port is `port`: a server's listeners and its side of each
/// connection (accepted sockets keep the listener's port), TIME_WAIT included.
pub fn on_local_port(port: u16) -> Vec<Entry> {
    proc_net_tcp()
        .into_iter()
        .filter(|e| e.local.port() == port)
        .collect()
}

/// The entry for one connection, seen from the side whose address is `local`.
pub fn connection(local: SocketAddr, remote: SocketAddr) -> Option<Entry> {
    proc_net_tcp()
        .into_iter()
        .find(|e| SocketAddr::V4(e.local) == local && SocketAddr::V4(e.remote) == remote)
}

/// The LISTEN entries on `port`: one per listening socket (several with SO_REUSEPORT).
pub fn listeners(port: u16) -> Vec<Entry> {
    on_local_port(port)
        .into_iter()
        .filter(|e| e.state == TcpState::Listen)
        .collect()
}

/// Call `check` until it returns `Some`, every 10 ms, for at most `timeout`; then panic with
/// `what` and the last value seen. Every lesson waits this way: the kernel acts in softirq
/// context, a moment after the syscall, and this machine is shared.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The state a socket's own descriptor reports (`TCP_INFO`).
pub fn state_of(socket: impl AsFd) -> TcpState {
    tcp_info::state(socket).expect("getsockopt(TCP_INFO)")
}

/// Start a connection without waiting for the handshake: `connect(2)` on a non-blocking
/// socket returns EINPROGRESS at once, and the socket stays in SYN_SENT until a SYN-ACK.
pub fn connect_nonblocking(addr: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_nonblocking(true).expect("O_NONBLOCK");
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect: {e}"),
    }
    socket
}

/// The errno of a pending socket error (`getsockopt(SO_ERROR)`), which the kernel hands out
/// once; `None` when there is none.
pub fn pending_error(socket: &Socket) -> Option<i32> {
    socket
        .take_error()
        .expect("getsockopt(SO_ERROR)")
        .and_then(|e| e.raw_os_error())
}

/// A copy of the server process's descriptor for the socket with this inode, taken with
/// `pidfd_getfd(2)` (Linux 5.6; the caller needs ptrace rights over it, which root has), so
/// that the test can ask the kernel about the server's own listener.
pub fn borrow_from_process(pid: u32, inode: u64) -> io::Result<OwnedFd> {
    let target = format!("socket:[{inode}]");
    let fd_number = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(Result::ok)
        .find(|entry| {
            fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy() == target)
        })
        .and_then(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no fd for {target}")))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd(2) takes a pidfd, a descriptor number in that process and flags,
    // and returns a new descriptor in ours or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd_number,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd returned a descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// ----- sockloop's log -----
//
// The lessons match a few of the server's log lines. They are collected here, one function
// each, so that a rewording in the server changes one place.

/// `RUST_LOG=debug`: one line per accepted connection, "PEER: accepted as #KEY".
pub const ACCEPTED: &str = ": accepted as #";

/// The slab key in an "accepted as #KEY" line.
pub fn accepted_key(line: &str) -> Option<usize> {
    let rest = line.split(ACCEPTED).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `RUST_LOG=trace`: a write the kernel took only part of, "PEER: write → N of M bytes"
/// with N < M. Returns (N, M).
pub fn short_write(line: &str) -> Option<(usize, usize)> {
    let rest = line.split("write → ").nth(1)?;
    let mut words = rest.split_whitespace();
    let n: usize = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let m: usize = words.next()?.parse().ok()?;
    (words.next()? == "bytes" && n < m).then_some((n, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_net_tcp_line() {
        let line = "   1: 0100007F:1F90 0100007F:D2F0 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000";
        let entry = parse_line(line).unwrap();
        assert_eq!(entry.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(entry.remote.port(), 0xD2F0);
        assert_eq!(entry.state, TcpState::TimeWait);
        assert_eq!(entry.inode, 0);
    }

    #[test]
    fn matches_the_log_lines() {
        assert_eq!(
            accepted_key("[.. DEBUG sockloop::event_loop] 127.0.0.1:5: accepted as #12"),
            Some(12)
        );
        assert_eq!(
            short_write("127.0.0.1:5: write → 2048 of 65536 bytes"),
            Some((2048, 65536))
        );
        assert_eq!(short_write("127.0.0.1:5: write → 10 of 10 bytes"), None);
        assert_eq!(
            short_write("127.0.0.1:5: write → WouldBlock (10 bytes wait)"),
            None
        );
    }
}
