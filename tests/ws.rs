//! WebSocket mode, as a browser (or any WebSocket client) sees it: the page, the handshake,
//! the chat room, the close codes, a slow consumer, several loops, and shutdown.
//!
//! The client is tungstenite in its client role over a blocking std `TcpStream`: another
//! role and another code path than the server's. Frames the client library would refuse to
//! send (unmasked, invalid UTF-8, reserved opcodes) are written to the socket by hand.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

const GREETING: &str = "hello, I am a server";

fn ws_server(extra: &[&str]) -> Server {
    let mut args = vec!["--mode", "ws"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Open a WebSocket to the server and read its greeting.
fn join(server: &Server) -> Client {
    let mut client = connect(server);
    assert_eq!(next_message(&mut client), Message::text(GREETING));
    client
}

/// Open a WebSocket, leaving the greeting unread.
fn connect(server: &Server) -> Client {
    connect_at(server, "/")
}

/// Open a WebSocket at `path`, leaving the greeting unread.
fn connect_at(server: &Server, path: &str) -> Client {
    let stream = server.connect();
    let url = format!("ws://{}{path}", server.addr);
    let (client, response) = tungstenite::client(url, stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    client
}

/// The next data or close message; pings and pongs are skipped.
fn next_message(client: &mut Client) -> Message {
    loop {
        match client.read().expect("read a message") {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => return message,
        }
    }
}

/// The code of the close frame the server sends next, skipping any data before it.
fn close_code(client: &mut Client) -> CloseCode {
    loop {
        match client.read().expect("read until the close frame") {
            Message::Close(Some(frame)) => return frame.code,
            Message::Close(None) => panic!("a close frame without a code"),
            _ => continue,
        }
    }
}

/// A client frame written by hand: masked (unless `masked` is false), payload under 126.
fn raw_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut frame = vec![first_byte, payload.len() as u8];
    if masked {
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// The closing handshake ends as RFC 6455 §7.1.1 says it should: the server, having sent
/// and received a close frame, closes the TCP connection. tungstenite's client reports
/// that end of stream, and only that, as `ConnectionClosed`; an RST, a timeout or data
/// after the close frame are other errors.
fn assert_closed_cleanly(client: &mut Client) {
    match client.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        Err(e) => panic!("expected the server's clean close, got {e}"),
        Ok(message) => panic!("expected the server's clean close, got {message:?}"),
    }
}

/// A client-side frame with a 64-bit length field, written by hand: the header only.
fn raw_header_64(first_byte: u8, len: u64) -> Vec<u8> {
    let mut frame = vec![first_byte, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0xa1, 0xb2, 0xc3, 0xd4]);
    frame
}

fn send_raw(client: &mut Client, bytes: &[u8]) {
    client.get_mut().write_all(bytes).expect("write raw frame");
}

/// Send a request by hand and read the whole answer, up to the server's close.
fn http_exchange(server: &Server, request: &str) -> String {
    let mut stream = server.connect();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("read until the server closes");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn every_client_is_greeted_on_open() {
    let server = ws_server(&[]);
    let _client = join(&server);
}

#[test]
fn get_slash_serves_the_chat_page() {
    let server = ws_server(&[]);
    let answer = http_exchange(
        &server,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Type: text/html; charset=utf-8\r\n"));
    // The page connects back to wherever it came from, not to localhost:3000.
    assert!(answer.contains("new WebSocket(`ws://${location.host}/`)"));
    assert!(answer.contains("Client message: Hi!"));
    assert!(answer.trim_end().ends_with("</html>"));
}

#[test]
fn a_websocket_opens_at_any_path() {
    let server = ws_server(&[]);
    let mut clients: Vec<Client> = ["/chat", "/rooms/42?nick=x", "/"]
        .into_iter()
        .map(|path| {
            let mut client = connect_at(&server, path);
            assert_eq!(next_message(&mut client), Message::text(GREETING));
            client
        })
        .collect();
    // One room, whatever the path.
    clients[0].send(Message::text("from /chat")).unwrap();
    for client in &mut clients {
        assert_eq!(next_message(client), Message::text("from /chat"));
    }
}

#[test]
fn other_paths_get_404() {
    let server = ws_server(&[]);
    let answer = http_exchange(
        &server,
        "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
}

#[test]
fn a_bad_handshake_gets_400_with_the_version_we_speak() {
    let server = ws_server(&[]);
    for (key, version) in [
        ("", "13"),                        // missing key
        ("bm90IDE2IGJ5dGVz", "13"),        // base64, but of 12 bytes
        ("dGhlIHNhbXBsZSBub25jZQ==", "8"), // an old draft's version
    ] {
        let key_line = match key {
            "" => String::new(),
            key => format!("Sec-WebSocket-Key: {key}\r\n"),
        };
        let request = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {key_line}Sec-WebSocket-Version: {version}\r\n\r\n"
        );
        let answer = http_exchange(&server, &request);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{key:?} {version}: {answer}"
        );
        assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
    }
}

#[test]
fn a_handshake_that_never_ends_gets_408_at_the_header_timeout() {
    let server = ws_server(&["--header-timeout", "0.3"]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn over_max_conns_a_browser_gets_503() {
    let server = ws_server(&["--max-conns", "1"]);
    let _client = join(&server);
    // The answer comes at accept, before any request; sending none means no unread input
    // on the server's side, whose close would then be a reset.
    let mut answer = Vec::new();
    server.connect().read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
}

#[test]
fn a_text_message_reaches_every_client_including_the_sender() {
    let mut server = ws_server(&[]);
    let mut clients: Vec<Client> = (0..3).map(|_| join(&server)).collect();
    clients[1]
        .send(Message::text("Client message: Hi!"))
        .unwrap();
    clients[1].send(Message::text("and again")).unwrap();
    // Each once, in order: the sender too, which has its own copy at once and none from
    // the room.
    for client in &mut clients {
        assert_eq!(next_message(client), Message::text("Client message: Hi!"));
        assert_eq!(next_message(client), Message::text("and again"));
    }
    let line = server.wait_for_log("received from", Duration::from_secs(5));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.ends_with(": Client message: Hi!")),
        "{line:?}"
    );
}

#[test]
fn close_code_1014_is_answered_in_kind_and_1004_gets_1002() {
    let server = ws_server(&[]);
    for (sent, answer) in [
        (1014, 1014),
        (1012, 1012),
        (4999, 4999),
        (1004, 1002),
        (1016, 1002),
    ] {
        let mut client = join(&server);
        send_raw(&mut client, &raw_frame(0x88, &u16::to_be_bytes(sent), true));
        // Read by hand: tungstenite's client would judge the code itself.
        let mut reply = Vec::new();
        client.get_mut().read_to_end(&mut reply).unwrap();
        assert_eq!(reply[0], 0x88, "{sent}: a close frame: {reply:?}");
        assert_eq!(
            usize::from(reply[1]) + 2,
            reply.len(),
            "{sent}: and nothing after it"
        );
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), answer, "{sent}");
    }
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_gets_1002() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    send_raw(&mut client, &raw_header_64(0x82, 1 << 63));
    assert_eq!(close_code(&mut client), CloseCode::Protocol);
}

#[test]
fn a_message_then_a_broken_frame_in_one_write_reaches_everyone_before_the_1002() {
    let server = ws_server(&[]);
    let mut sender = join(&server);
    let mut listener = join(&server);
    // Autobahn 3.2: a valid message, then one with a reserved bit, in one segment.
    let mut bytes = raw_frame(0x81, b"last words", true);
    bytes.extend(raw_frame(0xa1, b"bad", true));
    send_raw(&mut sender, &bytes);
    assert_eq!(next_message(&mut sender), Message::text("last words"));
    assert_eq!(close_code(&mut sender), CloseCode::Protocol);
    assert_eq!(next_message(&mut listener), Message::text("last words"));
}

#[test]
fn a_binary_message_is_echoed_to_its_sender_only() {
    let server = ws_server(&[]);
    let mut sender = join(&server);
    let mut other = join(&server);
    sender.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(
        next_message(&mut sender),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    // The other client hears the next text message, and nothing before it.
    sender.send(Message::text("after the binary")).unwrap();
    assert_eq!(next_message(&mut other), Message::text("after the binary"));
}

#[test]
fn a_ping_gets_a_pong() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    client.send(Message::Ping("are you there".into())).unwrap();
    match client.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn a_close_frame_is_answered_and_the_connection_closed() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
    // The server's answering close frame echoes our code and reason (RFC 6455 §5.5.1),
    // then the end of the stream.
    match client.read().expect("the answering close frame") {
        Message::Close(Some(frame)) => {
            assert_eq!(
                (frame.code, frame.reason.as_str()),
                (CloseCode::Normal, "bye")
            );
        }
        other => panic!("expected the answering close frame, got {other:?}"),
    }
    assert_closed_cleanly(&mut client);
}

#[test]
fn a_message_of_exactly_1_mib_is_taken() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    let message = "x".repeat(1024 * 1024);
    client.send(Message::text(message.clone())).unwrap();
    assert_eq!(next_message(&mut client), Message::text(message));
}

#[test]
fn a_message_over_1_mib_gets_1009() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    client
        .send(Message::text("x".repeat(1024 * 1024 + 1)))
        .unwrap();
    assert_eq!(close_code(&mut client), CloseCode::Size);
}

#[test]
fn max_message_sets_the_cap() {
    let server = ws_server(&["--max-message", "4194304"]);
    let mut sender = join(&server);
    let mut listener = join(&server);
    let message = "x".repeat(4 * 1024 * 1024);
    sender.send(Message::text(message.clone())).unwrap();
    assert_eq!(next_message(&mut sender), Message::text(message.clone()));
    assert_eq!(next_message(&mut listener), Message::text(message));
    sender
        .send(Message::binary(vec![0u8; 4 * 1024 * 1024 + 1]))
        .unwrap();
    assert_eq!(close_code(&mut sender), CloseCode::Size);
}

#[test]
fn max_message_is_at_least_a_control_frame_and_at_most_1_gib() {
    for bad in ["124", "1073741825", "1M", ""] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sockloop"))
            .args([
                "--mode",
                "ws",
                "--addr",
                "127.0.0.1:0",
                "--max-message",
                bad,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sockloop");
        // Refused, it exits at once; taken, it would serve until killed.
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(5) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("--max-message {bad} was taken: the server started");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(2), "--max-message {bad}");
        let mut said = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut said)
            .unwrap();
        assert!(said.contains("--max-message"), "{bad}: {said}");
    }
}

#[test]
fn invalid_utf8_in_a_text_message_gets_1007() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    send_raw(
        &mut client,
        &raw_frame(0x81, &[b'o', b'k', 0xc3, 0x28], true),
    );
    assert_eq!(close_code(&mut client), CloseCode::Invalid);
}

#[test]
fn an_unmasked_client_frame_gets_1002() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    send_raw(&mut client, &raw_frame(0x81, b"hi", false));
    assert_eq!(close_code(&mut client), CloseCode::Protocol);
}

#[test]
fn a_reserved_opcode_gets_1002() {
    let server = ws_server(&[]);
    let mut client = join(&server);
    send_raw(&mut client, &raw_frame(0x83, b"", true));
    assert_eq!(close_code(&mut client), CloseCode::Protocol);
}

#[test]
fn a_slow_consumer_is_closed_with_1008_while_the_room_goes_on() {
    let mut server = ws_server(&[]);
    // A client that stops reading. Its receive buffer is pinned small (SO_RCVBUF turns off
    // the kernel's autotuning), so the server's queue for it fills soon.
    let slow_socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow_socket.set_recv_buffer_size(16 * 1024).unwrap();
    slow_socket.connect(&server.addr.into()).unwrap();
    let slow_stream: TcpStream = slow_socket.into();
    slow_stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut slow, _) = tungstenite::client(format!("ws://{}/", server.addr), slow_stream).unwrap();

    let mut sender = join(&server);
    let mut listener = join(&server);
    // 64 KiB at a time, until the server gives up on the slow client. The server's send
    // buffer for it can grow to net.ipv4.tcp_wmem's maximum (4 MiB here) before its queue
    // starts, so this takes some 6 MiB; the bound is well past that.
    let chunk = "m".repeat(64 * 1024);
    let started = Instant::now();
    let mut sent = 0;
    while server
        .wait_for_log("too slow", Duration::from_millis(1))
        .is_none()
    {
        assert!(sent < 1000, "the slow client was never closed");
        sender.send(Message::text(chunk.clone())).unwrap();
        assert_eq!(next_message(&mut sender), Message::text(chunk.clone()));
        assert_eq!(next_message(&mut listener), Message::text(chunk.clone()));
        sent += 1;
    }
    eprintln!(
        "slow client closed after {sent} messages, {:?}",
        started.elapsed()
    );

    // The others chat on.
    sender.send(Message::text("still here")).unwrap();
    assert_eq!(next_message(&mut listener), Message::text("still here"));
    assert_eq!(next_message(&mut sender), Message::text("still here"));

    // The slow client, reading at last, gets what was queued, then 1008.
    assert_eq!(close_code(&mut slow), CloseCode::Policy);
}

#[test]
fn with_two_loops_a_broadcast_reaches_the_clients_of_both() {
    let server = ws_server(&["--threads", "2"]);
    // SO_REUSEPORT hashes each connection to one loop: with 16 clients, the chance that
    // all land on the same loop is 2 in 65,536.
    let mut clients: Vec<Client> = (0..16).map(|_| join(&server)).collect();
    for (i, sender) in [0, 7, 15].into_iter().enumerate() {
        let text = format!("message {i} from client {sender}");
        clients[sender].send(Message::text(text.clone())).unwrap();
        for client in &mut clients {
            assert_eq!(next_message(client), Message::text(text.clone()));
        }
    }
}

#[test]
fn an_idle_websocket_is_told_1001_before_the_close() {
    let server = ws_server(&["--idle-timeout", "0.5"]);
    let mut client = join(&server);
    let started = Instant::now();
    assert_eq!(close_code(&mut client), CloseCode::Away);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "the close frame came after {waited:?}"
    );
    // Our FIN right behind it, not at the 2 s a closing connection may take (the bound
    // leaves room for a loaded machine).
    let started = Instant::now();
    assert_closed_cleanly(&mut client);
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1500), "FIN after {waited:?}");

    // A page viewer on a kept-alive connection is not a WebSocket: no frame, only the close.
    let mut viewer = server.connect();
    viewer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    viewer.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.trim_end().ends_with("</html>"),
        "nothing after the page"
    );
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let mut server = ws_server(&["--threads", "2", "--shutdown-timeout", "10"]);
    let mut clients: Vec<Client> = (0..4).map(|_| join(&server)).collect();
    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    for client in &mut clients {
        assert_eq!(close_code(client), CloseCode::Away);
    }
    // Each client answers the close, as a browser would; the server has closed its side
    // already, and the client reads the end of the stream. Checked while the server is
    // still running (it waits for our FINs), and well before any of its timeouts (2 s
    // without progress, 10 s to shut down): its exit, or a timeout, would close the
    // sockets anyway.
    for client in &mut clients {
        let _ = client.close(None);
        let _ = client.flush();
        assert_closed_cleanly(client);
    }
    let closed_after = signalled.elapsed();
    assert!(
        closed_after < Duration::from_millis(1500),
        "the server's FINs came {closed_after:?} after the signal"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited before the clients closed"
    );
    // Our FINs let it go.
    drop(clients);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0), "{:?}", server.log);
}
