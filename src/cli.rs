//! The command line, and the [`Config`] the loops are built from.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Parser, ValueEnum};

use crate::protocol::{responses, ws, Mode};

/// A readiness-loop server written to be read: echo, HTTP and WebSocket modes on one mio loop.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Which protocol to speak.
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub mode: Mode,

    /// Address to listen on, IPv4 or IPv6 ("127.0.0.1:8888", "[::1]:8888"); port 0 picks a
    /// free port. [default: 127.0.0.1 and the mode's port: echo 8888, http 8889, ws 3000]
    #[arg(long)]
    pub addr: Option<SocketAddr>,

    /// Length of the accept queue passed to listen(2); the kernel clamps it to
    /// net.core.somaxconn.
    #[arg(long, default_value_t = 1024)]
    pub backlog: u32,

    /// Set SO_REUSEPORT on the listening socket (always on with --threads above 1).
    #[arg(long)]
    pub reuse_port: bool,

    /// Number of event loops, one per thread, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Most connections held open at once; beyond it a new one is accepted and closed at
    /// once (http and ws modes answer 503 first).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,

    /// Seconds without traffic after which a connection is closed.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub idle_timeout: Duration,

    /// Seconds a client has to finish sending a request head (http and ws modes); then 408.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,

    /// ws mode: the most the chat room may hold, over all loops, of messages that clients
    /// have not read yet: each message counted once however many clients hold it. Over it,
    /// the clients furthest behind are closed with 1008. The default is 64 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_ROOM_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub room_bytes: u64,

    /// Seconds that in-flight connections get to finish after SIGINT or SIGTERM.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,

    /// Serve this file's bytes as the page instead of the Hello World page (http mode);
    /// read once, at start-up.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,

    /// Content-Type of the page. [default: from the --body file's extension, else text/html]
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,

    /// ws mode: the largest message a client may send, in one frame or in fragments, in
    /// bytes (125 to 1 GiB); a bigger one gets close code 1009. A message is held whole,
    /// so each client may make the server hold about twice this.
    #[arg(long, value_name = "BYTES", default_value_t = ws::DEFAULT_MAX_MESSAGE,
          value_parser = clap::value_parser!(u32).range(i64::from(ws::MIN_MAX_MESSAGE)..=1 << 30))]
    pub max_message: u32,

    /// Echo mode: move bytes socket → pipe → socket with splice(2), without copying them.
    #[arg(long)]
    pub splice: bool,

    /// Log a report every SECONDS: per loop, connections, requests/s, bytes/s and CPU; with
    /// RUST_LOG=debug also every connection next to the kernel's TCP_INFO. SIGUSR1 asks for
    /// one at any time.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub stats: Option<Duration>,
}

/// `--room-bytes`' default. The room must hold a few whole messages for its slowest
/// readers, even at the largest `--max-message` a client may set (Autobahn's tests use
/// 16 MiB), and a healthy reader may be a message or two behind while its kernel buffers
/// drain: 64 messages of the default 1 MiB is well above that. And it is a small part of
/// the 10 to 20 GB that 10,000 clients (`--max-conns`), each allowed to fall 1 MiB and a
/// message behind, could make the room hold without a bound of its own.
pub const DEFAULT_ROOM_BYTES: u64 = 64 * 1024 * 1024;

/// `--mode`'s values, spelled as [`Mode::name`]. Written here rather than derived on `Mode`, so
/// that the protocols know nothing of the command line.
impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Mode] {
        &[Mode::Echo, Mode::Http, Mode::Ws]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Mode::Echo => "Write back exactly the bytes each client sends",
            Mode::Http => "Answer every HTTP/1.x request with one canned page",
            Mode::Ws => "Serve the chat page and run its WebSocket chat room",
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

/// Everything a loop needs, resolved from [`Args`]: defaults filled in, files read.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub backlog: u32,
    pub reuse_port: bool,
    pub threads: usize,
    pub max_conns: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// ws mode: the bound on the room's memory (`--room-bytes`, see `crate::broadcast`).
    pub room_bytes: usize,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Echo mode moves bytes with splice(2) (`--splice`, see `crate::splice`).
    pub splice: bool,
    /// ws mode: the largest message a client may send (`--max-message`).
    pub max_message: u32,
    /// How often to log a report (`--stats`), if at all.
    pub stats_every: Option<Duration>,
}

impl Args {
    /// Fill in defaults and read the body file. The error is one line for the user.
    pub fn resolve(self) -> Result<Config, String> {
        let addr = self.addr.unwrap_or(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            self.mode.default_port(),
        ));
        let (body, guessed_type) = match &self.body {
            Some(path) => {
                let bytes = fs::read(path)
                    .map_err(|e| format!("cannot read --body {}: {e}", path.display()))?;
                (bytes, content_type_for(path))
            }
            None => (
                responses::DEFAULT_BODY.to_vec(),
                responses::DEFAULT_CONTENT_TYPE,
            ),
        };
        let content_type = self
            .content_type
            .unwrap_or_else(|| guessed_type.to_string());
        if content_type.bytes().any(|b| b.is_ascii_control()) {
            return Err("--content-type must not contain control characters".to_string());
        }
        Ok(Config {
            mode: self.mode,
            addr,
            backlog: self.backlog,
            reuse_port: self.reuse_port || self.threads > 1,
            threads: usize::from(self.threads),
            max_conns: self.max_conns as usize,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            shutdown_timeout: self.shutdown_timeout,
            room_bytes: usize::try_from(self.room_bytes).unwrap_or(usize::MAX),
            body,
            content_type,
            splice: self.splice,
            max_message: self.max_message,
            stats_every: self.stats,
        })
    }
}

/// Seconds as a decimal number ("60", "0.5"), so tests can ask for short timeouts; at most
/// a day, so that a deadline computed as "now + timeout" cannot overflow.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    const MAX_SECONDS: f64 = 86_400.0;
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(format!("`{s}`: give 0 to {MAX_SECONDS} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration in seconds"))
}

/// A report interval: seconds, as `parse_seconds`, but more than zero.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_seconds(s)? {
        Duration::ZERO => Err(format!("`{s}`: give a number of seconds above 0")),
        interval => Ok(interval),
    }
}

/// The Content-Type for a file, from its extension: the handful a test page uses.
fn content_type_for(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}
