//! A flood for the chat room's memory (issue 12): N WebSocket clients that never read, one
//! that sends big texts as fast as the server takes them, and two that chat through it all.
//! Every `--sample` seconds it prints the server's resident set size, and at the end
//! whether the chat went through. Loopback only; it stops by itself.
//!
//! ```text
//! sockloop --mode ws --addr 127.0.0.1:3000 &
//! cargo run --release --example room_flood -- --addr 127.0.0.1:3000 --server-pid $! \
//!     --stalled 1000 --seconds 25
//! ```
//!
//! - The stalled clients do the opening handshake and never read again. `--join during` has
//!   them join one by one over the first half of the run instead of before it, so that each
//!   stops at a different message. By default they ask for small kernel buffers (a 4 KiB
//!   receive buffer, and a 1000-byte MSS in their SYN, which keeps the server's send buffer
//!   for them small too): on loopback the server's send buffer for each would otherwise
//!   grow to about 1.3 MB, and 1,000 of them push the machine's TCP memory past
//!   `net.ipv4.tcp_mem`'s pressure mark, where the kernel shrinks every socket's buffers,
//!   the chatters' and every other program's included. It is also the harder test for
//!   sockloop: what the kernel does not take waits in sockloop's memory.
//!   `--kernel-buffers default` leaves the kernel's defaults.
//! - The sender writes one pre-masked text frame of `--size` bytes again and again, as fast
//!   as the slowest client that reads hears them: the server sends every client its own
//!   messages too, so a second thread reads them, and the writer keeps at most `--window`
//!   messages ahead of what it and each chatter have heard. That is full speed for a room
//!   whose readers keep up. A writer that does not wait runs ahead of every reader, and the
//!   room, which waits for nobody, closes a reader with 1008 once it is a message and its
//!   kernel buffers behind (`MAX_UNREAD`): at 300 MB/s that is some 15 to 35 ms, and on two
//!   shared cores a client descheduled for that long is not rare, stalled clients or not.
//! - The two chatters read everything; each says `chat N from A` (or `B`) in turn every
//!   `--chat-every` seconds, and each must hear every line, its own included.
//!
//! Output: a tab-separated line per sample (`t_s`, `rss_kib`, the kernel's TCP memory in
//! KiB from /proc/net/sockstat, messages sent, chat lines said, heard by A, heard by B),
//! then a `RESULT key=value …` line. The exit status is 1 if a chat line said more than two
//! seconds before the end was not heard by both chatters, or if a chatter was dropped.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[path = "shared/rlimit.rs"]
mod rlimit;
use rlimit::raise_descriptor_limit;

#[derive(Debug, Parser)]
#[command(about = "Flood sockloop's chat room while clients that never read hold on")]
struct Args {
    /// The ws server's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The server's process id, whose VmRSS is sampled.
    #[arg(long)]
    server_pid: u32,
    /// Clients that never read.
    #[arg(long, default_value_t = 1000)]
    stalled: usize,
    /// When the stalled clients join: all before the flood, or one by one during its first
    /// half.
    #[arg(long, value_enum, default_value_t = Join::Before)]
    join: Join,
    /// Bytes in each of the sender's messages.
    #[arg(long, default_value_t = 1 << 20)]
    size: usize,
    /// Seconds the flood lasts.
    #[arg(long, default_value_t = 25.0)]
    seconds: f64,
    /// Seconds between samples of the server's memory.
    #[arg(long, default_value_t = 0.5)]
    sample: f64,
    /// Seconds between two chat lines (the chatters take turns).
    #[arg(long, default_value_t = 1.0)]
    chat_every: f64,
    /// The stalled clients' kernel buffers.
    #[arg(long, value_enum, default_value_t = Buffers::Small)]
    kernel_buffers: Buffers,
    /// The sender's messages in flight: sent, and not yet heard by every client that reads.
    #[arg(long, default_value_t = 2)]
    window: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Buffers {
    Small,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Join {
    Before,
    During,
}

/// What the threads tell the sampler.
#[derive(Default)]
struct Counters {
    stop: AtomicBool,
    sent: AtomicU64,
    /// The sender's messages heard back.
    echoed: AtomicU64,
    stalled_open: AtomicUsize,
    chats_said: AtomicUsize,
    /// (chat number, said at seconds since the start) for every line said.
    said: Mutex<Vec<(usize, f64)>>,
    heard: [Mutex<HashSet<usize>>; 2],
    /// The flood's messages each chatter has heard.
    floods_heard: [AtomicU64; 2],
    dropped: [AtomicBool; 2],
    errors: Mutex<Vec<String>>,
}

impl Counters {
    /// How many of the flood's messages the slowest client that reads has heard: the
    /// sender, and each chatter still in the room.
    fn slowest_reader(&self) -> u64 {
        (0..2)
            .filter(|&who| !self.dropped[who].load(Ordering::Relaxed))
            .map(|who| self.floods_heard[who].load(Ordering::Relaxed))
            .fold(self.echoed.load(Ordering::Relaxed), u64::min)
    }

    fn error(&self, what: String) {
        eprintln!("room_flood: {what}");
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = raise_descriptor_limit(args.stalled + 64) {
        eprintln!("room_flood: {e}");
        return ExitCode::FAILURE;
    }
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let run = Duration::from_secs_f64(args.seconds);

    let mut stalled = Vec::with_capacity(args.stalled);
    if args.join == Join::Before {
        for _ in 0..args.stalled {
            match stalled_client(args.addr, args.kernel_buffers) {
                Ok(stream) => stalled.push(stream),
                Err(e) => counters.error(format!("a stalled client could not join: {e}")),
            }
        }
        counters
            .stalled_open
            .store(stalled.len(), Ordering::Relaxed);
    }
    let mut threads = Vec::new();
    let joiner = (args.join == Join::During).then(|| {
        let counters = Arc::clone(&counters);
        let (addr, count, over, buffers) = (args.addr, args.stalled, run / 2, args.kernel_buffers);
        thread::spawn(move || join_during(addr, count, over, buffers, &counters))
    });
    for who in 0..2 {
        let counters = Arc::clone(&counters);
        let (addr, size, every) = (args.addr, args.size, args.chat_every);
        threads.push(thread::spawn(move || {
            chat(addr, who, size, every, start, &counters)
        }));
    }
    match sender(args.addr, args.size, args.window, &counters) {
        Ok(sender_threads) => threads.extend(sender_threads),
        Err(e) => counters.error(format!("the sender could not join: {e}")),
    }

    println!("t_s\trss_kib\tkernel_tcp_kib\tsent\tchats_said\theard_a\theard_b\tstalled");
    let mut peak = 0;
    let every = Duration::from_secs_f64(args.sample);
    let mut next = start + every;
    while start.elapsed() < run {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        let rss = rss_kib(args.server_pid);
        peak = peak.max(rss);
        let heard = |who: usize| counters.heard[who].lock().map_or(0, |h| h.len());
        println!(
            "{:.1}\t{rss}\t{}\t{}\t{}\t{}\t{}\t{}",
            start.elapsed().as_secs_f64(),
            kernel_tcp_kib(),
            counters.sent.load(Ordering::Relaxed),
            counters.chats_said.load(Ordering::Relaxed),
            heard(0),
            heard(1),
            counters.stalled_open.load(Ordering::Relaxed),
        );
    }
    counters.stop.store(true, Ordering::Relaxed);
    let mut stalled_later = joiner.and_then(|j| j.join().ok()).unwrap_or_default();
    stalled.append(&mut stalled_later);
    for thread in threads {
        let _ = thread.join();
    }

    // Every line said at least two seconds before the end must have been heard by both.
    let said = counters.said.lock().map(|s| s.clone()).unwrap_or_default();
    let due: Vec<usize> = said
        .iter()
        .filter(|(_, at)| *at < args.seconds - 2.0)
        .map(|(n, _)| *n)
        .collect();
    let missed: Vec<(usize, usize)> = (0..2)
        .flat_map(|who| {
            let heard = counters.heard[who]
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default();
            due.iter()
                .filter(|n| !heard.contains(n))
                .map(|&n| (who, n))
                .collect::<Vec<_>>()
        })
        .collect();
    let dropped: Vec<bool> = (0..2)
        .map(|who| counters.dropped[who].load(Ordering::Relaxed))
        .collect();
    let errors = counters.errors.lock().map_or(0, |e| e.len());
    let chat_ok = missed.is_empty() && !dropped.contains(&true);
    println!(
        "RESULT stalled={} sent={} size={} peak_rss_kib={peak} final_rss_kib={} chats_due={} \
         missed={} chatter_dropped={} errors={errors} chat_ok={chat_ok}",
        stalled.len(),
        counters.sent.load(Ordering::Relaxed),
        args.size,
        rss_kib(args.server_pid),
        due.len(),
        missed.len(),
        dropped.contains(&true),
    );
    drop(stalled);
    if chat_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("room_flood: chat lines not heard (chatter, line): {missed:?}");
        ExitCode::FAILURE
    }
}

/// Connect, do the opening handshake by hand, read the answer's head, and never read again.
fn stalled_client(addr: SocketAddr, buffers: Buffers) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if buffers == Buffers::Small {
        // SO_RCVBUF turns the receive buffer's autotuning off; TCP_MAXSEG before connect(2)
        // is the MSS our SYN advertises, and the server's send buffer grows with the MSS
        // (tcp_sndbuf_expand).
        socket.set_recv_buffer_size(4096)?;
        socket.set_tcp_mss(1000)?;
    }
    socket.connect(&addr.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 101 ") {
        return Err(io::Error::other("no 101 Switching Protocols"));
    }
    Ok(stream)
}

/// `count` stalled clients, one at a time, spread evenly over `over`.
fn join_during(
    addr: SocketAddr,
    count: usize,
    over: Duration,
    buffers: Buffers,
    counters: &Counters,
) -> Vec<TcpStream> {
    let start = Instant::now();
    let mut stalled = Vec::with_capacity(count);
    for i in 0..count {
        if counters.stop.load(Ordering::Relaxed) {
            break;
        }
        let at = over.mul_f64(i as f64 / count as f64);
        thread::sleep(at.saturating_sub(start.elapsed()));
        match stalled_client(addr, buffers) {
            Ok(stream) => stalled.push(stream),
            Err(e) => counters.error(format!("a stalled client could not join: {e}")),
        }
        counters
            .stalled_open
            .store(stalled.len(), Ordering::Relaxed);
    }
    stalled
}

/// The sender: a thread that writes the same masked text frame for ever, `window` messages
/// ahead of what it has heard back, and one that reads the server's frames and counts its
/// messages among them.
fn sender(
    addr: SocketAddr,
    size: usize,
    window: u64,
    counters: &Arc<Counters>,
) -> io::Result<Vec<thread::JoinHandle<()>>> {
    let stream = stalled_client(addr, Buffers::Default)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    let frame = masked_text_frame(size);
    let write_counters = Arc::clone(counters);
    let write = thread::spawn(move || {
        let mut offset = 0;
        while !write_counters.stop.load(Ordering::Relaxed) {
            let sent = write_counters.sent.load(Ordering::Relaxed);
            if offset == 0 && sent >= write_counters.slowest_reader() + window {
                thread::sleep(Duration::from_micros(50));
                continue;
            }
            match writer.write(&frame[offset..]) {
                Ok(n) => {
                    offset += n;
                    if offset == frame.len() {
                        offset = 0;
                        write_counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if timed_out(&e) => {}
                Err(e) => {
                    write_counters.error(format!("sender: write: {e}"));
                    break;
                }
            }
        }
    });
    let read_counters = Arc::clone(counters);
    let read = thread::spawn(move || {
        let mut buffer = vec![0u8; 1 << 20];
        let mut frames = Frames::default();
        while !read_counters.stop.load(Ordering::Relaxed) {
            match reader.read(&mut buffer) {
                Ok(0) => {
                    read_counters.error("sender: the server closed it".to_string());
                    break;
                }
                Ok(n) => {
                    let seen = frames.feed(&buffer[..n], size);
                    let mine = seen.iter().filter(|s| matches!(s, Seen::Big)).count();
                    read_counters
                        .echoed
                        .fetch_add(mine as u64, Ordering::Relaxed);
                    if let Some(code) = seen.iter().find_map(|s| match s {
                        Seen::Close(code) => Some(*code),
                        _ => None,
                    }) {
                        read_counters.error(format!("sender: closed with {code}"));
                        break;
                    }
                }
                Err(e) if timed_out(&e) => {}
                Err(e) => {
                    read_counters.error(format!("sender: read: {e}"));
                    break;
                }
            }
        }
    });
    Ok(vec![write, read])
}

/// What a reader of the server's frames saw end.
enum Seen {
    /// A frame with a payload of the flood's size.
    Big,
    /// A small text frame: a chat line, or the greeting.
    Text(String),
    /// A close frame, with its code.
    Close(u16),
    Other,
}

/// Finds the server's frames in a stream of bytes (unmasked, RFC 6455 §5.2), keeping the
/// payloads of small ones only.
#[derive(Default)]
struct Frames {
    /// The header being read, until it is whole.
    header: Vec<u8>,
    opcode: u8,
    /// Payload bytes of the current frame still to come, its length, and the payload kept
    /// if it is small.
    payload_left: u64,
    payload_len: u64,
    payload: Vec<u8>,
}

/// Payloads up to this size are kept.
const SMALL: u64 = 4096;

impl Frames {
    /// Feed bytes; returns the frames that ended in them.
    fn feed(&mut self, mut bytes: &[u8], size: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64) as usize;
                if self.payload_len <= SMALL {
                    self.payload.extend_from_slice(&bytes[..take]);
                }
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                if self.payload_left == 0 {
                    seen.push(self.ended(size));
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let wanted = match self.header.get(1).map(|b| b & 0x7f) {
                None => continue,
                Some(126) => 4,
                Some(127) => 10,
                Some(_) => 2,
            };
            if self.header.len() < wanted {
                continue;
            }
            self.opcode = self.header[0] & 0x0f;
            self.payload_len = match wanted {
                4 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                10 => self.header[2..10]
                    .iter()
                    .fold(0, |len, b| len << 8 | u64::from(*b)),
                _ => u64::from(self.header[1] & 0x7f),
            };
            self.payload_left = self.payload_len;
            self.header.clear();
            if self.payload_len == 0 {
                seen.push(self.ended(size));
            }
        }
        seen
    }

    fn ended(&mut self, size: usize) -> Seen {
        let payload = std::mem::take(&mut self.payload);
        match self.opcode {
            0x1 if self.payload_len == size as u64 => Seen::Big,
            0x1 => Seen::Text(String::from_utf8_lossy(&payload).into_owned()),
            0x8 => Seen::Close(
                payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]])),
            ),
            _ => Seen::Other,
        }
    }
}

/// A client frame: FIN, text, masked (RFC 6455 §5.3: a client masks every frame), `size`
/// bytes of 'x'. Masked once here, so the sender costs nothing per message but the write.
fn masked_text_frame(size: usize) -> Vec<u8> {
    masked_text_frame_of(&vec![b'x'; size])
}

fn masked_text_frame_of(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let size = payload.len();
    let mut frame = vec![0x81];
    match size {
        0..=125 => frame.push(0x80 | size as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A chatter: reads everything; says a numbered line in its turn. It reads the frames raw
/// (`Frames`), keeping only the small ones: what it costs the client to copy and check
/// every megabyte would be measured instead of the server (on two cores, the flood's
/// readers and writer would need more than the one the server leaves them).
fn chat(
    addr: SocketAddr,
    who: usize,
    size: usize,
    every: f64,
    start: Instant,
    counters: &Counters,
) {
    let name = ["A", "B"][who];
    let dropped = |why: String| {
        counters.error(format!("chatter {name} {why}"));
        counters.dropped[who].store(true, Ordering::Relaxed);
    };
    let mut stream = match stalled_client(addr, Buffers::Default) {
        Ok(stream) => stream,
        Err(e) => return dropped(format!("could not join: {e}")),
    };
    if let Err(e) = stream.set_read_timeout(Some(Duration::from_millis(20))) {
        return dropped(format!("could not set a read timeout: {e}"));
    }
    let mut frames = Frames::default();
    let mut buffer = vec![0u8; 256 * 1024];
    // Chatter A says lines 0, 2, 4, … at 1, 3, 5, … times `every`; B the odd ones between.
    let mut next_line = who;
    while !counters.stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_secs_f64();
        if now >= (next_line + 1) as f64 * every {
            let line = format!("chat {next_line} from {name}");
            if let Err(e) = stream.write_all(&masked_text_frame_of(line.as_bytes())) {
                return dropped(format!("could not send: {e}"));
            }
            counters.chats_said.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut said) = counters.said.lock() {
                said.push((next_line, now));
            }
            next_line += 2;
        }
        let n = match stream.read(&mut buffer) {
            Ok(0) => return dropped("was closed without a close frame".to_string()),
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(e) => return dropped(format!("read: {e}")),
        };
        for frame in frames.feed(&buffer[..n], size) {
            match frame {
                Seen::Text(text) => {
                    let number = text
                        .strip_prefix("chat ")
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|n| n.parse().ok());
                    if let (Some(n), Ok(mut heard)) = (number, counters.heard[who].lock()) {
                        heard.insert(n);
                    }
                }
                Seen::Close(code) => return dropped(format!("was closed with {code}")),
                Seen::Big => {
                    counters.floods_heard[who].fetch_add(1, Ordering::Relaxed);
                }
                Seen::Other => {}
            }
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Memory the kernel holds for TCP sockets, all of them (`mem`, in pages, in
/// /proc/net/sockstat): the stalled clients' send and receive buffers live there, outside
/// any process's RSS.
fn kernel_tcp_kib() -> u64 {
    let sockstat = fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == "mem")?;
            fields.get(at + 1)?.parse().ok()
        })
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64 / 1024
}
