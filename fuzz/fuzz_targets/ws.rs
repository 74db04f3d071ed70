//! Arbitrary bytes, cut into arbitrary reads, fed to a ws-mode session the way the loop
//! feeds it, often after a valid opening handshake so that the fuzzer spends its time on
//! frames. Whatever the bytes, nothing panics, and what comes out is well formed: HTTP/1.1
//! responses (each head, then exactly its Content-Length of body) up to a `101`, then
//! unmasked server frames, each whole, and nothing after a close frame or a closing
//! response. Every broadcast is one whole text frame.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sockloop::protocol::responses::{Responses, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use sockloop::protocol::ws::CHAT_PAGE;
use sockloop::protocol::{Context, Mode, Next, Session};
use sockloop::stats::Stats;

const HANDSHAKE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (knobs, cuts, fuzzed) = input;
    let out_budget = match knobs & 0x3 {
        0 => 1,
        1 => 300,
        _ => 64 * 1024,
    };
    let mut bytes = Vec::new();
    if knobs & 0x4 != 0 {
        bytes.extend_from_slice(HANDSHAKE);
    }
    bytes.extend_from_slice(fuzzed);
    let shut_down_at_end = knobs & 0x8 != 0;

    let page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    let mut stats = Stats::default();
    let mut session = Session::new(Mode::Ws);
    let mut unconsumed: Vec<u8> = Vec::new();
    let (mut out, mut written, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = Next::Continue;

    let mut ends: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (bytes.len() + 1))
        .collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut start = 0;
    'reads: for end in ends {
        unconsumed.extend_from_slice(&bytes[start..end]);
        start = end;
        // Offer what is buffered until the session stops making progress, as the loop does
        // once the peer has read what it was sent.
        loop {
            let mut ctx = Context {
                responses: &page,
                out_budget,
                peer: SocketAddr::from(([127, 0, 0, 1], 9)),
                stats: &mut stats,
                broadcast: &mut broadcast,
            };
            let outcome = session.on_input(&unconsumed, &mut out, &mut ctx);
            assert!(outcome.consumed <= unconsumed.len());
            unconsumed.drain(..outcome.consumed);
            written.append(&mut out);
            next = outcome.next;
            if next == Next::CloseAfterFlush {
                break 'reads;
            }
            if outcome.consumed == 0 {
                break;
            }
        }
    }
    if next == Next::Continue && shut_down_at_end {
        assert_eq!(session.on_shutdown(0, &mut out), Next::CloseAfterFlush);
        written.append(&mut out);
    }

    check_output(&written);
    for frame in &broadcast {
        let (opcode, rest) = check_frame(frame);
        assert_eq!(opcode, 0x1, "a broadcast that isn't text");
        assert!(rest.is_empty(), "a broadcast of more than one frame");
    }
});

/// Walk the output: HTTP responses, then (after a 101) frames. Panics at the first flaw.
fn check_output(mut stream: &[u8]) {
    while !stream.is_empty() {
        assert!(
            stream.starts_with(b"HTTP/1.1 "),
            "not a status line: {stream:?}"
        );
        let head_end = find(stream, b"\r\n\r\n").expect("a head without its empty line") + 4;
        let head = std::str::from_utf8(&stream[..head_end]).expect("a head that isn't text");
        let after_head = &stream[head_end..];
        if head.starts_with("HTTP/1.1 101 ") {
            check_frames(after_head);
            return;
        }
        let length: usize = head
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .expect("a response without Content-Length")
            .parse()
            .expect("a Content-Length that isn't a number");
        // A HEAD response declares the page's length and sends nothing.
        let body_len = if head.starts_with("HTTP/1.1 200 ") && !after_head.starts_with(CHAT_PAGE) {
            0
        } else {
            length
        };
        assert!(
            after_head.len() >= body_len,
            "a body shorter than its Content-Length"
        );
        stream = &after_head[body_len..];
        if head.contains("\r\nConnection: close\r\n") {
            assert!(stream.is_empty(), "a response after the last one: {head}");
        }
    }
}

/// Server frames, each whole; nothing after a close frame.
fn check_frames(mut stream: &[u8]) {
    while !stream.is_empty() {
        let (opcode, rest) = check_frame(stream);
        stream = rest;
        if opcode == 0x8 {
            assert!(stream.is_empty(), "a frame after the close frame");
        }
    }
}

/// One frame at the start of `stream`: its opcode and what follows it.
fn check_frame(stream: &[u8]) -> (u8, &[u8]) {
    assert!(stream.len() >= 2, "half a frame header");
    let (first, second) = (stream[0], stream[1]);
    assert_eq!(
        first & 0xf0,
        0x80,
        "not FIN, or a reserved bit set: {first:#x}"
    );
    assert_eq!(second & 0x80, 0, "a masked server frame");
    let opcode = first & 0x0f;
    assert!(
        matches!(opcode, 0x1 | 0x2 | 0x8 | 0xa),
        "opcode {opcode:#x}"
    );
    let header = match second & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    assert!(stream.len() >= header, "half a frame header");
    let length = match header {
        4 => usize::from(u16::from_be_bytes([stream[2], stream[3]])),
        10 => usize::try_from(u64::from_be_bytes(stream[2..10].try_into().unwrap())).unwrap(),
        _ => usize::from(second & 0x7f),
    };
    assert!(
        stream.len() >= header + length,
        "a frame shorter than its length"
    );
    let payload = &stream[header..header + length];
    match opcode {
        0x1 => assert!(
            std::str::from_utf8(payload).is_ok(),
            "a text frame that isn't UTF-8"
        ),
        0x8 => assert!(
            payload.len() != 1 && payload.len() <= 125,
            "a bad close payload"
        ),
        0xa => assert!(payload.len() <= 125, "a pong over 125 bytes"),
        _ => {}
    }
    (opcode, &stream[header + length..])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
