//! Echo: every byte in is a byte out, in order.
//!
//! The only decision is backpressure: once `out` holds `out_budget` bytes we stop taking
//! input, and the loop stops reading from the socket until the peer drains its replies.

use super::{Context, Next, Outcome};

pub fn on_input(input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
    let room = ctx.out_budget.saturating_sub(out.len());
    let take = input.len().min(room);
    out.extend_from_slice(&input[..take]);
    ctx.stats.messages += u64::from(take > 0);
    Outcome::new(take, Next::Continue)
}
