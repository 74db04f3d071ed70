//! The canned responses, shared by the http and ws modes: the page, the error statuses, and
//! small responses built on demand (the WebSocket handshake). Nothing is formatted per
//! request: every response is rendered once at start-up, and only its `Date` bytes are
//! rewritten, in place, when the second changes.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The seed notes' page. CRLF line endings: the notes used bare `\n`, which browsers accept
/// but which is not what the notes' own Content-Length was counting.
pub const DEFAULT_BODY: &[u8] =
    b"<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n";
pub const DEFAULT_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The interim response to `Expect: 100-continue` (RFC 9110 §10.1.1): "go on, send the
/// body". It has no headers and no body, so it needs no Date.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// IMF-fixdate always has this many bytes: `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
/// That fixed width is what lets `set_date` overwrite the Date in place.
const DATE_LEN: usize = 29;

/// How a response ends the exchange, which is what its `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 is persistent by default (RFC 9112 §9.3), so the header is left out.
    Persistent,
    /// An HTTP/1.0 client asked for keep-alive; it only keeps the connection if we say so.
    KeepAlive,
    /// `Connection: close`: this is the last response, the loop closes after writing it.
    Close,
    /// `Connection: Upgrade`, for `101 Switching Protocols` (RFC 9110 §7.8).
    Upgrade,
}

impl ConnectionHeader {
    fn header(self) -> &'static str {
        match self {
            ConnectionHeader::Persistent => "",
            ConnectionHeader::KeepAlive => "Connection: keep-alive\r\n",
            ConnectionHeader::Close => "Connection: close\r\n",
            ConnectionHeader::Upgrade => "Connection: Upgrade\r\n",
        }
    }
}

/// The statuses this server answers bad requests (and itself) with. Each response is
/// prebuilt in [`Responses`] with `Connection: close`: after an error we stop reading,
/// because we no longer know where the next request would begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 400: the request line or a header is malformed, its framing is ambiguous, or its
    /// Host is missing (HTTP/1.1), repeated or not a host; also CONNECT, which we do not
    /// tunnel.
    BadRequest,
    /// 408: the head did not arrive within --header-timeout (slowloris).
    RequestTimeout,
    /// 414: a request line over `MAX_HEAD_BYTES`, its target still going.
    UriTooLong,
    /// 431: a head over `MAX_HEAD_BYTES` or with more than `MAX_HEADERS` lines.
    HeaderFieldsTooLarge,
    /// 503: over --max-conns.
    ServiceUnavailable,
    /// 505: a well-formed request line naming a version other than 1.0 and 1.1, or the
    /// HTTP/2 connection preface (`PRI * HTTP/2.0`).
    VersionNotSupported,
}

impl ErrorStatus {
    pub(crate) const ALL: [ErrorStatus; 6] = [
        ErrorStatus::BadRequest,
        ErrorStatus::RequestTimeout,
        ErrorStatus::UriTooLong,
        ErrorStatus::HeaderFieldsTooLarge,
        ErrorStatus::ServiceUnavailable,
        ErrorStatus::VersionNotSupported,
    ];

    /// The status line's code and reason phrase, e.g. `400 Bad Request`.
    pub fn status_line(self) -> &'static str {
        match self {
            ErrorStatus::BadRequest => "400 Bad Request",
            ErrorStatus::RequestTimeout => "408 Request Timeout",
            ErrorStatus::UriTooLong => "414 URI Too Long",
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
        connection: ConnectionHeader,
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
pub struct Responses {
    /// The 200 responses, indexed by [`Responses::ok_index`]: for each way a connection can
    /// go on (persistent, keep-alive, close), the full response and the HEAD one.
    ok: [Prebuilt; 6],
    /// The error responses, indexed by [`ErrorStatus::index`].
    errors: [Prebuilt; 6],
    /// The current Date value, for responses built on demand ([`write_response`]).
    date: [u8; DATE_LEN],
    /// The Unix second `date` shows, so that [`Responses::refresh_date`] re-renders only
    /// when it has changed.
    second: u64,
}

impl Responses {
    pub fn new(body: &[u8], content_type: &str) -> Responses {
        let now = SystemTime::now();
        let date = render_date(now);
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
                ConnectionHeader::Close,
                &[],
                body,
                true,
                &date,
            )
        };
        Responses {
            ok: [
                ok(ConnectionHeader::Persistent, true),
                ok(ConnectionHeader::Persistent, false),
                ok(ConnectionHeader::KeepAlive, true),
                ok(ConnectionHeader::KeepAlive, false),
                ok(ConnectionHeader::Close, true),
                ok(ConnectionHeader::Close, false),
            ],
            errors: ErrorStatus::ALL.map(error),
            date,
            second: unix_second(now),
        }
    }

    /// Bring the Date up to `now`, if its second has changed since the last time. The loop
    /// calls this once per wakeup, so it costs one clock read and a compare; the responses
    /// are re-rendered at most once a second, never per request.
    pub fn refresh_date(&mut self, now: SystemTime) {
        if unix_second(now) != self.second {
            self.set_date(now);
        }
    }

    /// Re-render the Date header of every response.
    pub fn set_date(&mut self, now: SystemTime) {
        self.second = unix_second(now);
        self.date = render_date(now);
        for response in self.ok.iter_mut().chain(self.errors.iter_mut()) {
            response.set_date(&self.date);
        }
    }

    /// The page: the answer to every well-formed request.
    pub fn ok(&self, connection: ConnectionHeader, head_only: bool) -> &[u8] {
        &self.ok[Responses::ok_index(connection, head_only)].bytes
    }

    fn ok_index(connection: ConnectionHeader, head_only: bool) -> usize {
        let row = match connection {
            ConnectionHeader::Persistent => 0,
            ConnectionHeader::KeepAlive => 1,
            // The page never answers an upgrade; if asked to, it closes.
            ConnectionHeader::Close | ConnectionHeader::Upgrade => 2,
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

    /// The current `Date` value (IMF-fixdate), as last set by [`Responses::set_date`].
    pub fn date(&self) -> &[u8] {
        &self.date
    }
}

/// Seconds since the Unix epoch; 0 for a clock set before it.
fn unix_second(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
    connection: ConnectionHeader,
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
/// # use sockloop::protocol::responses::{write_response, ConnectionHeader, Responses, DEFAULT_BODY};
/// # let page = Responses::new(DEFAULT_BODY, "text/html");
/// # let mut out = Vec::new();
/// let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// let headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", accept)];
/// write_response(&mut out, &page, "101 Switching Protocols", ConnectionHeader::Upgrade, &headers, None);
/// ```
pub fn write_response(
    out: &mut Vec<u8>,
    page: &Responses,
    status: &str,
    connection: ConnectionHeader,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) {
    write_head(out, page.date(), status, connection, headers, body);
    if let Some((_, body)) = body {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Responses with a fixed Date, so outputs can be compared byte for byte.
    fn page() -> Responses {
        let mut page = Responses::new(DEFAULT_BODY, DEFAULT_CONTENT_TYPE);
        page.set_date(UNIX_EPOCH + Duration::from_secs(784_111_777));
        page
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
        assert_eq!(
            page().ok(ConnectionHeader::Persistent, false),
            &expected[..]
        );
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
        assert!(!head_of(ConnectionHeader::Persistent).contains("Connection:"));
        assert!(head_of(ConnectionHeader::KeepAlive).contains("\r\nConnection: keep-alive\r\n"));
        assert!(head_of(ConnectionHeader::Close).contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn set_date_rewrites_every_response_in_place() {
        let mut page = page();
        page.set_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let new_date = b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n";
        let all = [
            page.ok(ConnectionHeader::Persistent, false),
            page.ok(ConnectionHeader::KeepAlive, true),
            page.ok(ConnectionHeader::Close, false),
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

    pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
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

    #[test]
    fn write_response_frames_a_small_response() {
        let page = page();
        let mut out = Vec::new();
        let headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", "abc=")];
        write_response(
            &mut out,
            &page,
            "101 Switching Protocols",
            ConnectionHeader::Upgrade,
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
            ConnectionHeader::Close,
            &[],
            body,
        );
        assert_well_formed(&out);
        assert!(contains(&out, b"Content-Type: text/plain\r\n"));
        assert!(contains(&out, b"Connection: close\r\n"));
        assert!(out.ends_with(b"\r\n\r\nno\r\n"));
    }
}
