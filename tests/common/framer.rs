//! A strict reference framer for HTTP/1.1 request streams, for tests only.
//!
//! Given the bytes a client sent on one connection, it says how many complete requests an
//! RFC 9112 framer finds before the stream ends or stops making sense, and how each should
//! be answered (HEAD or not, which Connection). It shares no code with sockloop, and is
//! written the other way round: recursive descent over a cursor, one function per grammar
//! rule, where sockloop uses httparse for heads and byte-at-a-time state machines for
//! chunked bodies. The property tests check sockloop against it.
//!
//! Where the RFC lets a recipient choose, the choice made here is sockloop's, said in a
//! comment at that place:
//! - heads may end their lines in a bare LF (RFC 9112 §2.2: "a recipient MAY recognize a
//!   single LF as a line terminator and ignore any preceding CR"), and any number of empty
//!   lines may come before a request line (§2.2 asks to ignore "at least one");
//! - chunk lines, chunk data ends and trailer lines take CRLF only (§7.1; for trailers §2.2
//!   would allow LF, and sockloop declines);
//! - a chunk line longer than 4096 bytes is invalid (§7.1.1 lets a server limit it);
//! - `Content-Length: 5, 5` is one length (RFC 9110 §8.6 allows either reading);
//! - a head is judged only once its empty line is in: a broken start of a head is
//!   incomplete, not invalid, until then (the RFC does not say when to judge).
//!
//! What this framer does not model, because the generators never produce it: the 8 KiB cap
//! on heads and trailer sections (431), the 100-header cap (431), versions other than 1.0
//! and 1.1 (505), and Host (sockloop's check is stricter; the property allows a 400 there).

/// How the answer to a request ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 without `Connection: close` (RFC 9112 §9.3).
    Persistent,
    /// HTTP/1.0 with `Connection: keep-alive` and without close.
    KeepAlive,
    /// The last request on the connection.
    Close,
}

/// One complete request, as far as its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub head_only: bool,
    pub persistence: Persistence,
}

/// Why the framer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The stream ended where a request could start: no bytes of a next one but empty lines.
    Clean,
    /// The stream ended inside a request that may still be completed.
    Incomplete,
    /// A request said `Connection: close` (or was HTTP/1.0 without keep-alive): what follows
    /// is not read.
    Closed,
    /// No bytes could make what follows a valid request: a server must answer 400 and close.
    Invalid(&'static str),
}

/// What the framer found in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    pub requests: Vec<Request>,
    pub end: End,
}

/// Frame `stream` from its start.
pub fn frame(stream: &[u8]) -> Framing {
    let mut cursor = Cursor {
        bytes: stream,
        at: 0,
    };
    let mut requests = Vec::new();
    loop {
        match cursor.request() {
            Ok(Some(request)) => {
                requests.push(request);
                if request.persistence == Persistence::Close {
                    return Framing {
                        requests,
                        end: End::Closed,
                    };
                }
            }
            Ok(None) => {
                return Framing {
                    requests,
                    end: End::Clean,
                }
            }
            Err(Stop::Incomplete) => {
                return Framing {
                    requests,
                    end: End::Incomplete,
                }
            }
            Err(Stop::Invalid(why)) => {
                return Framing {
                    requests,
                    end: End::Invalid(why),
                }
            }
        }
    }
}

/// Why a rule did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The input ran out first: more bytes might make it match.
    Incomplete,
    /// A byte that the rule cannot take.
    Invalid(&'static str),
}

type Parse<T> = Result<T, Stop>;

/// The longest chunk line sockloop takes, CRLF included (its MAX_CHUNK_SIZE_LINE).
const MAX_CHUNK_LINE: usize = 4096;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// What a head says about its body and its answer.
struct Head {
    head_only: bool,
    http_1_0: bool,
    close: bool,
    keep_alive: bool,
    content_length: Option<u64>,
    /// Every transfer coding named, in order, across all Transfer-Encoding lines.
    codings: Vec<Vec<u8>>,
    transfer_encoding: bool,
}

impl Cursor<'_> {
    fn peek(&self) -> Parse<u8> {
        self.bytes.get(self.at).copied().ok_or(Stop::Incomplete)
    }

    fn take(&mut self) -> Parse<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }

    fn literal(&mut self, expected: u8, why: &'static str) -> Parse<()> {
        match self.take()? {
            byte if byte == expected => Ok(()),
            _ => Err(Stop::Invalid(why)),
        }
    }

    /// Bytes while `allowed` holds. Running out of input is `Incomplete`: the run might go on.
    fn many(&mut self, allowed: impl Fn(u8) -> bool) -> Parse<&[u8]> {
        let start = self.at;
        while allowed(self.peek()?) {
            self.at += 1;
        }
        Ok(&self.bytes[start..self.at])
    }

    fn many1(&mut self, allowed: impl Fn(u8) -> bool, why: &'static str) -> Parse<&[u8]> {
        let run = self.many(allowed)?;
        if run.is_empty() {
            return Err(Stop::Invalid(why));
        }
        Ok(run)
    }

    /// OWS / BWS = *( SP / HTAB ) (RFC 9110 §5.6.3).
    fn ows(&mut self) -> Parse<()> {
        self.many(|b| b == b' ' || b == b'\t').map(drop)
    }

    /// token = 1*tchar (RFC 9110 §5.6.2).
    fn token(&mut self, why: &'static str) -> Parse<&[u8]> {
        self.many1(is_tchar, why)
    }

    /// CRLF, exactly: the line end inside a chunked body.
    fn crlf(&mut self, why: &'static str) -> Parse<()> {
        self.literal(b'\r', why)?;
        self.literal(b'\n', why)
    }

    /// The end of a line of a head: CRLF, or a bare LF, which sockloop accepts in heads
    /// (RFC 9112 §2.2 MAY). A CR not followed by LF is invalid (§2.2).
    fn head_line_end(&mut self) -> Parse<()> {
        match self.take()? {
            b'\n' => Ok(()),
            b'\r' => self.literal(b'\n', "bare CR in a head"),
            _ => Err(Stop::Invalid("junk at the end of a head line")),
        }
    }

    /// One request, head and body. `None` if the stream ends where a request could start.
    fn request(&mut self) -> Parse<Option<Request>> {
        // Empty lines before a request line are ignored (RFC 9112 §2.2), CRLF or LF ones.
        loop {
            match self.bytes.get(self.at..) {
                Some([]) | None => return Ok(None),
                Some([b'\n', ..]) => self.at += 1,
                Some([b'\r', b'\n', ..]) => self.at += 2,
                Some([b'\r']) => return Err(Stop::Incomplete),
                _ => break,
            }
        }
        // sockloop judges a head only once all of it is in, up to its empty line, so that
        // its answer never depends on where the reads split the stream (`HeadScan`). The
        // RFC leaves the moment to the server; we model that one: until the empty line, a
        // head is incomplete, however broken its start.
        if !self.head_is_complete() {
            return Err(Stop::Incomplete);
        }
        let head = self.head()?;
        let chunked = self.framing(&head)?;
        match (chunked, head.content_length) {
            (true, _) => self.chunked_body()?,
            (false, Some(length)) => self.skip(length)?,
            (false, None) => {}
        }
        let persistence = match (head.http_1_0, head.close, head.keep_alive) {
            (_, true, _) | (true, false, false) => Persistence::Close,
            (true, false, true) => Persistence::KeepAlive,
            (false, false, _) => Persistence::Persistent,
        };
        Ok(Some(Request {
            head_only: head.head_only,
            persistence,
        }))
    }

    /// Whether an empty line (CRLF or LF, after a LF) follows somewhere after the cursor.
    fn head_is_complete(&self) -> bool {
        let rest = &self.bytes[self.at..];
        (1..rest.len())
            .any(|i| rest[i - 1] == b'\n' && (rest[i] == b'\n' || rest[i..].starts_with(b"\r\n")))
    }

    /// request-line CRLF *( field-line CRLF ) CRLF (RFC 9112 §2.1, §3).
    fn head(&mut self) -> Parse<Head> {
        // request-line = method SP request-target SP HTTP-version
        let method = self.token("a method that is not a token")?;
        let head_only = method == b"HEAD";
        self.literal(b' ', "not one SP after the method")?;
        // The target's exact grammar (RFC 9112 §3.2) is wider than needed here: any
        // visible ASCII. httparse refuses some of it; a 400 there is allowed.
        self.many1(|b| b.is_ascii_graphic(), "an empty or non-ASCII target")?;
        self.literal(b' ', "not one SP after the target")?;
        let version = self.many(|b| !matches!(b, b'\r' | b'\n'))?;
        let http_1_0 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(Stop::Invalid("a version other than 1.0 and 1.1")),
        };
        self.head_line_end()?;

        let mut head = Head {
            head_only,
            http_1_0,
            close: false,
            keep_alive: false,
            content_length: None,
            codings: Vec::new(),
            transfer_encoding: false,
        };
        loop {
            if matches!(self.peek()?, b'\r' | b'\n') {
                self.head_line_end()?;
                return Ok(head);
            }
            let (name, value) = self.field_line()?;
            self.head_line_end()?;
            head.read_field(&name, &value)?;
        }
    }

    /// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5), without its line end.
    /// Returns the name, lowercased, and the value without its surrounding whitespace.
    fn field_line(&mut self) -> Parse<(Vec<u8>, Vec<u8>)> {
        // A line that starts with whitespace is obs-fold (§5.2), and whitespace before the
        // colon is refused (§5.1): both fall out of "a token, then a colon".
        let name = self
            .token("a field name that is not a token")?
            .to_ascii_lowercase();
        self.literal(b':', "no colon right after the field name")?;
        // field-value = *field-content: VCHAR, obs-text, and SP / HTAB between them.
        let value = self.many(|b| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)?;
        Ok((name, value.trim_ascii().to_vec()))
    }

    /// Whether the body is chunked; or invalid framing (RFC 9112 §6.1, §6.3).
    fn framing(&self, head: &Head) -> Parse<bool> {
        if !head.transfer_encoding {
            return Ok(false);
        }
        // Both framings: "ought to be handled as an error" (§6.3), and sockloop refuses it.
        if head.content_length.is_some() {
            return Err(Stop::Invalid("Content-Length and Transfer-Encoding"));
        }
        // HTTP/1.0 with Transfer-Encoding: "MUST treat the message as if the framing is
        // faulty" (§6.1).
        if head.http_1_0 {
            return Err(Stop::Invalid("Transfer-Encoding in HTTP/1.0"));
        }
        // chunked must be the final coding, and applied once (§6.1); a request whose
        // final coding is not chunked has no knowable length (§6.3): 400.
        let chunked_at: Vec<usize> = (0..head.codings.len())
            .filter(|&i| head.codings[i].eq_ignore_ascii_case(b"chunked"))
            .collect();
        if head.codings.is_empty() || chunked_at != [head.codings.len() - 1] {
            return Err(Stop::Invalid("chunked is not the one final coding"));
        }
        Ok(true)
    }

    /// `length` body bytes.
    fn skip(&mut self, length: u64) -> Parse<()> {
        let left = (self.bytes.len() - self.at) as u64;
        if left < length {
            return Err(Stop::Incomplete);
        }
        self.at += length as usize;
        Ok(())
    }

    /// chunked-body = *chunk last-chunk trailer-section CRLF (RFC 9112 §7.1).
    fn chunked_body(&mut self) -> Parse<()> {
        loop {
            let size = self.chunk_line()?;
            if size == 0 {
                break;
            }
            self.skip(size)?;
            self.crlf("chunk data not followed by CRLF")?;
        }
        // trailer-section = *( field-line CRLF ), then the CRLF that ends the body.
        loop {
            if self.peek()? == b'\r' {
                return self.crlf("a bare CR where the trailers end");
            }
            self.field_line()?;
            self.crlf("a trailer line not ended by CRLF")?;
        }
    }

    /// chunk-size [ chunk-ext ] CRLF, with its length capped; returns the size.
    fn chunk_line(&mut self) -> Parse<u64> {
        let start = self.at;
        let line = self.chunk_line_uncapped();
        let len = self.at - start;
        match line {
            // However it ends, past the cap it is refused: a complete line that is too long,
            // or a start of one that already is.
            _ if len > MAX_CHUNK_LINE => Err(Stop::Invalid("a chunk line over the cap")),
            Err(Stop::Incomplete) if self.bytes.len() - start >= MAX_CHUNK_LINE => {
                Err(Stop::Invalid("a chunk line over the cap"))
            }
            line => line,
        }
    }

    fn chunk_line_uncapped(&mut self) -> Parse<u64> {
        // chunk-size = 1*HEXDIG; a value over u64 is refused (§7.1 asks to guard against
        // overflow; refusing is how sockloop does).
        let digits = self.many1(|b| b.is_ascii_hexdigit(), "no chunk size")?;
        let mut size: u64 = 0;
        for &digit in digits {
            let value = u64::from(char::from(digit).to_digit(16).expect("a hex digit"));
            size = size
                .checked_mul(16)
                .and_then(|size| size.checked_add(value))
                .ok_or(Stop::Invalid("a chunk size over 64 bits"))?;
        }
        // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
        loop {
            let before = self.at;
            self.ows()?;
            if self.peek()? != b';' {
                // No ';' after that whitespace: it was not BWS, and the CRLF must come
                // where the whitespace began.
                self.at = before;
                break;
            }
            self.at += 1;
            self.ows()?;
            self.token("a chunk extension name that is not a token")?;
            let after_name = self.at;
            self.ows()?;
            if self.peek()? == b'=' {
                self.at += 1;
                self.ows()?;
                if self.peek()? == b'"' {
                    self.quoted_string()?;
                } else {
                    self.token("a chunk extension value that is not a token")?;
                }
            } else {
                self.at = after_name;
            }
        }
        self.crlf("a chunk line not ended by CRLF")?;
        Ok(size)
    }

    /// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4).
    fn quoted_string(&mut self) -> Parse<()> {
        self.literal(b'"', "a quoted string without its quote")?;
        loop {
            match self.take()? {
                b'"' => return Ok(()),
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                b'\\' => match self.take()? {
                    b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => {}
                    _ => return Err(Stop::Invalid("a quoted-pair escaping a control byte")),
                },
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => {}
                _ => return Err(Stop::Invalid("a control byte in a quoted string")),
            }
        }
    }
}

impl Head {
    /// Note what a header field says about framing and persistence.
    fn read_field(&mut self, name: &[u8], value: &[u8]) -> Parse<()> {
        let items = || {
            value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|item| !item.is_empty())
        };
        match name {
            b"content-length" => {
                // Repeated identical values are one length (RFC 9110 §8.6); any other list
                // is invalid.
                let mut any = false;
                for item in items() {
                    any = true;
                    if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                        return Err(Stop::Invalid("a Content-Length that is not digits"));
                    }
                    let length: u64 = std::str::from_utf8(item)
                        .ok()
                        .and_then(|digits| digits.parse().ok())
                        .ok_or(Stop::Invalid("a Content-Length over 64 bits"))?;
                    if self.content_length.is_some_and(|seen| seen != length) {
                        return Err(Stop::Invalid("two different Content-Lengths"));
                    }
                    self.content_length = Some(length);
                }
                if !any {
                    return Err(Stop::Invalid("an empty Content-Length"));
                }
            }
            b"transfer-encoding" => {
                self.transfer_encoding = true;
                self.codings.extend(items().map(<[u8]>::to_vec));
            }
            b"connection" => {
                for item in items() {
                    self.close |= item.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= item.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    matches!(byte,
        b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}
