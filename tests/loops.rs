//! Several listeners on one port, several loops in one server: `--reuse-port`, `--threads`,
//! and the tokens that keep a loop's events apart when a connection's slot is reused.

mod common;
mod kernel;
mod pause;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use pause::Paused;
use socket2::SockRef;
use tungstenite::{Message, WebSocket};

/// The most any wait here should take on a shared machine.
const LONG: Duration = Duration::from_secs(30);
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn start_logging(args: &[&str], level: &str) -> Server {
    let level = level.to_string();
    Server::start_with(args, move |command| {
        command.env("RUST_LOG", level);
    })
}

/// Run sockloop, expecting it to fail at start-up; its exit code and stderr. One that is
/// still running after a few seconds has started after all: it is killed, and the code is
/// `None`.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sockloop");
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (code, stderr)
}

fn started_line(server: &mut Server) -> String {
    server
        .wait_for_log("listening on ", Duration::ZERO)
        .expect("the start-up line")
}

/// Take in whatever the server has printed so far.
fn drain_log(server: &mut Server) {
    server.wait_for_log("\u{0}never printed", Duration::from_millis(50));
}

/// The loop that accepted the client whose address is `peer`, from the debug line
/// "PEER: accepted as #KEY by loop N"; with the key.
fn accepted_by(server: &Server, peer: SocketAddr) -> Option<(usize, usize)> {
    let prefix = format!("{peer}{}", kernel::ACCEPTED);
    let line = server.log.iter().find(|l| l.contains(&prefix))?;
    let key = kernel::accepted_key(line)?;
    let id = line.split(" by loop ").nth(1)?.trim().parse().ok()?;
    Some((key, id))
}

/// As [`accepted_by`], waiting at most `timeout` for the line.
fn wait_accepted_by(
    server: &mut Server,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<(usize, usize)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(accepted) = accepted_by(server, peer) {
            return Some(accepted);
        }
        if Instant::now() > deadline {
            return None;
        }
        drain_log(server);
    }
}

// ----- --reuse-port -----

#[test]
fn with_reuse_port_the_option_is_set_and_a_second_server_may_listen_on_the_same_port() {
    let mut first = start_logging(&["--mode", "echo", "--reuse-port"], "debug");
    assert!(
        started_line(&mut first).contains("SO_REUSEPORT=1"),
        "{:?}",
        first.log
    );
    let addr = first.addr.to_string();
    let mut second = start_logging(
        &["--mode", "echo", "--reuse-port", "--addr", &addr],
        "debug",
    );
    assert_eq!(second.addr, first.addr);
    assert!(started_line(&mut second).contains("SO_REUSEPORT=1"));

    // The kernel spreads the clients over both servers, and both serve.
    let mut clients: Vec<TcpStream> = (0..32).map(|_| first.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i}");
        client.write_all(message.as_bytes()).unwrap();
        let mut echo = vec![0; message.len()];
        client.read_exact(&mut echo).expect("the echo");
        assert_eq!(echo, message.as_bytes());
    }
    drain_log(&mut first);
    drain_log(&mut second);
    let served = |server: &Server| {
        clients
            .iter()
            .filter(|c| accepted_by(server, c.local_addr().unwrap()).is_some())
            .count()
    };
    let (by_first, by_second) = (served(&first), served(&second));
    assert_eq!(by_first + by_second, clients.len());
    assert!(
        by_first > 0 && by_second > 0,
        "one server took all 32 clients ({by_first} and {by_second}; chance 2^-31)"
    );

    // A third server without the option may not join them.
    let (code, stderr) = run_to_exit(&["--mode", "echo", "--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn without_reuse_port_the_option_is_off_and_no_second_server_may_listen_on_the_port() {
    let mut first = Server::start(&["--mode", "echo"]);
    assert!(
        started_line(&mut first).contains("SO_REUSEPORT=0"),
        "{:?}",
        first.log
    );
    // SO_REUSEPORT lets a socket share a port only with sockets that set it too
    // (socket(7)): asking for it now is not enough.
    let addr = first.addr.to_string();
    let (code, stderr) = run_to_exit(&["--mode", "echo", "--reuse-port", "--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

// ----- --threads -----

/// The start-up line is printed once the first listener is bound; the second loop's
/// follows, and until then every connection goes to the first.
fn wait_for_both_listeners(server: &Server) {
    kernel::wait_until("two listening sockets on one port", LONG, || {
        (kernel::listeners(server.addr.port()).len() == 2).then_some(())
    });
}

/// Start `mode` with two loops, hold 32 clients open at once, let each make one exchange
/// with `talk`, and check that both loops accepted some of them.
fn spread_over_two_loops(mode: &str, talk: impl Fn(usize, &mut TcpStream)) {
    let mut server = start_logging(&["--mode", mode, "--threads", "2"], "debug");
    assert!(
        started_line(&mut server).contains("threads=2"),
        "{:?}",
        server.log
    );
    wait_for_both_listeners(&server);
    let mut clients: Vec<TcpStream> = (0..32).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        talk(i, client);
    }
    let mut loops = Vec::new();
    for client in &clients {
        let peer = client.local_addr().unwrap();
        let (_, id) = wait_accepted_by(&mut server, peer, LONG)
            .unwrap_or_else(|| panic!("no accept line for {peer}: {:#?}", server.log));
        loops.push(id);
    }
    let used: BTreeSet<usize> = loops.iter().copied().collect();
    eprintln!("{mode}: the 32 clients were accepted by loops {loops:?}");
    assert_eq!(
        used,
        BTreeSet::from([0, 1]),
        "both loops accept (all 32 on one loop: chance 2^-31)"
    );
}

#[test]
fn with_two_threads_echo_clients_are_spread_over_both_loops_and_each_is_served() {
    spread_over_two_loops("echo", |i, client| {
        let message = format!("echo client {i}");
        client.write_all(message.as_bytes()).unwrap();
        let mut echo = vec![0; message.len()];
        client.read_exact(&mut echo).expect("the echo");
        assert_eq!(echo, message.as_bytes());
    });
}

#[test]
fn with_two_threads_http_clients_are_spread_over_both_loops_and_each_is_served() {
    spread_over_two_loops("http", |_, client| {
        client.write_all(GET).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        // The canned page's head and body, which Content-Length bounds.
        while !(reply.ends_with(b"</html>\n") || reply.ends_with(b"</html>\r\n")) {
            let n = client.read(&mut buf).expect("the answer");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
    });
}

// ----- generation tokens -----

/// An open WebSocket, past the handshake; the greeting is left unread.
fn ws_connect(server: &Server) -> WebSocket<TcpStream> {
    let url = format!("ws://{}/", server.addr);
    let (client, response) =
        tungstenite::client(url, server.connect()).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    client
}

/// A token's slab key, as `event_loop::token` packs it: the low 32 bits.
fn key_of_token(line: &str) -> Option<usize> {
    let token: usize = line
        .split("Token(")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()?;
    Some(token & 0xffff_ffff)
}

/// epoll hands back, with each event, the token the socket was registered with; one
/// `epoll_wait` returns a batch of events, and a connection closed while the loop works
/// through the batch may have its slab slot taken by a connection accepted later in the same
/// batch. An event for the old connection further on must not be taken for the new one's.
///
/// Provoked from outside, in ws mode with two loops. Loop 0 is held still (ptrace) while
/// three things happen, in this order, so that its next `epoll_wait` returns them in this
/// order (the ready list is first come, first served):
/// 1. a client of loop 1 speaks: loop 1 posts the broadcast to loop 0's inbox (INBOX);
/// 2. a new client lands in loop 0's accept queue (LISTENER);
/// 3. a client R of loop 0 resets its connection (R's event: error, read closed).
///
/// Loop 0 then delivers the broadcast, its write to R fails and R is closed; it accepts the
/// newcomer, which takes R's slot (a slab reuses the last freed key first); then R's event
/// comes, with R's token and the newcomer's key.
#[test]
fn an_event_for_a_closed_connection_is_not_delivered_to_the_one_that_took_its_slot() {
    let mut server = start_logging(&["--mode", "ws", "--threads", "2"], "trace");
    wait_for_both_listeners(&server);
    // Clients until loop 1 has a speaker and a listener, and loop 0 a client to reset.
    let (mut speaker, mut listener, mut doomed, mut others) = (None, None, None, Vec::new());
    while speaker.is_none() || listener.is_none() || doomed.is_none() {
        assert!(others.len() < 64, "64 clients and not one of each");
        let client = ws_connect(&server);
        let peer = client.get_ref().local_addr().unwrap();
        let (key, id) = wait_accepted_by(&mut server, peer, LONG)
            .unwrap_or_else(|| panic!("no accept line for {peer}: {:#?}", server.log));
        match id {
            1 if speaker.is_none() => speaker = Some(client),
            1 if listener.is_none() => listener = Some(client),
            0 if doomed.is_none() => doomed = Some((client, key)),
            _ => others.push(client),
        }
    }
    let mut speaker = speaker.unwrap();
    let mut listener = listener.unwrap();
    let (doomed, doomed_key) = doomed.unwrap();
    // Let loop 0 finish with every handshake and greeting before it is held.
    thread::sleep(Duration::from_millis(200));
    let loop_0 = pause::thread_named(server.child.id(), "loop-0").expect("loop-0");
    let paused = Paused::thread(loop_0).expect("ptrace(2) loop 0's thread");

    // 1. Another client of loop 1 hears the message once loop 1 has broadcast it, which it
    // posts to the other loops' inboxes first (`EventLoop::broadcast`). Not the speaker:
    // it hears its own copy at once, before the round ends and the post is made.
    speaker.send(Message::text("generation probe")).unwrap();
    loop {
        match listener.read().expect("the broadcast") {
            Message::Text(text) if text.as_str().contains("generation probe") => break,
            _ => continue,
        }
    }

    // 2. A newcomer for loop 0: loop 1 accepts at once whatever the kernel hands it, so a
    // client not accepted within a while is waiting in loop 0's queue.
    let mut bystanders = Vec::new();
    let newcomer = loop {
        assert!(bystanders.len() < 64, "no connection landed on loop 0");
        let client = server.connect();
        let peer = client.local_addr().unwrap();
        if wait_accepted_by(&mut server, peer, Duration::from_secs(2)).is_none() {
            break client;
        }
        bystanders.push(client);
    };
    let newcomer_addr = newcomer.local_addr().unwrap();
    let queued: u32 = kernel::listeners(server.addr.port())
        .iter()
        .map(|l| l.rx_queue)
        .sum();
    assert_eq!(queued, 1, "the newcomer waits in loop 0's accept queue");

    // 3. R resets: SO_LINGER with a zero timeout turns close(2) into an RST (socket(7)).
    let doomed_addr = doomed.get_ref().local_addr().unwrap();
    SockRef::from(doomed.get_ref())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(doomed);
    kernel::wait_until("the server's side of R reset", LONG, || {
        kernel::connection(server.addr, doomed_addr)
            .is_none()
            .then_some(())
    });

    paused.resume();
    // The newcomer is served: it completes a WebSocket handshake.
    let url = format!("ws://{}/", server.addr);
    let (mut newcomer, response) =
        tungstenite::client(url, newcomer).expect("the newcomer's handshake");
    assert_eq!(response.status(), 101);
    match newcomer.read().expect("the greeting") {
        Message::Text(_) => {}
        other => panic!("the newcomer got {other:?} instead of the greeting"),
    }

    // What loop 0 did, in its order. The batch with R's event came before the newcomer's
    // handshake was read; wait for the log to show that read, for the newcomer's events.
    kernel::wait_until("the newcomer's handshake in the log", LONG, || {
        drain_log(&mut server);
        let handshake = format!("{newcomer_addr}: event readable=true");
        let lines = server.log.iter().filter(|l| l.contains(&handshake));
        (lines.count() >= 1).then_some(())
    });
    let ignored = "connection already closed, ignored";
    let log = &server.log;
    let position = |needle: &str| log.iter().position(|l| l.contains(needle));
    let r_closed = position(&format!("{doomed_addr}: closed (reset by peer"))
        .unwrap_or_else(|| panic!("R's close: {log:#?}"));
    let accepted_into = format!("{newcomer_addr}: accepted as #{doomed_key} by loop 0");
    let reused = position(&accepted_into)
        .unwrap_or_else(|| panic!("the newcomer did not take R's slot #{doomed_key}: {log:#?}"));
    // The newcomer never saw R's error, nor its close.
    let newcomer_events: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(&format!("{newcomer_addr}: event")))
        .collect();
    assert!(
        newcomer_events
            .iter()
            .all(|l| l.contains("read_closed=false") && l.contains("error=false")),
        "the newcomer was handed R's event: {newcomer_events:#?}"
    );
    let stale = log
        .iter()
        .position(|l| l.contains(ignored) && key_of_token(l) == Some(doomed_key))
        .unwrap_or_else(|| panic!("no event for slot #{doomed_key} was ignored: {log:#?}"));
    assert!(
        r_closed < reused && reused < stale,
        "R closed (line {r_closed}), its slot reused (line {reused}), then R's event \
         (line {stale}) in one batch: {log:#?}"
    );
    drop((speaker, others, bystanders));
}
