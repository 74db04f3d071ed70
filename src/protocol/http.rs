//! HTTP/1.x: every request gets the canned page, framed exactly as RFC 9112 says.
//!
//! The path of one request through this file: [`HttpSession::on_input`] looks for the end of
//! a request head (the first empty line), hands the head to `httparse`, decides from its
//! headers how long the body is and whether the connection stays open, throws the body away
//! as it arrives, and then appends one prebuilt response from [`CannedPage`] to `out`. A
//! pipelined read holds several requests; they are answered in order, in one go.
//!
//! Nothing here is formatted per request. The responses are rendered once at start-up; only
//! their `Date` bytes are rewritten, in place, once a second. Answering a request is one
//! `extend_from_slice` into a buffer the loop reuses, so the steady state allocates nothing
//! (`tests/http_alloc.rs` counts).
//!
//! Bad input gets a status code, `Connection: close`, and then no more reading: a server
//! that guesses at broken framing is how request smuggling happens (RFC 9112 §6.3, §11.2).

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Context, Next, Outcome};

/// The seed notes' page. CRLF line endings: the notes used bare `\n`, which browsers accept
/// but which is not what the notes' own Content-Length was counting.
pub const DEFAULT_BODY: &[u8] =
    b"<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n";
pub const DEFAULT_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The largest request head we read: 8 KiB, the figure nginx (`large_client_header_buffers`
/// aside) and most servers use. A longer head gets 431 instead of an ever-growing buffer.
pub const MAX_HEAD_BYTES: usize = 8192;

/// The most header lines in one head. httparse fills a fixed array of this many slots and
/// says `TooManyHeaders` past it: we answer 431.
pub const MAX_HEADERS: usize = 100;

/// A chunk-size line (`1a;name=value CRLF`) longer than this is refused. Real clients send a
/// few hex digits; the cap only stops a peer from making us buffer an endless extension.
const MAX_CHUNK_SIZE_LINE: usize = 4096;

/// The interim response to `Expect: 100-continue` (RFC 9110 §10.1.1): "go on, send the
/// body". It has no headers and no body, so it needs no Date.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// IMF-fixdate always has this many bytes: `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
/// That fixed width is what lets `set_date` overwrite the Date in place.
const DATE_LEN: usize = 29;

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// How a response ends the exchange, which is what its `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1 is persistent by default (RFC 9112 §9.3), so the header is left out.
    Persistent,
    /// An HTTP/1.0 client asked for keep-alive; it only keeps the connection if we say so.
    KeepAlive,
    /// `Connection: close`: this is the last response, the loop closes after writing it.
    Close,
    /// `Connection: Upgrade`, for `101 Switching Protocols` (RFC 9110 §7.8).
    Upgrade,
}

impl Connection {
    fn header(self) -> &'static str {
        match self {
            Connection::Persistent => "",
            Connection::KeepAlive => "Connection: keep-alive\r\n",
            Connection::Close => "Connection: close\r\n",
            Connection::Upgrade => "Connection: Upgrade\r\n",
        }
    }
}

/// The statuses this server answers bad requests (and itself) with. Each response is
/// prebuilt in [`CannedPage`] with `Connection: close`: after an error we stop reading,
/// because we no longer know where the next request would begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 400: the request line or a header is malformed, its framing is ambiguous, or its
    /// Host is missing (HTTP/1.1), repeated or not a host.
    BadRequest,
    /// 408: the head did not arrive within --header-timeout (slowloris).
    RequestTimeout,
    /// 431: a head over [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] lines.
    HeaderFieldsTooLarge,
    /// 503: over --max-conns.
    ServiceUnavailable,
    /// 505: a well-formed request line naming a version other than 1.0 and 1.1, or the
    /// HTTP/2 connection preface (`PRI * HTTP/2.0`).
    VersionNotSupported,
}

impl ErrorStatus {
    const ALL: [ErrorStatus; 5] = [
        ErrorStatus::BadRequest,
        ErrorStatus::RequestTimeout,
        ErrorStatus::HeaderFieldsTooLarge,
        ErrorStatus::ServiceUnavailable,
        ErrorStatus::VersionNotSupported,
    ];

    /// The status line's code and reason phrase, e.g. `400 Bad Request`.
    pub fn status_line(self) -> &'static str {
        match self {
            ErrorStatus::BadRequest => "400 Bad Request",
            ErrorStatus::RequestTimeout => "408 Request Timeout",
            ErrorStatus::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            ErrorStatus::ServiceUnavailable => "503 Service Unavailable",
            ErrorStatus::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One prebuilt response and where its Date value sits, so `set_date` can overwrite it.
#[derive(Debug)]
struct Prebuilt {
    bytes: Vec<u8>,
    date_at: usize,
}

impl Prebuilt {
    fn render(
        status: &str,
        connection: Connection,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        send_body: bool,
        date: &[u8; DATE_LEN],
    ) -> Prebuilt {
        let mut bytes = Vec::new();
        let date_at = write_head(&mut bytes, date, status, connection, headers, body);
        if let (Some((_, body)), true) = (body, send_body) {
            bytes.extend_from_slice(body);
        }
        Prebuilt { bytes, date_at }
    }

    fn set_date(&mut self, date: &[u8; DATE_LEN]) {
        if let Some(slot) = self.bytes.get_mut(self.date_at..self.date_at + DATE_LEN) {
            slot.copy_from_slice(date);
        }
    }
}

/// The responses this server can send, built once at start-up. Only their Date bytes change,
/// once a second.
#[derive(Debug)]
pub struct CannedPage {
    /// The 200 responses, indexed by [`CannedPage::ok_index`]: for each way a connection can
    /// go on (persistent, keep-alive, close), the full response and the HEAD one.
    ok: [Prebuilt; 6],
    /// The error responses, indexed by [`ErrorStatus::index`].
    errors: [Prebuilt; 5],
    /// The current Date value, for responses built on demand ([`write_response`]).
    date: [u8; DATE_LEN],
}

impl CannedPage {
    pub fn new(body: &[u8], content_type: &str) -> CannedPage {
        let date = render_date(SystemTime::now());
        let ok = |connection, send_body| {
            let body = Some((content_type, body));
            Prebuilt::render("200 OK", connection, &[], body, send_body, &date)
        };
        let error = |status: ErrorStatus| {
            let mut text = Vec::with_capacity(40);
            text.extend_from_slice(status.status_line().as_bytes());
            text.extend_from_slice(b"\r\n");
            let body = Some(("text/plain; charset=utf-8", &text[..]));
            Prebuilt::render(
                status.status_line(),
                Connection::Close,
                &[],
                body,
                true,
                &date,
            )
        };
        CannedPage {
            ok: [
                ok(Connection::Persistent, true),
                ok(Connection::Persistent, false),
                ok(Connection::KeepAlive, true),
                ok(Connection::KeepAlive, false),
                ok(Connection::Close, true),
                ok(Connection::Close, false),
            ],
            errors: ErrorStatus::ALL.map(error),
            date,
        }
    }

    /// Re-render the Date header of every response. Called at most once a second.
    pub fn set_date(&mut self, now: SystemTime) {
        self.date = render_date(now);
        for response in self.ok.iter_mut().chain(self.errors.iter_mut()) {
            response.set_date(&self.date);
        }
    }

    /// The page: the answer to every well-formed request.
    pub fn ok(&self, connection: Connection, head_only: bool) -> &[u8] {
        &self.ok[CannedPage::ok_index(connection, head_only)].bytes
    }

    fn ok_index(connection: Connection, head_only: bool) -> usize {
        let row = match connection {
            Connection::Persistent => 0,
            Connection::KeepAlive => 1,
            // The page never answers an upgrade; if asked to, it closes.
            Connection::Close | Connection::Upgrade => 2,
        };
        row * 2 + usize::from(head_only)
    }

    /// A complete error response with `Connection: close`.
    pub fn error(&self, status: ErrorStatus) -> &[u8] {
        &self.errors[status.index()].bytes
    }

    /// `503 Service Unavailable` with `Connection: close`, for a connection over --max-conns.
    pub fn unavailable(&self) -> &[u8] {
        self.error(ErrorStatus::ServiceUnavailable)
    }

    /// The current `Date` value (IMF-fixdate), as last set by [`CannedPage::set_date`].
    pub fn date(&self) -> &[u8] {
        &self.date
    }
}

/// Format `now` as IMF-fixdate into a fixed 29-byte array, without allocating.
fn render_date(now: SystemTime) -> [u8; DATE_LEN] {
    // httpdate panics outside 1970..9999; a clock that wrong is not worth a crash.
    let latest = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let now = now.clamp(UNIX_EPOCH, latest);
    let mut date = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    let mut slot = &mut date[..];
    // Cannot fail: the formatted date is exactly DATE_LEN bytes.
    let _ = write!(slot, "{}", httpdate::HttpDate::from(now));
    date
}

/// Append a response head to `out` and return the offset of its Date value. Content-Length
/// is left out for 1xx and 204 responses, which must not have one (RFC 9110 §8.6).
fn write_head(
    out: &mut Vec<u8>,
    date: &[u8],
    status: &str,
    connection: Connection,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> usize {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nServer: sockloop\r\nDate: ");
    let date_at = out.len();
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if let Some((content_type, _)) = body {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let no_content = status.starts_with('1') || status.starts_with("204");
    if !no_content {
        let length = body.map_or(0, |(_, body)| body.len());
        // Formatting a usize into a Vec cannot fail.
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    out.extend_from_slice(connection.header().as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    date_at
}

/// Append one small complete response to `out`, for the answers that aren't canned (the
/// WebSocket handshake and its refusals). It carries `Server`, the cached `Date`, the
/// `Connection` header `connection` asks for, `headers` in order, and, with `body`, its
/// `Content-Type` and `Content-Length` (without a body, `Content-Length: 0`, except for 1xx
/// and 204). For example, the handshake's answer:
///
/// ```
/// # use sockloop::protocol::http::{write_response, CannedPage, Connection, DEFAULT_BODY};
/// # let page = CannedPage::new(DEFAULT_BODY, "text/html");
/// # let mut out = Vec::new();
/// let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// let headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", accept)];
/// write_response(&mut out, &page, "101 Switching Protocols", Connection::Upgrade, &headers, None);
/// ```
pub fn write_response(
    out: &mut Vec<u8>,
    page: &CannedPage,
    status: &str,
    connection: Connection,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) {
    write_head(out, page.date(), status, connection, headers, body);
    if let Some((_, body)) = body {
        out.extend_from_slice(body);
    }
}

// ---------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------

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
    pub fn connection(&self) -> Connection {
        match (self.keep_alive, self.version) {
            (false, _) => Connection::Close,
            (true, Version::Http11) => Connection::Persistent,
            (true, Version::Http10) => Connection::KeepAlive,
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
    scanned: usize,
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
        let Some(end) = find_empty_line(&window[blank..], &mut self.scanned) else {
            // 8 KiB and still no end: the head is too large, whatever follows.
            if window.len() == MAX_HEAD_BYTES {
                return Err(ErrorStatus::HeaderFieldsTooLarge);
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

/// One httparse pass over the start of `input`: the head if it is all there, `None` if
/// it is not, or the status to answer.
fn parse_head(input: &[u8]) -> Result<Option<RequestHead<'_>>, ErrorStatus> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(input, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ErrorStatus::HeaderFieldsTooLarge),
        Err(httparse::Error::Version) if looks_like_request_line(input) => {
            return Err(ErrorStatus::VersionNotSupported)
        }
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

/// Pull out of the header lines what decides framing, persistence and the upgrade.
fn read_headers<'a>(
    headers: &[httparse::Header<'a>],
    method: &'a str,
    path: &'a str,
    version: Version,
    len: usize,
) -> Result<Option<RequestHead<'a>>, ErrorStatus> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut connection_upgrade = false;
    let mut upgrade_websocket = false;
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

    let mut hosts = 0;
    for header in headers {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(value) {
                return Err(ErrorStatus::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 5, 5` or two identical lines are one length (RFC 9110 §8.6);
            // two different lengths mean a proxy and we might split the stream differently.
            let mut items = 0;
            for item in list_items(value) {
                let length = parse_decimal(item).ok_or(ErrorStatus::BadRequest)?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(ErrorStatus::BadRequest);
                }
                content_length = Some(length);
                items += 1;
            }
            if items == 0 {
                return Err(ErrorStatus::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in list_items(value) {
                // chunked must be the last coding, applied once (RFC 9112 §6.1): anything
                // after it, or a second one, leaves the length unknowable.
                if chunked {
                    return Err(ErrorStatus::BadRequest);
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list_items(value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // The token may carry a version: `websocket/13` is not what RFC 6455 asks for,
            // but nothing is lost by being exact here.
            upgrade_websocket |= list_items(value).any(|p| p.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.websocket_version = Some(value.trim_ascii());
        }
    }

    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host, or any request with
    // several, MUST get 400. Proxies route by Host; two of them is another smuggling tool.
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(ErrorStatus::BadRequest);
    }

    // RFC 9112 §6.3: a message with both is an attempt at request smuggling (the front end
    // and we could disagree on where it ends), so we refuse it rather than pick one. An
    // HTTP/1.0 message with Transfer-Encoding is treated as faulty framing (§6.1), and a
    // Transfer-Encoding whose final coding is not chunked has no length a request can use.
    head.body = match (transfer_encoding, content_length) {
        (true, Some(_)) => return Err(ErrorStatus::BadRequest),
        (true, None) if !chunked || version == Version::Http10 => {
            return Err(ErrorStatus::BadRequest)
        }
        (true, None) => BodyLength::Chunked,
        (false, Some(0) | None) => BodyLength::Empty,
        (false, Some(length)) => BodyLength::Length(length),
    };
    head.keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    head.upgrade_websocket = upgrade_websocket && connection_upgrade;
    Ok(Some(head))
}

/// The comma-separated elements of a header value (RFC 9110 §5.6.1), trimmed, empty ones
/// skipped.
/// Whether a Host value is `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2), which
/// §3.2 asks us to check: anything else gets 400. `Host: a, b` (two hosts folded into one
/// line, which a proxy might route by either) and `Host: evil/path` are what this catches.
/// An empty value is allowed: it is what a client sends for a target with no authority.
fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host_ok, rest) = match value.strip_prefix(b"[") {
        // An IP literal: an IPv6 address (or IPvFuture) in brackets.
        Some(inside) => match inside.iter().position(|&b| b == b']') {
            Some(end) => (
                end > 0
                    && inside[..end]
                        .iter()
                        .all(|&b| is_reg_name_byte(b) || b == b':'),
                &inside[end + 1..],
            ),
            None => (false, &[][..]),
        },
        // A name or an IPv4 address: neither can contain ':', so the first ':' starts the port.
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (
                value[..end].iter().all(|&b| is_reg_name_byte(b)),
                &value[end..],
            )
        }
    };
    let port_ok = match rest.strip_prefix(b":") {
        Some(port) => port.iter().all(u8::is_ascii_digit),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

/// RFC 3986 reg-name: unreserved, %-escapes (the '%' is checked loosely) and sub-delims.
/// A table, because every request's Host goes through here.
fn is_reg_name_byte(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            table[i] = b.is_ascii_alphanumeric();
            i += 1;
        }
        let others = b"-._~%!$&'()*+,;=";
        let mut j = 0;
        while j < others.len() {
            table[others[j] as usize] = true;
            j += 1;
        }
        table
    };
    TABLE[usize::from(b)]
}

fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// `1*DIGIT` as a u64; `None` for anything else, including a number too big for it.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        number.checked_mul(10)?.checked_add(u64::from(digit))
    })
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
/// length of a head or a trailer section. Line ends are CRLF, and a bare LF is accepted too
/// (RFC 9112 §2.2 allows it; netcat users send it). `scanned` carries the search over to
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

/// httparse says `Version` both for `GET / HTTP/2.0` and for plain garbage. We answer 505
/// only when the first line really is `method SP target SP HTTP/digit.digit`; else 400.
fn looks_like_request_line(head: &[u8]) -> bool {
    let head = &head[leading_empty_lines(head)..];
    let line = head.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let is_token = !method.is_empty() && method.iter().all(|&b| is_tchar(b));
    let is_target = !target.is_empty() && target.iter().all(|&b| b.is_ascii_graphic());
    let is_version = matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit());
    is_token && is_target && is_version
}

/// A `tchar` of RFC 9110 §5.6.2, the bytes a method may have.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

// ---------------------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------------------

/// The answer owed for a request whose body is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    connection: Connection,
    head_only: bool,
}

/// Where we are in the request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for, or inside, a request head.
    Head(HeadScan),
    /// Throwing away the body of a request, then owing it `reply`.
    Body { body: BodyProgress, reply: Reply },
    /// The last response (an error, or `Connection: close`) is out: nothing more is read.
    Done,
}

/// How far into a body we are. Bodies are never buffered: we only count bytes off.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyProgress {
    /// A Content-Length body with this many bytes still to come.
    Length(u64),
    /// At the start of a chunk-size line (RFC 9112 §7.1).
    ChunkSize,
    /// Inside a chunk's data.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkDataEnd,
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailers { scanned: usize },
    /// All of it is in (or there was none): the reply is owed now.
    Finished,
}

/// What one step through the input did.
enum Step {
    /// Used this many more bytes; keep going.
    Consumed(usize),
    /// The rest is an incomplete piece: wait for more bytes.
    NeedMore,
    /// The input is bad: answer with this status and close.
    Fail(ErrorStatus),
}

/// One HTTP connection's state between reads.
#[derive(Debug)]
pub struct HttpSession {
    state: State,
    /// The server is shutting down: the request in progress is answered with
    /// `Connection: close`, and that is the last.
    close_after_reply: bool,
}

impl Default for HttpSession {
    fn default() -> HttpSession {
        HttpSession::new()
    }
}

impl HttpSession {
    pub fn new() -> HttpSession {
        HttpSession {
            state: State::Head(HeadScan::default()),
            close_after_reply: false,
        }
    }

    /// Answer every complete request in `input`, in order; see `protocol` for the contract.
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
        let mut consumed = 0;
        loop {
            if self.state == State::Done {
                return Outcome::new(input.len(), Next::CloseAfterFlush);
            }
            let rest = &input[consumed..];
            let step = match &mut self.state {
                State::Head(_) if out.len() >= ctx.out_budget => {
                    // Backpressure: the peer has not read what we wrote. Leave the rest of
                    // the pipeline unread until it does.
                    return Outcome::new(consumed, Next::Continue);
                }
                State::Head(scan) => match scan.parse(rest) {
                    Ok(Some(head)) => self.on_head(&head, out),
                    Ok(None) => Step::NeedMore,
                    Err(status) => Step::Fail(status),
                },
                State::Body { body, .. } => discard_body(body, rest),
                State::Done => Step::NeedMore,
            };
            match step {
                Step::Consumed(used) => consumed += used,
                Step::NeedMore => return Outcome::new(consumed, Next::Continue),
                Step::Fail(status) => {
                    self.fail(status, out, ctx);
                    return Outcome::new(input.len(), Next::CloseAfterFlush);
                }
            }
            if let State::Body {
                body: BodyProgress::Finished,
                reply,
            } = self.state
            {
                self.answer(reply, out, ctx);
            }
        }
    }

    /// A head arrived: decide the answer, and answer now or once the body is gone.
    fn on_head(&mut self, head: &RequestHead, out: &mut Vec<u8>) -> Step {
        let reply = Reply {
            connection: head.connection(),
            head_only: head.method == "HEAD",
        };
        let body = match head.body {
            BodyLength::Empty => BodyProgress::Finished,
            BodyLength::Length(length) => BodyProgress::Length(length),
            BodyLength::Chunked => BodyProgress::ChunkSize,
        };
        // The client waits (a while) for this before sending the body. HTTP/1.0 has no
        // 1xx responses, so an HTTP/1.0 client never gets one (RFC 9110 §15.2).
        let has_body = head.body != BodyLength::Empty;
        if has_body && head.expect_continue && head.version == Version::Http11 {
            out.extend_from_slice(CONTINUE);
        }
        self.state = State::Body { body, reply };
        Step::Consumed(head.len)
    }

    /// The request and its body are in: append the page.
    fn answer(&mut self, reply: Reply, out: &mut Vec<u8>, ctx: &mut Context) {
        let connection = match self.close_after_reply {
            true => Connection::Close,
            false => reply.connection,
        };
        out.extend_from_slice(ctx.page.ok(connection, reply.head_only));
        ctx.stats.requests += 1;
        self.state = match connection {
            Connection::Close => State::Done,
            _ => State::Head(HeadScan::default()),
        };
    }

    /// Answer an error, and read no more: we no longer know where a next request starts.
    fn fail(&mut self, status: ErrorStatus, out: &mut Vec<u8>, ctx: &mut Context) {
        log::debug!("{}: http: answering {}", ctx.peer, status.status_line());
        out.extend_from_slice(ctx.page.error(status));
        ctx.stats.errors += 1;
        self.state = State::Done;
    }

    /// True while waiting for or inside a request head (the header timeout runs then);
    /// false while a body is being discarded, and once the last response is out.
    pub fn in_request_head(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    /// The head did not arrive in time: 408, then close (RFC 9110 §15.5.9).
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>, ctx: &mut Context) -> Next {
        if self.state != State::Done {
            self.fail(ErrorStatus::RequestTimeout, out, ctx);
        }
        Next::CloseAfterFlush
    }

    /// The server is shutting down. Between requests, with nothing buffered, the connection
    /// can go now. Mid-request, the request is answered first, with `Connection: close`.
    pub fn on_shutdown(&mut self, unconsumed: usize) -> Next {
        let between_requests = matches!(self.state, State::Head(_)) && unconsumed == 0;
        if between_requests || self.state == State::Done {
            return Next::CloseAfterFlush;
        }
        self.close_after_reply = true;
        Next::Continue
    }
}

/// Count off body bytes in `rest`. Returns how many were used, or that more are needed.
fn discard_body(body: &mut BodyProgress, rest: &[u8]) -> Step {
    match body {
        BodyProgress::Length(remaining) | BodyProgress::ChunkData(remaining) => {
            if rest.is_empty() {
                return Step::NeedMore;
            }
            // `used` is at most `rest.len()`, so neither the cast back nor the subtraction
            // can overflow, however large a length the peer announced.
            let used = (*remaining).min(rest.len() as u64);
            *remaining -= used;
            match body {
                BodyProgress::Length(0) => *body = BodyProgress::Finished,
                BodyProgress::ChunkData(0) => *body = BodyProgress::ChunkDataEnd,
                _ => {}
            }
            Step::Consumed(used as usize)
        }
        BodyProgress::ChunkSize => match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((used, 0))) => {
                *body = BodyProgress::Trailers { scanned: 0 };
                Step::Consumed(used)
            }
            Ok(httparse::Status::Complete((used, size))) => {
                *body = BodyProgress::ChunkData(size);
                Step::Consumed(used)
            }
            Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_SIZE_LINE => Step::NeedMore,
            Ok(httparse::Status::Partial) | Err(_) => Step::Fail(ErrorStatus::BadRequest),
        },
        // Chunk data ends in CRLF exactly. We are strict here, unlike in heads: a lenient
        // chunk parser behind a strict proxy is a classic smuggling pair.
        BodyProgress::ChunkDataEnd => match rest {
            [] | [b'\r'] => Step::NeedMore,
            [b'\r', b'\n', ..] => {
                *body = BodyProgress::ChunkSize;
                Step::Consumed(2)
            }
            _ => Step::Fail(ErrorStatus::BadRequest),
        },
        // on_input answers as soon as it sees this; nothing is left to read.
        BodyProgress::Finished => Step::Consumed(0),
        BodyProgress::Trailers { scanned } => {
            let window = &rest[..rest.len().min(MAX_HEAD_BYTES)];
            match find_empty_line(window, scanned) {
                Some(end) => {
                    *body = BodyProgress::Finished;
                    Step::Consumed(end)
                }
                None if window.len() == MAX_HEAD_BYTES => {
                    Step::Fail(ErrorStatus::HeaderFieldsTooLarge)
                }
                None => Step::NeedMore,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::net::SocketAddr;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A page with a fixed Date, so outputs can be compared byte for byte.
    fn page() -> CannedPage {
        let mut page = CannedPage::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
        page.set_date(UNIX_EPOCH + Duration::from_secs(784_111_777));
        page
    }

    /// One connection driven the way the loop drives it: bytes not consumed are offered
    /// again with the next read appended.
    struct Peer {
        page: CannedPage,
        stats: Stats,
        session: HttpSession,
        pending: Vec<u8>,
        out: Vec<u8>,
        next: Next,
        out_budget: usize,
    }

    fn context<'a>(
        page: &'a CannedPage,
        stats: &'a mut Stats,
        out_budget: usize,
        broadcast: &'a mut Vec<std::sync::Arc<[u8]>>,
    ) -> Context<'a> {
        Context {
            page,
            out_budget,
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            stats,
            broadcast,
        }
    }

    impl Peer {
        fn new() -> Peer {
            Peer {
                page: page(),
                stats: Stats::default(),
                session: HttpSession::new(),
                pending: Vec::new(),
                out: Vec::new(),
                next: Next::Continue,
                out_budget: usize::MAX,
            }
        }

        /// Deliver one read. Returns what that call consumed.
        fn send(&mut self, bytes: &[u8]) -> usize {
            assert_eq!(
                self.next,
                Next::Continue,
                "fed a connection that is closing"
            );
            self.pending.extend_from_slice(bytes);
            let pending = std::mem::take(&mut self.pending);
            let mut out = std::mem::take(&mut self.out);
            let outcome = self.session.on_input(
                &pending,
                &mut out,
                &mut context(
                    &self.page,
                    &mut self.stats,
                    self.out_budget,
                    &mut Vec::new(),
                ),
            );
            self.out = out;
            self.pending = pending[outcome.consumed..].to_vec();
            self.next = outcome.next;
            outcome.consumed
        }

        fn header_timeout(&mut self) -> Next {
            let mut out = std::mem::take(&mut self.out);
            let next = self.session.on_header_timeout(
                &mut out,
                &mut context(
                    &self.page,
                    &mut self.stats,
                    self.out_budget,
                    &mut Vec::new(),
                ),
            );
            self.out = out;
            next
        }
    }

    /// Feed `input` whole; returns the output and what happens next.
    fn answer(input: &[u8]) -> (Vec<u8>, Next) {
        let mut peer = Peer::new();
        peer.send(input);
        (peer.out, peer.next)
    }

    /// Feed `input` split at `at`, as two reads.
    fn answer_split(input: &[u8], at: usize) -> (Vec<u8>, Next) {
        let mut peer = Peer::new();
        peer.send(&input[..at]);
        if peer.next == Next::Continue {
            peer.send(&input[at..]);
        }
        (peer.out, peer.next)
    }

    fn ok(connection: Connection) -> Vec<u8> {
        page().ok(connection, false).to_vec()
    }

    fn ok_head(connection: Connection) -> Vec<u8> {
        page().ok(connection, true).to_vec()
    }

    fn error(status: ErrorStatus) -> (Vec<u8>, Next) {
        (page().error(status).to_vec(), Next::CloseAfterFlush)
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    // --- The response -------------------------------------------------------------------

    #[test]
    fn the_page_is_framed_exactly() {
        let expected = concat(&[
            b"HTTP/1.1 200 OK\r\n",
            b"Server: sockloop\r\n",
            b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            b"Content-Type: text/html; charset=utf-8\r\n",
            b"Content-Length: 58\r\n",
            b"\r\n",
            DEFAULT_BODY,
        ]);
        assert_eq!(DEFAULT_BODY.len(), 58);
        assert_eq!(page().ok(Connection::Persistent, false), &expected[..]);
    }

    #[test]
    fn each_variant_says_how_the_connection_goes_on() {
        let page = page();
        let head_of = |connection| {
            let full = page.ok(connection, false);
            let head = page.ok(connection, true);
            assert_eq!(
                &full[..head.len()],
                head,
                "HEAD is the same head without a body"
            );
            assert_eq!(full.len() - head.len(), DEFAULT_BODY.len());
            String::from_utf8(head.to_vec()).unwrap()
        };
        assert!(!head_of(Connection::Persistent).contains("Connection:"));
        assert!(head_of(Connection::KeepAlive).contains("\r\nConnection: keep-alive\r\n"));
        assert!(head_of(Connection::Close).contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn set_date_rewrites_every_response_in_place() {
        let mut page = page();
        page.set_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let new_date = b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n";
        let all = [
            page.ok(Connection::Persistent, false),
            page.ok(Connection::KeepAlive, true),
            page.ok(Connection::Close, false),
            page.error(ErrorStatus::BadRequest),
            page.error(ErrorStatus::VersionNotSupported),
            page.unavailable(),
        ];
        for response in all {
            assert!(response.windows(new_date.len()).any(|w| w == new_date));
        }
        assert_eq!(page.date(), b"Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn a_clock_before_1970_does_not_panic() {
        let mut page = page();
        page.set_date(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(page.date(), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn unavailable_is_a_complete_503_that_closes() {
        let page = page();
        let response = page.unavailable();
        assert!(response.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert_well_formed(response);
        assert!(contains(response, b"\r\nConnection: close\r\n"));
    }

    #[test]
    fn every_error_response_has_its_own_length_and_closes() {
        let page = page();
        for status in ErrorStatus::ALL {
            let response = page.error(status);
            assert_well_formed(response);
            assert!(contains(response, b"\r\nConnection: close\r\n"));
            let line = format!("HTTP/1.1 {}\r\n", status.status_line());
            assert!(response.starts_with(line.as_bytes()));
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// One response: a head ending in an empty line and a body of its Content-Length.
    fn assert_well_formed(response: &[u8]) {
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&response[..end]).unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(response.len() - end, length, "{head}");
    }

    // --- Requests -----------------------------------------------------------------------

    #[test]
    fn a_get_gets_the_page_and_the_connection_stays_open() {
        let mut peer = Peer::new();
        assert_eq!(peer.send(GET), GET.len());
        assert_eq!(peer.out, ok(Connection::Persistent));
        assert_eq!(peer.next, Next::Continue);
        assert_eq!(peer.stats.requests, 1);
    }

    #[test]
    fn any_method_and_path_get_the_page() {
        for request in [
            &b"POST /submit?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"DELETE /a/b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                answer(request),
                (ok(Connection::Persistent), Next::Continue)
            );
        }
    }

    #[test]
    fn head_gets_the_headers_without_the_body() {
        let (out, next) = answer(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(out, ok_head(Connection::Persistent));
        assert!(contains(&out, b"Content-Length: 58\r\n"));
        assert_eq!(next, Next::Continue);
    }

    #[test]
    fn connection_close_is_honoured() {
        let (out, next) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::Close), Next::CloseAfterFlush));
    }

    #[test]
    fn connection_is_a_case_insensitive_token_list() {
        let (out, next) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::Close), Next::CloseAfterFlush));
        let (out, next) = answer(b"GET / HTTP/1.0\r\nConnection: foo,Keep-Alive \r\n\r\n");
        assert_eq!((out, next), (ok(Connection::KeepAlive), Next::Continue));
    }

    #[test]
    fn http_1_0_closes_by_default() {
        let (out, next) = answer(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::Close), Next::CloseAfterFlush));
    }

    #[test]
    fn http_1_0_keep_alive_is_answered_with_keep_alive() {
        let request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let mut peer = Peer::new();
        peer.send(request);
        peer.send(request);
        assert_eq!(
            peer.out,
            [ok(Connection::KeepAlive), ok(Connection::KeepAlive)].concat()
        );
        assert_eq!(peer.next, Next::Continue);
    }

    #[test]
    fn bytes_after_a_close_are_not_answered() {
        let input = concat(&[
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            GET,
        ]);
        let mut peer = Peer::new();
        assert_eq!(peer.send(&input), input.len());
        assert_eq!(peer.out, ok(Connection::Close));
        assert_eq!(peer.stats.requests, 1);
    }

    #[test]
    fn empty_lines_before_a_request_are_ignored() {
        let (out, _) = answer(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(out, ok(Connection::Persistent));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let (out, _) = answer(b"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\nHost: x\r\n\r\n");
        assert_eq!(
            out,
            [ok(Connection::Persistent), ok(Connection::Persistent)].concat()
        );
    }

    // --- Pipelining ---------------------------------------------------------------------

    /// A pipeline with one of everything: HEAD, both body framings, 100-continue, close.
    fn pipeline() -> (Vec<u8>, Vec<u8>) {
        let input = concat(&[
            GET,
            b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"4;ext=\"a b\"\r\nGET \r\n0\r\nTrailer: GET / HTTP/1.1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ]);
        let expected = concat(&[
            &ok(Connection::Persistent),
            &ok_head(Connection::Persistent),
            &ok(Connection::Persistent),
            &ok(Connection::Persistent),
            CONTINUE,
            &ok(Connection::Persistent),
            &ok(Connection::Close),
        ]);
        (input, expected)
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (input, expected) = pipeline();
        let mut peer = Peer::new();
        assert_eq!(peer.send(&input), input.len());
        assert_eq!(peer.out, expected);
        assert_eq!(peer.next, Next::CloseAfterFlush);
        assert_eq!(peer.stats.requests, 6);
    }

    #[test]
    fn a_pipeline_split_at_every_byte_gives_the_same_answers() {
        let (input, expected) = pipeline();
        for at in 0..=input.len() {
            let (out, next) = answer_split(&input, at);
            assert_eq!(out, expected, "split at {at}");
            assert_eq!(next, Next::CloseAfterFlush, "split at {at}");
        }
    }

    #[test]
    fn a_pipeline_fed_a_byte_at_a_time_gives_the_same_answers() {
        let (input, expected) = pipeline();
        let mut peer = Peer::new();
        for byte in &input {
            peer.send(std::slice::from_ref(byte));
        }
        assert_eq!(peer.out, expected);
        assert_eq!(peer.next, Next::CloseAfterFlush);
    }

    #[test]
    fn a_dripped_head_is_scanned_once_not_from_the_start_each_time() {
        let input = head_of_size(2000);
        let mut scan = HeadScan::default();
        for end in 1..input.len() {
            assert_eq!(scan.parse(&input[..end]), Ok(None));
            // Everything before the last byte or two has been searched already.
            assert!(scan.scanned + 2 >= end, "scanned {} of {end}", scan.scanned);
        }
        assert!(scan.parse(&input).unwrap().is_some());
    }

    #[test]
    fn a_partial_head_is_left_unconsumed() {
        let mut peer = Peer::new();
        let input = concat(&[GET, b"GET / HT"]);
        assert_eq!(peer.send(&input), GET.len());
        assert_eq!(peer.pending, b"GET / HT");
        assert!(peer.session.in_request_head());
    }

    // --- Bodies -------------------------------------------------------------------------

    #[test]
    fn a_content_length_body_is_not_taken_for_a_request() {
        let body = concat(&[GET, GET, GET]);
        let input = concat(&[
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            &body,
            GET,
        ]);
        let expected = [ok(Connection::Persistent), ok(Connection::Persistent)].concat();
        for at in 0..=input.len() {
            assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
        }
    }

    #[test]
    fn identical_content_lengths_are_one_length() {
        let input =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(answer(input), (ok(Connection::Persistent), Next::Continue));
    }

    #[test]
    fn a_body_is_discarded_across_reads() {
        let mut peer = Peer::new();
        peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
        assert!(!peer.session.in_request_head());
        for _ in 0..100 {
            assert_eq!(peer.send(&[b'x'; 1000]), 1000, "body bytes are never kept");
        }
        assert_eq!(peer.out, ok(Connection::Persistent));
        assert!(peer.session.in_request_head());
    }

    #[test]
    fn a_chunked_body_is_not_taken_for_a_request() {
        let input = concat(&[
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
            b"12\r\nGET / HTTP/1.1\r\n\r\n\r\n",
            b"A; name=value\r\n0123456789\r\n",
            b"0\r\n\r\n",
            GET,
        ]);
        let expected = [ok(Connection::Persistent), ok(Connection::Persistent)].concat();
        for at in 0..=input.len() {
            assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
        }
    }

    #[test]
    fn chunked_trailers_are_read_and_dropped() {
        let input = concat(&[
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1\r\nx\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n",
            GET,
        ]);
        let expected = [ok(Connection::Persistent), ok(Connection::Persistent)].concat();
        for at in 0..=input.len() {
            assert_eq!(answer_split(&input, at).0, expected, "split at {at}");
        }
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body() {
        let mut peer = Peer::new();
        let head =
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(peer.send(head), head.len());
        assert_eq!(peer.out, CONTINUE);
        peer.send(b"hello");
        assert_eq!(peer.out, [CONTINUE, &ok(Connection::Persistent)].concat());
    }

    #[test]
    fn expect_100_continue_without_a_body_or_from_http_1_0_gets_no_100() {
        let (out, _) = answer(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(out, ok(Connection::Persistent));
        let (out, _) =
            answer(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(out, ok(Connection::Close));
    }

    // --- Errors -------------------------------------------------------------------------

    #[test]
    fn a_malformed_request_line_is_400() {
        for input in [
            &b"GET  / HTTP/1.1\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"hello world\r\n\r\n",
            b"GET / HTTPS/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"\r\r\n\r\n",
        ] {
            assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
        }
    }

    #[test]
    fn a_malformed_header_is_400() {
        for input in [
            &b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ] {
            assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
        }
    }

    #[test]
    fn ambiguous_framing_is_400() {
        for input in [
            // RFC 9112 §6.3: both framings is the smuggling case.
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
        }
    }

    #[test]
    fn http_1_1_without_host_is_400_with_connection_close() {
        for input in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-Host: x\r\nConnection: keep-alive\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            // A request pipelined behind it is not answered.
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (out, next) = answer(input);
            assert!(contains(&out, b"\r\nConnection: close\r\n"), "{input:?}");
            assert_eq!((out, next), error(ErrorStatus::BadRequest), "{input:?}");
        }
        // The header name is case-insensitive like any other.
        let (out, next) = answer(b"GET / HTTP/1.1\r\nhOsT: x\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::Persistent), Next::Continue));
    }

    #[test]
    fn more_than_one_host_is_400() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(answer(input), error(ErrorStatus::BadRequest), "{input:?}");
        }
    }

    #[test]
    fn a_host_that_is_not_a_host_is_400() {
        let answer_with_host = |host: &[u8]| {
            let mut input = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            input.extend_from_slice(host);
            input.extend_from_slice(b"\r\n\r\n");
            answer(&input)
        };
        for host in [
            &b"a, b"[..],
            b"a b",
            b"x/y",
            b"user@x",
            b"x:80a",
            b"x:80:81",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::1]:8o",
        ] {
            let shown = String::from_utf8_lossy(host);
            assert_eq!(
                answer_with_host(host),
                error(ErrorStatus::BadRequest),
                "Host: {shown}"
            );
        }
        for host in [
            &b"x"[..],
            b"",
            b"example.com:8080",
            b"127.0.0.1:80",
            b"[::1]:3000",
            b"[::1]",
            b"xn--bcher-kva.example",
            b"x:",
        ] {
            let shown = String::from_utf8_lossy(host);
            let accepted = (ok(Connection::Persistent), Next::Continue);
            assert_eq!(answer_with_host(host), accepted, "Host: {shown}");
        }
    }

    #[test]
    fn http_1_0_without_host_is_answered() {
        let (out, next) = answer(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::Close), Next::CloseAfterFlush));
        let (out, next) = answer(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!((out, next), (ok(Connection::KeepAlive), Next::Continue));
    }

    #[test]
    fn a_malformed_chunked_body_is_400() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"3\r\nabcX\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3\nabc\r\n",
        ] {
            let input = concat(&[head, body]);
            assert_eq!(answer(&input), error(ErrorStatus::BadRequest), "{body:?}");
        }
        let endless_extension = concat(&[head, b"1;", &[b'x'; MAX_CHUNK_SIZE_LINE]]);
        assert_eq!(answer(&endless_extension), error(ErrorStatus::BadRequest));
    }

    #[test]
    fn the_largest_chunk_size_does_not_overflow() {
        let mut peer = Peer::new();
        peer.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        );
        assert_eq!(peer.send(&[b'x'; 4096]), 4096);
        assert_eq!(peer.next, Next::Continue);
        assert!(peer.out.is_empty());
    }

    fn head_of_size(size: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nHost: x\r\nX: ";
        let filler = size - start.len() - 4;
        concat(&[start, &vec![b'a'; filler], b"\r\n\r\n"])
    }

    #[test]
    fn a_head_over_8_kib_is_431() {
        let fits = head_of_size(MAX_HEAD_BYTES);
        assert_eq!(answer(&fits), (ok(Connection::Persistent), Next::Continue));
        let too_long = head_of_size(MAX_HEAD_BYTES + 1);
        assert_eq!(answer(&too_long), error(ErrorStatus::HeaderFieldsTooLarge));
        // Incomplete, and already over the limit: no need to wait for the rest.
        let incomplete = &head_of_size(MAX_HEAD_BYTES + 100)[..MAX_HEAD_BYTES + 1];
        assert_eq!(answer(incomplete), error(ErrorStatus::HeaderFieldsTooLarge));
        assert_eq!(
            answer(&[b'\n'; MAX_HEAD_BYTES]),
            error(ErrorStatus::HeaderFieldsTooLarge)
        );
    }

    #[test]
    fn more_than_100_header_lines_is_431() {
        let with_headers = |count| {
            // Host is one of the `count` lines.
            let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 1..count {
                input.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
            }
            input.extend_from_slice(b"\r\n");
            input
        };
        assert_eq!(answer(&with_headers(100)).0, ok(Connection::Persistent));
        assert_eq!(
            answer(&with_headers(101)),
            error(ErrorStatus::HeaderFieldsTooLarge)
        );
    }

    #[test]
    fn trailers_over_8_kib_are_431() {
        let input = concat(&[
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
            &[b'a'; MAX_HEAD_BYTES],
        ]);
        assert_eq!(answer(&input), error(ErrorStatus::HeaderFieldsTooLarge));
    }

    #[test]
    fn other_versions_and_the_http2_preface_are_505() {
        for input in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                answer(input),
                error(ErrorStatus::VersionNotSupported),
                "{input:?}"
            );
        }
    }

    #[test]
    fn after_an_error_everything_is_consumed_and_nothing_answered() {
        let mut peer = Peer::new();
        let input = concat(&[GET, b"BAD\r\n\r\n", GET]);
        assert_eq!(peer.send(&input), input.len());
        let expected = [ok(Connection::Persistent), error(ErrorStatus::BadRequest).0].concat();
        assert_eq!(peer.out, expected);
        assert_eq!(peer.next, Next::CloseAfterFlush);
        assert_eq!((peer.stats.requests, peer.stats.errors), (1, 1));
        // The loop may still offer bytes that were already read: they go nowhere.
        let mut out = Vec::new();
        let outcome = peer.session.on_input(
            GET,
            &mut out,
            &mut context(
                &peer.page,
                &mut peer.stats,
                peer.out_budget,
                &mut Vec::new(),
            ),
        );
        assert_eq!(outcome, Outcome::new(GET.len(), Next::CloseAfterFlush));
        assert!(out.is_empty());
    }

    // --- Timeouts, shutdown, backpressure -----------------------------------------------

    #[test]
    fn a_slow_head_gets_408_on_the_header_timeout() {
        let mut peer = Peer::new();
        peer.send(b"GET / HTTP/1.1\r\nHost");
        assert!(peer.session.in_request_head());
        assert_eq!(peer.header_timeout(), Next::CloseAfterFlush);
        assert_eq!(peer.out, error(ErrorStatus::RequestTimeout).0);
        assert!(!peer.session.in_request_head());
    }

    #[test]
    fn in_request_head_is_false_only_while_a_body_is_read() {
        let mut peer = Peer::new();
        assert!(peer.session.in_request_head());
        peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na");
        assert!(!peer.session.in_request_head());
        peer.send(b"b");
        assert!(peer.session.in_request_head());
    }

    #[test]
    fn shutdown_closes_an_idle_connection_at_once() {
        let mut peer = Peer::new();
        peer.send(GET);
        assert_eq!(peer.session.on_shutdown(0), Next::CloseAfterFlush);
    }

    #[test]
    fn shutdown_mid_head_answers_it_with_close() {
        let mut peer = Peer::new();
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(peer.session.on_shutdown(peer.pending.len()), Next::Continue);
        peer.send(b"\r\n");
        assert_eq!(peer.out, ok(Connection::Close));
        assert_eq!(peer.next, Next::CloseAfterFlush);
    }

    #[test]
    fn shutdown_mid_body_answers_it_with_close() {
        let mut peer = Peer::new();
        peer.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na");
        assert_eq!(peer.session.on_shutdown(0), Next::Continue);
        peer.send(b"b");
        assert_eq!(peer.out, ok(Connection::Close));
        assert_eq!(peer.next, Next::CloseAfterFlush);
    }

    #[test]
    fn a_full_out_budget_stops_the_pipeline() {
        let mut peer = Peer::new();
        peer.out_budget = 1;
        let input = concat(&[GET, GET, GET]);
        assert_eq!(peer.send(&input), GET.len());
        assert_eq!(peer.out, ok(Connection::Persistent));
        // The loop wrote `out` and offers the rest again.
        peer.out.clear();
        assert_eq!(peer.send(b""), GET.len());
        assert_eq!(peer.out, ok(Connection::Persistent));
    }

    // --- The pieces the WebSocket handshake reuses --------------------------------------

    #[test]
    fn parse_request_head_reports_a_websocket_upgrade() {
        let input = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\nframe bytes";
        let head = parse_request_head(input).unwrap().unwrap();
        assert_eq!(
            (head.method, head.path, head.version),
            ("GET", "/chat", Version::Http11)
        );
        assert!(head.upgrade_websocket && head.keep_alive);
        assert_eq!(head.websocket_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(head.websocket_version, Some(&b"13"[..]));
        assert_eq!(head.body, BodyLength::Empty);
        assert_eq!(&input[head.len..], b"frame bytes");
    }

    #[test]
    fn upgrade_without_connection_upgrade_is_not_an_upgrade() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert!(
            !parse_request_head(input)
                .unwrap()
                .unwrap()
                .upgrade_websocket
        );
    }

    #[test]
    fn parse_request_head_waits_for_a_complete_head() {
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(parse_request_head(b""), Ok(None));
        assert_eq!(
            parse_request_head(b"PRI * HTTP/2.0\r\n\r\n"),
            Err(ErrorStatus::VersionNotSupported)
        );
    }

    #[test]
    fn write_response_frames_a_small_response() {
        let page = page();
        let mut out = Vec::new();
        let headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", "abc=")];
        write_response(
            &mut out,
            &page,
            "101 Switching Protocols",
            Connection::Upgrade,
            &headers,
            None,
        );
        let expected = "HTTP/1.1 101 Switching Protocols\r\nServer: sockloop\r\n\
            Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: Upgrade\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);

        let mut out = Vec::new();
        let body = Some(("text/plain", &b"no\r\n"[..]));
        write_response(
            &mut out,
            &page,
            "426 Upgrade Required",
            Connection::Close,
            &[],
            body,
        );
        assert_well_formed(&out);
        assert!(contains(&out, b"Content-Type: text/plain\r\n"));
        assert!(contains(&out, b"Connection: close\r\n"));
        assert!(out.ends_with(b"\r\n\r\nno\r\n"));
    }
}
