//! The steady state allocates nothing: answering a request is copying prebuilt bytes into
//! an output buffer the loop reuses. This binary has its own global allocator, which counts
//! the allocations made on the measuring thread while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sockloop::protocol::http::HttpSession;
use sockloop::protocol::responses::{Responses, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use sockloop::protocol::{Context, Next};
use sockloop::stats::Stats;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only this thread's allocations count: the test harness has threads of its own.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if MEASURING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// 100 pipelined requests: plain GETs, HEADs, and both kinds of body.
fn batch() -> Vec<u8> {
    let kinds: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: localhost:8889\r\nUser-Agent: wrk\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    kinds
        .iter()
        .cycle()
        .take(100)
        .copied()
        .collect::<Vec<_>>()
        .concat()
}

#[test]
fn ten_thousand_pipelined_requests_allocate_nothing() {
    let page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    let mut stats = Stats::default();
    let mut session = HttpSession::new();
    let batch = batch();
    let mut out = Vec::with_capacity(64 * 1024);
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));

    let mut serve_batch = |out: &mut Vec<u8>, stats: &mut Stats| {
        // Like the loop: the previous answers were written, the buffer is reused.
        out.clear();
        let mut ctx = Context {
            responses: &page,
            out_budget: usize::MAX,
            peer,
            stats,
            broadcast: &mut Vec::new(),
        };
        let outcome = session.on_input(&batch, out, &mut ctx);
        assert_eq!(outcome.consumed, batch.len());
        assert_eq!(outcome.next, Next::Continue);
    };

    // Warm up: the first batch may grow `out` to its working size.
    serve_batch(&mut out, &mut stats);
    let warm = stats.requests;

    // The counter itself works: one allocation, counted.
    MEASURING.with(|measuring| measuring.set(true));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    MEASURING.with(|measuring| measuring.set(false));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);

    MEASURING.with(|measuring| measuring.set(true));
    for _ in 0..100 {
        serve_batch(&mut out, &mut stats);
    }
    MEASURING.with(|measuring| measuring.set(false));

    assert_eq!(stats.requests - warm, 10_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations while serving"
    );
}
