//! Request heads: find where one ends, parse it with httparse, and read from its headers
//! what decides framing, persistence and the WebSocket upgrade (RFC 9112 §2–§6).

use std::mem::MaybeUninit;

use super::grammar::{is_tchar, list_items, parse_decimal, valid_host};
use crate::protocol::responses::{ConnectionHeader, ErrorStatus};

/// The largest request head we read: 8 KiB, the figure nginx (`large_client_header_buffers`
/// aside) and most servers use. A longer head gets 431 instead of an ever-growing buffer.
pub const MAX_HEAD_BYTES: usize = 8192;

/// The most header lines in one head. httparse fills a fixed array of this many slots and
/// says `TooManyHeaders` past it: we answer 431.
pub const MAX_HEADERS: usize = 100;

/// The two versions httparse accepts; anything else was answered with 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body after a head is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No Content-Length and no Transfer-Encoding: a request has no body.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: ..., chunked`: chunks until a zero-size one, then trailers.
    Chunked,
}

/// What a request head says, as far as this server cares. Borrowed from the input bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub version: Version,
    /// Whether the connection stays open after the answer: HTTP/1.1 unless `Connection:
    /// close`, HTTP/1.0 only with `Connection: keep-alive` (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Upgrade: websocket` together with the `upgrade` token in `Connection` (RFC 6455 §4.1).
    pub upgrade_websocket: bool,
    pub websocket_key: Option<&'a [u8]>,
    pub websocket_version: Option<&'a [u8]>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    pub body: BodyLength,
    /// Bytes of input the head took, up to and including its final empty line (and any
    /// empty lines before the request line, which RFC 9112 §2.2 says to ignore).
    pub len: usize,
}

impl RequestHead<'_> {
    /// The `Connection` header the answer to this request carries.
    pub fn connection(&self) -> ConnectionHeader {
        match (self.keep_alive, self.version) {
            (false, _) => ConnectionHeader::Close,
            (true, Version::Http11) => ConnectionHeader::Persistent,
            (true, Version::Http10) => ConnectionHeader::KeepAlive,
        }
    }
}

/// Parse one request head at the start of `input`: `Ok(None)` if it is not complete yet,
/// `Err` with the status to answer if it never will be a good one.
pub fn parse_request_head(input: &[u8]) -> Result<Option<RequestHead<'_>>, ErrorStatus> {
    HeadScan::default().parse(input)
}

/// The search for the end of a request head, resumable. Usually a head arrives whole and
/// one httparse pass finds its end and reads it. A slowloris client drips a head a byte at
/// a time, though; rather than re-parse it from the start on every byte, we remember how
/// far the search for the empty line got and call httparse again once the head is complete.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeadScan {
    pub(super) scanned: usize,
}

impl HeadScan {
    /// Like [`parse_request_head`], for input that grows between calls: each call must be
    /// offered the same bytes as the last, with more appended.
    pub fn parse<'a>(&mut self, input: &'a [u8]) -> Result<Option<RequestHead<'a>>, ErrorStatus> {
        let window = &input[..input.len().min(MAX_HEAD_BYTES)];
        // First sight of this head: let httparse look for its end. If the head is not all
        // here, or httparse objects, the slow path below waits for the whole head before
        // judging it: httparse may object to half a line that the whole line would
        // explain (`GET / HTTP/2` is a 400 until `.0` arrives and makes it a 505), and the
        // answer must not depend on where the reads split the stream.
        if self.scanned == 0 {
            if let Ok(Some(head)) = parse_head(window) {
                return Ok(Some(head));
            }
        }
        let blank = leading_empty_lines(window);
        // A method is a token (RFC 9112 §3, RFC 9110 §9.1): a first byte that cannot start
        // one will never make a request, so say so now rather than at the header timeout. A
        // TLS ClientHello (0x16) sent to a plain-HTTP port is the usual case. (A lone CR may
        // still become an empty line.)
        match window.get(blank..) {
            Some([b'\r']) => {}
            Some([first, ..]) if !is_tchar(*first) => return Err(ErrorStatus::BadRequest),
            _ => {}
        }
        let Some(end) = find_empty_line(&window[blank..], &mut self.scanned) else {
            // 8 KiB and still no end: the head is too large, whatever follows.
            if window.len() == MAX_HEAD_BYTES {
                return Err(too_long(&window[blank..]));
            }
            return Ok(None);
        };
        self.scanned = 0;
        let head = &window[..blank + end];
        match parse_head(head)? {
            Some(parsed) if parsed.len == head.len() => Ok(Some(parsed)),
            // Which should not happen, since we found the empty line httparse stops at: a
            // head it reads differently from us.
            _ => Err(ErrorStatus::BadRequest),
        }
    }
}

/// Which status a head that ran past `MAX_HEAD_BYTES` gets: it depends on where it still
/// was. A request line that long is an over-long target, 414 (RFC 9112 §3: "A server that
/// receives a request-target longer than any URI it wishes to parse MUST respond with a
/// 414"), unless no method has ended yet, which is just a bad request; past the request
/// line, the header fields are too large, 431 (RFC 6585 §5).
fn too_long(head: &[u8]) -> ErrorStatus {
    // Nothing but empty lines so far, or a line end: past any request line.
    if head.is_empty() || head.contains(&b'\n') {
        return ErrorStatus::HeaderFieldsTooLarge;
    }
    let mut parts = head.splitn(3, |&b| b == b' ');
    match (parts.next(), parts.next(), parts.next()) {
        // Method, then a target still going.
        (Some(_), Some(_), None) => ErrorStatus::UriTooLong,
        // Still in the method, or a version that long: no such thing.
        _ => ErrorStatus::BadRequest,
    }
}

/// One httparse pass over the start of `input`: the head if it is all there, `None` if
/// it is not, or the status to answer.
fn parse_head(input: &[u8]) -> Result<Option<RequestHead<'_>>, ErrorStatus> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(input, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ErrorStatus::HeaderFieldsTooLarge),
        Err(httparse::Error::Version) => return parse_other_version(input),
        Err(_) => return Err(ErrorStatus::BadRequest),
    };
    let (Some(method), Some(path), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(ErrorStatus::BadRequest);
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    read_headers(request.headers, method, path, version, len)
}

/// httparse knows HTTP/1.0 and 1.1 and says `Version` for anything else, garbage included.
/// A well-formed request line naming HTTP/1.x for a later x is answered as 1.1: RFC 9110
/// §2.5, "A recipient that receives a message with a major version number that it implements
/// and a minor version number higher than what it implements SHOULD process the message as
/// if it were in the highest minor version within that major version". Here the line is
/// read by hand and the header lines by httparse. Any other version is a 505; anything
/// that is not a request line at all, a 400. Kept out of line: it is rare, and its header
/// array would otherwise double `parse_head`'s stack frame on every request.
#[cold]
#[inline(never)]
fn parse_other_version(input: &[u8]) -> Result<Option<RequestHead<'_>>, ErrorStatus> {
    let blank = leading_empty_lines(input);
    let Some(line) = RequestLine::split(&input[blank..]) else {
        return Err(ErrorStatus::BadRequest);
    };
    if line.major != b'1' || line.minor <= b'1' {
        return Err(ErrorStatus::VersionNotSupported);
    }
    let start = blank + line.len;
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&input[start..], &mut slots) {
        Ok(httparse::Status::Complete((len, headers))) => read_headers(
            headers,
            line.method,
            line.target,
            Version::Http11,
            start + len,
        ),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ErrorStatus::HeaderFieldsTooLarge),
        Err(_) => Err(ErrorStatus::BadRequest),
    }
}

/// `method SP request-target SP HTTP-version CRLF` (RFC 9112 §3), read by hand, for the
/// versions httparse does not know.
struct RequestLine<'a> {
    method: &'a str,
    target: &'a str,
    major: u8,
    minor: u8,
    /// Bytes of the line, its line end included.
    len: usize,
}

impl<'a> RequestLine<'a> {
    fn split(head: &'a [u8]) -> Option<RequestLine<'a>> {
        let end = head.iter().position(|&b| b == b'\n')?;
        let line = &head[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|&byte| byte == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let is_token = !method.is_empty() && method.iter().all(|&b| is_tchar(b));
        let is_target = !target.is_empty() && target.iter().all(|&b| b.is_ascii_graphic());
        let [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] = *version else {
            return None;
        };
        if !(is_token && is_target && major.is_ascii_digit() && minor.is_ascii_digit()) {
            return None;
        }
        Some(RequestLine {
            // Tokens and graphic ASCII are UTF-8.
            method: std::str::from_utf8(method).ok()?,
            target: std::str::from_utf8(target).ok()?,
            major,
            minor,
            len: end + 1,
        })
    }
}

/// Pull out of the header lines what decides framing, persistence and the upgrade.
fn read_headers<'a>(
    headers: &[httparse::Header<'a>],
    method: &'a str,
    path: &'a str,
    version: Version,
    len: usize,
) -> Result<Option<RequestHead<'a>>, ErrorStatus> {
    // The request-target's grammar is ASCII (RFC 9112 §3.2, RFC 3986 §2): raw bytes above
    // 0x7f are not a target, whatever a lenient parser lets through. And the asterisk-form
    // is for OPTIONS only (RFC 9112 §3.2.4): `GET *` names no resource.
    if !path.is_ascii() || (path == "*" && method != "OPTIONS") {
        return Err(ErrorStatus::BadRequest);
    }
    let mut head = RequestHead {
        method,
        path,
        version,
        keep_alive: false,
        upgrade_websocket: false,
        websocket_key: None,
        websocket_version: None,
        expect_continue: false,
        body: BodyLength::Empty,
        len,
    };
    let mut seen = Seen::default();
    for header in headers {
        seen.line(header.name, header.value, &mut head)?;
    }
    seen.finish(&mut head)?;
    Ok(Some(head))
}

/// What the header lines have said so far, for the rules that need all of them.
#[derive(Default)]
struct Seen {
    hosts: u32,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    upgrade_websocket: bool,
}

impl Seen {
    /// One header line. `Err` when the line alone makes the request a bad one.
    fn line<'a>(
        &mut self,
        name: &str,
        value: &'a [u8],
        head: &mut RequestHead<'a>,
    ) -> Result<(), ErrorStatus> {
        // Most header lines are none of ours (User-Agent, Accept, Cookie…): the names we
        // look for have these lengths, so most lines cost one compare, not eight.
        if !matches!(name.len(), 4 | 6 | 7 | 10 | 14 | 17 | 21) {
            return Ok(());
        }
        if name.eq_ignore_ascii_case("host") {
            self.hosts += 1;
            if !valid_host(value) {
                return Err(ErrorStatus::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            self.content_length(value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding(value)?;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list_items(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                self.connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // The token may carry a version: `websocket/13` is not what RFC 6455 asks for,
            // but nothing is lost by being exact here.
            self.upgrade_websocket |=
                list_items(value).any(|p| p.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.websocket_version = Some(value.trim_ascii());
        }
        Ok(())
    }

    /// `Content-Length: 5, 5` or two identical lines are one length (RFC 9110 §8.6); two
    /// different lengths mean a proxy and we might split the stream differently.
    fn content_length(&mut self, value: &[u8]) -> Result<(), ErrorStatus> {
        let mut items = 0;
        for item in list_items(value) {
            let length = parse_decimal(item).ok_or(ErrorStatus::BadRequest)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(ErrorStatus::BadRequest);
            }
            self.content_length = Some(length);
            items += 1;
        }
        match items {
            0 => Err(ErrorStatus::BadRequest),
            _ => Ok(()),
        }
    }

    /// chunked must be the last coding, applied once (RFC 9112 §6.1): anything after it,
    /// or a second one, leaves the length unknowable.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), ErrorStatus> {
        self.transfer_encoding = true;
        for coding in list_items(value) {
            if self.chunked {
                return Err(ErrorStatus::BadRequest);
            }
            self.chunked = coding.eq_ignore_ascii_case(b"chunked");
        }
        Ok(())
    }

    /// The rules that need every line: Host, the body's framing, persistence, upgrade.
    fn finish(self, head: &mut RequestHead) -> Result<(), ErrorStatus> {
        let version = head.version;
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host, or any request with
        // several, MUST get 400. Proxies route by Host; two of them is another smuggling
        // tool.
        if self.hosts > 1 || (self.hosts == 0 && version == Version::Http11) {
            return Err(ErrorStatus::BadRequest);
        }
        // RFC 9112 §6.3: a message with both is an attempt at request smuggling (the front
        // end and we could disagree on where it ends), so we refuse it rather than pick one.
        // An HTTP/1.0 message with Transfer-Encoding is treated as faulty framing (§6.1),
        // and a Transfer-Encoding whose final coding is not chunked has no length a request
        // can use.
        head.body = match (self.transfer_encoding, self.content_length) {
            (true, Some(_)) => return Err(ErrorStatus::BadRequest),
            (true, None) if !self.chunked || version == Version::Http10 => {
                return Err(ErrorStatus::BadRequest)
            }
            (true, None) => BodyLength::Chunked,
            (false, Some(0) | None) => BodyLength::Empty,
            (false, Some(length)) => BodyLength::Length(length),
        };
        head.keep_alive = match version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive && !self.close,
        };
        head.upgrade_websocket = self.upgrade_websocket && self.connection_upgrade;
        Ok(())
    }
}

/// The bytes of the empty lines before a request line (`\r\n` or `\n`), which a server
/// ignores (RFC 9112 §2.2: some clients send a CRLF after a POST body).
fn leading_empty_lines(input: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match input.get(at..) {
            Some([b'\n', ..]) => at += 1,
            Some([b'\r', b'\n', ..]) => at += 2,
            _ => return at,
        }
    }
}

/// The end of the first empty line in `buf`, which starts at the beginning of a line: the
/// length of a request head. Line ends are CRLF, and a bare LF is accepted too (RFC 9112
/// §2.2 allows it in the start line and fields; netcat users send it). Trailers, which sit
/// inside a body, are held to CRLF (`chunked`). `scanned` carries the search over to
/// the next call with more bytes, so each byte is looked at about once.
fn find_empty_line(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut at = (*scanned).min(buf.len());
    loop {
        let line_start = at == 0 || buf.get(at - 1) == Some(&b'\n');
        if line_start {
            match (buf.get(at), buf.get(at + 1)) {
                (Some(b'\n'), _) => return Some(at + 1),
                (Some(b'\r'), Some(b'\n')) => return Some(at + 2),
                // Maybe an empty line, maybe not: wait for the next byte.
                (None, _) | (Some(b'\r'), None) => {
                    *scanned = at;
                    return None;
                }
                _ => {}
            }
        }
        match buf[at..].iter().position(|&byte| byte == b'\n') {
            Some(newline) => at += newline + 1,
            None => {
                *scanned = buf.len();
                return None;
            }
        }
    }
}
