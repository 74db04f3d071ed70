//! Stopping: SIGINT or SIGTERM finishes what is in flight and exits 0; a second signal
//! exits at once.

mod common;
mod kernel;
mod pause;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use pause::Paused;

/// The most any wait here should take on a shared machine.
const LONG: Duration = Duration::from_secs(30);

#[test]
fn sigterm_flushes_pending_echo_bytes_then_exits_0_with_totals() {
    let mut server = Server::start(&["--mode", "echo"]);
    let mut idle = server.connect();
    let mut busy = server.connect();
    // Two MiB the client does not read yet: the server holds some, the kernel the rest.
    let message: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut busy = busy.try_clone().unwrap();
        let message = message.clone();
        thread::spawn(move || {
            let _ = busy.write_all(&message);
        })
    };
    thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    // Now read: every byte that comes back is the right one, and then end-of-stream.
    let mut echoed = Vec::new();
    busy.read_to_end(&mut echoed).expect("read echoed bytes");
    assert!(!echoed.is_empty());
    assert_eq!(&echoed[..], &message[..echoed.len()]);
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "idle client closed cleanly"
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("totals: connections=2")),
        "{:?}",
        server.log
    );
    drop(busy);
    let _ = writer.join();
}

/// A client that sends until the kernel's buffers are full and never reads: it keeps the
/// server's flush from finishing.
fn stuck_client(server: &Server) -> std::net::TcpStream {
    let mut stuck = server.connect();
    stuck
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while stuck.write_all(&chunk).is_ok() {}
    stuck
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&["--mode", "echo", "--shutdown-timeout", "30"]);
    let _stuck = stuck_client(&server);
    server.signal(libc::SIGINT);
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited before the second signal"
    );
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited at once");
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
}

/// Half a request head, the rest never sent: a client mid-request, whom a graceful
/// shutdown waits for (its request would be answered, with `Connection: close`, if it came).
/// Returns once the server has read the half (its side of the connection holds no unread
/// bytes), so that the server knows it is mid-request.
fn client_mid_request(server: &Server) -> std::net::TcpStream {
    let mut client = server.connect();
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let local = client.local_addr().unwrap();
    kernel::wait_until("the server read the half request", LONG, || {
        let entry = kernel::connection(server.addr, local)?;
        (entry.rx_queue == 0).then_some(())
    });
    client
}

#[test]
fn a_client_mid_request_holds_the_exit_for_the_shutdown_timeout_and_no_longer() {
    const GRACE: Duration = Duration::from_secs(1);
    // The header timeout is far longer than the grace, so only the grace can end the wait.
    let args = [
        "--mode",
        "http",
        "--shutdown-timeout",
        "1",
        "--header-timeout",
        "60",
    ];
    let mut server = Server::start_with(&args, |command| {
        command.env("RUST_LOG", "debug");
    });
    let _waiting = client_mid_request(&server);
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(GRACE + Duration::from_secs(4))
        .expect("exited after the timeout");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    // The server waits out its grace in full (it may not give up on the client early), then
    // stops (the upper bound is generous, for a shared machine).
    eprintln!("exited {took:?} after SIGTERM, with a {GRACE:?} grace");
    assert!(
        GRACE <= took && took <= GRACE + Duration::from_secs(2),
        "exited {took:?} after SIGTERM; the shutdown timeout is {GRACE:?}"
    );
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("closed (shutdown timeout)")),
        "{:#?}",
        server.log
    );
}

/// The signals still pending for the whole process (`ShdPnd` in /proc/PID/status), as a mask
/// with bit `n - 1` for signal `n`.
fn pending_for_process(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("ShdPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

/// The scheduler state of thread `tid` of process `pid` (`R` running, `S` sleeping, …).
fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Send SIGTERM and wait until a handler has taken it: the process has it no longer
/// pending, and its main thread, which the handler ran on, is asleep again.
fn sigterm_and_wait_until_handled(server: &Server) {
    let pid = server.child.id();
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending_for_process(pid) & (1 << (libc::SIGTERM - 1)) != 0
        || thread_state(pid, pid) != Some('S')
    {
        assert!(Instant::now() < deadline, "SIGTERM not handled in 10 s");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_sigterms_before_the_server_wakes_exit_at_once_with_128_plus_15_and_the_totals() {
    let mut server = Server::start(&["--mode", "echo", "--shutdown-timeout", "30"]);
    let _stuck = stuck_client(&server);
    // Hold the loop still while both signals come. Its thread is in a ptrace-stop, so the
    // kernel hands each SIGTERM to the main thread, whose handler writes one byte to the
    // loop's self-pipe; the loop then wakes to find two bytes at once.
    let pid = server.child.id();
    let tid = pause::thread_named(pid, "loop-0").expect("the loop's thread");
    let paused = Paused::thread(tid).expect("ptrace(2) the loop's thread");
    sigterm_and_wait_until_handled(&server);
    sigterm_and_wait_until_handled(&server);
    let woken = Instant::now();
    paused.resume();
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited at once, not after the 30 s shutdown timeout");
    eprintln!("exited {:?} after the loop woke", woken.elapsed());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let log = &server.log;
    assert!(
        log.iter().any(|l| l.contains("second signal (15)")),
        "{log:#?}"
    );
    // Both came at once: no graceful shutdown began first.
    assert!(!log.iter().any(|l| l.contains("shutting down")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("totals: ")), "{log:#?}");
}
