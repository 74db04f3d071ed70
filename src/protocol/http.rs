//! HTTP/1.x: the canned page. (Interface stub: the real framing lands in its own commit.)

use std::time::SystemTime;

use super::{Context, Next, Outcome};

/// The seed notes' page, with the CRLF line endings HTML on the wire conventionally has.
pub const DEFAULT_BODY: &[u8] =
    b"<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n";
pub const DEFAULT_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The responses this server can send, built once at start-up. Only their Date bytes change,
/// once a second.
#[derive(Debug)]
pub struct CannedPage {
    ok: Vec<u8>,
}

impl CannedPage {
    pub fn new(body: &[u8], content_type: &str) -> CannedPage {
        let mut ok = format!(
            "HTTP/1.1 200 OK\r\nServer: sockloop\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        ok.extend_from_slice(body);
        CannedPage { ok }
    }

    /// Re-render the Date header of every response. Called at most once a second.
    pub fn set_date(&mut self, _now: SystemTime) {}

    /// `503 Service Unavailable` with `Connection: close`, for a connection over --max-conns.
    pub fn unavailable(&self) -> &[u8] {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    }
}

#[derive(Debug, Default)]
pub struct HttpSession {}

impl HttpSession {
    pub fn new() -> HttpSession {
        HttpSession {}
    }

    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &mut Context) -> Outcome {
        match input.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => {
                out.extend_from_slice(&ctx.page.ok);
                ctx.stats.requests += 1;
                Outcome::new(end + 4, Next::Continue)
            }
            None => Outcome::new(0, Next::Continue),
        }
    }

    pub fn on_peer_closed(&mut self, _unconsumed: usize) -> Next {
        Next::CloseAfterFlush
    }

    pub fn in_request_head(&self) -> bool {
        true
    }

    pub fn on_header_timeout(&mut self, _out: &mut Vec<u8>, _ctx: &mut Context) -> Next {
        Next::CloseAfterFlush
    }

    pub fn on_shutdown(&mut self, _unconsumed: usize) -> Next {
        Next::CloseAfterFlush
    }
}
