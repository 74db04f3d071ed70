//! HTTP mode as a client meets it, against the real binary.
//!
//! The protocol itself is tested in depth by the unit tests of `src/protocol/http/`,
//! without a network. These tests ask what those cannot: does the page arrive whole through
//! the loop and the kernel, is a connection kept or closed when it should be, and does a
//! refused client read its error response to the end instead of a reset? First with an
//! independent HTTP client (ureq), then with raw sockets, which can send what no polite
//! client would: a pipeline cut at every byte, a body that looks like a request, junk after
//! a bad request.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::Server;

/// The Hello World page, byte for byte: written out here rather than taken from the crate,
/// so that these tests say what a client must receive.
const PAGE: &[u8] = b"<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_AND_CLOSE: &[u8] = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

// ----- An independent client: ureq -----

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

#[test]
fn a_get_returns_the_page_with_its_length_type_server_and_date() {
    let server = Server::start(&["--mode", "http"]);
    let mut response = agent().get(url(&server, "/")).call().expect("GET /");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), ureq::http::Version::HTTP_11);
    let header = |name: &str| {
        let values: Vec<_> = response.headers().get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].to_str().expect("ASCII header").to_string()
    };
    assert_eq!(header("content-length"), PAGE.len().to_string());
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("server"), "sockloop");
    assert_imf_fixdate_near_now(&header("date"));
    let body = response.body_mut().read_to_vec().expect("body");
    assert_eq!(body, PAGE);
}

#[test]
fn requests_through_one_agent_reuse_one_connection() {
    let mut server = Server::start_with(&["--mode", "http"], |command| {
        command.env("RUST_LOG", "debug");
    });
    let agent = agent();
    let page = |mut response: ureq::http::Response<ureq::Body>| {
        assert_eq!(response.status(), 200);
        response.body_mut().read_to_vec().expect("body")
    };
    assert_eq!(page(agent.get(url(&server, "/")).call().unwrap()), PAGE);
    // A Content-Length body: read and thrown away, not taken for a request.
    let form = agent
        .post(url(&server, "/form"))
        .send("a=1&b=GET / HTTP/1.1");
    assert_eq!(page(form.unwrap()), PAGE);
    // A body of unknown length goes chunked.
    let mut upload: &[u8] = &[b'x'; 100_000];
    let put = agent
        .put(url(&server, "/upload"))
        .send(ureq::SendBody::from_reader(&mut upload));
    assert_eq!(page(put.unwrap()), PAGE);
    // ureq waits for `100 Continue` before sending the body.
    let expect = agent
        .post(url(&server, "/expect"))
        .header("Expect", "100-continue")
        .send(&[b'y'; 10_000][..]);
    assert_eq!(page(expect.unwrap()), PAGE);
    // HEAD: the same headers, no body.
    let head = agent.head(url(&server, "/")).call().unwrap();
    assert_eq!(
        head.headers().get("content-length").unwrap(),
        &PAGE.len().to_string()
    );
    assert_eq!(page(head), b"");
    assert_eq!(
        page(agent.get(url(&server, "/again")).call().unwrap()),
        PAGE
    );

    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let accepted = server
        .log
        .iter()
        .filter(|l| l.contains("accepted as"))
        .count();
    let totals = server.log.iter().find(|l| l.contains("totals: ")).unwrap();
    assert_eq!(accepted, 1, "{:#?}", server.log);
    assert!(
        totals.contains("connections=1 ") && totals.contains("requests=6 "),
        "{totals}"
    );
}

// ----- Raw sockets: what a client sees on the wire -----

/// One response as it came off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    /// The head, up to and including its empty line.
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Response {
    /// The value of the one header called `name`; fails if there are none or several.
    fn header(&self, name: &str) -> &str {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values.len(), 1, "{name} in {:?}", self.headers);
        values[0]
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The whole page, as a GET gets it.
    fn assert_is_the_page(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.header("Content-Length"), PAGE.len().to_string());
        assert_eq!(self.header("Content-Type"), "text/html; charset=utf-8");
        assert_eq!(self.header("Server"), "sockloop");
        assert_imf_fixdate_near_now(self.header("Date"));
        assert_eq!(self.body, PAGE);
    }
}

/// Take one response off the front of `bytes`, if all of it is there. `head_only`: it
/// answers a HEAD, so it has no body whatever its Content-Length says.
fn take_response(bytes: &mut &[u8], head_only: bool) -> Option<Response> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(bytes).expect("a well-formed response") {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return None,
    };
    assert_eq!(parsed.version, Some(1), "HTTP/1.1 in the status line");
    let status = parsed.code.unwrap();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8(h.value.to_vec()).unwrap();
            (h.name.to_string(), value)
        })
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.parse::<usize>().expect("a decimal Content-Length"));
    let body_len = match status {
        100..=199 | 204 | 304 => 0,
        _ if head_only => 0,
        _ => length.unwrap_or_else(|| panic!("no Content-Length in {headers:?}")),
    };
    if bytes.len() < head_len + body_len {
        return None;
    }
    let response = Response {
        status,
        headers,
        head: bytes[..head_len].to_vec(),
        body: bytes[head_len..head_len + body_len].to_vec(),
    };
    *bytes = &bytes[head_len + body_len..];
    Some(response)
}

/// Parse every response in a finished conversation; fails on anything left over.
fn all_responses(mut bytes: &[u8], head_only: &[bool]) -> Vec<Response> {
    let mut responses = Vec::new();
    for &head_only in head_only {
        match take_response(&mut bytes, head_only) {
            Some(response) => responses.push(response),
            None => panic!(
                "{} responses, then {:?}",
                responses.len(),
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    assert!(
        bytes.is_empty(),
        "after {} responses: {:?}",
        responses.len(),
        String::from_utf8_lossy(bytes)
    );
    responses
}

/// A client on a raw socket that reads responses one at a time.
struct Client {
    stream: TcpStream,
    /// Bytes read but not yet taken as a response.
    unread: Vec<u8>,
}

impl Client {
    fn new(server: &Server) -> Client {
        let stream = server.connect();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            unread: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read until one whole response is in, and return it.
    fn response(&mut self, head_only: bool) -> Response {
        loop {
            let mut rest = &self.unread[..];
            if let Some(response) = take_response(&mut rest, head_only) {
                self.unread.drain(..self.unread.len() - rest.len());
                return response;
            }
            let mut buf = [0u8; 16 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "end of stream in the middle of a response: {:?}",
                    String::from_utf8_lossy(&self.unread)
                ),
                Ok(n) => self.unread.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The server closes: end of stream, with nothing more before it. A reset fails.
    fn assert_closed(&mut self) {
        self.stream
            .read_to_end(&mut self.unread)
            .expect("an orderly close, not a reset");
        assert!(
            self.unread.is_empty(),
            "more bytes before the close: {:?}",
            String::from_utf8_lossy(&self.unread)
        );
    }

    /// Nothing arrives for `wait`, and the connection is still open.
    fn assert_silent_for(&mut self, wait: Duration) {
        assert!(self.unread.is_empty(), "{:?}", self.unread);
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }

    /// Read to the end of the stream; a reset instead of a FIN fails.
    fn read_to_close(mut self) -> Vec<u8> {
        self.stream
            .read_to_end(&mut self.unread)
            .expect("an orderly close, not a reset");
        self.unread
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    // Ten requests in one write; the HEADs and the last one's `Connection: close` mark the
    // order in the answers.
    let requests: [&[u8]; 10] = [
        GET,
        b"HEAD /1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        GET,
        GET,
        b"HEAD /5 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /6 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /7 HTTP/1.1\r\nHost: x\r\n\r\n",
        GET,
        GET_AND_CLOSE,
    ];
    client.send(&requests.concat());
    let is_head: Vec<bool> = requests.iter().map(|r| r.starts_with(b"HEAD")).collect();
    let responses = all_responses(&client.read_to_close(), &is_head);
    assert_eq!(responses.len(), 10);
    for (i, response) in responses.iter().enumerate() {
        if is_head[i] {
            assert_eq!(response.status, 200);
            assert_eq!(response.header("Content-Length"), PAGE.len().to_string());
            assert!(response.body.is_empty());
        } else {
            response.assert_is_the_page();
        }
        let closes = response.has_header("Connection");
        assert_eq!(closes, i == 9, "response {i}: {response:?}");
    }
    assert_eq!(responses[9].header("Connection"), "close");
}

#[test]
fn pipelined_answers_to_one_read_go_out_in_one_write() {
    // The loop narrates its syscalls at trace level: `write → n of m bytes`. A batch of
    // requests small enough to arrive in one read must be answered with exactly one write.
    let mut server = Server::start_with(&["--mode", "http"], |command| {
        command.env("RUST_LOG", "trace");
    });
    let mut client = Client::new(&server);
    client.send(&GET.repeat(16));
    let mut total = 0;
    for _ in 0..16 {
        let response = client.response(false);
        total += response.head.len() + response.body.len();
    }
    let one_write = format!("write → {total} of {total} bytes");
    assert!(
        server
            .wait_for_log(&one_write, Duration::from_secs(5))
            .is_some(),
        "no {one_write:?} in {:#?}",
        server.log
    );
}

/// Replace the Date value of every response in `bytes` with a fixed one, so that two
/// conversations a second apart compare equal.
fn without_dates(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let needle = b"\r\nDate: ";
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + found + needle.len();
        bytes[start..start + 29].copy_from_slice(b"Sun, 06 Nov 1994 08:49:37 GMT");
        at = start + 29;
    }
    bytes
}

#[test]
fn a_pipelined_batch_split_at_any_byte_is_answered_as_if_sent_whole() {
    let server = Server::start(&["--mode", "http"]);
    // Three requests: a plain GET, a Content-Length body, a chunked body with an extension
    // and a trailer, the last asking to close so that each conversation ends on its own.
    let batch: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        5;ext=1\r\nworld\r\n0\r\nTrailer: t\r\n\r\n";
    let conversation = |split: usize| {
        let mut client = Client::new(&server);
        client.send(&batch[..split]);
        // Long enough for the first part to be read on its own, most of the time.
        thread::sleep(Duration::from_millis(1));
        client.send(&batch[split..]);
        client.read_to_close()
    };
    let whole = conversation(batch.len());
    let responses = all_responses(&whole, &[false, false, false]);
    for response in &responses {
        response.assert_is_the_page();
    }
    assert_eq!(responses[2].header("Connection"), "close");
    for split in 1..batch.len() {
        let answer = conversation(split);
        assert!(
            without_dates(&answer) == without_dates(&whole),
            "split at byte {split} ({:?} | {:?}): {:?}",
            String::from_utf8_lossy(&batch[..split]),
            String::from_utf8_lossy(&batch[split..]),
            String::from_utf8_lossy(&answer)
        );
    }
}

#[test]
fn a_content_length_body_is_not_taken_for_the_next_request() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    // The body is itself a complete request: answering it would be request smuggling.
    let body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    client.send(&request);
    client.send(GET_AND_CLOSE);
    let responses = all_responses(&client.read_to_close(), &[false, false]);
    responses[0].assert_is_the_page();
    responses[1].assert_is_the_page();
}

#[test]
fn a_chunked_body_is_not_taken_for_the_next_request() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    // Chunks that spell a request, split where a lax parser might resync, then a trailer.
    client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\nGET /smuggled HT\r\n\
          13;name=value\r\nTP/1.1\r\nHost: x\r\n\r\n\r\n\
          0\r\nX-Trailer: GET / HTTP/1.1\r\n\r\n",
    );
    client.send(GET_AND_CLOSE);
    let responses = all_responses(&client.read_to_close(), &[false, false]);
    responses[0].assert_is_the_page();
    responses[1].assert_is_the_page();
}

#[test]
fn expect_100_continue_gets_100_continue_then_200_after_the_body() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(
        b"PUT /file HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    let interim = client.response(false);
    assert_eq!(interim.status, 100);
    assert_eq!(interim.head, b"HTTP/1.1 100 Continue\r\n\r\n");
    // The 200 waits for the body.
    client.assert_silent_for(Duration::from_millis(200));
    client.send(b"hello world");
    client.response(false).assert_is_the_page();
    // And the connection goes on.
    client.send(GET);
    client.response(false).assert_is_the_page();
}

#[test]
fn http_1_0_closes_after_the_response_by_default() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    let response = client.response(false);
    response.assert_is_the_page();
    assert_eq!(response.header("Connection"), "close");
    client.assert_closed();
}

#[test]
fn http_1_0_with_keep_alive_keeps_the_connection_and_says_so() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    for _ in 0..3 {
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.response(false);
        response.assert_is_the_page();
        assert_eq!(response.header("Connection"), "keep-alive");
    }
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.response(false).header("Connection"), "close");
    client.assert_closed();
}

#[test]
fn head_gets_the_headers_and_no_body_and_the_next_response_follows_directly() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(&[b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", GET].concat());
    let head = client.response(true);
    let get = client.response(false);
    get.assert_is_the_page();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // The same head as the GET's.
    assert_eq!(without_dates(&head.head), without_dates(&get.head));
    // What followed the HEAD's empty line was the next status line, not a body.
    assert!(client.unread.is_empty());
    client.send(GET_AND_CLOSE);
    client.response(false).assert_is_the_page();
    client.assert_closed();
}

#[test]
fn connection_close_gets_its_answer_with_connection_close_then_eof() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    // A request pipelined behind the close is never answered.
    client.send(&[GET_AND_CLOSE, GET].concat());
    let response = client.response(false);
    response.assert_is_the_page();
    assert_eq!(response.header("Connection"), "close");
    client.assert_closed();
}

// ----- Refusals: a status, Connection: close, then an orderly close -----

/// Send `request` with more bytes behind it, as a pipelining client would (more than the
/// server reads at once, and more again after it has answered), and check that the answer
/// is one complete `status` response with its own Content-Length and `Connection: close`,
/// that nothing behind the bad request is answered, and that the stream ends with a FIN,
/// not a reset. (Why the server drains what we sent before it closes is shown by
/// `a_slow_reader_refused_behind_a_pipeline_gets_every_answer_then_eof`.)
fn assert_refused(server: &Server, request: &[u8], status: u16, reason: &str) {
    let mut client = Client::new(server);
    // More than the server reads at once (64 KiB), in the same write.
    let mut first = request.to_vec();
    first.extend_from_slice(&GET.repeat(4000));
    client.send(&first);
    // And more again after the server has answered.
    thread::sleep(Duration::from_millis(50));
    let _ = client.stream.write_all(&GET.repeat(100));
    let what = String::from_utf8_lossy(&request[..request.len().min(80)]).to_string();
    let bytes = client.read_to_close();
    let mut rest = &bytes[..];
    let response = take_response(&mut rest, false)
        .unwrap_or_else(|| panic!("{what:?}: no whole response in {bytes:?}"));
    assert!(rest.is_empty(), "{what:?}: {rest:?} after the response");
    assert_eq!(response.status, status, "{what:?}: {response:?}");
    let status_line = format!("HTTP/1.1 {status} {reason}\r\n");
    assert!(
        response.head.starts_with(status_line.as_bytes()),
        "{response:?}"
    );
    assert_eq!(response.header("Connection"), "close", "{what:?}");
    assert_eq!(
        response.header("Content-Length"),
        response.body.len().to_string()
    );
    assert_eq!(response.body, format!("{status} {reason}\r\n").as_bytes());
    assert_imf_fixdate_near_now(response.header("Date"));
}

#[test]
fn a_slow_reader_refused_behind_a_pipeline_gets_every_answer_then_eof() {
    // The close that matters most: when the error response goes out, the answers before it
    // still sit in the server's send queue, waiting for a slow reader, and unread bytes sit
    // in its receive queue. close(2) now would send RST, which discards that send queue:
    // the client would lose answers it was owed. The server must shut down its side and
    // drain our bytes until we close.
    const PIPELINED: usize = 1000;
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    let mut batch = GET.repeat(PIPELINED);
    batch.extend_from_slice(b"GET / HTTP/9.9\r\n\r\n");
    batch.extend_from_slice(&GET.repeat(4000));
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        // The server stops reading once it has refused us: the tail may never be taken.
        thread::spawn(move || stream.write_all(&batch).is_ok())
    };
    // Let the answers pile up in the kernel's buffers, then read them slowly.
    thread::sleep(Duration::from_millis(200));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match client.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("after {} bytes: {e}", bytes.len()),
        }
        thread::sleep(Duration::from_millis(1));
    }
    let mut expect = vec![false; PIPELINED];
    expect.push(false);
    let responses = all_responses(&bytes, &expect);
    for response in &responses[..PIPELINED] {
        response.assert_is_the_page();
    }
    assert_eq!(responses[PIPELINED].status, 505);
    drop(client);
    let _ = writer.join();
}

#[test]
fn a_malformed_request_line_or_header_gets_400() {
    let server = Server::start(&["--mode", "http"]);
    for request in [
        &b"GET\r\n\r\n"[..],
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", // a TLS ClientHello
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    ] {
        assert_refused(&server, request, 400, "Bad Request");
    }
}

#[test]
fn content_length_together_with_transfer_encoding_gets_400() {
    let server = Server::start(&["--mode", "http"]);
    assert_refused(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
        400,
        "Bad Request",
    );
    assert_refused(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        400,
        "Bad Request",
    );
}

#[test]
fn an_http_1_1_request_without_host_gets_400() {
    // RFC 9112 §3.2: an HTTP/1.1 request must carry exactly one Host.
    let server = Server::start(&["--mode", "http"]);
    assert_refused(&server, b"GET / HTTP/1.1\r\n\r\n", 400, "Bad Request");
}

#[test]
fn an_invalid_content_length_gets_400() {
    let server = Server::start(&["--mode", "http"]);
    for length in [
        "abc",
        "-1",
        "+5",
        "5 5",
        "0x10",
        "5, 6",
        "",
        "99999999999999999999999",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        assert_refused(&server, request.as_bytes(), 400, "Bad Request");
    }
    // Two lines that disagree.
    assert_refused(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "Bad Request",
    );
}

/// A request head of exactly `len` bytes, padded with one long header.
fn head_of_len(len: usize) -> Vec<u8> {
    let start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let pad = len - start.len() - end.len();
    [&start[..], &vec![b'a'; pad], &end[..]].concat()
}

#[test]
fn a_head_over_8_kib_gets_431_and_one_of_8_kib_is_answered() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(&head_of_len(8192));
    client.response(false).assert_is_the_page();
    assert_refused(
        &server,
        &head_of_len(8193),
        431,
        "Request Header Fields Too Large",
    );
    assert_refused(
        &server,
        &head_of_len(100_000),
        431,
        "Request Header Fields Too Large",
    );
}

/// A request head with `lines` header lines, Host among them.
fn head_with_lines(lines: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 1..lines {
        head.extend_from_slice(format!("X-Line-{i}: {i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[test]
fn over_100_header_lines_get_431_and_100_are_answered() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(&head_with_lines(100));
    client.response(false).assert_is_the_page();
    assert_refused(
        &server,
        &head_with_lines(101),
        431,
        "Request Header Fields Too Large",
    );
}

#[test]
fn the_http2_preface_gets_505() {
    let server = Server::start(&["--mode", "http"]);
    assert_refused(
        &server,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        505,
        "HTTP Version Not Supported",
    );
}

#[test]
fn an_http_version_other_than_1_x_gets_505() {
    let server = Server::start(&["--mode", "http"]);
    for version in ["HTTP/3.0", "HTTP/2.0", "HTTP/0.9"] {
        let request = format!("GET / {version}\r\nHost: x\r\n\r\n");
        assert_refused(
            &server,
            request.as_bytes(),
            505,
            "HTTP Version Not Supported",
        );
    }
}

/// RFC 9110 §2.5: HTTP/1.2 is answered as 1.1.
#[test]
fn a_later_http_1_minor_version_is_answered_as_1_1() {
    let server = Server::start(&["--mode", "http"]);
    let mut client = Client::new(&server);
    client.send(b"GET / HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n");
    let bytes = client.read_to_close();
    assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"), "{bytes:?}");
}

/// CONNECT asks for a tunnel: any 2xx would say one is open (RFC 9110 §9.3.6).
#[test]
fn connect_is_refused_with_400() {
    let server = Server::start(&["--mode", "http"]);
    let request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    assert_refused(&server, request, 400, "Bad Request");
}

/// A TLS ClientHello sent to the plain-HTTP port is answered 400 at once: its first byte
/// cannot start a method, so there is nothing to wait for (the header timeout here is 30 s).
#[test]
fn a_tls_client_hello_gets_400_at_once_not_at_the_header_timeout() {
    let server = Server::start(&["--mode", "http", "--header-timeout", "30"]);
    let mut client = Client::new(&server);
    let started = Instant::now();
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    let bytes = client.read_to_close();
    let waited = started.elapsed();
    assert!(
        bytes.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{bytes:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
}

/// RFC 9112 §3: a request-target longer than we parse is 414.
#[test]
fn a_100_kb_target_gets_414() {
    let server = Server::start(&["--mode", "http"]);
    let request = [
        b"GET /".as_slice(),
        &vec![b'a'; 100 * 1024],
        b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    assert_refused(&server, &request, 414, "URI Too Long");
}

// ----- --body and --content-type -----

/// A file in Cargo's scratch directory for integration tests.
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_txt_body_file_is_served_byte_for_byte_as_text_plain() {
    // Not valid UTF-8 and with a bare LF: the bytes go out as they are.
    let bytes = b"plain text\nwith \xff\xfe bytes\r\n";
    let path = scratch_file("http-body.txt", bytes);
    let server = Server::start(&["--mode", "http", "--body", path.to_str().unwrap()]);
    let mut response = agent().get(url(&server, "/any/path")).call().unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(headers["content-length"], bytes.len().to_string());
    assert_eq!(response.body_mut().read_to_vec().unwrap(), bytes);
}

#[test]
fn content_type_overrides_the_type_of_the_body_file() {
    let path = scratch_file("http-body-typed.txt", b"{\"hello\": \"world\"}");
    let server = Server::start(&[
        "--mode",
        "http",
        "--body",
        path.to_str().unwrap(),
        "--content-type",
        "application/json",
    ]);
    let mut response = agent().get(url(&server, "/")).call().unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.body_mut().read_to_vec().unwrap(),
        b"{\"hello\": \"world\"}"
    );
}

// ----- Helpers -----

/// `date` is an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, and
/// within a few seconds of now.
fn assert_imf_fixdate_near_now(date: &str) {
    let parsed = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
    // httpdate also reads the obsolete RFC 850 and asctime forms; only IMF-fixdate
    // formats back to the very same text.
    assert_eq!(httpdate::fmt_http_date(parsed), date, "not IMF-fixdate");
    let now = SystemTime::now();
    let skew = now.duration_since(parsed).unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(5),
        "Date {date:?} is {skew:?} off"
    );
}
