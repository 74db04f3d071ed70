//! Tokens: how an epoll event finds its way back to what it is about.
//!
//! epoll hands back, with each event, the 64 bits we registered the descriptor with
//! (`epoll_event.data`, `epoll_ctl(2)`); mio calls them a `Token`. A connection's token is
//! its slab key in the low 32 bits and a generation count in the high ones. When a
//! connection closes and a new one gets the same slab key within one batch of events, a
//! stale event for the old one carries the old generation and is dropped instead of being
//! delivered to the newcomer. The loop's own descriptors take the top values, which no
//! connection's token can reach, since generations stop short of the top bit.

use mio::Token;

// The packing needs a 64-bit usize; on a 32-bit target, fail the build rather than mix up
// connections.
const _: () = assert!(
    usize::BITS == 64,
    "tokens pack key and generation into 64 bits"
);

/// The listening socket.
pub const LISTENER: Token = Token(usize::MAX);
/// The read end of the self-pipe that signal handlers write to (see `signals`).
pub const SIGNAL: Token = Token(usize::MAX - 1);
/// Another loop left broadcasts in this loop's inbox (see `room`).
pub const INBOX: Token = Token(usize::MAX - 2);
/// The read end of the self-pipe for SIGUSR1, which asks for a report (see `report`).
pub const REPORT: Token = Token(usize::MAX - 3);

const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// 31 bits: with the key below them, a connection's token stays under 2^63.
const GENERATION_MASK: u32 = 0x7fff_ffff;

/// The token for slab key `key` in its `generation`.
pub fn pack(key: usize, generation: u32) -> Token {
    debug_assert!(key <= KEY_MASK, "slab key {key} does not fit in 32 bits");
    Token((key & KEY_MASK) | ((generation as usize) << KEY_BITS))
}

/// The slab key a connection's token was made from.
pub fn key_of(token: Token) -> usize {
    token.0 & KEY_MASK
}

/// The generation counter: each new connection gets the next one.
#[derive(Debug, Default)]
pub struct Generations(u32);

impl Generations {
    pub fn next(&mut self) -> u32 {
        self.0 = (self.0 + 1) & GENERATION_MASK;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_different_token_and_the_same_key() {
        let mut generations = Generations::default();
        let first = pack(7, generations.next());
        let second = pack(7, generations.next());
        assert_ne!(first, second);
        assert_eq!((key_of(first), key_of(second)), (7, 7));
    }

    #[test]
    fn no_connection_token_reaches_the_loops_own() {
        let mut generations = Generations(GENERATION_MASK - 1);
        let last = pack(KEY_MASK, generations.next());
        // REPORT is the lowest of the loop's own tokens.
        const { assert!(REPORT.0 < INBOX.0 && INBOX.0 < SIGNAL.0 && SIGNAL.0 < LISTENER.0) };
        assert!(last.0 < REPORT.0);
        // The counter wraps rather than overflowing into the top bit.
        assert_eq!(generations.next(), 0);
    }
}
