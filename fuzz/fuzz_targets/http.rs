//! Arbitrary bytes, cut into arbitrary reads, fed to an HTTP session the way the loop feeds
//! it. Whatever the bytes, nothing panics, and what comes out is a well-formed sequence of
//! HTTP/1.1 responses: each a head ending in an empty line, then exactly Content-Length bytes
//! of body (none after a HEAD, none for `100 Continue`), and nothing after a closing one.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sockloop::protocol::http::HttpSession;
use sockloop::protocol::responses::{Responses, CONTINUE, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use sockloop::protocol::{Context, Next};
use sockloop::stats::Stats;

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (knobs, cuts, bytes) = input;
    let out_budget = match knobs & 0x3 {
        0 => 1,
        1 => 300,
        _ => 64 * 1024,
    };
    let time_out_at_end = knobs & 0x4 != 0;

    let page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    let mut stats = Stats::default();
    let mut session = HttpSession::new();
    let mut unconsumed: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut written = Vec::new();
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
        // Offer what is buffered until the session stops making progress: with a small
        // budget it takes one request per call, and the loop writes `out` in between.
        loop {
            let mut ctx = Context {
                responses: &page,
                out_budget,
                peer: SocketAddr::from(([127, 0, 0, 1], 9)),
                stats: &mut stats,
                broadcast: &mut Vec::new(),
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
    if next == Next::Continue && time_out_at_end && session.in_request_head() {
        let mut ctx = Context {
            responses: &page,
            out_budget,
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            stats: &mut stats,
            broadcast: &mut Vec::new(),
        };
        next = session.on_header_timeout(&mut out, &mut ctx);
        assert_eq!(next, Next::CloseAfterFlush);
        written.append(&mut out);
    }

    let answered = check_responses(&written);
    assert_eq!(answered, stats.requests);
});

/// Walk the responses in `stream`, panicking at the first malformed one. Returns how many
/// were `200 OK`.
fn check_responses(mut stream: &[u8]) -> u64 {
    let mut ok = 0;
    while !stream.is_empty() {
        assert!(
            stream.starts_with(b"HTTP/1.1 "),
            "not a status line: {stream:?}"
        );
        if let Some(rest) = stream.strip_prefix(CONTINUE) {
            stream = rest;
            continue;
        }
        let head_end = find(stream, b"\r\n\r\n").expect("a head without its empty line") + 4;
        let head = std::str::from_utf8(&stream[..head_end]).expect("a head that isn't text");
        let lengths: Vec<usize> = head
            .split("\r\n")
            .filter_map(|line| line.strip_prefix("Content-Length: "))
            .map(|length| {
                length
                    .parse()
                    .expect("a Content-Length that isn't a number")
            })
            .collect();
        assert_eq!(lengths.len(), 1, "one Content-Length: {head}");
        let length = lengths[0];
        let after_head = &stream[head_end..];
        let is_ok = head.starts_with("HTTP/1.1 200 OK\r\n");
        // A HEAD response declares the page's length and sends nothing: the next response,
        // or the end, follows right away. (The page never starts with a status line.)
        let body_len = if is_ok && !after_head.starts_with(DEFAULT_BODY) {
            assert!(
                after_head.is_empty() || after_head.starts_with(b"HTTP/1.1 "),
                "a body that isn't the page"
            );
            0
        } else {
            length
        };
        assert!(
            after_head.len() >= body_len,
            "a body shorter than its Content-Length"
        );
        stream = &after_head[body_len..];
        ok += u64::from(is_ok);
        // Errors and Connection: close end the conversation.
        if !is_ok || head.contains("\r\nConnection: close\r\n") {
            assert!(stream.is_empty(), "a response after the last one: {head}");
        }
    }
    ok
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
