//! The live view: SIGUSR1, or `--stats SECONDS`, logs one line per loop, and at debug one
//! line per connection next to the kernel's TCP_INFO for it.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Server;

const LONG: Duration = Duration::from_secs(10);
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn start_with_log(args: &[&str], level: &'static str) -> Server {
    Server::start_with(args, move |command| {
        command.env("RUST_LOG", level);
    })
}

#[test]
fn sigusr1_reports_the_loop_and_each_connection_with_the_kernels_view() {
    let mut server = start_with_log(&["--mode", "http"], "debug");
    let mut client = server.connect();
    let me = client.local_addr().unwrap();
    client.write_all(GET).unwrap();
    let mut answer = [0u8; 64];
    let n = client.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"));

    server.signal(libc::SIGUSR1);
    let line = server
        .wait_for_log("loop 0: ", LONG)
        .expect("a report line for the loop");
    assert!(line.contains(" 1 connections;"), "{line}");
    assert!(
        line.contains("requests/s") && line.contains("CPU"),
        "{line}"
    );
    let conn = server
        .wait_for_log(&format!("#0 {me}: "), LONG)
        .expect("a report line for the connection");
    assert!(conn.contains("Open, 27 B in, "), "{conn}");
    assert!(conn.contains("| kernel: ESTABLISHED rtt="), "{conn}");
    // A signal that asks for a report is not a signal to stop.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    client.write_all(GET).unwrap();
    assert!(client.read(&mut answer).unwrap() > 0);
}

#[test]
fn stats_reports_every_interval_and_not_before() {
    let mut server = start_with_log(&["--mode", "echo", "--stats", "0.5"], "info");
    let started = Instant::now();
    server
        .wait_for_log("loop 0: 0 connections", LONG)
        .expect("a first report");
    let first = started.elapsed();
    // The line is due half a second after the loop started, which is before "listening"
    // was read: at least a little, and well within the bound.
    assert!(
        first < Duration::from_secs(5),
        "first report after {first:?}"
    );
    let reports_at_first = server.log.iter().filter(|l| l.contains("loop 0: ")).count();
    std::thread::sleep(Duration::from_millis(1600));
    server.wait_for_log("\u{0}never printed", Duration::from_millis(100));
    let reports = server.log.iter().filter(|l| l.contains("loop 0: ")).count();
    let new = reports - reports_at_first;
    // 1.6 s at one report per 0.5 s: three, give or take one for where the interval fell.
    assert!((2..=4).contains(&new), "{new} reports in 1.6 s");
}

#[test]
fn stats_wants_a_positive_interval() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .args(["--stats", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("above 0"), "{stderr}");
}
