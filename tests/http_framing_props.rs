//! Property: sockloop frames a request stream the way a strict RFC 9112 framer does.
//!
//! Request smuggling is two parsers disagreeing about where a request ends. The reference
//! framer in `tests/common/framer.rs` shares no code with sockloop; for any stream built
//! from valid and hostile pieces (chunk lines of every smuggling shape, bare LF and CR,
//! control bytes, bad trailers, conflicting framing headers), cut into reads at random
//! points and answered with a small random output budget, the 200s sockloop sends must be
//! exactly the requests the framer counts, in order and each with the right HEAD-ness and
//! Connection; and where the framer finds the stream invalid, sockloop's answer must end in
//! one 400 with `Connection: close`, with nothing after it.
//!
//! Two strengths of the same property:
//! - streams of pieces both sides read alike: the answers must match exactly, and a 400
//!   comes if and only if the framer says invalid;
//! - the same streams with a few bytes inserted, deleted or replaced: sockloop may be
//!   stricter than the framer (its Host and target checks, say), so it may answer fewer
//!   requests, but then it must say 400 and close; it may never answer more, or otherwise.

mod common;

use proptest::prelude::*;
use sockloop::protocol::responses::{
    ConnectionHeader, ErrorStatus, Responses, CONTINUE, DEFAULT_BODY, DEFAULT_CONTENT_TYPE,
};
use sockloop::protocol::{Mode, Next};
use std::time::{Duration, UNIX_EPOCH};

use common::feed::{self, Transcript};
use common::framer::{self, End, Framing, Persistence};

// ---------------------------------------------------------------------------------------
// The pieces
// ---------------------------------------------------------------------------------------

/// What comes after a chunk's size on its line, when the line is valid (RFC 9112 §7.1.1).
const VALID_CHUNK_EXTENSIONS: &[&[u8]] = &[
    b"\r\n",
    b";a\r\n",
    b";a=b\r\n",
    b";a=b;c;d=\"\"\r\n",
    b" ; a = \"q\\\"x\"\r\n",
    b"\t;\tname\t=\t\"\ttab\t\"\r\n",
    b" ;a=b ;c\r\n",
    b";a=\"obs-text \x80\xff\"\r\n",
    b";a=\"\\\x80\\\\\"\r\n",
    b";!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\n",
];

/// What comes after a chunk's size when the line can never be valid: each is a shape that
/// a lenient chunk parser reads one way and a proxy another.
const HOSTILE_CHUNK_EXTENSIONS: &[&[u8]] = &[
    b";\n",             // issue 12's `5;` + bare LF
    b";\r\n",           // a bare ';'
    b";bad[=x\r\n",     // a name that is not a token
    b" \r\n",           // whitespace before CRLF: BWS only precedes ';'
    b";a=b \r\n",       // whitespace after a value
    b";a=\0\r\n",       // NUL
    b";a\x01\r\n",      // a C0 control
    b";a=\x0b\r\n",     // vertical tab is not whitespace here
    b";a=\"x\ny\"\r\n", // a bare LF inside quotes
    b";a=\"\\\n\"\r\n", // an escaped LF
    b";a=\"\x7f\"\r\n", // DEL inside quotes
    b";a=\"open\r\n",   // a quote never closed
    b";a=\r\n",         // '=' without a value
    b";=b\r\n",         // a value without a name
    b";a=b\n",          // the line ended by a bare LF
    b"\n",              // the size ended by a bare LF
    b"\r\r\n",          // CR CR LF
    b";a\rb\r\n",       // a bare CR
    b";a=\"b\"c\r\n",   // bytes after the closing quote
    b";\nxx\r\n28\r\n", // issue 12's desync, as a front end would frame it
];

/// Bytes put before a chunk size that make the line invalid.
const HOSTILE_SIZE_PREFIXES: &[&[u8]] = &[
    b"0x",
    b" ",
    b"+",
    b"\0",
    b"ffffffffffffffff", // with the size after it: over 64 bits
];

/// The end of a chunk's data: CRLF, or not.
const HOSTILE_DATA_ENDS: &[&[u8]] = &[b"\n", b"\r", b"", b"\r\r\n", b" \r\n", b"\n\r"];

const VALID_TRAILERS: &[&[u8]] = &[
    b"X-Sum: 1\r\n",
    b"X:\r\n",
    b"Y: \t v \x80 \t\r\n",
    b"Trailer: GET / HTTP/1.1\r\n",
];

const HOSTILE_TRAILERS: &[&[u8]] = &[
    b"X: a\n",                                          // a field ended by a bare LF
    b"X: a\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", // a request behind it
    b"X\r\n",                                           // no colon
    b"X : a\r\n",                                       // whitespace before the colon
    b" X: a\r\n",                                       // obs-fold
    b"X: a\0\r\n",                                      // NUL
    b"X: a\rb\r\n",                                     // a bare CR
    b"X: \x1b\r\n",                                     // ESC
    b"0\r\n",                                           // a second last-chunk
];

/// The empty line that ends a chunked body, and ways to get it wrong.
const HOSTILE_BODY_ENDS: &[&[u8]] = &[b"\n", b"\r\r\n", b"\r \n"];

/// Heads with a chunked body.
const CHUNKED_HEADS: &[&[u8]] = &[
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HEAD /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    // A bare-LF head: sockloop's deliberate leniency, which the framer models.
    b"POST /lf HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n",
];

/// Requests without a body, or whose framing is all in the head.
const PLAIN_REQUESTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\nGET /after-an-empty-line HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\nGET /bare HTTP/1.1\nHost: x\n\n",
    b"GET /keep HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nhi",
    b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n",
];

/// Requests that end the conversation, validly: what follows must not be answered.
const CLOSING_REQUESTS: &[&[u8]] = &[
    b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
];

/// Heads whose framing is ambiguous (RFC 9112 §6.1, §6.3): 400.
const HOSTILE_HEADS: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
];

/// Issue 12's request, whole: one 400 and nothing else.
const ISSUE_12: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n28\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n";

fn one_of(pieces: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(pieces).prop_map(<[u8]>::to_vec)
}

/// A chunk size in hex, in either case, maybe with leading zeros.
fn hex(size: usize, upper: bool, zeros: usize) -> Vec<u8> {
    let digits = match upper {
        true => format!("{size:X}"),
        false => format!("{size:x}"),
    };
    [&vec![b'0'; zeros][..], digits.as_bytes()].concat()
}

/// One non-last chunk: its line, its data, the data's end. Hostile about one time in 13.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let data = prop::collection::vec(any::<u8>(), 1..24);
    let size_line = (any::<bool>(), 0..3usize);
    let valid = (
        data.clone(),
        size_line.clone(),
        one_of(VALID_CHUNK_EXTENSIONS),
    )
        .prop_map(|(data, (upper, zeros), extension)| {
            [
                &hex(data.len(), upper, zeros)[..],
                &extension,
                &data,
                b"\r\n",
            ]
            .concat()
        });
    let bad_extension = (
        data.clone(),
        size_line.clone(),
        one_of(HOSTILE_CHUNK_EXTENSIONS),
    )
        .prop_map(|(data, (upper, zeros), extension)| {
            [
                &hex(data.len(), upper, zeros)[..],
                &extension,
                &data,
                b"\r\n",
            ]
            .concat()
        });
    let bad_size = (data.clone(), one_of(HOSTILE_SIZE_PREFIXES)).prop_map(|(data, prefix)| {
        [
            &prefix[..],
            &hex(data.len(), false, 0),
            b"\r\n",
            &data,
            b"\r\n",
        ]
        .concat()
    });
    let bad_data_end = (data, one_of(HOSTILE_DATA_ENDS))
        .prop_map(|(data, end)| [&hex(data.len(), false, 0)[..], b"\r\n", &data, &end].concat());
    prop_oneof![
        48 => valid,
        2 => bad_extension,
        1 => bad_size,
        1 => bad_data_end,
    ]
}

/// The last chunk, the trailers and the final CRLF.
fn body_end() -> impl Strategy<Value = Vec<u8>> {
    let last_chunk = prop_oneof![
        24 => (0..3usize, one_of(VALID_CHUNK_EXTENSIONS))
            .prop_map(|(zeros, extension)| [&hex(0, false, zeros)[..], &extension].concat()),
        1 => one_of(HOSTILE_CHUNK_EXTENSIONS).prop_map(|extension| [b"0", &extension[..]].concat()),
    ];
    let trailer = prop_oneof![
        24 => one_of(VALID_TRAILERS),
        1 => one_of(HOSTILE_TRAILERS),
    ];
    let end = prop_oneof![
        36 => Just(b"\r\n".to_vec()),
        1 => one_of(HOSTILE_BODY_ENDS),
    ];
    (last_chunk, prop::collection::vec(trailer, 0..3), end)
        .prop_map(|(last, trailers, end)| [last, trailers.concat(), end].concat())
}

/// One request of any kind, hostile ones among them.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let chunked = (
        one_of(CHUNKED_HEADS),
        prop::collection::vec(chunk(), 0..4),
        body_end(),
    )
        .prop_map(|(head, chunks, end)| [head, chunks.concat(), end].concat());
    prop_oneof![
        16 => chunked,
        8 => one_of(PLAIN_REQUESTS),
        1 => one_of(CLOSING_REQUESTS),
        1 => one_of(HOSTILE_HEADS),
        1 => Just(ISSUE_12.to_vec()),
    ]
}

/// A stream of requests, and how the loop cuts it into reads and paces the output.
#[derive(Debug, Clone)]
struct Conversation {
    stream: Vec<u8>,
    cuts: Vec<usize>,
    out_budget: usize,
}

fn conversation() -> impl Strategy<Value = Conversation> {
    (
        prop::collection::vec(request(), 1..10),
        prop::collection::vec(any::<usize>(), 0..12),
        prop_oneof![Just(1usize), 1..600usize, Just(usize::MAX)],
    )
        .prop_map(|(requests, cuts, out_budget)| Conversation {
            stream: requests.concat(),
            cuts,
            out_budget,
        })
}

/// A byte edit of the kind that turns a valid stream into a hostile one.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    // No digits: an edit that turns `HTTP/1.1` into `HTTP/0.1` gets a 505, rightly, and
    // this property is about 400s.
    let byte = prop::sample::select(&b"\n\r\0 \t;\"\\:=,\x7f\x80\x0bxaf"[..]);
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte).prop_map(|(at, byte)| Edit::Replace(at, byte)),
    ]
}

fn apply(stream: &mut Vec<u8>, edit: &Edit) {
    match *edit {
        Edit::Insert(at, byte) => stream.insert(at % (stream.len() + 1), byte),
        Edit::Delete(at) if !stream.is_empty() => {
            stream.remove(at % stream.len());
        }
        Edit::Replace(at, byte) if !stream.is_empty() => {
            let at = at % stream.len();
            stream[at] = byte;
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Reading sockloop's answers
// ---------------------------------------------------------------------------------------

/// One response sockloop sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok {
        connection: ConnectionHeader,
        head_only: bool,
    },
    Error(ErrorStatus),
}

/// The page with the Date that `feed` fixes, so responses compare byte for byte.
fn page() -> Responses {
    let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
    page.set_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    page
}

/// Split sockloop's output into the canned responses it is made of; `100 Continue` is
/// interim and left out. Anything else in the output fails the test.
fn answers(page: &Responses, mut out: &[u8]) -> Result<Vec<Answer>, TestCaseError> {
    let mut known = Vec::new();
    for connection in [
        ConnectionHeader::Persistent,
        ConnectionHeader::KeepAlive,
        ConnectionHeader::Close,
    ] {
        // The full response first: the HEAD one is a prefix of it.
        for head_only in [false, true] {
            let answer = Answer::Ok {
                connection,
                head_only,
            };
            known.push((page.ok(connection, head_only), answer));
        }
    }
    for status in [
        ErrorStatus::BadRequest,
        ErrorStatus::HeaderFieldsTooLarge,
        ErrorStatus::VersionNotSupported,
        ErrorStatus::RequestTimeout,
    ] {
        known.push((page.error(status), Answer::Error(status)));
    }
    let mut found = Vec::new();
    'responses: while !out.is_empty() {
        if let Some(rest) = out.strip_prefix(CONTINUE) {
            out = rest;
            continue;
        }
        for &(bytes, answer) in &known {
            if let Some(rest) = out.strip_prefix(bytes) {
                // A HEAD response is followed by the next status line or by nothing.
                if rest.is_empty() || rest.starts_with(b"HTTP/1.1 ") {
                    found.push(answer);
                    out = rest;
                    continue 'responses;
                }
            }
        }
        return Err(TestCaseError::fail(format!(
            "not a canned response: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        )));
    }
    Ok(found)
}

fn expected_answer(request: &framer::Request) -> Answer {
    let connection = match request.persistence {
        Persistence::Persistent => ConnectionHeader::Persistent,
        Persistence::KeepAlive => ConnectionHeader::KeepAlive,
        Persistence::Close => ConnectionHeader::Close,
    };
    Answer::Ok {
        connection,
        head_only: request.head_only,
    }
}

fn serve(conversation: &Conversation) -> Transcript {
    let reads = feed::cut(&conversation.stream, &conversation.cuts);
    feed::serve_with_budget(Mode::Http, &reads, conversation.out_budget)
}

/// The weak form, for any stream: sockloop's 200s are the framer's first requests, and if
/// it answers fewer, or the framer finds the stream invalid, its last word is 400 + close.
fn check_never_more_than_the_framer(
    framing: &Framing,
    transcript: &Transcript,
) -> Result<(), TestCaseError> {
    let page = page();
    let answers = answers(&page, &transcript.out)?;
    let oks = answers
        .iter()
        .take_while(|a| matches!(a, Answer::Ok { .. }));
    let oks: Vec<Answer> = oks.copied().collect();
    let expected: Vec<Answer> = framing.requests.iter().map(expected_answer).collect();
    prop_assert!(
        oks.len() <= expected.len(),
        "sockloop answered {} requests, the framer sees {}: {:?}",
        oks.len(),
        expected.len(),
        framing
    );
    prop_assert_eq!(&oks[..], &expected[..oks.len()], "{:?}", framing);
    let after_oks = &answers[oks.len()..];
    let must_refuse = oks.len() < expected.len() || matches!(framing.end, End::Invalid(_));
    if must_refuse || !after_oks.is_empty() {
        prop_assert_eq!(
            after_oks,
            &[Answer::Error(ErrorStatus::BadRequest)][..],
            "the stream must end in one 400: {:?}",
            framing
        );
        prop_assert_eq!(transcript.next, Next::CloseAfterFlush);
    } else if framing.end == End::Closed {
        prop_assert_eq!(transcript.next, Next::CloseAfterFlush);
    } else {
        prop_assert_eq!(transcript.next, Next::Continue);
    }
    prop_assert_eq!(transcript.requests, oks.len() as u64);
    Ok(())
}

/// The strong form, for streams of pieces both sides read alike: the same requests, and a
/// 400 exactly when the framer finds the stream invalid.
fn check_same_as_the_framer(
    framing: &Framing,
    transcript: &Transcript,
) -> Result<(), TestCaseError> {
    check_never_more_than_the_framer(framing, transcript)?;
    let answers = answers(&page(), &transcript.out)?;
    let oks = answers
        .iter()
        .filter(|a| matches!(a, Answer::Ok { .. }))
        .count();
    prop_assert_eq!(oks, framing.requests.len(), "{:?}", framing);
    let refused = answers.last() == Some(&Answer::Error(ErrorStatus::BadRequest));
    prop_assert_eq!(
        refused,
        matches!(framing.end, End::Invalid(_)),
        "{:?}",
        framing
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn sockloop_answers_exactly_the_requests_a_strict_framer_sees(
        conversation in conversation(),
    ) {
        let framing = framer::frame(&conversation.stream);
        check_same_as_the_framer(&framing, &serve(&conversation))?;
    }

    #[test]
    fn an_edited_stream_is_never_answered_beyond_what_a_strict_framer_sees(
        conversation in conversation(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut conversation = conversation;
        for edit in &edits {
            apply(&mut conversation.stream, edit);
        }
        let framing = framer::frame(&conversation.stream);
        check_never_more_than_the_framer(&framing, &serve(&conversation))?;
    }
}

// ---------------------------------------------------------------------------------------
// The framer itself, on cases whose answer is known
// ---------------------------------------------------------------------------------------

fn framed(stream: &[u8]) -> (usize, End) {
    let framing = framer::frame(stream);
    (framing.requests.len(), framing.end)
}

#[test]
fn the_framer_counts_valid_requests_and_stops_where_a_strict_reader_must() {
    let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let with = |body: &[u8]| [&chunked[..], body, get].concat();
    assert_eq!(framed(b""), (0, End::Clean));
    assert_eq!(framed(get), (1, End::Clean));
    assert_eq!(framed(&[get, &get[..10]].concat()), (1, End::Incomplete));
    assert_eq!(framed(&with(b"5\r\nhello\r\n0\r\n\r\n")), (2, End::Clean));
    assert_eq!(
        framed(&with(b"5 ; a = \"q\\\"x\"\r\nhello\r\n0\r\nX: y\r\n\r\n")),
        (2, End::Clean)
    );
    assert_eq!(
        framed(&with(b"0005;a=b\r\nhello\r\n0\r\n\r\n")),
        (2, End::Clean)
    );
    assert_eq!(framed(b"GET / HTTP/1.1\nHost: x\n\n"), (1, End::Clean));
    for invalid in [
        &b"5;\r\nhello\r\n0\r\n\r\n"[..],
        b"5;bad[=x\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5;a=\0\r\nhello\r\n0\r\n\r\n",
        b"5;\nhello\r\n0\r\n\r\n",
        b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: a\n\r\n",
        b"10000000000000000\r\n",
    ] {
        assert!(
            matches!(framed(&with(invalid)), (0, End::Invalid(_))),
            "{invalid:?}"
        );
    }
    assert!(matches!(framed(ISSUE_12), (0, End::Invalid(_))));
    // Waiting is not refusing: a valid start of a chunk line is incomplete.
    assert_eq!(
        framed(&[&chunked[..], b"5;a"].concat()),
        (0, End::Incomplete)
    );
    assert_eq!(
        framed(&[&chunked[..], b"5 "].concat()),
        (0, End::Incomplete)
    );
    let closing = [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        get,
    ]
    .concat();
    assert_eq!(framed(&closing), (1, End::Closed));
}

#[test]
fn issue_12_is_one_400_however_it_is_cut_and_paced() {
    for out_budget in [1, 300, usize::MAX] {
        for at in 0..=ISSUE_12.len() {
            let conversation = Conversation {
                stream: ISSUE_12.to_vec(),
                cuts: vec![at],
                out_budget,
            };
            let transcript = serve(&conversation);
            assert_eq!(
                answers(&page(), &transcript.out).unwrap(),
                [Answer::Error(ErrorStatus::BadRequest)],
                "cut at {at}, budget {out_budget}"
            );
            assert_eq!(transcript.next, Next::CloseAfterFlush);
        }
    }
}
