//! The seed notes' `client.c`, done in Rust: read a line from stdin, send it to the echo
//! server, print the reply; stop at the end of stdin.
//!
//! ```text
//! cargo run --release -- --mode echo        # one terminal: the server, on 127.0.0.1:8888
//! cargo run --example echo_client           # another: type lines, read the replies
//! printf 'hello\nworld\n' | cargo run --example echo_client -- --addr 127.0.0.1:8888
//! ```
//!
//! # What the C client gets wrong
//! TCP carries a stream of bytes, not messages. The C client sends a word and then calls
//! `recv(sock, server_reply, 2000, 0)` once, as if one `recv` returned one reply. It returns
//! whatever has arrived by then: a reply can come in several pieces (a long line, a busy
//! server, a small receive window), and then the rest of it turns up as the "reply" to the
//! next word. An echo server sends back exactly as many bytes as it got, so this client
//! reads until it has that many (`read_reply`). The C client has three smaller slips too:
//! it prints the reply with `puts`, which wants a NUL that `recv` never writes (stale bytes
//! of a longer earlier reply show after a short one); it ignores `recv` returning 0, which
//! means the server closed; and at the end of stdin `scanf` fails and leaves the last word
//! in the buffer, so it sends that word again for ever.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;

use clap::Parser;

/// Send each line of stdin to an echo server and print what comes back.
#[derive(Debug, Parser)]
struct Args {
    /// The echo server to talk to (`sockloop --mode echo` listens here by default).
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: SocketAddr,
}

/// A long line goes out in pieces of this size, each read back before the next is sent.
/// Sending a many-megabyte line whole before reading would deadlock: the server stops
/// reading from a client that does not read its echo (backpressure), our send then blocks,
/// and we never get to read. One piece in flight is always within the server's bound.
const PIECE: usize = 64 * 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    match talk(args.addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn talk(addr: SocketAddr) -> io::Result<()> {
    let mut server = TcpStream::connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
    eprintln!("Connected to {addr}");

    let stdin = io::stdin();
    // The C client always prompts; with stdin from a pipe the prompt only clutters stdout.
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut stdout = io::stdout().lock();
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        if interactive {
            write!(stdout, "Enter message : ")?;
            stdout.flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            // End of stdin. Dropping the stream closes it: with nothing unread, close(2)
            // sends a FIN and the server, reading end-of-file, closes its side too.
            return Ok(());
        }
        reply.clear();
        for piece in line.chunks(PIECE) {
            server.write_all(piece)?;
            let start = reply.len();
            reply.resize(start + piece.len(), 0);
            read_reply(&mut server, &mut reply[start..])?;
        }
        writeln!(stdout, "Server reply :")?;
        stdout.write_all(&reply)?;
        if !reply.ends_with(b"\n") {
            writeln!(stdout)?;
        }
        stdout.flush()?;
    }
}

/// Fill `reply` exactly: as many bytes as we sent. Each `read` returns what the kernel has
/// received so far, which may be less than was sent (the rest is still on its way), so we
/// read until the count is reached. Zero means the server closed (FIN) before echoing it all.
fn read_reply(server: &mut TcpStream, reply: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < reply.len() {
        match server.read(&mut reply[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the server closed the connection after echoing {got} of {} bytes",
                        reply.len()
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
