//! The HTTP session, fed the way the loop feeds it.

use std::time::{Duration, UNIX_EPOCH};

use super::body::MAX_CHUNK_SIZE_LINE;
use super::*;
use crate::protocol::responses::tests::contains;
use crate::protocol::responses::{Responses, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use crate::stats::Stats;
use std::net::SocketAddr;
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// A page with a fixed Date, so outputs can be compared byte for byte.
fn page() -> Responses {
    let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    page.set_date(UNIX_EPOCH + Duration::from_secs(784_111_777));
    page
}

/// One connection driven the way the loop drives it: bytes not consumed are offered
/// again with the next read appended.
struct Peer {
    page: Responses,
    stats: Stats,
    session: HttpSession,
    pending: Vec<u8>,
    out: Vec<u8>,
    next: Next,
    out_budget: usize,
}

fn context<'a>(
    page: &'a Responses,
    stats: &'a mut Stats,
    out_budget: usize,
    broadcast: &'a mut Vec<std::sync::Arc<[u8]>>,
) -> Context<'a> {
    Context {
        responses: page,
        out_budget,
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        stats,
        broadcast,
    }
}

impl Peer {
    fn new() -> Peer {
        Peer {
            page: page(),
            stats: Stats::default(),
            session: HttpSession::new(),
            pending: Vec::new(),
            out: Vec::new(),
            next: Next::Continue,
            out_budget: usize::MAX,
        }
    }

    /// Deliver one read. Returns what that call consumed.
    fn send(&mut self, bytes: &[u8]) -> usize {
        assert_eq!(
            self.next,
            Next::Continue,
            "fed a connection that is closing"
        );
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        let mut out = std::mem::take(&mut self.out);
        let outcome = self.session.on_input(
            &pending,
            &mut out,
            &mut context(
                &self.page,
                &mut self.stats,
                self.out_budget,
                &mut Vec::new(),
            ),
        );
        self.out = out;
        self.pending = pending[outcome.consumed..].to_vec();
        self.next = outcome.next;
        outcome.consumed
    }

    fn header_timeout(&mut self) -> Next {
        let mut out = std::mem::take(&mut self.out);
        let next = self.session.on_header_timeout(
            &mut out,
            &mut context(
                &self.page,
                &mut self.stats,
                self.out_budget,
                &mut Vec::new(),
            ),
        );
        self.out = out;
        next
    }
}

/// Feed `input` whole; returns the output and what happens next.
fn answer(input: &[u8]) -> (Vec<u8>, Next) {
    let mut peer = Peer::new();
    peer.send(input);
    (peer.out, peer.next)
}

/// Feed `input` split at `at`, as two reads.
fn answer_split(input: &[u8], at: usize) -> (Vec<u8>, Next) {
    let mut peer = Peer::new();
    peer.send(&input[..at]);
    if peer.next == Next::Continue {
        peer.send(&input[at..]);
    }
    (peer.out, peer.next)
}

fn ok(connection: ConnectionHeader) -> Vec<u8> {
    page().ok(connection, false).to_vec()
}

fn ok_head(connection: ConnectionHeader) -> Vec<u8> {
    page().ok(connection, true).to_vec()
}

fn error(status: ErrorStatus) -> (Vec<u8>, Next) {
    (page().error(status).to_vec(), Next::CloseAfterFlush)
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// --- Requests -----------------------------------------------------------------------

#[test]
fn a_get_gets_the_page_and_the_connection_stays_open() {
    let mut peer = Peer::new();
    assert_eq!(peer.send(GET), GET.len());
    assert_eq!(peer.out, ok(ConnectionHeader::Persistent));
    assert_eq!(peer.next, Next::Continue);
    assert_eq!(peer.stats.requests, 1);
}

#[test]
fn any_method_and_path_get_the_page() {
    for request in [
        &b"POST /submit?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"DELETE /a/b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            answer(request),
            (ok(ConnectionHeader::Persistent), Next::Continue)
        );
    }
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let (out, next) = answer(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(out, ok_head(ConnectionHeader::Persistent));
    assert!(contains(&out, b"Content-Length: 58\r\n"));
    assert_eq!(next, Next::Continue);
}

#[test]
fn connection_close_is_honoured() {
    let (out, next) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::Close), Next::CloseAfterFlush)
    );
}

#[test]
fn connection_is_a_case_insensitive_token_list() {
    let (out, next) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::Close), Next::CloseAfterFlush)
    );
    let (out, next) = answer(b"GET / HTTP/1.0\r\nConnection: foo,Keep-Alive \r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::KeepAlive), Next::Continue)
    );
}

#[test]
fn http_1_0_closes_by_default() {
    let (out, next) = answer(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::Close), Next::CloseAfterFlush)
    );
}

#[test]
fn http_1_0_keep_alive_is_answered_with_keep_alive() {
    let request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let mut peer = Peer::new();
    peer.send(request);
    peer.send(request);
    assert_eq!(
        peer.out,
        [
            ok(ConnectionHeader::KeepAlive),
            ok(ConnectionHeader::KeepAlive)
        ]
        .concat()
    );
    assert_eq!(peer.next, Next::Continue);
}

#[test]
fn bytes_after_a_close_are_not_answered() {
    let input = concat(&[
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        GET,
    ]);
    let mut peer = Peer::new();
    assert_eq!(peer.send(&input), input.len());
    assert_eq!(peer.out, ok(ConnectionHeader::Close));
    assert_eq!(peer.stats.requests, 1);
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let (out, _) = answer(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(out, ok(ConnectionHeader::Persistent));
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let (out, _) = answer(b"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\nHost: x\r\n\r\n");
    assert_eq!(
        out,
        [
            ok(ConnectionHeader::Persistent),
            ok(ConnectionHeader::Persistent)
        ]
        .concat()
    );
}

// --- Pipelining ---------------------------------------------------------------------

/// A pipeline with one of everything: HEAD, both body framings, 100-continue, close.
fn pipeline() -> (Vec<u8>, Vec<u8>) {
    let input = concat(&[
        GET,
        b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4;ext=\"a b\"\r\nGET \r\n0\r\nTrailer: GET / HTTP/1.1\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]);
    let expected = concat(&[
        &ok(ConnectionHeader::Persistent),
        &ok_head(ConnectionHeader::Persistent),
        &ok(ConnectionHeader::Persistent),
        &ok(ConnectionHeader::Persistent),
        CONTINUE,
        &ok(ConnectionHeader::Persistent),
        &ok(ConnectionHeader::Close),
    ]);
    (input, expected)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (input, expected) = pipeline();
    let mut peer = Peer::new();
    assert_eq!(peer.send(&input), input.len());
    assert_eq!(peer.out, expected);
    assert_eq!(peer.next, Next::CloseAfterFlush);
    assert_eq!(peer.stats.requests, 6);
}

#[test]
fn a_pipeline_split_at_every_byte_gives_the_same_answers() {
    let (input, expected) = pipeline();
    for at in 0..=input.len() {
        let (out, next) = answer_split(&input, at);
        assert_eq!(out, expected, "split at {at}");
        assert_eq!(next, Next::CloseAfterFlush, "split at {at}");
    }
}

#[test]
fn a_pipeline_fed_a_byte_at_a_time_gives_the_same_answers() {
    let (input, expected) = pipeline();
    let mut peer = Peer::new();
    for byte in &input {
        peer.send(std::slice::from_ref(byte));
    }
    assert_eq!(peer.out, expected);
    assert_eq!(peer.next, Next::CloseAfterFlush);
}

#[test]
fn a_dripped_head_is_scanned_once_not_from_the_start_each_time() {
    let input = head_of_size(2000);
    let mut scan = HeadScan::default();
    for end in 1..input.len() {
        assert_eq!(scan.parse(&input[..end]), Ok(None));
        // Everything before the last byte or two has been searched already.
        assert!(scan.scanned + 2 >= end, "scanned {} of {end}", scan.scanned);
    }
    assert!(scan.parse(&input).unwrap().is_some());
}

#[test]
fn a_partial_head_is_left_unconsumed() {
    let mut peer = Peer::new();
    let input = concat(&[GET, b"GET / HT"]);
    assert_eq!(peer.send(&input), GET.len());
    assert_eq!(peer.pending, b"GET / HT");
    assert!(peer.session.in_request_head());
}

// --- Bodies -------------------------------------------------------------------------

#[test]
fn a_content_length_body_is_not_taken_for_a_request() {
    let body = concat(&[GET, GET, GET]);
    let input = concat(&[
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        &body,
        GET,
    ]);
    let expected = [
        ok(ConnectionHeader::Persistent),
        ok(ConnectionHeader::Persistent),
    ]
    .concat();
    for at in 0..=input.len() {
        assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
    }
}

#[test]
fn identical_content_lengths_are_one_length() {
    let input =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi";
    assert_eq!(
        answer(input),
        (ok(ConnectionHeader::Persistent), Next::Continue)
    );
}

#[test]
fn a_body_is_discarded_across_reads() {
    let mut peer = Peer::new();
    peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    assert!(!peer.session.in_request_head());
    for _ in 0..100 {
        assert_eq!(peer.send(&[b'x'; 1000]), 1000, "body bytes are never kept");
    }
    assert_eq!(peer.out, ok(ConnectionHeader::Persistent));
    assert!(peer.session.in_request_head());
}

#[test]
fn a_chunked_body_is_not_taken_for_a_request() {
    let input = concat(&[
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
        b"12\r\nGET / HTTP/1.1\r\n\r\n\r\n",
        b"A; name=value\r\n0123456789\r\n",
        b"0\r\n\r\n",
        GET,
    ]);
    let expected = [
        ok(ConnectionHeader::Persistent),
        ok(ConnectionHeader::Persistent),
    ]
    .concat();
    for at in 0..=input.len() {
        assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
    }
}

#[test]
fn chunked_trailers_are_read_and_dropped() {
    let input = concat(&[
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n",
        GET,
    ]);
    let expected = [
        ok(ConnectionHeader::Persistent),
        ok(ConnectionHeader::Persistent),
    ]
    .concat();
    for at in 0..=input.len() {
        assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let mut peer = Peer::new();
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(peer.send(head), head.len());
    assert_eq!(peer.out, CONTINUE);
    peer.send(b"hello");
    assert_eq!(
        peer.out,
        [CONTINUE, &ok(ConnectionHeader::Persistent)].concat()
    );
}

#[test]
fn expect_100_continue_without_a_body_or_from_http_1_0_gets_no_100() {
    let (out, _) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(out, ok(ConnectionHeader::Persistent));
    let (out, _) = answer(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(out, ok(ConnectionHeader::Close));
}

// --- Errors -------------------------------------------------------------------------

#[test]
fn a_malformed_request_line_is_400() {
    for input in [
        &b"GET  / HTTP/1.1\r\n\r\n"[..],
        b"GET /\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
        b"hello world\r\n\r\n",
        b"GET / HTTPS/1.1\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"\r\r\n\r\n",
    ] {
        assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
    }
}

#[test]
fn a_malformed_header_is_400() {
    for input in [
        &b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    ] {
        assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
    }
}

#[test]
fn ambiguous_framing_is_400() {
    for input in [
        // RFC 9112 §6.3: both framings is the smuggling case.
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
    }
}

#[test]
fn http_1_1_without_host_is_400_with_connection_close() {
    for input in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nX-Host: x\r\nConnection: keep-alive\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        // A request pipelined behind it is not answered.
        b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (out, next) = answer(input);
        assert!(contains(&out, b"\r\nConnection: close\r\n"), "{input:?}");
        assert_eq!((out, next), error(ErrorStatus::BadRequest), "{input:?}");
    }
    // The header name is case-insensitive like any other.
    let (out, next) = answer(b"GET / HTTP/1.1\r\nhOsT: x\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::Persistent), Next::Continue)
    );
}

#[test]
fn more_than_one_host_is_400() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
    }
}

#[test]
fn a_host_that_is_not_a_host_is_400() {
    let answer_with_host = |host: &[u8]| {
        let mut input = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        input.extend_from_slice(host);
        input.extend_from_slice(b"\r\n\r\n");
        answer(&input)
    };
    for host in [
        &b"a, b"[..],
        b"a b",
        b"x/y",
        b"user@x",
        b"x:80a",
        b"x:80:81",
        b"[::1",
        b"[]",
        b"[::1]x",
        b"[::1]:8o",
        b"",
        b"   ",
    ] {
        let shown = String::from_utf8_lossy(host);
        assert_eq!(
            answer_with_host(host),
            error(ErrorStatus::BadRequest),
            "Host: {shown}"
        );
    }
    for host in [
        &b"x"[..],
        b"example.com:8080",
        b"127.0.0.1:80",
        b"[::1]:3000",
        b"[::1]",
        b"xn--bcher-kva.example",
        b"x:",
    ] {
        let shown = String::from_utf8_lossy(host);
        let accepted = (ok(ConnectionHeader::Persistent), Next::Continue);
        assert_eq!(answer_with_host(host), accepted, "Host: {shown}");
    }
}

#[test]
fn http_1_0_without_host_is_answered() {
    let (out, next) = answer(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::Close), Next::CloseAfterFlush)
    );
    let (out, next) = answer(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        (out, next),
        (ok(ConnectionHeader::KeepAlive), Next::Continue)
    );
}

#[test]
fn a_malformed_chunked_body_is_400() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        &b"zz\r\n"[..],
        b"-1\r\n",
        b"11111111111111111\r\n",
        b"3\r\nabcX\r\n",
        b"3\r\nabc\n0\r\n\r\n",
        b"3\nabc\r\n",
    ] {
        let input = concat(&[head, body]);
        assert_eq!(answer(&input), error(ErrorStatus::BadRequest), "{body:?}");
    }
    let endless_extension = concat(&[head, b"1;", &[b'x'; MAX_CHUNK_SIZE_LINE]]);
    assert_eq!(answer(&endless_extension), error(ErrorStatus::BadRequest));
}

const CHUNKED_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

/// The chunk-line and trailer shapes that a lenient chunked parser lets through and a
/// proxy in front may frame differently (issue 12). Each is a whole chunked body, with a
/// request after it that must never be answered.
const SMUGGLING_BODIES: &[(&[u8], &str)] = &[
    // The issue's desync: nginx ends the line at the LF and reads a 0x28-byte chunk.
    (
        b"2;\nxx\r\n28\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
        "bare LF after ';'",
    ),
    (
        b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n",
        "bare LF inside a quoted value",
    ),
    (
        b"5;\nhello\r\n0\r\n\r\n",
        "`5;` ended by a bare LF (it used to wait for the timeout)",
    ),
    (b"5\nhello\r\n0\r\n\r\n", "the size ended by a bare LF"),
    (b"5;a=b\nhello\r\n0\r\n\r\n", "a value ended by a bare LF"),
    (
        b"5;a=\"\\\n\"\r\nhello\r\n0\r\n\r\n",
        "an LF escaped with a backslash",
    ),
    (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "a bare CR in an extension"),
    (b"5\r\r\nhello\r\n0\r\n\r\n", "CR CR LF"),
    (b"5;\r\nhello\r\n0\r\n\r\n", "`5;`: a ';' with no name"),
    (
        b"5;bad[=x\r\nhello\r\n0\r\n\r\n",
        "a name that is not a token",
    ),
    (
        b"5 \r\nhello\r\n0\r\n\r\n",
        "`5 `: BWS only comes before ';'",
    ),
    (b"5;a=b \r\nhello\r\n0\r\n\r\n", "whitespace after a value"),
    (b"5;a=\0\r\nhello\r\n0\r\n\r\n", "NUL in an extension"),
    (
        b"5;a\x01\r\nhello\r\n0\r\n\r\n",
        "a C0 control in an extension",
    ),
    (
        b"5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n",
        "DEL in a quoted value",
    ),
    (b"5;a=\r\nhello\r\n0\r\n\r\n", "'=' without a value"),
    (b"5;a=\"open\r\nhello\r\n0\r\n\r\n", "a quote never closed"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "a C hex prefix"),
    (b"10000000000000000\r\n", "a size over 64 bits"),
    (
        b"5\r\nhello\r\n0\r\n\n",
        "the trailer section ended by a bare LF",
    ),
    (
        b"5\r\nhello\r\n0\r\nX: a\n\r\n",
        "a trailer field ended by a bare LF",
    ),
    (
        b"0\r\nX: a\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "a request behind a trailer's bare LF",
    ),
    (b"0\r\nX: a\rb\r\n\r\n", "a bare CR in a trailer"),
    (b"0\r\nX: a\0\r\n\r\n", "NUL in a trailer"),
    (b"0\r\nX\r\n\r\n", "a trailer line with no colon"),
    (b"0\r\nX : a\r\n\r\n", "whitespace before a trailer's colon"),
    (b"0\r\nX: a\r\n folded\r\n\r\n", "obs-fold in the trailers"),
    (b"0\r\n\r\r\n", "CR CR LF for the trailers' end"),
];

#[test]
fn the_issue_12_smuggling_request_gets_one_400_and_nothing_else() {
    let input = concat(&[CHUNKED_HEAD, SMUGGLING_BODIES[0].0]);
    let mut peer = Peer::new();
    assert_eq!(peer.send(&input), input.len());
    assert_eq!((peer.out, peer.next), error(ErrorStatus::BadRequest));
    assert_eq!((peer.stats.requests, peer.stats.errors), (0, 1));
}

#[test]
fn every_chunked_smuggling_shape_is_400_and_close_at_every_split() {
    for &(body, why) in SMUGGLING_BODIES {
        let input = concat(&[CHUNKED_HEAD, body, GET]);
        for at in 0..=input.len() {
            let answer = answer_split(&input, at);
            assert_eq!(
                answer,
                error(ErrorStatus::BadRequest),
                "{why}, split at {at}"
            );
        }
    }
}

#[test]
fn a_bad_chunk_line_is_answered_as_soon_as_its_bad_byte_arrives() {
    // `5;` + LF used to wait for the header timeout: the line could never end.
    for partial in [&b"5;\n"[..], b"5 \r", b"5;a\0", b"2;\nxx", b"5;bad["] {
        let input = concat(&[CHUNKED_HEAD, partial]);
        assert_eq!(
            answer(&input),
            error(ErrorStatus::BadRequest),
            "{partial:?}"
        );
    }
}

#[test]
fn valid_chunk_lines_and_trailers_are_still_read() {
    for body in [
        &b"5\r\nhello\r\n0\r\n\r\n"[..],
        b"5;a=b\r\nhello\r\n0\r\n\r\n",
        b"5 ; a = \"q\\\"x\"\r\nhello\r\n0\r\n\r\n",
        b"5\t;\ta\t=\tb;c\r\nhello\r\n0;last\r\n\r\n",
        b"5;a=\"tab\there, obs-text \x80\xff\"\r\nhello\r\n0\r\n\r\n",
        b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n",
        b"0005\r\nhello\r\n0000\r\n\r\n",
        b"0\r\nX:\r\nY: \t v \x80 \t\r\nZ:w\r\n\r\n",
    ] {
        let input = concat(&[CHUNKED_HEAD, body, GET]);
        let expected = [
            ok(ConnectionHeader::Persistent),
            ok(ConnectionHeader::Persistent),
        ]
        .concat();
        for at in 0..=input.len() {
            let answer = answer_split(&input, at);
            assert_eq!(
                answer,
                (expected.clone(), Next::Continue),
                "{body:?} at {at}"
            );
        }
    }
}

#[test]
fn a_chunk_line_may_be_as_long_as_the_cap_and_no_longer() {
    let line_of = |len: usize| {
        let mut line = b"1;".to_vec();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\r\n");
        concat(&[CHUNKED_HEAD, &line, b"x\r\n0\r\n\r\n"])
    };
    let fits = answer(&line_of(MAX_CHUNK_SIZE_LINE));
    assert_eq!(fits, (ok(ConnectionHeader::Persistent), Next::Continue));
    let too_long = answer(&line_of(MAX_CHUNK_SIZE_LINE + 1));
    assert_eq!(too_long, error(ErrorStatus::BadRequest));
}

#[test]
fn a_trailer_section_dripped_a_byte_at_a_time_is_read_to_its_end() {
    let mut peer = Peer::new();
    peer.send(CHUNKED_HEAD);
    peer.send(b"0\r\n");
    for _ in 0..50 {
        for &byte in b"X-Long: 0123456789\r\n" {
            peer.send(&[byte]);
        }
    }
    assert!(peer.out.is_empty());
    peer.send(b"\r\n");
    // All of it is used up, the empty line too: nothing is left for the next head.
    assert!(peer.pending.is_empty(), "{:?}", peer.pending);
    assert_eq!(
        (peer.out, peer.next),
        (ok(ConnectionHeader::Persistent), Next::Continue)
    );
}

#[test]
fn the_largest_chunk_size_does_not_overflow() {
    let mut peer = Peer::new();
    peer.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
    );
    assert_eq!(peer.send(&[b'x'; 4096]), 4096);
    assert_eq!(peer.next, Next::Continue);
    assert!(peer.out.is_empty());
}

fn head_of_size(size: usize) -> Vec<u8> {
    let start = b"GET / HTTP/1.1\r\nHost: x\r\nX: ";
    let filler = size - start.len() - 4;
    concat(&[start, &vec![b'a'; filler], b"\r\n\r\n"])
}

#[test]
fn a_head_over_8_kib_is_431() {
    let fits = head_of_size(MAX_HEAD_BYTES);
    assert_eq!(
        answer(&fits),
        (ok(ConnectionHeader::Persistent), Next::Continue)
    );
    let too_long = head_of_size(MAX_HEAD_BYTES + 1);
    assert_eq!(answer(&too_long), error(ErrorStatus::HeaderFieldsTooLarge));
    // Incomplete, and already over the limit: no need to wait for the rest.
    let incomplete = &head_of_size(MAX_HEAD_BYTES + 100)[..MAX_HEAD_BYTES + 1];
    assert_eq!(answer(incomplete), error(ErrorStatus::HeaderFieldsTooLarge));
    assert_eq!(
        answer(&[b'\n'; MAX_HEAD_BYTES]),
        error(ErrorStatus::HeaderFieldsTooLarge)
    );
}

#[test]
fn more_than_100_header_lines_is_431() {
    let with_headers = |count| {
        // Host is one of the `count` lines.
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..count {
            input.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        input
    };
    assert_eq!(
        answer(&with_headers(100)).0,
        ok(ConnectionHeader::Persistent)
    );
    assert_eq!(
        answer(&with_headers(101)),
        error(ErrorStatus::HeaderFieldsTooLarge)
    );
}

#[test]
fn trailers_over_8_kib_are_431() {
    let input = concat(&[
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
        &[b'a'; MAX_HEAD_BYTES],
    ]);
    assert_eq!(answer(&input), error(ErrorStatus::HeaderFieldsTooLarge));
}

/// RFC 9110 §2.5: a later minor version of HTTP/1 is processed as the highest we know, 1.1,
/// with all of 1.1's rules (Host included).
#[test]
fn a_later_http_1_minor_version_is_answered_as_1_1() {
    for version in ["1.2", "1.9"] {
        let request = format!(
            "GET /x HTTP/{version}\r\nHost: x\r\n\r\n{}",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let (out, next) = answer(request.as_bytes());
        let two = [
            ok(ConnectionHeader::Persistent),
            ok(ConnectionHeader::Persistent),
        ]
        .concat();
        assert_eq!((out, next), (two, Next::Continue), "HTTP/{version}");
        let split = answer_split(request.as_bytes(), 10);
        assert_eq!(split.1, Next::Continue, "HTTP/{version}, split");
        let close = format!("GET / HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(
            answer(close.as_bytes()),
            (ok(ConnectionHeader::Close), Next::CloseAfterFlush)
        );
        let no_host = format!("GET / HTTP/{version}\r\n\r\n");
        assert_eq!(answer(no_host.as_bytes()), error(ErrorStatus::BadRequest));
    }
}

/// Any 2xx to CONNECT means "tunnel established" (RFC 9110 §9.3.6).
#[test]
fn connect_is_refused_never_answered_200() {
    assert_eq!(
        answer(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        error(ErrorStatus::BadRequest)
    );
}

/// A TLS ClientHello on the plain port: its first byte (0x16) cannot start a method, so the
/// answer comes at once, not at the header timeout.
#[test]
fn a_first_byte_that_cannot_start_a_method_is_400_at_once() {
    let client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert_eq!(answer(client_hello), error(ErrorStatus::BadRequest));
    assert_eq!(answer(b"\r\n\x00"), error(ErrorStatus::BadRequest));
    assert_eq!(
        answer(b" GET / HTTP/1.1\r\n"),
        error(ErrorStatus::BadRequest)
    );
    // Empty lines before a request may still be arriving: not judged yet.
    assert_eq!(answer(b"\r"), (Vec::new(), Next::Continue));
    assert_eq!(answer(b"\r\n\r"), (Vec::new(), Next::Continue));
}

/// RFC 9112 §3: an over-long target is 414; an over-long method is no method at all, 400.
#[test]
fn an_over_long_target_is_414_and_an_over_long_method_400() {
    let target = concat(&[
        b"GET /",
        &vec![b'a'; 100 * 1024],
        b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]);
    assert_eq!(answer(&target), error(ErrorStatus::UriTooLong));
    let method = concat(&[&vec![b'G'; 100 * 1024], b" / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(answer(&method), error(ErrorStatus::BadRequest));
    // The limit is the same 8 KiB: a request line under it and headers over it are 431.
    let headers = concat(&[b"GET / HTTP/1.1\r\nX: ", &vec![b'a'; 9000], b"\r\n\r\n"]);
    assert_eq!(answer(&headers), error(ErrorStatus::HeaderFieldsTooLarge));
}

/// The asterisk-form is for OPTIONS only (RFC 9112 §3.2.4); a target is ASCII (§3.2).
#[test]
fn asterisk_form_outside_options_and_non_ascii_targets_are_400() {
    assert_eq!(
        answer(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
        error(ErrorStatus::BadRequest)
    );
    assert_eq!(
        answer(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        (ok(ConnectionHeader::Persistent), Next::Continue)
    );
    for target in [&b"/caf\xc3\xa9"[..], b"/\xff", b"/a\x80b"] {
        let request = concat(&[b"GET ", target, b" HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(
            answer(&request),
            error(ErrorStatus::BadRequest),
            "{target:?}"
        );
    }
}

/// Where the RFCs leave a server the choice, sockloop accepts (README, http mode): each of
/// these is answered with the page, whole or split anywhere.
#[test]
fn the_choices_the_rfcs_leave_open_are_accepted_however_the_head_is_split() {
    for request in [
        &b"GET / HTTP/1.1\nHost: x\n\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost:\tx\r\n\r\n",
        b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let accepted = (ok(ConnectionHeader::Persistent), Next::Continue);
        assert_eq!(answer(request), accepted, "{request:?}");
        for at in 1..request.len() {
            assert_eq!(answer_split(request, at), accepted, "{request:?} at {at}");
        }
    }
}

#[test]
fn other_versions_and_the_http2_preface_are_505() {
    for input in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/0.9\r\n\r\n",
        b"GET / HTTP/2.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            answer(input),
            error(ErrorStatus::VersionNotSupported),
            "{input:?}"
        );
    }
}

#[test]
fn after_an_error_everything_is_consumed_and_nothing_answered() {
    let mut peer = Peer::new();
    let input = concat(&[GET, b"BAD\r\n\r\n", GET]);
    assert_eq!(peer.send(&input), input.len());
    let expected = [
        ok(ConnectionHeader::Persistent),
        error(ErrorStatus::BadRequest).0,
    ]
    .concat();
    assert_eq!(peer.out, expected);
    assert_eq!(peer.next, Next::CloseAfterFlush);
    assert_eq!((peer.stats.requests, peer.stats.errors), (1, 1));
    // The loop may still offer bytes that were already read: they go nowhere.
    let mut out = Vec::new();
    let outcome = peer.session.on_input(
        GET,
        &mut out,
        &mut context(
            &peer.page,
            &mut peer.stats,
            peer.out_budget,
            &mut Vec::new(),
        ),
    );
    assert_eq!(outcome, Outcome::new(GET.len(), Next::CloseAfterFlush));
    assert!(out.is_empty());
}

// --- Timeouts, shutdown, backpressure -----------------------------------------------

#[test]
fn a_slow_head_gets_408_on_the_header_timeout() {
    let mut peer = Peer::new();
    peer.send(b"GET / HTTP/1.1\r\nHost");
    assert!(peer.session.in_request_head());
    assert_eq!(peer.header_timeout(), Next::CloseAfterFlush);
    assert_eq!(peer.out, error(ErrorStatus::RequestTimeout).0);
    assert!(!peer.session.in_request_head());
}

#[test]
fn in_request_head_is_false_only_while_a_body_is_read() {
    let mut peer = Peer::new();
    assert!(peer.session.in_request_head());
    peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na");
    assert!(!peer.session.in_request_head());
    peer.send(b"b");
    assert!(peer.session.in_request_head());
}

#[test]
fn shutdown_closes_an_idle_connection_at_once() {
    let mut peer = Peer::new();
    peer.send(GET);
    assert_eq!(peer.session.on_shutdown(0), Next::CloseAfterFlush);
}

#[test]
fn shutdown_mid_head_answers_it_with_close() {
    let mut peer = Peer::new();
    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(peer.session.on_shutdown(peer.pending.len()), Next::Continue);
    peer.send(b"\r\n");
    assert_eq!(peer.out, ok(ConnectionHeader::Close));
    assert_eq!(peer.next, Next::CloseAfterFlush);
}

#[test]
fn shutdown_mid_body_answers_it_with_close() {
    let mut peer = Peer::new();
    peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na");
    assert_eq!(peer.session.on_shutdown(0), Next::Continue);
    peer.send(b"b");
    assert_eq!(peer.out, ok(ConnectionHeader::Close));
    assert_eq!(peer.next, Next::CloseAfterFlush);
}

#[test]
fn a_full_out_budget_stops_the_pipeline() {
    let mut peer = Peer::new();
    peer.out_budget = 1;
    let input = concat(&[GET, GET, GET]);
    assert_eq!(peer.send(&input), GET.len());
    assert_eq!(peer.out, ok(ConnectionHeader::Persistent));
    // The loop wrote `out` and offers the rest again.
    peer.out.clear();
    assert_eq!(peer.send(b""), GET.len());
    assert_eq!(peer.out, ok(ConnectionHeader::Persistent));
}

// --- The pieces the WebSocket handshake reuses --------------------------------------

#[test]
fn parse_request_head_reports_a_websocket_upgrade() {
    let input = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\nframe bytes";
    let head = parse_request_head(input).unwrap().unwrap();
    assert_eq!(
        (head.method, head.path, head.version),
        ("GET", "/chat", Version::Http11)
    );
    assert!(head.upgrade_websocket && head.keep_alive);
    assert_eq!(head.websocket_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
    assert_eq!(head.websocket_version, Some(&b"13"[..]));
    assert_eq!(head.body, BodyLength::Empty);
    assert_eq!(&input[head.len..], b"frame bytes");
}

#[test]
fn upgrade_without_connection_upgrade_is_not_an_upgrade() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
    assert!(
        !parse_request_head(input)
            .unwrap()
            .unwrap()
            .upgrade_websocket
    );
}

#[test]
fn parse_request_head_waits_for_a_complete_head() {
    assert_eq!(
        parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Ok(None)
    );
    assert_eq!(parse_request_head(b""), Ok(None));
    assert_eq!(
        parse_request_head(b"PRI * HTTP/2.0\r\n\r\n"),
        Err(ErrorStatus::VersionNotSupported)
    );
}
