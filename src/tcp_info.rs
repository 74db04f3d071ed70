//! The kernel's own view of one TCP socket: its state, round-trip time, congestion window,
//! and the bytes queued each way.
//!
//! sockloop's phases (`Open`, `Flushing`, `Lingering`) are our belief about a connection;
//! this module asks the kernel, so that a trace line can print both side by side:
//!
//! - `getsockopt(IPPROTO_TCP, TCP_INFO)` (`tcp(7)`) fills a `struct tcp_info`
//!   (`tcp_get_info`, net/ipv4/tcp.c). We keep the fields that teach something.
//! - `ioctl(SIOCINQ)`: bytes received and not yet read (`tcp_inq`: the FIN is not counted).
//! - `ioctl(SIOCOUTQ)`: bytes written and not yet *acknowledged* by the peer, sent or not
//!   (`tcp_ioctl`: `write_seq - snd_una`).
//!
//! One surprise worth knowing before reading a trace: after we send FIN first
//! (`shutdown(SHUT_WR)`, FIN_WAIT2), the peer's FIN makes the kernel move the connection into
//! a separate TIME_WAIT socket (`tcp_fin` → `tcp_time_wait`) and leave ours in CLOSE
//! (`tcp_done`). So `TCP_INFO` on our still-open descriptor says CLOSE, while `ss` and
//! `/proc/net/tcp` show the same 4-tuple in TIME_WAIT. The tests below show it.
//!
//! rustix (1.1) wraps FIONREAD, which is SIOCINQ, but neither TCP_INFO nor SIOCOUTQ, so
//! those two go through libc, each in one small `unsafe` block.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

/// A TCP state, numbered as the kernel numbers them (`include/net/tcp_states.h`), which is
/// what `tcpi_state` and the `st` column of `/proc/net/tcp` hold. Named as the kernel does,
/// which is RFC 793's name with an underscore (RFC 793's CLOSED is the kernel's CLOSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    /// A request socket: a SYN answered, the handshake not finished (never on a descriptor).
    NewSynRecv,
    /// Bound, neither listening nor connected (Linux 6.5 on; shown by sock_diag only).
    BoundInactive,
    /// A number this code does not know: a newer kernel.
    Unknown(u8),
}

impl TcpState {
    pub fn from_kernel(n: u8) -> TcpState {
        match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            12 => TcpState::NewSynRecv,
            13 => TcpState::BoundInactive,
            n => TcpState::Unknown(n),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
            TcpState::BoundInactive => "BOUND_INACTIVE",
            TcpState::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TcpState::Unknown(n) => write!(f, "UNKNOWN({n})"),
            state => f.write_str(state.name()),
        }
    }
}

/// What the kernel holds for one TCP socket at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub state: TcpState,
    /// Smoothed round-trip time (`tcpi_rtt`, kept in microseconds). Zero before the first
    /// measurement.
    pub rtt: Duration,
    /// Congestion window, in segments (`tcpi_snd_cwnd`).
    pub cwnd: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Segments retransmitted and not yet acknowledged (`tcpi_retrans`): usually 0 between
    /// losses.
    pub retrans: u32,
    /// Retransmissions over the connection's life (`tcpi_total_retrans`), SYNs included.
    pub total_retrans: u32,
    pub queues: Queues,
}

/// Bytes waiting each way. A listener has no byte streams, and the kernel refuses the ioctls
/// on it (EINVAL, `tcp_ioctl`); for it `TCP_INFO` reports its accept queue instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queues {
    Connection {
        /// Received, not yet read (`SIOCINQ`).
        inq: u32,
        /// Written, not yet acknowledged by the peer (`SIOCOUTQ`).
        outq: u32,
    },
    /// `tcp_get_info` reuses two fields for listeners: `tcpi_unacked` is the number of
    /// connections waiting for accept(2), `tcpi_sacked` the limit (the backlog after the
    /// somaxconn clamp; the queue really holds one more).
    Listener { accept_queue: u32, backlog: u32 },
}

impl fmt::Display for Snapshot {
    /// One compact line for a trace: `kernel: CLOSE_WAIT rtt=45us cwnd=10 unacked=0
    /// retrans=0/0 inq=0 outq=0` (retransmitted segments in flight / over the connection's
    /// life), or for a listener `kernel: LISTEN accept_queue=5/4`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "kernel: {}", self.state)?;
        match self.queues {
            Queues::Listener {
                accept_queue,
                backlog,
            } => write!(f, " accept_queue={accept_queue}/{backlog}"),
            Queues::Connection { inq, outq } => write!(
                f,
                " rtt={}us cwnd={} unacked={} retrans={}/{} inq={inq} outq={outq}",
                self.rtt.as_micros(),
                self.cwnd,
                self.unacked,
                self.retrans,
                self.total_retrans,
            ),
        }
    }
}

/// The kernel's view of a socket, asked for only when formatted. Inside a `trace!` the
/// syscalls are made only when the line is really written: with trace logging off, the
/// macro never formats its arguments and this costs nothing.
pub struct Kernel<'a>(pub BorrowedFd<'a>);

impl fmt::Display for Kernel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        Taken(&snapshot(self.0)).fmt(f)
    }
}

/// A snapshot already taken, or why it could not be, shown as `Kernel` shows one: for a
/// trace line that also reads the state, so that both come from the same moment.
pub struct Taken<'a>(pub &'a io::Result<Snapshot>);

impl fmt::Display for Taken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Ok(snapshot) => snapshot.fmt(f),
            Err(e) => write!(f, "kernel: ? ({e})"),
        }
    }
}

/// Ask the kernel about `socket`, which must be a TCP socket (a connection or a listener).
pub fn snapshot(socket: impl AsFd) -> io::Result<Snapshot> {
    let fd = socket.as_fd();
    let info = tcp_info(fd)?;
    let state = TcpState::from_kernel(info.tcpi_state);
    let queues = if state == TcpState::Listen {
        Queues::Listener {
            accept_queue: info.tcpi_unacked,
            backlog: info.tcpi_sacked,
        }
    } else {
        Queues::Connection {
            inq: unread_bytes(fd)?,
            outq: unacknowledged_bytes(fd)?,
        }
    };
    Ok(Snapshot {
        state,
        rtt: Duration::from_micros(u64::from(info.tcpi_rtt)),
        cwnd: info.tcpi_snd_cwnd,
        unacked: info.tcpi_unacked,
        retrans: info.tcpi_retrans,
        total_retrans: info.tcpi_total_retrans,
        queues,
    })
}

/// Only the state: one getsockopt(2), no ioctl.
pub fn state(socket: impl AsFd) -> io::Result<TcpState> {
    Ok(TcpState::from_kernel(tcp_info(socket.as_fd())?.tcpi_state))
}

/// `getsockopt(fd, IPPROTO_TCP, TCP_INFO)`.
fn tcp_info(fd: BorrowedFd) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    // The kernel copies min(len, its own struct's size) bytes and writes back how many
    // (`do_tcp_getsockopt`): an older kernel fills a prefix and the rest stays zero, a newer
    // one stops at our size.
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a descriptor we borrow for the length of the call; `info` is a
    // writable, aligned `tcp_info` and `len` says exactly how many bytes of it the kernel may
    // write.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// `ioctl(SIOCINQ)`: bytes received and not yet read. Linux's `SIOCINQ` is `FIONREAD`
/// (include/uapi/linux/sockios.h).
pub fn unread_bytes(socket: impl AsFd) -> io::Result<u32> {
    let unread = rustix::io::ioctl_fionread(socket)?;
    Ok(u32::try_from(unread).unwrap_or(u32::MAX))
}

/// `ioctl(SIOCOUTQ)`: bytes written and not yet acknowledged. Linux's `SIOCOUTQ` is
/// `TIOCOUTQ` (include/uapi/linux/sockios.h).
pub fn unacknowledged_bytes(socket: impl AsFd) -> io::Result<u32> {
    int_ioctl(socket.as_fd(), libc::TIOCOUTQ)
}

/// An ioctl that writes one `int` through its pointer argument (SIOCOUTQ's kind).
fn int_ioctl(fd: BorrowedFd, request: libc::Ioctl) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: `fd` is borrowed for the call; the request used here makes the kernel write
    // one int (`sk_ioctl` copies `sizeof(int)` to the pointer), and `value` is one.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut value as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel's counts are never negative; say 0 rather than wrap if one ever were.
    Ok(u32::try_from(value).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    //! Each test makes a loopback pair and watches the kernel move it through the states.
    //! States change in softirq context, a moment after the syscall that caused them, so
    //! every check polls until the expected state (within a generous bound) rather than
    //! assuming it is there at once.

    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::thread;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Poll `socket`'s state until it is `want` (5 s at most); returns the last seen.
    fn wait_for_state(socket: &TcpStream, want: TcpState) -> TcpState {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = state(socket).unwrap();
            if now == want || Instant::now() > deadline {
                return now;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The `st` column of `/proc/net/tcp` for the socket with these local and remote ports.
    fn proc_net_tcp_state(local_port: u16, remote_port: u16) -> Option<TcpState> {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hit = port(fields.get(1)?)? == local_port && port(fields.get(2)?)? == remote_port;
            let st = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            hit.then_some(TcpState::from_kernel(st))
        })
    }

    #[test]
    fn a_fresh_pair_is_established_on_both_sides() {
        let (client, server) = pair();
        assert_eq!(
            wait_for_state(&client, TcpState::Established),
            TcpState::Established
        );
        let view = snapshot(&server).unwrap();
        assert_eq!(view.state, TcpState::Established);
        assert_eq!(view.queues, Queues::Connection { inq: 0, outq: 0 });
        assert!(view.cwnd > 0, "{view}");
        let line = view.to_string();
        assert!(line.starts_with("kernel: ESTABLISHED rtt="), "{line}");
        assert!(line.ends_with(" inq=0 outq=0"), "{line}");
    }

    #[test]
    fn when_the_peer_closes_first_we_are_in_close_wait() {
        let (client, server) = pair();
        drop(client); // its FIN
        assert_eq!(
            wait_for_state(&server, TcpState::CloseWait),
            TcpState::CloseWait
        );
    }

    #[test]
    fn after_our_shutdown_is_acknowledged_we_are_in_fin_wait2() {
        let (client, server) = pair();
        server.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            wait_for_state(&server, TcpState::FinWait2),
            TcpState::FinWait2
        );
        assert_eq!(
            wait_for_state(&client, TcpState::CloseWait),
            TcpState::CloseWait
        );
    }

    /// The suspicion of issue 11, shown: FIN_WAIT2 + the peer's FIN → `tcp_time_wait`, which
    /// hashes a separate timewait socket in our place and calls `tcp_done` on ours. Our fd
    /// says CLOSE; the kernel's table says TIME_WAIT; bytes sent before the FIN are still
    /// readable.
    #[test]
    fn after_our_fin_the_peers_fin_leaves_our_fd_closed_and_a_time_wait_in_the_table() {
        let (mut client, mut server) = pair();
        server.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            wait_for_state(&server, TcpState::FinWait2),
            TcpState::FinWait2
        );
        let server_port = server.local_addr().unwrap().port();
        let client_port = client.local_addr().unwrap().port();

        client.write_all(b"bye").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(wait_for_state(&server, TcpState::Close), TcpState::Close);
        assert_eq!(
            proc_net_tcp_state(server_port, client_port),
            Some(TcpState::TimeWait),
            "the table should hold the 4-tuple in TIME_WAIT"
        );
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
    }

    #[test]
    fn siocinq_counts_the_bytes_not_yet_read() {
        let (mut client, mut server) = pair();
        client.write_all(b"hello").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while unread_bytes(&server).unwrap() < 5 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(unread_bytes(&server).unwrap(), 5);
        let mut two = [0u8; 2];
        server.read_exact(&mut two).unwrap();
        assert_eq!(unread_bytes(&server).unwrap(), 3);
        // The FIN takes a sequence number but is not a byte to read (`tcp_inq`).
        drop(client);
        assert_eq!(
            wait_for_state(&server, TcpState::CloseWait),
            TcpState::CloseWait
        );
        assert_eq!(unread_bytes(&server).unwrap(), 3);
    }

    #[test]
    fn siocoutq_counts_what_a_peer_that_does_not_read_has_not_acknowledged() {
        let (_client, server) = pair();
        server.set_nonblocking(true).unwrap();
        // Fill the client's receive buffer and then our send buffer, until EAGAIN.
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match (&server).write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
            assert!(written < 512 << 20, "the kernel never said EAGAIN");
        }
        let view = snapshot(&server).unwrap();
        let Queues::Connection { outq, .. } = view.queues else {
            panic!("{view}")
        };
        assert!(outq > 0, "{view}");
        assert!(outq as usize <= written, "{view}, {written} written");
    }

    #[test]
    fn a_listener_reports_its_accept_queue() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // std listens with a backlog of 128; somaxconn may clamp it lower.
        let addr = listener.local_addr().unwrap();
        let _waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The server's side of a handshake completes when the last ACK is processed, a
        // moment after the client's connect returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut view = snapshot(&listener).unwrap();
        while matches!(view.queues, Queues::Listener { accept_queue, .. } if accept_queue < 3)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
            view = snapshot(&listener).unwrap();
        }
        assert_eq!(view.state, TcpState::Listen);
        let Queues::Listener {
            accept_queue,
            backlog,
        } = view.queues
        else {
            panic!("{view}")
        };
        assert_eq!(accept_queue, 3, "{view}");
        assert!(backlog >= 3, "{view}");
        assert!(view
            .to_string()
            .starts_with("kernel: LISTEN accept_queue=3/"));
    }

    #[test]
    fn a_socket_that_is_not_tcp_is_an_error_not_a_guess() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(snapshot(&a).is_err());
    }
}
