//! A misbehaving client, for the soak test: it opens and aborts connections, half-closes,
//! stalls, never reads, and sends garbage, against one address on loopback, for a bounded
//! time, then stops by itself and prints what it did.
//!
//! `cargo run --release --example chaos -- --addr 127.0.0.1:8889 --seconds 60`

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use socket2::SockRef;

#[derive(Parser)]
struct Args {
    /// Server to torment: loopback only.
    #[arg(long, default_value = "127.0.0.1:8889")]
    addr: SocketAddr,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Client threads, each doing one misdeed at a time.
    #[arg(long, default_value_t = 8)]
    threads: usize,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: chaos\r\n\r\n";

/// xorshift64: enough randomness for choosing misdeeds, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Close with RST instead of FIN: SO_LINGER with a zero timeout (socket(7)).
fn abort(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn misdeed(addr: SocketAddr, rng: &mut Rng) -> std::io::Result<&'static str> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 4096];
    Ok(match rng.below(7) {
        0 => {
            abort(stream);
            "open and reset"
        }
        1 => {
            stream.write_all(&REQUEST[..rng.below(REQUEST.len() as u64) as usize])?;
            abort(stream);
            "reset mid-request"
        }
        2 => {
            stream.write_all(REQUEST)?;
            stream.shutdown(Shutdown::Write)?;
            while stream.read(&mut buf)? > 0 {}
            let _ = stream.write_all(REQUEST); // after our own FIN: must fail, harmlessly
            "half-close, read, send again"
        }
        3 => {
            let garbage: Vec<u8> = (0..rng.below(4096) + 1).map(|_| rng.next() as u8).collect();
            stream.write_all(&garbage)?;
            while stream.read(&mut buf)? > 0 {}
            "garbage"
        }
        4 => {
            thread::sleep(Duration::from_millis(rng.below(2000)));
            "stall and leave"
        }
        5 => {
            for _ in 0..rng.below(200) + 1 {
                stream.write_all(REQUEST)?;
            }
            thread::sleep(Duration::from_millis(rng.below(500)));
            abort(stream);
            "pipeline, never read, reset"
        }
        _ => {
            stream.write_all(REQUEST)?;
            let _ = stream.read(&mut buf[..rng.below(64) as usize + 1])?;
            abort(stream);
            "reset mid-response"
        }
    })
}

fn main() {
    let args = Args::parse();
    assert!(args.addr.ip().is_loopback(), "chaos only targets loopback");
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.threads)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                let (mut done, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match misdeed(args.addr, &mut rng) {
                        Ok(_) => done += 1,
                        Err(_) => failed += 1,
                    }
                }
                (done, failed)
            })
        })
        .collect();
    let (mut done, mut failed) = (0, 0);
    for worker in workers {
        if let Ok((d, f)) = worker.join() {
            done += d;
            failed += f;
        }
    }
    println!("chaos: {done} misdeeds done, {failed} cut short by the server (resets, timeouts)");
}
