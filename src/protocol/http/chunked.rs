//! The lines of a chunked body, read strictly: chunk-size lines and trailer lines
//! (RFC 9112 §7.1).
//!
//! A chunked body is lines and data in turn: `1a;name=value CRLF`, 0x1a bytes of data, CRLF,
//! …, `0 CRLF`, trailer field lines, an empty line. Where one of those lines ends decides
//! where the next request begins, so every proxy and server on the path must agree on it byte
//! for byte. httparse's `parse_chunk_size` takes any byte after a `;` until CRLF, a bare LF
//! and a NUL included; nginx ends the line at that bare LF. A front end that frames like
//! nginx in front of a server that frames like httparse see two different request streams in
//! the same bytes: request smuggling, the class of bug fixed in ASP.NET Core's Kestrel in
//! 2025 (CVE-2025-55315).
//!
//! So these parsers follow the grammar to the byte and refuse the first byte it has no room
//! for. For each line the answer is one of three:
//! - it is complete and valid: here is its length (and the chunk's size);
//! - it is a valid start that more bytes could finish: [`Status::Incomplete`];
//! - no bytes could make it valid: an [`Error`], which the caller answers with 400 and a
//!   close, because after it we no longer know where the next request would start.
//!
//! The grammar, from RFC 9112 §7.1 and §7.1.1, with RFC 9110 §5.6 for the pieces:
//!
//! ```text
//! chunk-line     = chunk-size [ chunk-ext ] CRLF
//! chunk-size     = 1*HEXDIG
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-name = token
//! chunk-ext-val  = token / quoted-string
//! BWS            = OWS = *( SP / HTAB )
//! quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
//! qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
//! quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text )
//! obs-text       = %x80-FF
//! ```
//!
//! The choices the grammar leaves, and what we made of them:
//! - **Whitespace.** BWS appears only before `;` and around `=`. So `5 ;a = b` is valid, but
//!   `5 CRLF` and `5;a=b CRLF` are not: no rule puts whitespace before the CRLF. RFC 9110
//!   §5.6.3 asks a recipient to "parse for such bad whitespace and remove it", which is why
//!   we accept it where the grammar has it, and only there.
//! - **Bare LF.** RFC 9112 §2.2 lets a recipient take a lone LF as a line end "for the
//!   start-line and fields" only; a chunk line is neither, and the chunk grammar says CRLF.
//!   A bare LF anywhere in a chunk line is an error, never an end and never content.
//! - **Bare CR.** RFC 9112 §2.2: a recipient "MUST consider that element to be invalid or
//!   replace each bare CR with SP". We take the first: an error.
//! - **obs-text in a quoted-string.** Allowed, as qdtext and quoted-pair say: no parser takes
//!   0x80–0xFF for a line end, so refusing them would make us stricter than the grammar and
//!   no safer. RFC 9110 §5.5 asks a recipient to treat such octets "as opaque data", and we
//!   never look at them. They are not allowed in a token, which is `1*tchar`.
//! - **Control bytes.** HTAB only, and only where the grammar has it (BWS and quoted-string).
//!   NUL, the other C0 controls and DEL are in no rule; a `\` does not make them legal,
//!   because quoted-pair escapes only HTAB, SP, VCHAR and obs-text.
//! - **Sizes.** Any number of leading zeros (they are HEXDIG); upper and lower case (ABNF
//!   strings are case-insensitive, RFC 5234 §2.3). A value that does not fit in a u64 is an
//!   error: "Recipients MUST anticipate potentially large hexadecimal numerals and prevent
//!   parsing errors due to integer conversion overflows" (RFC 9112 §7.1).
//! - **Length.** The caller caps a chunk line's length: "A server ought to limit the total
//!   length of chunk extensions received in a request [...] and generate an appropriate 4xx
//!   (Client Error) response if that amount is exceeded" (RFC 9112 §7.1.1).
//! - **Trailer lines** (RFC 9112 §7.1.2, `trailer-section = *( field-line CRLF )`) must end
//!   in CRLF too, though §2.2 would let a recipient take LF for the end of a field: a trailer
//!   section sits inside the body, where a lenient reader is half of a smuggling pair. Each
//!   line must also be a field line, `field-name ":" OWS field-value OWS`, as a head's must
//!   (httparse holds heads to that): no whitespace before the colon (RFC 9112 §5.1: "A server
//!   MUST reject, with a response status code of 400"), no obs-fold (§5.2 lets a server
//!   reject it), no CR, LF or NUL in the value (RFC 9110 §5.5: "invalid and dangerous"), and
//!   no other control byte but HTAB (field-vchar is VCHAR / obs-text). A line that is not a
//!   field line means the stream is not what its sender said it was, and that is the moment
//!   to stop reading rather than guess.

/// What a line parser found at the start of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole, valid line.
    Complete(T),
    /// A valid start of a line: wait for more bytes.
    Incomplete,
}

/// A complete chunk-size line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLine {
    /// The chunk's size, the hex number at the start of the line.
    pub size: u64,
    /// Bytes of input the line took, its CRLF included.
    pub len: usize,
}

/// A complete line of a trailer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailerLine {
    /// A field line of this many bytes, its CRLF included.
    Field(usize),
    /// The empty line that ends the section (and the body): CRLF, [`TrailerLine::END_LEN`]
    /// bytes.
    End,
}

impl TrailerLine {
    /// The length of the empty line that ends a trailer section: CRLF.
    pub const END_LEN: usize = 2;
}

/// Why a line can never be valid, however it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A chunk line that does not start with a hex digit (`chunk-size = 1*HEXDIG`).
    NoSize,
    /// A chunk size too big for a u64.
    SizeOverflow,
    /// A LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A control byte (other than HTAB) or DEL where the grammar has none.
    Control,
    /// Any other byte the grammar has no room for at that point: `5;` with no name, a
    /// name or value that is not a token, whitespace before the CRLF, an unclosed quote…
    Grammar,
    /// A chunk line longer than the caller's cap, CRLF included.
    TooLong,
}

/// Read the chunk-size line at the start of `input`: `chunk-size [ chunk-ext ] CRLF`.
///
/// A line longer than `max_len` bytes (its CRLF included) is [`Error::TooLong`], whether or
/// not its end has arrived: so the caller buffers at most `max_len` bytes of it.
pub fn parse_chunk_line(input: &[u8], max_len: usize) -> Result<Status<ChunkLine>, Error> {
    let mut size: u64 = 0;
    let mut state = Chunk::Start;
    for (at, &byte) in input.iter().enumerate().take(max_len) {
        state = match (state, byte) {
            // The line end: CR then LF, both at once or one read apart.
            (Chunk::Cr, b'\n') => return Ok(Status::Complete(ChunkLine { size, len: at + 1 })),
            (Chunk::Cr, _) => return Err(Error::BareCr),
            (_, b'\n') => return Err(Error::BareLf),

            // chunk-size = 1*HEXDIG
            (Chunk::Start | Chunk::Size, _) if byte.is_ascii_hexdigit() => {
                // The digit's value: cannot fail, the byte is a hex digit.
                let digit = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                size = size
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(digit))
                    .ok_or(Error::SizeOverflow)?;
                Chunk::Size
            }
            (Chunk::Start, _) => return Err(Error::NoSize),

            // The line may end after the size, after a name, or after a value: nowhere
            // else, and never after whitespace.
            (Chunk::Size | Chunk::Name | Chunk::Token | Chunk::QuoteEnd, b'\r') => Chunk::Cr,

            // BWS ";" : whitespace is allowed before a ';' only if a ';' follows it.
            (Chunk::Size | Chunk::Token | Chunk::QuoteEnd | Chunk::BeforeSemi, b' ' | b'\t') => {
                Chunk::BeforeSemi
            }
            (
                Chunk::Size
                | Chunk::Name
                | Chunk::AfterName
                | Chunk::Token
                | Chunk::QuoteEnd
                | Chunk::BeforeSemi,
                b';',
            ) => Chunk::AfterSemi,

            // ";" BWS chunk-ext-name, where the name is a token: `5;` alone is not a line.
            (Chunk::AfterSemi, b' ' | b'\t') => Chunk::AfterSemi,
            (Chunk::AfterSemi | Chunk::Name, _) if is_tchar(byte) => Chunk::Name,

            // [ BWS "=" BWS chunk-ext-val ]
            (Chunk::Name | Chunk::AfterName, b' ' | b'\t') => Chunk::AfterName,
            (Chunk::Name | Chunk::AfterName, b'=') => Chunk::AfterEquals,
            (Chunk::AfterEquals, b' ' | b'\t') => Chunk::AfterEquals,
            (Chunk::AfterEquals | Chunk::Token, _) if is_tchar(byte) => Chunk::Token,
            (Chunk::AfterEquals, b'"') => Chunk::Quoted,

            // quoted-string: qdtext, or a backslash and the one byte it escapes.
            (Chunk::Quoted, b'"') => Chunk::QuoteEnd,
            (Chunk::Quoted, b'\\') => Chunk::Escaped,
            (Chunk::Quoted, _) if is_qdtext(byte) => Chunk::Quoted,
            (Chunk::Escaped, _) if is_escapable(byte) => Chunk::Quoted,

            // A CR where the line cannot end: `5 CRLF`, `5; CRLF`, a CR inside quotes.
            (_, b'\r') => return Err(Error::Grammar),
            (_, _) if is_ctl(byte) => return Err(Error::Control),
            (_, _) => return Err(Error::Grammar),
        };
    }
    // Every state above can still reach a CRLF, so running out of bytes is never an error
    // by itself: only running into the cap is.
    if input.len() >= max_len {
        return Err(Error::TooLong);
    }
    Ok(Status::Incomplete)
}

/// Where [`parse_chunk_line`] is in the line: the byte just read ended…
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// …nothing yet.
    Start,
    /// …a hex digit of the size.
    Size,
    /// …whitespace that must be followed by ';' (after the size or a value).
    BeforeSemi,
    /// …a ';' or whitespace after it: a name must come.
    AfterSemi,
    /// …a byte of an extension's name.
    Name,
    /// …whitespace after a name: '=' or ';' must come.
    AfterName,
    /// …an '=' or whitespace after it: a value must come.
    AfterEquals,
    /// …a byte of a token value.
    Token,
    /// …the opening quote or a byte inside a quoted value.
    Quoted,
    /// …a backslash inside a quoted value.
    Escaped,
    /// …the closing quote of a value.
    QuoteEnd,
    /// …the CR of the line's end: only LF may come.
    Cr,
}

/// Read one line of a trailer section at the start of `input`: a field line, or the empty
/// line that ends the section. There is no cap here; the caller bounds the section.
pub fn parse_trailer_line(input: &[u8]) -> Result<Status<TrailerLine>, Error> {
    let mut state = Trailer::Start;
    for (at, &byte) in input.iter().enumerate() {
        state = match (state, byte) {
            (Trailer::EmptyCr, b'\n') => return Ok(Status::Complete(TrailerLine::End)),
            (Trailer::Cr, b'\n') => return Ok(Status::Complete(TrailerLine::Field(at + 1))),
            (Trailer::EmptyCr | Trailer::Cr, _) => return Err(Error::BareCr),
            (_, b'\n') => return Err(Error::BareLf),

            (Trailer::Start, b'\r') => Trailer::EmptyCr,
            // field-name = token, and the colon follows it at once (RFC 9112 §5.1). A
            // line that starts with whitespace is obs-fold (RFC 9112 §5.2).
            (Trailer::Start | Trailer::Name, _) if is_tchar(byte) => Trailer::Name,
            (Trailer::Name, b':') => Trailer::Value,
            (Trailer::Start | Trailer::Name, b' ' | b'\t') => return Err(Error::Grammar),
            // field-value with OWS around it: VCHAR, obs-text, SP and HTAB, in any order.
            (Trailer::Value, b'\r') => Trailer::Cr,
            (Trailer::Value, b' ' | b'\t') => Trailer::Value,
            (Trailer::Value, _) if !is_ctl(byte) => Trailer::Value,

            // A CR where the line cannot end: in the name, before any colon.
            (_, b'\r') => return Err(Error::Grammar),
            (_, _) if is_ctl(byte) => return Err(Error::Control),
            (_, _) => return Err(Error::Grammar),
        };
    }
    Ok(Status::Incomplete)
}

/// Where [`parse_trailer_line`] is in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trailer {
    /// Nothing read yet.
    Start,
    /// The CR of an empty line.
    EmptyCr,
    /// Inside the field name.
    Name,
    /// After the colon: the value and its surrounding whitespace.
    Value,
    /// The CR that ends a field line.
    Cr,
}

/// A `tchar` of RFC 9110 §5.6.2: the bytes of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The C0 controls and DEL: CTL of RFC 5234 appendix B.1. HTAB is one, and each caller
/// lets it through only where the grammar has it.
fn is_ctl(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// qdtext (RFC 9110 §5.6.4): HTAB, SP, and every visible or obs-text byte but `"` and `\`.
fn is_qdtext(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What a quoted-pair may escape (RFC 9110 §5.6.4): HTAB, SP, VCHAR, obs-text.
fn is_escapable(byte: u8) -> bool {
    matches!(byte, b'\t' | 0x20..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 4096;

    fn line(input: &[u8]) -> Result<Status<ChunkLine>, Error> {
        parse_chunk_line(input, CAP)
    }

    fn complete(size: u64, len: usize) -> Result<Status<ChunkLine>, Error> {
        Ok(Status::Complete(ChunkLine { size, len }))
    }

    /// Every prefix of a valid line is `Incomplete`, and the whole is complete, whatever
    /// follows it.
    fn assert_valid(input: &[u8], size: u64) {
        for end in 0..input.len() {
            assert_eq!(
                line(&input[..end]),
                Ok(Status::Incomplete),
                "{input:?} cut at {end}"
            );
        }
        assert_eq!(line(input), complete(size, input.len()), "{input:?}");
        let followed = [input, b"\nGET / HTTP/1.1\r\n"].concat();
        assert_eq!(
            line(&followed),
            complete(size, input.len()),
            "{input:?} + more"
        );
    }

    /// The line is an error once all of it is in, and the error does not wait for bytes
    /// after the line: it is known by the end of `input`.
    fn assert_invalid(input: &[u8], why: Error) {
        assert_eq!(line(input), Err(why), "{input:?}");
        let followed = [input, b"\r\n0\r\n\r\n"].concat();
        assert_eq!(line(&followed), Err(why), "{input:?} + more");
    }

    #[test]
    fn plain_sizes_in_either_case_and_with_leading_zeros_are_read() {
        assert_valid(b"5\r\n", 5);
        assert_valid(b"0\r\n", 0);
        assert_valid(b"1a\r\n", 0x1a);
        assert_valid(b"1A\r\n", 0x1a);
        assert_valid(b"aBcDeF\r\n", 0xab_cdef);
        assert_valid(b"0005\r\n", 5);
        assert_valid(b"000000000000000000000000000000ff\r\n", 0xff);
        assert_valid(b"ffffffffffffffff\r\n", u64::MAX);
    }

    #[test]
    fn extensions_with_the_whitespace_bws_allows_are_read() {
        for input in [
            &b"5;a\r\n"[..],
            b"5;a=b\r\n",
            b"5;a=b;c\r\n",
            b"5;a;b=c;d=\"e\"\r\n",
            b"5 ; a = \"q\\\"x\"\r\n",
            b"5\t;\ta\t=\tb\r\n",
            b"5 ;a\r\n",
            b"5; a\r\n",
            b"5;a =b\r\n",
            b"5;a= b\r\n",
            b"5;a=b ;c\r\n",
            b"5;a=\"\" ;c\r\n",
            b"5;a=\"\"\r\n",
            b"5;a=\"with space and\ttab\"\r\n",
            b"5;a=\"obs-text \x80\xff\"\r\n",
            b"5;a=\"\\\x80\\\t\\ \\\\\"\r\n",
            b"5;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\n",
        ] {
            assert_valid(input, 5);
        }
    }

    /// The shapes a lenient chunk parser lets through, each with why it matters.
    #[test]
    fn every_smuggling_shape_is_an_error() {
        use Error::*;
        let cases: &[(&[u8], Error, &str)] = &[
            // The issue's desync: nginx ends the line at the LF, httparse at the CRLF.
            (b"2;\nxx\r\n", BareLf, "bare LF after ';'"),
            (b"5;a=\"x\ny\"\r\n", BareLf, "bare LF inside a quoted value"),
            (b"5;a=b\n", BareLf, "line ended by a bare LF after a value"),
            (
                b"5\n",
                BareLf,
                "line ended by a bare LF right after the size",
            ),
            (
                b"5;\n",
                BareLf,
                "the issue's `5;` + bare LF, which used to wait forever",
            ),
            (b"5;a=\"\\\n\"\r\n", BareLf, "LF escaped by a backslash"),
            (
                b"5;a\rb\r\n",
                BareCr,
                "bare CR: some readers end lines at it",
            ),
            (b"5\r\r\n", BareCr, "CR CR LF"),
            (b"5;a=\"x\ry\"\r\n", Grammar, "CR inside quotes: not qdtext"),
            (b"5;\0\r\n", Control, "NUL where a name should be"),
            (
                b"5;a=\0\r\n",
                Control,
                "NUL value: C string parsers stop at it",
            ),
            (b"5;a\x01\r\n", Control, "C0 control in a name"),
            (b"5;a=\"\0\"\r\n", Control, "NUL in quotes: not qdtext"),
            (b"5;a=\"\x7f\"\r\n", Control, "DEL in quotes: not qdtext"),
            (
                b"5;a=\"\\\0\"\r\n",
                Control,
                "escaped NUL: quoted-pair excludes CTL",
            ),
            (b"5;a=\x0b\r\n", Control, "vertical tab is not BWS"),
            (b"5\x0c\r\n", Control, "form feed after the size"),
            (b"5;\r\n", Grammar, "bare ';': a name must follow"),
            (b"5;bad[=x\r\n", Grammar, "'[' is not a tchar"),
            (
                b"5 \r\n",
                Grammar,
                "whitespace before CRLF: BWS only precedes ';'",
            ),
            (b"5\t\r\n", Grammar, "HTAB before CRLF, the same"),
            (b"5;a \r\n", Grammar, "whitespace after a name, then CRLF"),
            (
                b"5;a=b \r\n",
                Grammar,
                "whitespace after a value, then CRLF",
            ),
            (
                b"5;a=\"b\" \r\n",
                Grammar,
                "whitespace after a quoted value",
            ),
            (b"5;a=\r\n", Grammar, "'=' without a value"),
            (b"5;a= \r\n", Grammar, "'=' and whitespace, no value"),
            (b"5;=b\r\n", Grammar, "a value without a name"),
            (b"5;a=b=c\r\n", Grammar, "two '='"),
            (b"5;a=\"b\"c\r\n", Grammar, "bytes after a closing quote"),
            (b"5;a=b\"c\"\r\n", Grammar, "a quote inside a token"),
            (b"5;a=\xff\r\n", Grammar, "obs-text outside quotes"),
            (b"5 5\r\n", Grammar, "two numbers: which is the size?"),
            (b"5,a\r\n", Grammar, "',' is not ';'"),
            (b"0x5\r\n", Grammar, "a C hex prefix"),
            (b";a\r\n", NoSize, "no size at all"),
            (b"\r\n", NoSize, "an empty line where a size must be"),
            (b" 5\r\n", NoSize, "whitespace before the size"),
            (b"+5\r\n", NoSize, "a sign"),
            (b"-1\r\n", NoSize, "a negative size"),
            (b"g\r\n", NoSize, "not a hex digit"),
            (b"\x005\r\n", NoSize, "NUL before the size"),
            (b"10000000000000000\r\n", SizeOverflow, "2^64 does not fit"),
            (b"fffffffffffffffff\r\n", SizeOverflow, "17 hex digits"),
        ];
        for &(input, why, what) in cases {
            assert_eq!(line(input), Err(why), "{what}: {input:?}");
        }
    }

    #[test]
    fn an_error_is_reported_as_soon_as_its_byte_arrives() {
        // The bytes up to the bad one are a valid start; the bad one settles it, whatever
        // might come after.
        assert_invalid(b"5;\n", Error::BareLf);
        assert_invalid(b"2;\nxx", Error::BareLf);
        assert_invalid(b"5 \r", Error::Grammar);
        assert_invalid(b"5;a\0", Error::Control);
        assert_invalid(b"5;bad[", Error::Grammar);
        assert_invalid(b"5\rx", Error::BareCr);
        assert_eq!(line(b"5;a=\"x\n"), Err(Error::BareLf));
    }

    #[test]
    fn a_valid_start_waits_for_more() {
        for input in [
            &b""[..],
            b"5",
            b"5 ",
            b"5;",
            b"5; ",
            b"5;a",
            b"5;a ",
            b"5;a=",
            b"5;a= ",
            b"5;a=\"",
            b"5;a=\"x\\",
            b"5;a=\"x\"",
            b"5;a=\"x\" ",
            b"5\r",
        ] {
            assert_eq!(line(input), Ok(Status::Incomplete), "{input:?}");
        }
    }

    #[test]
    fn a_line_over_the_cap_is_an_error_even_before_its_end() {
        let mut long = b"1;".to_vec();
        long.resize(CAP - 2, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(line(&long), complete(1, CAP), "exactly the cap fits");
        long.insert(2, b'x');
        assert_eq!(line(&long), Err(Error::TooLong));
        assert_eq!(line(&long[..CAP]), Err(Error::TooLong), "no need to wait");
        assert_eq!(line(&long[..CAP - 1]), Ok(Status::Incomplete));
        let zeros = [&[b'0'; CAP][..], b"\r\n"].concat();
        assert_eq!(line(&zeros), Err(Error::TooLong));
    }

    #[test]
    fn trailer_lines_are_field_lines_ending_in_crlf() {
        for input in [
            &b"X: a\r\n"[..],
            b"X:a\r\n",
            b"X:\r\n",
            b"X: \t a b \t\r\n",
            b"X-Sum: \x80\xff\r\n",
            b"X: GET / HTTP/1.1\r\n",
        ] {
            for end in 0..input.len() {
                assert_eq!(parse_trailer_line(&input[..end]), Ok(Status::Incomplete));
            }
            let field = Ok(Status::Complete(TrailerLine::Field(input.len())));
            assert_eq!(parse_trailer_line(input), field, "{input:?}");
        }
        let end = Ok(Status::Complete(TrailerLine::End));
        assert_eq!(parse_trailer_line(b"\r\nGET"), end);
        assert_eq!(parse_trailer_line(b"\r"), Ok(Status::Incomplete));
    }

    #[test]
    fn every_bad_trailer_line_is_an_error() {
        use Error::*;
        let cases: &[(&[u8], Error, &str)] = &[
            (
                b"\n",
                BareLf,
                "the empty line as a bare LF: where does the body end?",
            ),
            (b"X: a\n", BareLf, "a field ended by a bare LF"),
            (
                b"X: a\nGET / HTTP/1.1\r\n",
                BareLf,
                "a request hidden behind a bare LF",
            ),
            (b"X: a\rb\r\n", BareCr, "bare CR in a value"),
            (b"\rX", BareCr, "CR not followed by LF"),
            (b"X: a\0\r\n", Control, "NUL in a value (RFC 9110 §5.5)"),
            (b"X: \x1b[0m\r\n", Control, "ESC in a value"),
            (b"X: \x7f\r\n", Control, "DEL in a value"),
            (b"X\r\n", Grammar, "no colon: not a field line"),
            (
                b"X : a\r\n",
                Grammar,
                "whitespace before the colon (RFC 9112 §5.1)",
            ),
            (b"X\t: a\r\n", Grammar, "HTAB before the colon, the same"),
            (b" X: a\r\n", Grammar, "obs-fold (RFC 9112 §5.2)"),
            (b"\tX: a\r\n", Grammar, "obs-fold with HTAB"),
            (b": a\r\n", Grammar, "an empty field name"),
            (b"X[: a\r\n", Grammar, "a name that is not a token"),
            (b"0\r\n", Grammar, "a second last-chunk: no colon"),
        ];
        for &(input, why, what) in cases {
            assert_eq!(parse_trailer_line(input), Err(why), "{what}: {input:?}");
        }
    }
}
