//! Feeding a protocol session the way the loop does, without a socket: for the property
//! tests that cut one byte stream into reads every which way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sockloop::protocol::responses::{Responses, DEFAULT_BODY, DEFAULT_CONTENT_TYPE};
use sockloop::protocol::{Context, Mode, Next, Session};
use sockloop::stats::Stats;

/// Cut `bytes` into reads at the given points (each taken modulo the length).
pub fn cut<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut reads = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        reads.push(&bytes[start..point]);
        start = point;
    }
    reads
}

/// Everything a connection produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Transcript {
    pub out: Vec<u8>,
    pub broadcast: Vec<Arc<[u8]>>,
    pub next: Next,
    pub requests: u64,
    pub messages: u64,
}

/// Feed `reads` one after another the way the loop does: what was not consumed is offered
/// again with the next read appended. The Date is fixed, so transcripts compare equal.
pub fn serve(mode: Mode, reads: &[&[u8]]) -> Transcript {
    let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    page.set_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut stats = Stats::default();
    let mut session = Session::new(mode);
    let (mut unconsumed, mut out, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = Next::Continue;
    for read in reads {
        unconsumed.extend_from_slice(read);
        let mut ctx = Context {
            responses: &page,
            out_budget: usize::MAX,
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            stats: &mut stats,
            broadcast: &mut broadcast,
        };
        let outcome = session.on_input(&unconsumed, &mut out, &mut ctx);
        unconsumed.drain(..outcome.consumed);
        next = outcome.next;
        if next == Next::CloseAfterFlush {
            break;
        }
    }
    Transcript {
        out,
        broadcast,
        next,
        requests: stats.requests,
        messages: stats.messages,
    }
}

/// Like [`serve`], with the loop's output budget and its write step, as `Connection::offer`
/// and `resume_stalled_input` do it: after each call the loop writes `out` (here: moves it
/// to the transcript); if the session stopped short of the input because `out` reached the
/// budget, the loop offers the rest again, with nothing new, once that is written; if it
/// stopped short for want of bytes (half a request), the rest waits for the next read. So a
/// small budget makes the session answer a pipeline a few requests per call (backpressure).
pub fn serve_with_budget(mode: Mode, reads: &[&[u8]], out_budget: usize) -> Transcript {
    let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    page.set_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut stats = Stats::default();
    let mut session = Session::new(mode);
    let (mut unconsumed, mut written, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = Next::Continue;
    'reads: for read in reads {
        unconsumed.extend_from_slice(read);
        loop {
            let mut out = Vec::new();
            let mut ctx = Context {
                responses: &page,
                out_budget,
                peer: SocketAddr::from(([127, 0, 0, 1], 9)),
                stats: &mut stats,
                broadcast: &mut broadcast,
            };
            let outcome = session.on_input(&unconsumed, &mut out, &mut ctx);
            assert!(outcome.consumed <= unconsumed.len());
            let stalled = outcome.consumed < unconsumed.len() && out.len() >= out_budget;
            // The loop would offer the same bytes again at once, for ever.
            assert!(
                !(stalled && outcome.consumed == 0 && out.is_empty()),
                "the session stopped for a full output without writing anything"
            );
            unconsumed.drain(..outcome.consumed);
            written.append(&mut out);
            next = outcome.next;
            if next == Next::CloseAfterFlush {
                break 'reads;
            }
            if !stalled {
                break;
            }
        }
    }
    Transcript {
        out: written,
        broadcast,
        next,
        requests: stats.requests,
        messages: stats.messages,
    }
}
