//! The lessons sockloop's comments and README teach, each shown by the kernel itself.
//!
//! Every test starts the real binary (except the epoll one, which needs a loop it controls)
//! and watches what the kernel does through `/proc/net/tcp`, a client socket's `TCP_INFO`,
//! or a client's errno. Nothing here asserts a duration: each wait polls until the kernel
//! shows the expected state, within a generous bound. The notes behind each lesson, with the
//! kernel functions, are in issue 11's kernel-facts note.

mod common;
mod kernel;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::Server;
use kernel::{connection, listeners, on_local_port, pending_error, state_of, wait_until};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sockloop::tcp_info::{self, Queues, TcpState};

const LONG: Duration = Duration::from_secs(30);
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn start_logging(args: &[&str], level: &str) -> Server {
    let level = level.to_string();
    Server::start_with(args, move |command| {
        command.env("RUST_LOG", level);
    })
}

/// Read until end of stream; a reset ends it too. Returns the bytes and whether it was a reset.
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// SIGSTOP the server and wait until every one of its threads has stopped: kill(2) returns
/// before the signal takes effect, and a loop still running would react to what the test
/// does next.
fn stop(server: &Server) {
    server.signal(libc::SIGSTOP);
    let pid = server.child.id();
    wait_until("every thread of the server stopped", LONG, || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                == Some("T")
        });
        all_stopped.then_some(())
    });
}

/// Take in whatever the server has printed so far.
fn drain_log(server: &mut Server) {
    server.wait_for_log("\u{0}never printed", Duration::from_millis(50));
}

fn count_lines(server: &mut Server, needle: &str) -> usize {
    drain_log(server);
    server.log.iter().filter(|l| l.contains(needle)).count()
}

fn wait_for_lines(server: &mut Server, needle: &str, count: usize) {
    wait_until(&format!("{count} log lines with {needle:?}"), LONG, || {
        (count_lines(server, needle) >= count).then_some(())
    });
}

// ----- listen(2): the backlog -----

/// The listen backlog bounds the queue of handshakes the kernel completed for us, and Linux
/// lets it hold backlog + 1; when it is full, a SYN is dropped and the client retransmits it
/// until there is room: `connect` waits, nothing is refused (listen(2), NOTES; tcp(7)).
#[test]
fn backlog_full_extra_handshakes_wait_in_syn_sent_until_the_server_accepts() {
    const BACKLOG: u32 = 4;
    let mut server = start_logging(&["--mode", "echo", "--backlog", "4"], "debug");
    let port = server.addr.port();
    // A stopped process accepts nothing; the kernel still completes handshakes for it.
    stop(&server);

    let mut clients = Vec::new();
    // One at a time, each in the queue before the next starts, so that the SYNs that find
    // the queue full are exactly the last ones.
    for queued in 1..=BACKLOG + 1 {
        clients.push(kernel::connect_nonblocking(server.addr));
        wait_until(&format!("{queued} in the accept queue"), LONG, || {
            let listener = listeners(port).pop()?;
            (listener.rx_queue == queued).then_some(())
        });
    }
    for _ in 0..3 {
        clients.push(kernel::connect_nonblocking(server.addr));
    }
    // Give the late SYNs time to be answered, were there room (there is not).
    thread::sleep(Duration::from_millis(300));
    let states: Vec<TcpState> = clients.iter().map(state_of).collect();
    for client in &clients {
        eprintln!("client: {}", tcp_info::snapshot(client).expect("TCP_INFO"));
    }
    let established = states
        .iter()
        .filter(|s| **s == TcpState::Established)
        .count();
    let waiting = states.iter().filter(|s| **s == TcpState::SynSent).count();
    assert_eq!(
        (established, waiting),
        (BACKLOG as usize + 1, 3),
        "backlog {BACKLOG}: the queue holds backlog + 1 = 5 finished handshakes; {states:?}"
    );
    let listener = listeners(port).pop().expect("the listener");
    assert_eq!(listener.rx_queue, BACKLOG + 1, "{listener:?}");

    // Accepting again makes room; each waiting client gets in at its next SYN retransmission
    // (every second for the first four, net.ipv4.tcp_syn_linear_timeouts; then doubling).
    server.signal(libc::SIGCONT);
    wait_until("every client connected", LONG, || {
        clients
            .iter()
            .all(|c| state_of(c) == TcpState::Established)
            .then_some(())
    });
    wait_for_lines(&mut server, kernel::ACCEPTED, clients.len());
}

/// The kernel clamps a listen backlog above `net.core.somaxconn` without a word (listen(2),
/// NOTES); sockloop warns, and the kernel's own record of the listener shows the clamp.
#[test]
fn a_backlog_above_somaxconn_is_clamped_and_sockloop_says_so() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let asked = (somaxconn + 1).to_string();
    let mut server = Server::start(&["--mode", "echo", "--backlog", &asked]);
    let warning = server
        .wait_for_log("is larger than net.core.somaxconn", Duration::from_secs(5))
        .expect("the clamp warning");
    assert!(
        warning.contains(&format!("the kernel uses {somaxconn}")),
        "{warning}"
    );
    let started = server.wait_for_log("listening on", Duration::ZERO).unwrap();
    assert!(
        started.contains(&format!("(effective {somaxconn}, somaxconn {somaxconn})")),
        "{started}"
    );

    // TCP_INFO on the server's own listener: `tcpi_sacked` is the backlog in force.
    let listener = listeners(server.addr.port()).pop().expect("the listener");
    let fd = kernel::borrow_from_process(server.child.id(), listener.inode)
        .expect("pidfd_getfd(2) on the server's listener (needs root)");
    let view = tcp_info::snapshot(&fd).expect("TCP_INFO");
    eprintln!("server's listener: {view}");
    assert_eq!(
        view.queues,
        Queues::Listener {
            accept_queue: 0,
            backlog: somaxconn
        }
    );
}

// ----- SO_REUSEADDR and TIME_WAIT -----

/// TIME_WAIT keeps a closed connection's port pair for 60 s on the side that closed first;
/// `SO_REUSEADDR` lets a restarted server bind its port meanwhile, and a socket without it
/// gets EADDRINUSE (socket(7), SO_REUSEADDR; tcp(7)).
#[test]
fn so_reuseaddr_lets_a_restarted_server_bind_while_its_old_connections_are_in_time_wait() {
    let mut first = Server::start(&["--mode", "http"]);
    let port = first.addr.port();
    for _ in 0..3 {
        let mut client = first.connect();
        client.write_all(GET_CLOSE).unwrap();
        let (reply, reset) = read_to_close(&mut client);
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n") && !reset);
    }
    // http with `Connection: close`: the server closes first, so TIME_WAIT is on its port.
    wait_until("3 TIME_WAIT entries on the server's port", LONG, || {
        let entries = on_local_port(port);
        let time_wait = entries.iter().filter(|e| e.state == TcpState::TimeWait);
        (time_wait.count() >= 3).then_some(())
    });
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(LONG).is_some(), "sockloop did not exit");
    let left = on_local_port(port);
    assert!(
        left.iter().all(|e| e.state == TcpState::TimeWait) && !left.is_empty(),
        "only TIME_WAIT should be left on port {port}: {left:?}"
    );

    // Without SO_REUSEADDR (std's TcpListener::bind would set it), bind(2) refuses.
    let plain = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let refused = plain
        .bind(&SockAddr::from(first.addr))
        .expect_err("bind without SO_REUSEADDR over TIME_WAIT");
    assert_eq!(refused.raw_os_error(), Some(libc::EADDRINUSE), "{refused}");

    // sockloop sets it, and so binds the same port at once.
    let addr = format!("127.0.0.1:{port}");
    let second = Server::start(&["--mode", "http", "--addr", &addr]);
    assert_eq!(second.addr.port(), port);
    let mut client = second.connect();
    client.write_all(GET_CLOSE).unwrap();
    assert!(read_to_close(&mut client)
        .0
        .starts_with(b"HTTP/1.1 200 OK\r\n"));
}

// ----- read → 0 and where TIME_WAIT lands -----

/// read(2) returning 0 is the peer's FIN: the side that reads it without having sent its
/// own is in CLOSE_WAIT, and the side that closed first keeps TIME_WAIT (read(2), RETURN
/// VALUE; RFC 793 §3.5). In http with `Connection: close` the server closes first, and its
/// trace gives the kernel's word for its own socket: CLOSE, the TIME_WAIT being a socket of
/// its own (`tcp_time_wait`).
#[test]
fn http_connection_close_the_server_closes_first_and_keeps_the_time_wait() {
    let mut server = start_logging(&["--mode", "http"], "trace");
    let mut client = server.connect();
    let client_addr = client.local_addr().unwrap();
    client.write_all(GET_CLOSE).unwrap();
    let (reply, reset) = read_to_close(&mut client);
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n") && !reset);
    // We read 0: the server's FIN came first, so it is our side that is in CLOSE_WAIT.
    assert_eq!(state_of(&client), TcpState::CloseWait);
    // The server's trace gives the kernel's word as it sent its FIN. Read before we close:
    // the line asks the kernel when it is written, and our FIN would change the answer.
    let ours = server
        .wait_for_log(
            &format!("{client_addr}: shutdown(SHUT_WR) → FIN sent"),
            LONG,
        )
        .expect("the server traced its FIN");
    assert!(
        ours.contains("we close first")
            && (ours.contains("kernel: FIN_WAIT1") || ours.contains("kernel: FIN_WAIT2")),
        "{ours}"
    );
    drop(client);
    let server_side = wait_until("the server's side in TIME_WAIT", LONG, || {
        connection(server.addr, client_addr).filter(|e| e.state == TcpState::TimeWait)
    });
    eprintln!("server's side: {server_side:?}");
    assert_eq!(server_side.inode, 0, "TIME_WAIT belongs to no descriptor");
    assert_eq!(
        connection(client_addr, server.addr),
        None,
        "the client closed second and keeps nothing"
    );
    let fin = server
        .wait_for_log(&format!("{client_addr}: read → 0 (FIN"), LONG)
        .expect("the server traced the client's FIN");
    assert!(
        fin.contains("after ours") && fin.contains("kernel: CLOSE "),
        "{fin}"
    );
}

/// When the client sends FIN first (echo), the server's read(2) returns 0 in CLOSE_WAIT,
/// and the client keeps the TIME_WAIT; while the client's descriptor is open it reads
/// CLOSE, for the kernel has moved the 4-tuple into a separate TIME_WAIT socket (RFC 793
/// §3.5; tcp(7), TCP_INFO; `tcp_fin` → `tcp_time_wait`).
#[test]
fn echo_the_client_closes_first_the_server_passes_close_wait_and_the_client_keeps_time_wait() {
    let mut server = start_logging(&["--mode", "echo"], "trace");
    let mut client = server.connect();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).unwrap();

    // Stopped, the server cannot react to our FIN: its socket sits in CLOSE_WAIT, which
    // otherwise lasts only until its next read returns 0.
    stop(&server);
    client.shutdown(Shutdown::Write).unwrap();
    wait_until("the server's side in CLOSE_WAIT", LONG, || {
        connection(server.addr, client_addr).filter(|e| e.state == TcpState::CloseWait)
    });
    wait_until("our side in FIN_WAIT2", LONG, || {
        (state_of(&client) == TcpState::FinWait2).then_some(())
    });

    server.signal(libc::SIGCONT);
    let (rest, reset) = read_to_close(&mut client);
    assert!(
        rest.is_empty() && !reset,
        "the server answers our FIN with its own"
    );
    wait_until("the client's side in TIME_WAIT", LONG, || {
        connection(client_addr, server.addr).filter(|e| e.state == TcpState::TimeWait)
    });
    assert_eq!(
        state_of(&client),
        TcpState::Close,
        "our descriptor's socket is CLOSE; the TIME_WAIT is a separate socket"
    );
    wait_until("nothing left on the server's side", LONG, || {
        connection(server.addr, client_addr).is_none().then_some(())
    });
    // The server's trace: the kernel's word when its read returned 0, and as its FIN left
    // (LAST_ACK, or CLOSE if our ACK came back before the server asked: loopback).
    let last = server
        .wait_for_log(
            &format!("{client_addr}: shutdown(SHUT_WR) → FIN sent"),
            LONG,
        )
        .expect("the server traced its FIN");
    assert!(
        last.contains("after the peer's")
            && (last.contains("kernel: LAST_ACK") || last.contains("kernel: CLOSE ")),
        "{last}"
    );
    let fin = server
        .wait_for_log(&format!("{client_addr}: read → 0 (FIN"), LONG)
        .expect("the server traced the client's FIN");
    assert!(
        fin.contains("the peer closed first") && fin.contains("kernel: CLOSE_WAIT"),
        "{fin}"
    );
}

/// A client that sends `Connection: close` and its FIN together closes first, though the
/// server's read(2) sees the FIN only after the server has sent its own: a flushing
/// connection reads nothing, so the FIN waits in the queue. The kernel's state says who was
/// first: CLOSE_WAIT before our FIN, LAST_ACK after it, and CLOSE once the client (in
/// FIN_WAIT2, which acknowledges at once: `tcp_fin` → `tcp_send_ack`) has acknowledged
/// it. The TIME_WAIT is the client's. RFC 793 §3.5.
#[test]
fn a_client_that_half_closes_with_its_request_closes_first_though_the_server_reads_its_fin_last() {
    let mut server = start_logging(&["--mode", "http"], "trace");
    let mut client = server.connect();
    let client_addr = client.local_addr().unwrap();
    // Stopped, the server cannot read before both the request and the FIN are in.
    stop(&server);
    client.write_all(GET_CLOSE).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    wait_until("the server's side in CLOSE_WAIT", LONG, || {
        connection(server.addr, client_addr).filter(|e| e.state == TcpState::CloseWait)
    });
    server.signal(libc::SIGCONT);
    let (reply, reset) = read_to_close(&mut client);
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n") && !reset);
    wait_until("the client's side in TIME_WAIT", LONG, || {
        connection(client_addr, server.addr).filter(|e| e.state == TcpState::TimeWait)
    });
    let ours = server
        .wait_for_log(
            &format!("{client_addr}: shutdown(SHUT_WR) → FIN sent"),
            LONG,
        )
        .expect("the server traced its FIN");
    assert!(ours.contains("after the peer's"), "{ours}");
    let fin = server
        .wait_for_log(&format!("{client_addr}: read → 0 (FIN"), LONG)
        .expect("the server traced the client's FIN");
    assert!(
        fin.contains("the peer closed first") && !fin.contains("after ours"),
        "{fin}"
    );
    wait_until("nothing left on the server's side", LONG, || {
        connection(server.addr, client_addr).is_none().then_some(())
    });
}

// ----- close(2) with unread input -----

/// close(2) on a socket with unread input sends RST, not just FIN (RFC 2525 §2.17, which
/// Linux follows in `__tcp_close`; socket(7), SO_LINGER, is the other way to send one):
/// a client rejected at `--max-conns` whose request is already queued gets the 503 and the
/// FIN, then the RST, which turns its CLOSE_WAIT into CLOSE with a pending EPIPE (an RST
/// after the peer's FIN is reported as EPIPE, and read keeps saying 0).
#[test]
fn closing_with_the_request_unread_resets_a_rejected_client() {
    let server = Server::start(&["--mode", "http", "--max-conns", "1"]);
    let mut first = server.connect();
    first.write_all(GET).unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));

    // Queue the second client's request before the server can accept it, so the reject
    // closes a socket whose input was never read.
    stop(&server);
    let mut second = server.connect();
    let second_addr = second.local_addr().unwrap();
    second.write_all(GET).unwrap();
    wait_until("the request queued on the server's side", LONG, || {
        connection(server.addr, second_addr).filter(|e| e.rx_queue as usize == GET.len())
    });
    server.signal(libc::SIGCONT);

    let (reply, reset) = read_to_close(&mut second);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(
        !reset,
        "our FIN came before the RST, so read says 0, not ECONNRESET"
    );
    let second = Socket::from(second);
    wait_until("the RST to close our socket", LONG, || {
        (state_of(&second) == TcpState::Close).then_some(())
    });
    assert_eq!(pending_error(&second), Some(libc::EPIPE));
    assert_eq!(
        connection(server.addr, second_addr),
        None,
        "a reset connection leaves no TIME_WAIT behind"
    );
}

/// The lingering close: after its last answer and its FIN, sockloop reads and discards until
/// the client's FIN, so bytes the client sends meanwhile are never left unread and close(2)
/// never turns into RST (RFC 9112 §9.6, "Tear-down").
#[test]
fn a_lingering_close_reads_late_pipelined_bytes_and_never_resets_the_client() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = server.connect();
    let client_addr = client.local_addr().unwrap();
    client.write_all(GET_CLOSE).unwrap();
    let mut head = [0u8; 17];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    // The client pipelines on, not yet knowing the server is closing. These bytes arrive
    // after the server's last read of the answered request.
    for _ in 0..2 {
        if let Err(e) = client.write_all(GET) {
            panic!("a late request was refused ({e}): the server reset instead of lingering");
        }
    }
    let (rest, reset) = read_to_close(&mut client);
    assert!(!reset, "the lingering close must not reset");
    assert_eq!(
        String::from_utf8_lossy(&rest)
            .matches("HTTP/1.1 200")
            .count(),
        0,
        "only the first request is answered"
    );
    let client = Socket::from(client);
    // Watch for an RST for a while: it would turn CLOSE_WAIT into CLOSE.
    for _ in 0..100 {
        assert_eq!(state_of(&client), TcpState::CloseWait);
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pending_error(&client), None);
    drop(client);
    wait_until("the server's side in TIME_WAIT after our FIN", LONG, || {
        connection(server.addr, client_addr).filter(|e| e.state == TcpState::TimeWait)
    });
}

// ----- epoll(7): edge-triggered -----

/// Edge-triggered epoll (what mio registers) reports a socket once per wakeup: bytes left
/// unread raise no new event, and the next arrival raises one even though the socket was
/// already readable (epoll(7), "Level-triggered and edge-triggered", and its EPOLLONESHOT
/// paragraph; tcp(7), SIOCINQ, for the bytes left).
#[test]
fn edge_triggered_epoll_reports_new_data_not_data_left_unread() {
    use mio::{Events, Interest, Poll, Token};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    let mut stream = mio::net::TcpStream::from_std(accepted);
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut stream, Token(7), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);
    let mut readable = |poll: &mut Poll, timeout: Duration| -> bool {
        poll.poll(&mut events, Some(timeout)).unwrap();
        events
            .iter()
            .any(|e| e.token() == Token(7) && e.is_readable())
    };

    client.write_all(&[b'x'; 100]).unwrap();
    assert!(readable(&mut poll, LONG), "100 bytes arrived: one event");
    let mut ten = [0u8; 10];
    stream.read_exact(&mut ten).unwrap();
    assert!(
        !readable(&mut poll, Duration::from_millis(300)),
        "90 bytes left unread raise no new event"
    );
    assert_eq!(tcp_info::unread_bytes(&stream).unwrap(), 90);

    client.write_all(b"y").unwrap();
    assert!(
        readable(&mut poll, LONG),
        "a new byte is a new wakeup, hence a new event"
    );
    let mut rest = Vec::new();
    loop {
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => rest.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(rest.len(), 91);
}

// ----- a short write -----

/// What edge-triggered epoll asks of the server: having been told once, it reads until the
/// kernel has no more. A read that fills the whole buffer (131072 bytes) may have left bytes
/// behind, so the next thing the server does with that connection is read again, never wait
/// for an event; only a short read or EAGAIN ends the round (epoll(7), "Possible pitfalls";
/// read(2), RETURN VALUE). The one other reason to stop is backpressure, when the client
/// does not read its echo fast enough: then a write has said EAGAIN first.
#[test]
fn the_server_reads_on_after_a_full_read_until_the_kernel_has_no_more() {
    const BYTES: usize = 8 << 20;
    let mut server = start_logging(&["--mode", "echo"], "trace");
    let mut client = server.connect();
    let peer = client.local_addr().unwrap();
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || client.write_all(&vec![7u8; BYTES]))
    };
    let mut back = vec![0u8; BYTES];
    client.read_exact(&mut back).unwrap();
    writer.join().unwrap().unwrap();
    drop(client);
    server
        .wait_for_log(&format!("{peer}: closed"), LONG)
        .expect("the connection closed");

    let read = format!("{peer}: read → ");
    let event = format!("{peer}: event ");
    let blocked = format!("{peer}: write → WouldBlock");
    let steps: Vec<&String> = server
        .log
        .iter()
        .filter(|l| l.contains(&read) || l.contains(&event) || l.contains(&blocked))
        .collect();
    let full = format!("{read}131072 bytes");
    // A turn is also cut short, on purpose, after 16 reads (`MAX_READS_PER_TURN`: the others
    // get their turn), and an event may then come first.
    const FAIR_SHARE: usize = 16;
    let mut full_reads = 0;
    let mut reads_this_turn = 0;
    for pair in steps.windows(2) {
        if pair[0].contains(&read) {
            reads_this_turn += 1;
        } else if pair[0].contains(&event) {
            reads_this_turn = 0;
        }
        if pair[0].contains(&full) {
            full_reads += 1;
            if pair[1].contains(&event) && reads_this_turn % FAIR_SHARE != 0 {
                // Every line between the two, to show what the server did instead.
                let at = |line: &String| server.log.iter().position(|l| std::ptr::eq(l, line));
                let (from, to) = (at(pair[0]).unwrap_or(0), at(pair[1]).unwrap_or(0));
                panic!(
                    "after a full read (read {reads_this_turn} of its turn) the server waited \
                     for an event:\n{}",
                    server.log[from.saturating_sub(8)..=to].join("\n")
                );
            }
        }
    }
    assert!(full_reads > 0, "no read filled the buffer: nothing shown");
}

/// write(2) on a non-blocking socket takes what fits in the send buffer and says how much:
/// a short write; the rest must be kept and written when epoll reports the socket writable
/// (write(2), RETURN VALUE; socket(7), SO_SNDBUF/SO_RCVBUF).
#[test]
fn a_client_that_does_not_read_makes_the_server_write_short() {
    let mut server = start_logging(&["--mode", "echo"], "trace");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    // Before connect, so the window offered in the handshake is already small.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&SockAddr::from(server.addr)).unwrap();
    let client: TcpStream = socket.into();
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            // Far more than both directions' buffers hold; we never read the echo.
            let chunk = [b'z'; 64 * 1024];
            for _ in 0..64 {
                if client.write_all(&chunk).is_err() {
                    break; // blocked (backpressure) or shut down below
                }
            }
        })
    };
    let line = wait_until("a short write in the server's trace", LONG, || {
        drain_log(&mut server);
        server
            .log
            .iter()
            .find(|l| kernel::short_write(l).is_some())
            .cloned()
    });
    let (n, m) = kernel::short_write(&line).unwrap();
    eprintln!("{line}");
    eprintln!("client: {}", tcp_info::snapshot(&client).unwrap());
    assert!(0 < n && n < m);
    client.shutdown(Shutdown::Both).unwrap();
    writer.join().unwrap();
}

// ----- SO_REUSEPORT -----

/// With SO_REUSEPORT each loop has a listening socket of its own on the same port, and the
/// kernel spreads incoming connections over them by a hash of the addresses (socket(7),
/// SO_REUSEPORT): both queues fill, and each loop drains its own.
#[test]
fn so_reuseport_both_loops_get_connections_and_accept_them() {
    const CLIENTS: usize = 40;
    let mut server = start_logging(&["--mode", "echo", "--threads", "2"], "debug");
    let port = server.addr.port();
    // The start-up line is printed once the first listener is bound; the second follows.
    wait_until("two listening sockets on one port", LONG, || {
        (listeners(port).len() == 2).then_some(())
    });

    // While the server is stopped the connections stay in the queue the hash chose.
    stop(&server);
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| server.connect()).collect();
    let queued = wait_until("every connection queued", LONG, || {
        let queues: Vec<u32> = listeners(port).iter().map(|l| l.rx_queue).collect();
        (queues.iter().sum::<u32>() as usize == CLIENTS).then_some(queues)
    });
    eprintln!("accept queues of the two listeners: {queued:?}");
    assert!(
        queued.iter().all(|&q| q > 0),
        "the hash left a listener without connections: {queued:?} (chance 2^-39)"
    );

    server.signal(libc::SIGCONT);
    // Only a listener's own loop accepts from it, so both queues emptying means both loops
    // accepted.
    wait_until("both accept queues drained", LONG, || {
        listeners(port)
            .iter()
            .all(|l| l.rx_queue == 0)
            .then_some(())
    });
    wait_for_lines(&mut server, kernel::ACCEPTED, CLIENTS);
    // Each loop has its own slab, numbered from 0: with every connection still open, key 0
    // appears once per loop that accepted.
    let first_keys = server
        .log
        .iter()
        .filter(|l| kernel::accepted_key(l) == Some(0))
        .count();
    assert_eq!(first_keys, 2, "accepted as #0 once in each loop");
    // And each accept line names its loop.
    for id in [0, 1] {
        let by = format!(" by loop {id}");
        assert!(
            server
                .log
                .iter()
                .any(|l| l.contains(kernel::ACCEPTED) && l.contains(&by)),
            "no connection accepted{by}"
        );
    }
    drop(clients);
}

/// SO_REUSEPORT picks a listener by a hash of the connection's addresses and ports, blind to
/// load: a listener whose accept queue is full drops a SYN that hashed to it while its
/// sibling still has room (socket(7), SO_REUSEPORT; `reuseport_select_sock_by_hash`,
/// net/core/sock_reuseport.c).
#[test]
fn so_reuseport_is_blind_to_load_a_full_listener_drops_a_syn_while_its_sibling_has_room() {
    const FULL: u32 = 5; // --backlog 4 holds backlog + 1
    let server = Server::start(&["--mode", "echo", "--threads", "2", "--backlog", "4"]);
    let port = server.addr.port();
    let queues = || -> Vec<u32> { listeners(port).iter().map(|l| l.rx_queue).collect() };
    wait_until("two listening sockets on one port", LONG, || {
        (queues().len() == 2).then_some(())
    });

    // A round fails to show it only if the first ten connections split exactly five and
    // five (one chance in four): then the queues are emptied and it starts again.
    for round in 1..=10 {
        stop(&server);
        let mut clients = Vec::new();
        let dropped_with = loop {
            let now = queues();
            if now.iter().all(|&q| q == FULL) {
                break None;
            }
            assert!(
                clients.len() < 40,
                "40 connections and no SYN dropped: {now:?}"
            );
            let before: u32 = now.iter().sum();
            let client = kernel::connect_nonblocking(server.addr);
            // Either a queue grows, or the SYN was dropped and the client retransmits it.
            let queued = wait_until(
                "the connection queued or its SYN retransmitted",
                LONG,
                || {
                    if queues().iter().sum::<u32>() > before {
                        return Some(true);
                    }
                    let view = tcp_info::snapshot(&client).ok()?;
                    (view.state == TcpState::SynSent && view.total_retrans > 0).then_some(false)
                },
            );
            clients.push(client);
            if !queued {
                break Some(now);
            }
        };
        if let Some(at_drop) = dropped_with {
            eprintln!("round {round}: a SYN was dropped with the accept queues at {at_drop:?}");
            assert!(
                at_drop.contains(&FULL) && at_drop.iter().any(|&q| q < FULL),
                "one listener full, the other with room: {at_drop:?}"
            );
            server.signal(libc::SIGCONT);
            return;
        }
        eprintln!("round {round}: both queues filled without a drop; again");
        drop(clients);
        server.signal(libc::SIGCONT);
        wait_until(
            "the server done with this round's connections",
            LONG,
            || {
                let left = on_local_port(port);
                left.iter()
                    .all(|e| {
                        matches!(e.state, TcpState::Listen | TcpState::TimeWait) && e.rx_queue == 0
                    })
                    .then_some(())
            },
        );
    }
    panic!("ten rounds in a row split five and five");
}
