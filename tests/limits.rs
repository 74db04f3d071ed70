//! Limits and timeouts: a server under abuse keeps serving the clients it holds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;

/// Send `message` and read the same number of bytes back.
fn echo_round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).expect("write");
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply).expect("read echo");
    reply
}

/// Read until end of stream (or reset, which also means "closed"); returns what arrived.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn over_max_conns_a_client_is_closed_at_once_and_the_others_keep_being_served() {
    let mut server = Server::start(&["--mode", "echo", "--max-conns", "3"]);
    let mut held: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    for stream in &mut held {
        assert_eq!(echo_round_trip(stream, b"ping"), b"ping");
    }
    let mut extra = server.connect();
    assert!(
        read_to_close(&mut extra).is_empty(),
        "the 4th connection should just close"
    );
    assert!(server
        .wait_for_log("rejected", Duration::from_secs(5))
        .is_some());
    for stream in &mut held {
        assert_eq!(echo_round_trip(stream, b"still here"), b"still here");
    }
    // A client leaves; the next one is served.
    drop(held.pop());
    thread::sleep(Duration::from_millis(100));
    let mut next = server.connect();
    assert_eq!(echo_round_trip(&mut next, b"my turn"), b"my turn");
}

#[test]
fn over_max_conns_an_http_client_gets_503_with_connection_close() {
    let server = Server::start(&["--mode", "http", "--max-conns", "1"]);
    let mut first = server.connect();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));

    let mut second = server.connect();
    let reply = String::from_utf8(read_to_close(&mut second)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
}

/// Run the server with few file descriptors: RLIMIT_NOFILE set in the child before exec.
fn start_with_fd_limit(args: &[&str], limit: u64) -> Server {
    Server::start_with(args, move |command| {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(move || {
                let rlim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}

/// Lesson: out of descriptors, accept(2) fails with EMFILE before it looks at the queue, so
/// a queued connection can be neither accepted nor refused; the reserve descriptor is how a
/// server sheds it instead of leaving the client hanging (accept(2), ERRORS, EMFILE;
/// getrlimit(2), RLIMIT_NOFILE).
#[test]
fn out_of_descriptors_the_server_sheds_new_clients_without_spinning_and_recovers() {
    const LIMIT: u64 = 40;
    let mut server = start_with_fd_limit(&["--mode", "echo"], LIMIT);

    // Several times more clients than the server has descriptors.
    let mut clients: Vec<TcpStream> = (0..4 * LIMIT).map(|_| server.connect()).collect();
    thread::sleep(Duration::from_millis(300));
    let mut served = Vec::new();
    let mut shed = 0;
    for mut stream in clients.drain(..) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let ok = stream.write_all(b"x").is_ok() && {
            let mut byte = [0u8; 1];
            matches!(stream.read(&mut byte), Ok(1))
        };
        if ok {
            served.push(stream);
        } else {
            shed += 1;
        }
    }
    eprintln!(
        "fd limit {LIMIT}: {} clients served, {shed} shed",
        served.len()
    );
    assert!(served.len() >= 20, "only {} served", served.len());
    assert!(shed > 0, "nobody was shed: is the limit in force?");
    assert!(server
        .wait_for_log("out of file descriptors", Duration::from_secs(5))
        .is_some());

    // Saturated and still being knocked on: no busy loop.
    let knockers: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    let before = server.cpu_ticks();
    thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    assert!(
        used <= 10,
        "server used {used} ticks of CPU in 1 s while saturated"
    );
    drop(knockers);

    // The held clients are still answered.
    for stream in &mut served {
        assert_eq!(echo_round_trip(stream, b"y"), b"y");
    }
    // Clients leave; new ones are accepted again.
    served.truncate(served.len() - 5);
    thread::sleep(Duration::from_millis(200));
    let mut late = server.connect();
    assert_eq!(echo_round_trip(&mut late, b"back"), b"back");
}

/// A timeout that ran `elapsed`, measured from just before the client connected to when it
/// saw the server's answer, must have run its `length`: not before (less a few milliseconds,
/// since the server keeps its deadlines in whole milliseconds), and not much after. The
/// upper bound is generous, for a shared 2-core machine; what it rules out is a timeout
/// several times too long, as the lower bound rules out one much too short.
fn assert_timeout_took(what: &str, elapsed: Duration, length: Duration) {
    let at_least = length - Duration::from_millis(10);
    let at_most = length + Duration::from_secs(2);
    eprintln!("{what}: {elapsed:?} (timeout {length:?})");
    assert!(
        at_least <= elapsed && elapsed <= at_most,
        "{what} after {elapsed:?}: the timeout is {length:?}, so between {at_least:?} and \
         {at_most:?}"
    );
}

/// Read `stream` to its close on a thread of its own; the thread returns what arrived and
/// when the first of it (or the close, if nothing came) was seen.
fn read_to_close_timed(mut stream: TcpStream) -> thread::JoinHandle<(Vec<u8>, Instant)> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 4096];
        loop {
            let read = stream.read(&mut buf);
            first.get_or_insert_with(Instant::now);
            match read {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        (got, first.unwrap_or_else(Instant::now))
    })
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_talking_one_is_not() {
    const IDLE: Duration = Duration::from_millis(500);
    let server = Server::start(&["--mode", "echo", "--idle-timeout", "0.5"]);
    let mut talker = server.connect();
    let connected = Instant::now();
    // The idle client is read on a thread of its own, so the moment its close arrives is
    // seen while the talker talks.
    let idle = read_to_close_timed(server.connect());
    // Talk for three idle timeouts: the talker stays open all along.
    while connected.elapsed() < 3 * IDLE {
        assert_eq!(echo_round_trip(&mut talker, b"tick"), b"tick");
        thread::sleep(Duration::from_millis(100));
    }
    let (got, closed_at) = idle.join().expect("idle reader");
    assert!(got.is_empty(), "the idle client was sent {got:?}");
    assert_timeout_took("idle client closed", closed_at - connected, IDLE);
    assert_eq!(echo_round_trip(&mut talker, b"tock"), b"tock");
}

#[test]
fn a_slowloris_gets_408_after_the_header_timeout_however_it_drips() {
    const HEADER: Duration = Duration::from_millis(600);
    let server = Server::start(&["--mode", "http", "--header-timeout", "0.6"]);
    let connected = Instant::now();
    let mut slow = server.connect();
    let reader = read_to_close_timed(slow.try_clone().unwrap());
    // One byte every 100 ms: each byte is traffic, but the head never completes. It drips
    // on until the answer comes (or well past the bound), so a deadline that each byte
    // pushed back would show as a late 408, or none.
    let head = b"GET / HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain([b'a'].iter().cycle());
    for byte in head {
        if reader.is_finished() || connected.elapsed() > HEADER + Duration::from_secs(4) {
            break;
        }
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (reply, answered_at) = reader.join().expect("reader");
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    assert!(reply.contains("Connection: close"), "{reply:?}");
    assert_timeout_took("408 received", answered_at - connected, HEADER);
}

#[test]
fn a_pipelining_client_that_never_reads_does_not_grow_the_server() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = server.connect();
    client
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let start_rss = server.rss_kib();
    let batch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Write until the kernel's buffers on both sides are full and our write times out.
    while Instant::now() < deadline && client.write_all(&batch).is_ok() {
        sent += batch.len();
    }
    let grown = server.rss_kib().saturating_sub(start_rss);
    eprintln!("sent {sent} bytes of requests unread; server RSS grew {grown} KiB");
    assert!(grown < 8 * 1024, "server RSS grew {grown} KiB");
}

#[test]
fn a_client_that_pipelines_thousands_then_half_closes_gets_every_answer_then_eof() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = server.connect();
    const N: usize = 5000; // far more answers than the server buffers before pausing
    let requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(N);
    let writer = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            client.write_all(&requests).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let answers = read_to_close(&mut client);
    writer.join().unwrap();
    let count = answers
        .windows(17)
        .filter(|w| w == b"HTTP/1.1 200 OK\r\n")
        .count();
    assert_eq!(count, N);
}

#[test]
fn a_client_pipelining_steadily_is_not_taken_for_a_slowloris() {
    // Reads end in the middle of a request again and again, but requests keep completing:
    // the header deadline restarts with each one.
    let server = Server::start(&["--mode", "http", "--header-timeout", "0.5"]);
    let mut client = server.connect();
    let stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(30 * 600);
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            // About 1.5 s of pieces, none of which ends on a request boundary but the last.
            for piece in stream.chunks(7777) {
                client.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(25));
            }
            client.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let answers = read_to_close(&mut client);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&answers);
    assert!(!text.contains("408"), "a busy client got 408");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 30 * 600);
}
