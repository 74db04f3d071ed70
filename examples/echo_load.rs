//! A load generator for `sockloop --mode echo`: N connections, each with one message of S
//! bytes in flight, for D seconds.
//!
//! ```text
//! cargo run --release --example echo_load -- --addr 127.0.0.1:8888 \
//!     --conns 50 --size 64 --duration 10 --server-pid "$(pgrep -n sockloop)"
//! ```
//!
//! One mio loop drives every connection, as the server does: on a 2-core machine with the
//! server on one core, a thread per connection would spend the other core switching between
//! threads instead of sending. Each connection writes its message, waits until the whole
//! message has come back (checking every byte), and writes the next one.
//!
//! It prints messages per second, MB/s of echoed payload (one direction, 10^6 bytes), and,
//! given `--server-pid`, the server's CPU time per message: the sum over the server's threads
//! of the first field of `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU, see
//! `Documentation/scheduler/sched-stats.rst`), before and after the run. Kernel time counts
//! too, and on loopback that includes the TCP work of delivering the server's replies.
//! The last line, `RESULT key=value …`, is for scripts.
//!
//! `--zero-copy` takes the client's own copies out of the picture: at 64 KiB a message they
//! are a third of its CPU time, and with one core for the client they, not the server, set
//! the rate. See `ZeroCopyPipe` and `discard`.

use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

#[derive(Debug, Parser)]
#[command(about = "Echo load generator: N connections, one S-byte message in flight on each")]
struct Args {
    /// The echo server's address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: SocketAddr,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to run, after every connection is established.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The server's process id, to report its CPU time per message.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Check only the first message on each connection instead of every one. Comparing
    /// 64 KiB costs the client a few microseconds a message, about a sixth of its CPU time,
    /// and at 64 KiB the client's CPU is what limits the rate.
    #[arg(long)]
    verify_first_only: bool,
    /// Send without copying (vmsplice(2) the message into a pipe, splice(2) the pipe into
    /// the socket) and receive without copying (recv(2) with MSG_TRUNC, which TCP answers
    /// by dropping the bytes in the kernel, tcp(7)), except for each connection's first
    /// message and every 16th after it, which are written, read and checked as usual. At
    /// 64 KiB the client's two copies per message are what limits the rate; without them,
    /// what is measured is the server.
    #[arg(long)]
    zero_copy: bool,
}

/// With --zero-copy, one message in this many on each connection is read and checked.
const ZERO_COPY_CHECK_EVERY: u64 = 16;

/// One connection: where it is in sending and receiving the current message.
struct Conn {
    stream: TcpStream,
    /// What this connection sends, over and over. Each connection's differs, so that bytes
    /// of one echoed on another would not compare equal.
    payload: &'static [u8],
    sent: usize,
    received: usize,
    /// Messages this connection has had back.
    done: u64,
    /// Compare what comes back with what was sent.
    verify: bool,
    /// `--zero-copy`: the pipe the message goes through on its way to the socket.
    pipe: Option<ZeroCopyPipe>,
}

/// A pipe holding pages of the message (vmsplice(2) maps them in, nothing is copied) on
/// their way into the socket. `in_pipe` bytes of the message sit in it, those right after
/// what has been sent.
struct ZeroCopyPipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    in_pipe: usize,
}

impl ZeroCopyPipe {
    fn new() -> io::Result<ZeroCopyPipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array with two new descriptors, or fails.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are new and ours alone.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Room for a whole 64 KiB message even in page-sized pieces; a failure only means
        // more, smaller splices.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        Ok(ZeroCopyPipe {
            read_end,
            write_end,
            in_pipe: 0,
        })
    }

    /// Send the start of `rest` (the unsent part of the message) into `socket`, as a
    /// write(2) would; returns the bytes the socket took.
    fn send(&mut self, socket: impl AsFd, rest: &[u8]) -> io::Result<usize> {
        if self.in_pipe == 0 {
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            // SAFETY: vmsplice reads the iovec during the call only, and it points into the
            // connection's payload, alive and readable. (Afterwards the pipe, then TCP, hold
            // references to the payload's pages until the bytes are acknowledged, on
            // loopback until they have been through the server and back: were the payload
            // changed meanwhile, the bytes sent would change with it. It never changes.)
            let n = unsafe {
                libc::vmsplice(self.write_end.as_raw_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK)
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            self.in_pipe = n as usize;
        }
        let n = sockloop::splice::splice(&self.read_end, socket, self.in_pipe)?;
        self.in_pipe -= n;
        Ok(n)
    }
}

/// `len` bytes that start on a page boundary, alive until the process exits. vmsplice(2)
/// hands the pipe whole pages where it can: 64 KiB from a page boundary is 16 pieces, from
/// anywhere else 17, one more fragment for TCP to carry in each direction.
fn page_aligned(len: usize) -> &'static mut [u8] {
    const PAGE: usize = 4096;
    let buffer = Vec::leak(vec![0u8; len + PAGE]);
    let start = buffer.as_ptr().align_offset(PAGE).min(PAGE);
    &mut buffer[start..start + len]
}

/// recv(2) with MSG_TRUNC: TCP drops up to `len` received bytes without copying them.
fn discard(socket: RawFd, scratch: &mut [u8], len: usize) -> io::Result<usize> {
    // SAFETY: `scratch` is valid for `len` bytes (the kernel does not write to it anyway).
    let n = unsafe { libc::recv(socket, scratch.as_mut_ptr().cast(), len, libc::MSG_TRUNC) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What went wrong on a connection; any of these ends the run.
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    /// The server closed the connection (read returned 0) mid-run.
    Closed,
    /// The server sent back bytes we did not send.
    Corrupt {
        at: usize,
    },
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("echo_load: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.conns == 0 || args.size == 0 {
        return Err("--conns and --size must be above 0".to_string());
    }
    let mut scratch = vec![0u8; 64 * 1024];

    let mut poll = Poll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        // A blocking connect keeps this simple: N connections to loopback take milliseconds.
        let std_stream = std::net::TcpStream::connect(args.addr)
            .map_err(|e| format!("connect {} (#{i}): {e}", args.addr))?;
        std_stream.set_nodelay(true).map_err(|e| e.to_string())?;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        let pipe = if args.zero_copy {
            Some(ZeroCopyPipe::new().map_err(|e| format!("pipe2: {e}"))?)
        } else {
            None
        };
        // A pattern that does not repeat every 256 bytes, so a reordered chunk is noticed,
        // shifted by the connection's number.
        let payload = page_aligned(args.size);
        for (j, byte) in payload.iter_mut().enumerate() {
            *byte = ((j + i * 97) % 251) as u8;
        }
        conns.push(Conn {
            stream,
            payload,
            sent: 0,
            received: 0,
            done: 0,
            verify: true,
            pipe,
        });
    }

    let server_cpu_before = args.server_pid.map(cpu_ns_of_process).transpose()?;
    let client_cpu_before = cpu_ns_of_process(std::process::id())?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut messages: u64 = 0;

    // Start every connection's first message; from then on, events drive them.
    for conn in &mut conns {
        if let Err(f) = drive(
            conn,
            &mut scratch,
            &mut messages,
            false,
            args.verify_first_only,
        ) {
            return Err(describe(f));
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut stopping = false;
    let mut in_flight = conns.len();
    while in_flight > 0 {
        let now = Instant::now();
        if !stopping && now >= deadline {
            // No new messages from here on; the ones in flight finish (and are counted) so
            // that the server is idle when we read its CPU time.
            stopping = true;
        }
        let timeout = if stopping {
            Duration::from_secs(5)
        } else {
            deadline - now
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        if stopping && events.is_empty() {
            return Err(format!(
                "{in_flight} messages still unanswered 5 s after the end"
            ));
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if conn.sent == 0 {
                continue; // already finished its last message
            }
            match drive(
                conn,
                &mut scratch,
                &mut messages,
                stopping,
                args.verify_first_only,
            ) {
                Ok(true) => in_flight -= 1,
                Ok(false) => {}
                Err(f) => return Err(describe(f)),
            }
        }
        if !stopping && Instant::now() >= deadline {
            stopping = true;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client_cpu = cpu_ns_of_process(std::process::id())? - client_cpu_before;
    let server_cpu = match (args.server_pid, server_cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_ns_of_process(pid)? - before),
        _ => None,
    };

    let msgs_per_s = messages as f64 / elapsed;
    let mb_per_s = messages as f64 * args.size as f64 / elapsed / 1e6;
    println!(
        "{} conns x {} B, {:.2} s: {} messages, {:.0} msgs/s, {:.1} MB/s ({:.3} GB/s) echoed",
        args.conns,
        args.size,
        elapsed,
        messages,
        msgs_per_s,
        mb_per_s,
        mb_per_s / 1e3
    );
    println!(
        "client CPU: {:.0}% of one core, {:.0} ns per message",
        client_cpu as f64 / elapsed / 1e7,
        client_cpu as f64 / messages.max(1) as f64
    );
    let server_ns_per_msg = server_cpu.map(|ns| ns as f64 / messages.max(1) as f64);
    if let (Some(ns), Some(per_msg)) = (server_cpu, server_ns_per_msg) {
        println!(
            "server CPU: {:.0}% of one core, {:.0} ns per message",
            ns as f64 / elapsed / 1e7,
            per_msg
        );
    }
    println!(
        "RESULT conns={} size={} seconds={:.3} messages={} msgs_per_s={:.0} mb_per_s={:.1} \
         server_cpu_ns_per_msg={} client_cpu_ns_per_msg={:.0}",
        args.conns,
        args.size,
        elapsed,
        messages,
        msgs_per_s,
        mb_per_s,
        server_ns_per_msg.map_or_else(|| "-".to_string(), |v| format!("{v:.0}")),
        client_cpu as f64 / messages.max(1) as f64
    );
    Ok(())
}

/// Move one connection forward until the kernel says WouldBlock. Returns true once the
/// connection has finished its last message (after `stopping`).
///
/// Writing and reading are both tried while a message is only partly sent: a 64 KiB
/// message does not fit the socket buffers in one go, and the server echoes the first
/// part before we have sent the last, so we must read while we write or both sides block.
fn drive(
    conn: &mut Conn,
    scratch: &mut [u8],
    messages: &mut u64,
    stopping: bool,
    verify_first_only: bool,
) -> Result<bool, Failure> {
    loop {
        // 1. Send what is left of the message.
        let mut write_blocked = false;
        let started_now = conn.sent == 0;
        while conn.sent < conn.payload.len() {
            let rest = &conn.payload[conn.sent..];
            let sent = match conn.pipe.as_mut() {
                Some(pipe) if !conn.verify => pipe.send(&conn.stream, rest),
                _ => conn.stream.write(rest),
            };
            match sent {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    write_blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A message sent whole in this call cannot have been answered yet: skip the read
        // that would only say EAGAIN. The reply is a new edge, and epoll reports it.
        if started_now && !write_blocked {
            return Ok(false);
        }

        // 2. Read what has come back.
        let want = conn.sent - conn.received;
        if want == 0 {
            return Ok(false); // blocked writing, nothing owed to us
        }
        let len = want.min(scratch.len());
        let got = if conn.pipe.is_some() && !conn.verify {
            discard(conn.stream.as_raw_fd(), scratch, len)
        } else {
            conn.stream.read(&mut scratch[..len])
        };
        match got {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => {
                let expected = &conn.payload[conn.received..conn.received + n];
                if conn.verify && scratch[..n] != *expected {
                    let at = conn.received
                        + scratch[..n]
                            .iter()
                            .zip(expected)
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                    return Err(Failure::Corrupt { at });
                }
                conn.received += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }

        // 3. A whole message is back: count it and start the next.
        if conn.received == conn.payload.len() {
            *messages += 1;
            conn.done += 1;
            conn.received = 0;
            conn.verify = match conn.pipe {
                Some(_) => conn.done % ZERO_COPY_CHECK_EVERY == 0,
                None => !verify_first_only,
            };
            if stopping {
                conn.sent = 0;
                return Ok(true);
            }
            conn.sent = 0;
        }
    }
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Io(e) => format!("connection failed: {e}"),
        Failure::Closed => "the server closed a connection".to_string(),
        Failure::Corrupt { at } => format!("echoed bytes differ from those sent, at offset {at}"),
    }
}

/// Nanoseconds on a CPU of every thread of a process: the first field of each
/// `/proc/PID/task/TID/schedstat`. A thread that exits between listing and reading is
/// skipped (its time is lost, which for a server under test means a thread died anyway).
fn cpu_ns_of_process(pid: u32) -> Result<u64, String> {
    let tasks = format!("/proc/{pid}/task");
    let entries = fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?;
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let on_cpu = text.split_whitespace().next().and_then(|f| f.parse().ok());
        total += on_cpu.unwrap_or(0u64);
    }
    Ok(total)
}
