//! The ws session, fed the way the loop feeds it.

use std::sync::Arc;

use super::frames::{for_log, is_valid_close_code};
use super::*;
use crate::protocol::Responses;
use crate::stats::Stats;

/// The example of RFC 6455 §1.3.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What one call produced.
struct Call {
    outcome: Outcome,
    out: Vec<u8>,
    broadcast: Vec<Arc<[u8]>>,
    stats: Stats,
}

fn offer_with_budget(session: &mut WsSession, input: &[u8], out_budget: usize) -> Call {
    let page = Responses::new(b"", "text/plain");
    let mut stats = Stats::default();
    let mut broadcast = Vec::new();
    let mut out = Vec::new();
    let mut ctx = Context {
        responses: &page,
        out_budget,
        peer: "127.0.0.1:9".parse().unwrap(),
        stats: &mut stats,
        broadcast: &mut broadcast,
    };
    let outcome = session.on_input(input, &mut out, &mut ctx);
    Call {
        outcome,
        out,
        broadcast,
        stats,
    }
}

fn offer(session: &mut WsSession, input: &[u8]) -> Call {
    offer_with_budget(session, input, usize::MAX)
}

fn upgrade_request(key: &str, version: &str) -> Vec<u8> {
    upgrade_request_at("/", key, version)
}

fn upgrade_request_at(path: &str, key: &str, version: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
    .into_bytes()
}

/// A session past the handshake, and the greeting it sent.
fn open_session() -> WsSession {
    open_session_with(WsSession::default())
}

fn open_session_with(mut session: WsSession) -> WsSession {
    let call = offer(&mut session, &upgrade_request(KEY, "13"));
    assert_eq!(call.outcome.next, Next::Continue);
    session
}

/// A frame as a client sends it (RFC 6455 §5.2): masked, with the shortest length form.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![first_byte];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A frame as the server sends it: unmasked.
fn server_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

fn close_code(out: &[u8]) -> u16 {
    assert_eq!(out[0], 0x88, "not a close frame: {out:?}");
    u16::from_be_bytes([out[2], out[3]])
}

/// Split `out` into the server frames it holds (all under 64 KiB), each whole.
fn frames(mut out: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        let (header, len) = match out[1] {
            126 => (4, usize::from(u16::from_be_bytes([out[2], out[3]]))),
            len => (2, usize::from(len)),
        };
        frames.push(out[..header + len].to_vec());
        out = &out[header + len..];
    }
    frames
}

/// A client's close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    client_frame(0x88, &body)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn the_handshake_answers_101_with_the_accept_key_then_greets() {
    let mut session = WsSession::default();
    let request = upgrade_request(KEY, "13");
    let call = offer(&mut session, &request);
    let answered = Outcome::new(request.len(), Next::Continue).answered(true);
    assert_eq!(call.outcome, answered);
    let head_end = call.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = text(&call.out[..head_end]);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{head}"
    );
    assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
    assert_eq!(
        call.out[head_end..],
        server_frame(0x81, GREETING.as_bytes())
    );
    assert_eq!(call.stats.requests, 1);
}

#[test]
fn any_split_of_the_handshake_gives_the_same_answer() {
    let request = upgrade_request(KEY, "13");
    let mut whole = request.clone();
    whole.extend(client_frame(0x81, b"hi"));
    let expected = {
        let mut session = WsSession::default();
        let call = offer(&mut session, &whole);
        (call.out, call.broadcast)
    };
    for chunk in [1, 2, 3, 7, 50, 190] {
        // Play the loop's part: keep what was not consumed, append what arrives next.
        let mut session = WsSession::default();
        let (mut held, mut out, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
        for piece in whole.chunks(chunk) {
            held.extend_from_slice(piece);
            let call = offer(&mut session, &held);
            held.drain(..call.outcome.consumed);
            out.extend(call.out);
            broadcast.extend(call.broadcast);
        }
        assert!(held.is_empty(), "chunk {chunk}");
        assert_eq!((out, broadcast), expected, "chunk {chunk}");
    }
}

#[test]
fn a_bad_handshake_gets_400_with_the_version_we_speak() {
    let requests = [
        upgrade_request("c2hvcnQ=", "13"), // 5 bytes, not 16
        upgrade_request("dGhlIHNhbXBsZSBub25jZR==", "13"), // trailing bits set
        upgrade_request("dGhlIHNhbXBsZSBub25jZQ=", "13"), // padding cut
        upgrade_request("dGhlIHNhbXBsZSBub25j*Q==", "13"), // not base64
        upgrade_request(KEY, "12"),        // another version
        text(&upgrade_request(KEY, "13")) // too old
            .replace("HTTP/1.1", "HTTP/1.0")
            .into_bytes(),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec(),
    ];
    for request in requests {
        let mut session = WsSession::default();
        let call = offer(&mut session, &request);
        let out = text(&call.out);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(out.contains("Sec-WebSocket-Version: 13\r\n"), "{out}");
        assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{out}");
    }
}

#[test]
fn get_slash_serves_the_page_and_keeps_the_connection() {
    let mut session = WsSession::default();
    let call = offer(&mut session, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = text(&call.out);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(out.contains(&format!("Content-Length: {}\r\n", CHAT_PAGE.len())));
    assert!(call.out.ends_with(CHAT_PAGE));
    assert_eq!(call.outcome.next, Next::Continue);

    // The same connection may then upgrade.
    let call = offer(&mut session, &upgrade_request(KEY, "13"));
    assert!(text(&call.out).starts_with("HTTP/1.1 101 "));
}

#[test]
fn head_gets_the_page_headers_only() {
    let mut session = WsSession::default();
    let call = offer(&mut session, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = text(&call.out);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "{out}");
}

#[test]
fn the_handshake_is_answered_at_any_path() {
    for path in ["/chat", "/a/b/c", "/?room=1", "/x%20y"] {
        let mut session = WsSession::default();
        let call = offer(&mut session, &upgrade_request_at(path, KEY, "13"));
        let out = text(&call.out);
        assert!(out.starts_with("HTTP/1.1 101 "), "{path}: {out}");
        assert!(out.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")));
        assert_eq!(call.outcome.next, Next::Continue, "{path}");
    }
}

#[test]
fn other_paths_get_404_and_other_methods_405() {
    let mut session = WsSession::default();
    let call = offer(&mut session, b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(text(&call.out).starts_with("HTTP/1.1 404 "));
    assert_eq!(call.outcome.next, Next::Continue);
    let call = offer(&mut session, b"GET /x HTTP/1.0\r\n\r\n");
    assert!(text(&call.out).starts_with("HTTP/1.1 404 "));
    assert_eq!(call.outcome.next, Next::CloseAfterFlush, "HTTP/1.0 closes");

    let mut session = WsSession::default();
    let call = offer(
        &mut session,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert!(text(&call.out).starts_with("HTTP/1.1 405 "));
    assert_eq!(call.outcome.next, Next::CloseAfterFlush);
}

#[test]
fn a_get_with_a_body_is_refused_and_a_stalled_head_gets_408() {
    let mut session = WsSession::default();
    let call = offer(
        &mut session,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(text(&call.out).starts_with("HTTP/1.1 400 "));
    assert_eq!(call.outcome.next, Next::CloseAfterFlush);

    let mut session = WsSession::default();
    let call = offer(&mut session, b"GET / HTTP/1.1\r\nHost:");
    assert_eq!(call.outcome, Outcome::new(0, Next::Continue));
    assert!(session.in_request_head());
    let page = Responses::new(b"", "text/plain");
    let (mut stats, mut broadcast, mut out) = (Stats::default(), Vec::new(), Vec::new());
    let mut ctx = Context {
        responses: &page,
        out_budget: usize::MAX,
        peer: "127.0.0.1:9".parse().unwrap(),
        stats: &mut stats,
        broadcast: &mut broadcast,
    };
    let next = session.on_header_timeout(&mut out, &mut ctx);
    assert!(text(&out).starts_with("HTTP/1.1 408 "));
    assert_eq!(next, Next::CloseAfterFlush);
}

#[test]
fn garbage_gets_400_and_an_endless_head_431() {
    let mut session = WsSession::default();
    let call = offer(&mut session, b"\x16\x03\x01 hello\r\n\r\n");
    assert!(text(&call.out).starts_with("HTTP/1.1 400 "));
    assert_eq!(call.outcome.next, Next::CloseAfterFlush);

    let mut session = WsSession::default();
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    head.resize(crate::protocol::http::MAX_HEAD_BYTES + 1, b'a');
    let call = offer(&mut session, &head);
    assert!(text(&call.out).starts_with("HTTP/1.1 431 "));
    assert_eq!(call.outcome.next, Next::CloseAfterFlush);
}

#[test]
fn a_text_message_goes_to_its_sender_at_once_and_to_the_room() {
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x81, b"Client message: Hi!"));
    let expected = server_frame(0x81, b"Client message: Hi!");
    assert_eq!(call.out, expected, "the sender's own copy");
    assert_eq!(call.broadcast.len(), 1);
    assert_eq!(&call.broadcast[0][..], &expected[..], "the others'");
    assert_eq!(call.stats.messages, 1);
}

#[test]
fn the_sender_hears_its_messages_in_order_with_its_other_answers() {
    let mut session = open_session();
    let mut input = client_frame(0x81, b"one");
    input.extend(client_frame(0x82, b"two"));
    input.extend(client_frame(0x89, b"three"));
    input.extend(client_frame(0x81, b"four"));
    let call = offer(&mut session, &input);
    assert_eq!(
        frames(&call.out),
        [
            server_frame(0x81, b"one"),
            server_frame(0x82, b"two"),
            server_frame(0x8a, b"three"),
            server_frame(0x81, b"four"),
        ]
    );
}

#[test]
fn messages_before_a_broken_frame_reach_everyone_then_the_connection_fails() {
    // Autobahn 3.2-3.4, 4.1.3-4.2.5 and 5.15, and more of the kind: whatever breaks the
    // connection, the complete messages before it are delivered first, to the sender too.
    let broken: [(&str, Vec<u8>, u16); 7] = [
        ("reserved bits", client_frame(0xa1, b"x"), 1002),
        ("reserved data opcode", client_frame(0x85, b"x"), 1002),
        ("reserved control opcode", client_frame(0x8b, b"x"), 1002),
        ("a stray continuation", client_frame(0x80, b"x"), 1002),
        ("top bit of a 64-bit length", header_64(0x81, 1 << 63), 1002),
        ("an invalid close code", close_frame(1004, b""), 1002),
        ("invalid UTF-8", client_frame(0x81, &[0xff]), 1007),
    ];
    for (what, bad, code) in broken {
        let mut input = client_frame(0x81, b"first");
        input.extend(client_frame(0x01, b"sec"));
        input.extend(client_frame(0x80, b"ond"));
        input.extend(client_frame(0x89, b"ping"));
        input.extend(bad);
        input.extend(client_frame(0x81, b"never"));
        let mut session = open_session();
        let call = offer(&mut session, &input);
        let out = frames(&call.out);
        assert_eq!(out.len(), 4, "{what}: {out:?}");
        assert_eq!(out[0], server_frame(0x81, b"first"), "{what}");
        assert_eq!(out[1], server_frame(0x81, b"second"), "{what}");
        assert_eq!(out[2], server_frame(0x8a, b"ping"), "{what}");
        assert_eq!(close_code(&out[3]), code, "{what}");
        let room: Vec<&[u8]> = call.broadcast.iter().map(|f| &f[..]).collect();
        assert_eq!(room, [&out[0][..], &out[1][..]], "{what}");
        assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{what}");
    }
}

#[test]
fn a_binary_message_is_echoed_to_its_sender() {
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x82, &[0, 1, 2, 255]));
    assert_eq!(call.out, server_frame(0x82, &[0, 1, 2, 255]));
    assert!(call.broadcast.is_empty());
}

#[test]
fn a_ping_gets_a_pong_with_its_payload() {
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x89, b"are you there"));
    assert_eq!(call.out, server_frame(0x8a, b"are you there"));
    assert_eq!(call.outcome.next, Next::Continue);
}

#[test]
fn a_close_frame_is_answered_then_the_connection_closes() {
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x88, &1000u16.to_be_bytes()));
    assert_eq!(close_code(&call.out), 1000);
    assert_eq!(call.outcome.next, Next::CloseAfterFlush);
}

#[test]
fn broken_frames_get_the_close_code_that_says_why() {
    let too_big = {
        // A text frame announcing 1 MiB + 1 bytes: refused at its header.
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(u64::from(DEFAULT_MAX_MESSAGE) + 1).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame
    };
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "invalid UTF-8",
            client_frame(0x81, &[b'a', 0xff, 0xfe]),
            1007,
        ),
        ("unmasked", server_frame(0x81, b"hi"), 1002),
        ("reserved opcode", client_frame(0x83, b""), 1002),
        ("reserved bit", client_frame(0xc1, b"hi"), 1002),
        ("too big", too_big, 1009),
    ];
    for (what, input, code) in cases {
        let mut session = open_session();
        let call = offer(&mut session, &input);
        assert_eq!(close_code(&call.out), code, "{what}");
        assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{what}");
        assert_eq!(call.stats.errors, 1, "{what}");
    }
}

/// A header announcing `len` bytes in the 64-bit form, then a mask (RFC 6455 §5.2).
fn header_64(first_byte: u8, len: u64) -> Vec<u8> {
    let mut frame = vec![first_byte, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame
}

#[test]
fn a_64_bit_length_with_its_top_bit_set_gets_1002_not_1009() {
    // "the most significant bit MUST be 0" (§5.2): whatever the rest says, it is no length.
    for len in [1 << 63, (1 << 63) + 5, u64::MAX] {
        for first_byte in [0x81, 0x82, 0x01, 0x89] {
            let mut session = open_session();
            let call = offer(&mut session, &header_64(first_byte, len));
            assert_eq!(close_code(&call.out), 1002, "{first_byte:#x} {len:#x}");
            assert_eq!(call.outcome.next, Next::CloseAfterFlush);
            assert_eq!(call.stats.errors, 1);
        }
    }
    // Known from the length bytes alone: the mask need not come.
    let mut session = open_session();
    let call = offer(&mut session, &header_64(0x82, 1 << 63)[..10]);
    assert_eq!(close_code(&call.out), 1002);
    // The largest length the form allows is a length: too big for us, 1009.
    let mut session = open_session();
    let call = offer(&mut session, &header_64(0x82, (1 << 63) - 1));
    assert_eq!(close_code(&call.out), 1009);
}

#[test]
fn every_registered_close_code_is_answered_in_kind() {
    // RFC 6455 §7.4.1, and IANA's registry since: 1012, 1013 and 1014 (bad gateway).
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for code in valid {
        let mut session = open_session();
        let call = offer(&mut session, &close_frame(code, b"bye"));
        let mut answer = code.to_be_bytes().to_vec();
        answer.extend_from_slice(b"bye");
        assert_eq!(call.out, server_frame(0x88, &answer), "{code}");
        assert_eq!(call.outcome.next, Next::CloseAfterFlush);
        assert_eq!(call.stats.errors, 0, "{code}");
    }
}

#[test]
fn a_close_code_no_client_may_send_gets_1002() {
    // 1004 reserved; 1005, 1006 and 1015 only for reporting (§7.4.1); 1016-2999 kept for
    // the protocol's future; below 1000 and above 4999 unused (§7.4.2).
    let invalid = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in invalid {
        let mut session = open_session();
        let call = offer(&mut session, &close_frame(code, b""));
        assert_eq!(close_code(&call.out), 1002, "{code}");
        assert_eq!(call.stats.errors, 1, "{code}");
    }
}

#[test]
fn close_codes_follow_the_rfc_and_the_iana_registry() {
    let valid = (0..=u16::MAX).filter(|&c| is_valid_close_code(c));
    let ranges: Vec<(u16, u16)> = valid.fold(Vec::new(), |mut ranges, code| {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == code => *end = code,
            _ => ranges.push((code, code)),
        }
        ranges
    });
    assert_eq!(ranges, [(1000, 1003), (1007, 1014), (3000, 4999)]);
}

#[test]
fn a_close_frame_is_checked_before_it_is_answered() {
    let mut too_long = vec![0x88, 0x80 | 126, 0, 126];
    too_long.extend_from_slice(&[0; 4 + 126]);
    let cases: [(&str, Vec<u8>, u16); 7] = [
        ("a 1-byte body", client_frame(0x88, &[0x03]), 1002),
        (
            "a reason that isn't UTF-8",
            close_frame(1000, &[0xce, 0xba, 0xff]),
            1007,
        ),
        (
            "reserved bits",
            client_frame(0xc8, &1000u16.to_be_bytes()),
            1002,
        ),
        (
            "fragmented",
            client_frame(0x08, &1000u16.to_be_bytes()),
            1002,
        ),
        ("unmasked", server_frame(0x88, &1000u16.to_be_bytes()), 1002),
        ("over 125 bytes", too_long, 1002),
        ("the biggest", close_frame(1000, &[b'a'; 123]), 1000),
    ];
    for (what, input, code) in cases {
        let mut session = open_session();
        let call = offer(&mut session, &input);
        assert_eq!(close_code(&call.out), code, "{what}");
        assert_eq!(call.outcome.next, Next::CloseAfterFlush, "{what}");
    }
    // No body, no code: the answer has none either (§5.5.1).
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x88, b""));
    assert_eq!(call.out, server_frame(0x88, b""));
}

#[test]
fn a_close_frame_in_pieces_is_answered_once_whole() {
    let mut input = client_frame(0x81, b"before");
    input.extend(close_frame(1014, b"bad gateway"));
    let whole = offer(&mut open_session(), &input);
    assert_eq!(close_code(&whole.out[8..]), 1014);
    for cut in 1..input.len() {
        let mut session = open_session();
        let first = offer(&mut session, &input[..cut]);
        assert_eq!(first.outcome.next, Next::Continue, "cut at {cut}");
        // The loop keeps what was not consumed and offers it again with what comes next.
        let second = offer(&mut session, &input[first.outcome.consumed..]);
        assert_eq!(second.outcome.next, Next::CloseAfterFlush, "cut at {cut}");
        assert_eq!([first.out, second.out].concat(), whole.out, "cut at {cut}");
    }
}

#[test]
fn a_session_takes_messages_up_to_its_own_cap() {
    let big = vec![b'a'; 3 * 1024 * 1024];
    let mut session = open_session_with(WsSession::new(4 * 1024 * 1024));
    let call = offer(&mut session, &client_frame(0x82, &big));
    assert_eq!(call.outcome.next, Next::Continue);
    assert_eq!(call.out.len(), 10 + big.len(), "echoed whole");

    let mut session = open_session_with(WsSession::new(4 * 1024 * 1024));
    let over = vec![b'a'; 4 * 1024 * 1024 + 1];
    let call = offer(&mut session, &client_frame(0x82, &over));
    assert_eq!(close_code(&call.out), 1009);

    // The default is 1 MiB, and no cap is below a control frame's 125 bytes (§5.5).
    let mut session = open_session();
    let call = offer(&mut session, &client_frame(0x82, &big));
    assert_eq!(close_code(&call.out), 1009);
    let mut session = open_session_with(WsSession::new(1));
    let call = offer(&mut session, &client_frame(0x89, &[7; 125]));
    assert_eq!(call.out, server_frame(0x8a, &[7; 125]));
}

#[test]
fn a_fragmented_message_over_the_limit_gets_1009() {
    let mut session = open_session();
    // 17 fragments of 64 KiB: 1 MiB + 64 KiB in all.
    let fragment = vec![b'a'; 64 * 1024];
    let mut input = Vec::new();
    for i in 0..17 {
        let opcode = if i == 0 { 0x01 } else { 0x00 };
        let fin = if i == 16 { 0x80 } else { 0 };
        input.extend_from_slice(&[fin | opcode, 0x80 | 127]);
        input.extend_from_slice(&(fragment.len() as u64).to_be_bytes());
        input.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
        input.extend_from_slice(&fragment);
    }
    let call = offer(&mut session, &input);
    assert_eq!(close_code(&call.out), 1009);
}

#[test]
fn output_past_the_budget_leaves_the_rest_of_the_input_for_later() {
    let mut session = open_session();
    let mut input = Vec::new();
    for _ in 0..100 {
        input.extend(client_frame(0x82, &[7; 100]));
    }
    let call = offer_with_budget(&mut session, &input, 1000);
    assert!(call.outcome.consumed < input.len());
    assert!(call.out.len() >= 1000);
    // Offered again with room, the rest is echoed: nothing lost, nothing twice.
    let again = offer(&mut session, &input[call.outcome.consumed..]);
    assert_eq!(call.out.len() + again.out.len(), 100 * 102);
}

#[test]
fn a_broadcast_is_sent_on_until_the_client_is_too_far_behind() {
    let peer = "127.0.0.1:9".parse().unwrap();

    let mut page_viewer = WsSession::default();
    let mut out = Vec::new();
    assert_eq!(
        page_viewer.on_broadcast(0, false, &mut out, peer),
        Delivery::Skip,
        "a connection that never upgraded is not in the room"
    );
    assert!(out.is_empty());

    let mut session = open_session();
    let next = session.on_broadcast(MAX_UNREAD - 1, false, &mut out, peer);
    assert_eq!((next, out.as_slice()), (Delivery::Send, &[][..]));

    let next = session.on_broadcast(MAX_UNREAD, false, &mut out, peer);
    assert_eq!(next, Delivery::Close);
    assert_eq!(close_code(&out), 1008);
}

#[test]
fn a_client_the_room_drops_gets_1008_however_little_it_owes() {
    let peer = "127.0.0.1:9".parse().unwrap();
    let mut session = open_session();
    let mut out = Vec::new();
    assert_eq!(
        session.on_broadcast(0, true, &mut out, peer),
        Delivery::Close
    );
    assert_eq!(close_code(&out), 1008);
}

#[test]
fn with_a_larger_cap_a_client_may_be_one_message_behind_not_two() {
    let peer = "127.0.0.1:9".parse().unwrap();
    let cap = 4 * 1024 * 1024;
    let mut session = open_session_with(WsSession::new(cap as u32));
    let mut out = Vec::new();
    let next = session.on_broadcast(cap - 1, false, &mut out, peer);
    assert_eq!((next, out.as_slice()), (Delivery::Send, &[][..]));
    let next = session.on_broadcast(cap, false, &mut out, peer);
    assert_eq!(next, Delivery::Close);
    assert_eq!(close_code(&out), 1008);
}

#[test]
fn shutdown_sends_1001() {
    let mut session = open_session();
    let mut out = Vec::new();
    assert_eq!(session.on_shutdown(&mut out), Next::CloseAfterFlush);
    assert_eq!(close_code(&out), 1001);
}

#[test]
fn an_idle_websocket_gets_1001_and_an_idle_page_viewer_nothing() {
    let mut session = open_session();
    let mut out = Vec::new();
    assert_eq!(session.on_idle_timeout(&mut out), Next::CloseAfterFlush);
    let mut answer = 1001u16.to_be_bytes().to_vec();
    answer.extend_from_slice(b"idle timeout");
    assert_eq!(out, server_frame(0x88, &answer));

    let mut page_viewer = WsSession::default();
    offer(&mut page_viewer, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    out.clear();
    assert_eq!(page_viewer.on_idle_timeout(&mut out), Next::CloseAfterFlush);
    assert!(out.is_empty());
}

#[test]
fn a_session_is_two_words_in_the_slab() {
    assert!(std::mem::size_of::<WsSession>() <= 2 * std::mem::size_of::<usize>());
}

#[test]
fn keys_must_be_base64_of_16_bytes() {
    assert!(is_valid_key(KEY.as_bytes()));
    assert!(is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
    assert!(is_valid_key(b"+/+/+/+/+/+/+/+/+/+/+w=="));
    assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAB=="));
    assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAAAA"));
    assert!(!is_valid_key(b""));
}

#[test]
fn log_lines_show_short_messages_whole_and_cut_long_ones() {
    assert_eq!(for_log("Client message: Hi!"), "Client message: Hi!");
    assert_eq!(for_log("two\nlines"), "two\\nlines");
    let long = "é".repeat(150);
    let shown = for_log(&long);
    assert!(shown.starts_with(&"é".repeat(LOGGED_CHARS)));
    assert!(shown.ends_with("… (300 bytes)"), "{shown}");
}
