//! The protocol code alone, without a socket: what one HTTP request or one echoed message
//! costs in the session, i.e. the part of the server's CPU time per request that is ours and
//! not the kernel's.
//!
//! Each call is made the way the event loop makes it (`Connection::offer`): the loop's
//! output buffer is cleared, a `Context` lends the canned page, the output budget and the
//! stats, and the session appends its answer. One session lives across the iterations, as
//! one keep-alive connection does.
//!
//! Run with `cargo bench --bench protocol`; `cargo bench --bench protocol -- http` for a
//! subset.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use sockloop::connection::MAX_PENDING_OUTPUT;
use sockloop::protocol::http::HttpSession;
use sockloop::protocol::responses::{Responses, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use sockloop::protocol::{echo, Context, Next};
use sockloop::stats::Stats;

/// What `wrk -t1 -c50 http://127.0.0.1:8889/` sends, byte for byte.
const WRK_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8889\r\n\r\n";
/// The depth of TechEmpower's pipelined plaintext test, and of `benches/load.sh`.
const PIPELINE_DEPTH: usize = 16;
/// The loop's read buffer and the output buffer's starting capacity (`READ_BUFFER_SIZE`).
const LOOP_BUFFER_SIZE: usize = 128 * 1024;

fn peer() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000))
}

/// The page as a loop builds it at start-up, Date rendered.
fn page() -> Responses {
    let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    page.set_date(SystemTime::now());
    page
}

/// One read's worth of HTTP as the loop drives it: clear the output, offer the bytes, and
/// check that the connection stays open.
///
/// The session's contract is to answer every complete request it is offered in one call
/// (the loop makes one call per read), so the `while` below runs once. It is there so that
/// a session that answers one request per call still gets every request offered, and the
/// figure stays "per request" rather than silently measuring a sixteenth of the work.
fn answer(
    session: &mut HttpSession,
    input: &[u8],
    out: &mut Vec<u8>,
    page: &Responses,
    stats: &mut Stats,
    outbox: &mut Vec<Arc<[u8]>>,
) {
    out.clear();
    let mut ctx = Context {
        responses: page,
        out_budget: MAX_PENDING_OUTPUT,
        peer: peer(),
        stats,
        broadcast: outbox,
    };
    let mut rest = input;
    while !rest.is_empty() {
        let outcome = session.on_input(black_box(rest), out, &mut ctx);
        debug_assert_eq!(outcome.next, Next::Continue);
        if outcome.consumed == 0 {
            break;
        }
        rest = &rest[outcome.consumed.min(rest.len())..];
    }
    black_box(&out);
}

fn http(c: &mut Criterion) {
    let page = page();
    let mut group = c.benchmark_group("http");
    for depth in [1, PIPELINE_DEPTH] {
        let input = WRK_REQUEST.repeat(depth);
        let mut session = HttpSession::new();
        let mut out = Vec::with_capacity(LOOP_BUFFER_SIZE);
        let mut stats = Stats::default();
        // The loop's list of WebSocket broadcasts; HTTP never adds to it.
        let mut outbox = Vec::new();

        // Before timing anything, make sure the session answers what we think it answers:
        // every request consumed, one response each.
        answer(
            &mut session,
            &input,
            &mut out,
            &page,
            &mut stats,
            &mut outbox,
        );
        assert_eq!(stats.requests, depth as u64, "one response per request");
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(out.ends_with(DEFAULT_BODY));

        // Throughput in elements: criterion then reports requests per second, and the time
        // per iteration divided by `depth` is the time per request.
        group.throughput(Throughput::Elements(depth as u64));
        let name = if depth == 1 { "single" } else { "pipelined" };
        group.bench_function(BenchmarkId::new(name, depth), |b| {
            b.iter(|| {
                answer(
                    &mut session,
                    &input,
                    &mut out,
                    &page,
                    &mut stats,
                    &mut outbox,
                )
            })
        });
    }
    group.finish();
}

fn echo(c: &mut Criterion) {
    let page = page();
    let mut group = c.benchmark_group("echo");
    for size in [64usize, 64 * 1024] {
        let input: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut out = Vec::with_capacity(LOOP_BUFFER_SIZE);
        let mut stats = Stats::default();
        let mut outbox = Vec::new();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                out.clear();
                let mut ctx = Context {
                    responses: &page,
                    out_budget: MAX_PENDING_OUTPUT,
                    peer: peer(),
                    stats: &mut stats,
                    broadcast: &mut outbox,
                };
                let outcome = echo::on_input(black_box(&input), &mut out, &mut ctx);
                debug_assert_eq!(outcome.consumed, size);
                black_box(&out);
            })
        });
        assert_eq!(out, input, "echo gives back what it was given");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // The figures settle within a second on this machine; five keep `cargo bench` short.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = http, echo
}
criterion_main!(benches);
