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

use super::grammar::is_tchar;

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
mod tests;
