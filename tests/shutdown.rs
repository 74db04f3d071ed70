//! Stopping: SIGINT or SIGTERM finishes what is in flight and exits 0; a second signal
//! exits at once.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::Server;

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

#[test]
fn the_shutdown_timeout_bounds_how_long_a_stuck_client_can_hold_the_exit() {
    let mut server = Server::start(&["--mode", "echo", "--shutdown-timeout", "1"]);
    let _stuck = stuck_client(&server);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exited after the timeout");
    assert_eq!(status.code(), Some(0));
}
