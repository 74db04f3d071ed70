//! Open N connections to a server and hold them idle, to measure what an idle connection
//! costs the server in memory.
//!
//! ```text
//! cargo run --release --example hold_conns -- --addr 127.0.0.1:8889 --conns 5000 \
//!     --http --hold 10
//! ```
//!
//! With `--http`, each connection first sends one `GET /` and reads the whole response, so
//! the server holds it as a keep-alive connection that has served a request (the usual idle
//! connection of a browser or a pool) rather than one that has sent nothing yet. Once every
//! connection is in place it prints `READY <n>` and holds them for `--hold` seconds, then
//! exits (closing them all). A script measures the server's RSS between `READY` and exit.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;

#[path = "shared/rlimit.rs"]
mod rlimit;
use rlimit::raise_descriptor_limit;

#[derive(Debug, Parser)]
#[command(about = "Open N connections, optionally make one HTTP request on each, hold them")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8889")]
    addr: SocketAddr,
    #[arg(long, default_value_t = 5000)]
    conns: usize,
    /// Send one HTTP request on each connection and read its response before holding it.
    #[arg(long)]
    http: bool,
    /// Seconds to hold the connections once they are all open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hold_conns: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    raise_descriptor_limit(args.conns + 64)?;
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", args.addr);
    let mut held = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let stream = TcpStream::connect(args.addr).map_err(|e| format!("connect #{i}: {e}"))?;
        held.push(stream);
    }
    if args.http {
        // All requests first, then all responses: the server answers them while we write.
        for (i, stream) in held.iter_mut().enumerate() {
            stream
                .write_all(request.as_bytes())
                .map_err(|e| format!("write #{i}: {e}"))?;
        }
        for (i, stream) in held.iter_mut().enumerate() {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            read_response(stream).map_err(|e| format!("response #{i}: {e}"))?;
        }
    }
    println!("READY {}", held.len());
    io::stdout().flush().map_err(|e| e.to_string())?;
    thread::sleep(Duration::from_secs_f64(args.hold));
    Ok(())
}

/// Read one response: the head up to the blank line, then Content-Length bytes of body.
fn read_response(stream: &mut TcpStream) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let status = head.lines().next().unwrap_or("").to_string();
        return Err(io::Error::other(format!("status line {status:?}")));
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Content-Length"))?;
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
