//! Property: how the peer's bytes are cut into reads, and how slowly the peer reads the
//! answers, never changes the answers.
//!
//! The loop offers a session every byte it has not consumed yet, with each new read
//! appended. Once the output reaches its budget the session stops short, and the loop
//! offers the rest again when the output has been written (backpressure). So a request
//! stream fed in any chunks, under any output budget, must produce exactly the output, the
//! closing decision and the request count that feeding it whole, with no budget, does.

mod common;

use proptest::prelude::*;
use sockloop::protocol::Mode;

use common::feed::{self, Transcript};

/// Feed `reads` to an HTTP session the way the loop does, with no limit on its output.
fn serve(reads: &[&[u8]]) -> Transcript {
    feed::serve(Mode::Http, reads)
}

/// Feed `reads` the way the loop does, stopping the session whenever its output reaches
/// `out_budget` bytes, and offering the rest again once that is written.
fn serve_paced(reads: &[&[u8]], out_budget: usize) -> Transcript {
    feed::serve_with_budget(Mode::Http, reads, out_budget)
}

/// An output budget, small enough that a pipeline stops short again and again: one byte
/// (every answer on its own), or up to about two answers' worth.
fn out_budget() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 1..600usize]
}

/// One request of a few kinds, with whatever body bytes proptest picks.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let body = || prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        Just(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        Just(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        Just(b"\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
        Just(b"GET /bare HTTP/1.1\nHost: x\n\n".to_vec()),
        body().prop_map(|body| {
            let head = format!(
                "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            [head.as_bytes(), &body].concat()
        }),
        body().prop_map(|body| {
            let head = format!(
                "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            [head.as_bytes(), &body].concat()
        }),
        (prop::collection::vec(body(), 0..4), any::<bool>()).prop_map(|(chunks, trailer)| {
            let mut request =
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in chunks.iter().filter(|chunk| !chunk.is_empty()) {
                request.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n");
            if trailer {
                request.extend_from_slice(b"X-Checksum: 0\r\n");
            }
            request.extend_from_slice(b"\r\n");
            request
        }),
    ]
}

/// A stream of requests, sometimes ending in a close or in garbage.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let last = prop_oneof![
        Just(Vec::new()),
        Just(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        Just(b"GET / HTTP/9.9\r\n\r\n".to_vec()),
        Just(b"garbage\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec()),
        Just(b"GET / HTTP/1.1\r\nHost: unfinished".to_vec()),
    ];
    (prop::collection::vec(request(), 1..8), last)
        .prop_map(|(requests, last)| [requests.concat(), last].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_of_a_request_stream_under_any_output_budget_gives_the_same_answers(
        stream in stream(),
        points in prop::collection::vec(any::<usize>(), 0..20),
        out_budget in out_budget(),
    ) {
        let whole = serve(&[&stream]);
        prop_assert!(whole.requests >= 1);
        let reads = feed::cut(&stream, &points);
        prop_assert_eq!(&serve(&reads), &whole);
        prop_assert_eq!(&serve_paced(&reads, out_budget), &whole);
    }

    #[test]
    fn a_stream_fed_byte_by_byte_under_any_output_budget_gives_the_same_answers(
        stream in stream(),
        out_budget in out_budget(),
    ) {
        let whole = serve(&[&stream]);
        let reads: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&serve(&reads), &whole);
        prop_assert_eq!(&serve_paced(&reads, out_budget), &whole);
        // Everything in one read, but the answers one budget at a time.
        prop_assert_eq!(&serve_paced(&[&stream], out_budget), &whole);
    }
}
