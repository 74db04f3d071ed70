//! Property: how the peer's bytes are cut into reads, and how slowly the peer reads the
//! answers, never changes what ws mode answers.
//!
//! A WebSocket connection is HTTP first (the page, then the handshake) and frames after, and
//! a read may end anywhere: inside a request head, between the handshake and the first
//! frame, inside a frame's header or its masked payload. Fed in any chunks the way the loop
//! feeds it, and stopped whenever its output reaches a small budget (the loop offers the
//! rest again once the output is written: backpressure), the session must write the same
//! bytes, broadcast the same frames and come to the same decision as when fed everything at
//! once with no budget.

mod common;

use proptest::prelude::*;
use sockloop::protocol::Mode;

use common::feed::{self, Transcript};

/// Feed `reads` to a ws session the way the loop does, with no limit on its output.
fn serve(reads: &[&[u8]]) -> Transcript {
    feed::serve(Mode::Ws, reads)
}

/// Feed `reads` the way the loop does, stopping the session whenever its output reaches
/// `out_budget` bytes, and offering the rest again once that is written.
fn serve_paced(reads: &[&[u8]], out_budget: usize) -> Transcript {
    feed::serve_with_budget(Mode::Ws, reads, out_budget)
}

/// An output budget small enough that the page, the handshake's answer and a run of pongs
/// each fill it: one byte, or up to a few hundred.
fn out_budget() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 1..400usize]
}

/// A client frame (RFC 6455 §5.2): FIN, the opcode, the mask bit, 7/16-bit length, the
/// mask key, the masked payload.
fn client_frame(opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A text, binary or ping frame, any mask, any payload (text stays valid UTF-8).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let mask = any::<[u8; 4]>();
    prop_oneof![
        (mask, "[a-zé ]{0,200}").prop_map(|(m, t)| client_frame(0x1, m, t.as_bytes())),
        (mask, prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(m, b)| client_frame(0x2, m, &b)),
        (mask, prop::collection::vec(any::<u8>(), 0..125))
            .prop_map(|(m, b)| client_frame(0x9, m, &b)),
    ]
}

/// A page load, then the handshake, then frames, then maybe a close: one stream.
fn conversation() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec(frame(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(page_first, frames, close)| {
            let mut stream = Vec::new();
            if page_first {
                stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            }
            stream.extend_from_slice(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            );
            for frame in frames {
                stream.extend(frame);
            }
            if close {
                stream.extend(client_frame(0x8, [1, 2, 3, 4], &1000u16.to_be_bytes()));
            }
            stream
        })
}

/// Cut `stream` at the given points (taken modulo its length).
fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

proptest! {
    #[test]
    fn any_split_of_a_conversation_under_any_output_budget_gives_the_same_transcript(
        stream in conversation(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
        out_budget in out_budget(),
    ) {
        let whole = serve(&[&stream]);
        prop_assert!(whole.out.starts_with(b"HTTP/1.1 "));
        let reads = split(&stream, &cuts);
        prop_assert_eq!(&serve(&reads), &whole);
        prop_assert_eq!(&serve_paced(&reads, out_budget), &whole);
    }

    #[test]
    fn a_byte_at_a_time_under_any_output_budget_gives_the_same_transcript(
        stream in conversation(),
        out_budget in out_budget(),
    ) {
        let whole = serve(&[&stream]);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&serve(&bytes), &whole);
        prop_assert_eq!(&serve_paced(&bytes, out_budget), &whole);
        // Everything in one read, but the answers one budget at a time.
        prop_assert_eq!(&serve_paced(&[&stream], out_budget), &whole);
    }
}
