//! HTTP/1.x: every request gets the canned page, framed exactly as RFC 9112 says.
//!
//! The path of one request through this file: [`HttpSession::on_input`] looks for the end of
//! a request head (the first empty line), hands the head to `httparse`, decides from its
//! headers how long the body is and whether the connection stays open, throws the body away
//! as it arrives, and then appends one prebuilt response from [`Responses`] to `out`. A
//! pipelined read holds several requests; they are answered in order, in one go.
//!
//! Nothing here is formatted per request. The responses are rendered once at start-up; only
//! their `Date` bytes are rewritten, in place, once a second. Answering a request is one
//! `extend_from_slice` into a buffer the loop reuses, so the steady state allocates nothing
//! (`tests/http_alloc.rs` counts).
//!
//! Bad input gets a status code, `Connection: close`, and then no more reading: a server
//! that guesses at broken framing is how request smuggling happens (RFC 9112 §6.3, §11.2).

mod body;
mod chunked;
mod grammar;
mod head;
#[cfg(test)]
mod tests;

pub use head::{
    parse_request_head, BodyLength, HeadScan, RequestHead, Version, MAX_HEADERS, MAX_HEAD_BYTES,
};

use super::responses::{ConnectionHeader, ErrorStatus, CONTINUE};
use super::{Context, Next, Outcome};
use body::{discard_body, BodyProgress};

/// The answer owed for a request whose body is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    connection: ConnectionHeader,
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
        let mut answered = false;
        loop {
            if self.state == State::Done {
                return Outcome::new(input.len(), Next::CloseAfterFlush).answered(answered);
            }
            let rest = &input[consumed..];
            let step = match &mut self.state {
                State::Head(_) if out.len() >= ctx.out_budget => {
                    // Backpressure: the peer has not read what we wrote. Leave the rest of
                    // the pipeline unread until it does.
                    return Outcome::new(consumed, Next::Continue).answered(answered);
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
                Step::NeedMore => {
                    return Outcome::new(consumed, Next::Continue).answered(answered);
                }
                Step::Fail(status) => {
                    self.fail(status, out, ctx);
                    return Outcome::new(input.len(), Next::CloseAfterFlush).answered(answered);
                }
            }
            if let State::Body {
                body: BodyProgress::Finished,
                reply,
            } = self.state
            {
                self.answer(reply, out, ctx);
                answered = true;
            }
        }
    }

    /// A head arrived: decide the answer, and answer now or once the body is gone.
    fn on_head(&mut self, head: &RequestHead, out: &mut Vec<u8>) -> Step {
        // Any 2xx to CONNECT means "tunnel established" (RFC 9110 §9.3.6): a client or a
        // proxy would stop parsing HTTP and take our page for the tunnel's first bytes. We
        // are no proxy: refuse it, as nginx does.
        if head.method == "CONNECT" {
            return Step::Fail(ErrorStatus::BadRequest);
        }
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
            true => ConnectionHeader::Close,
            false => reply.connection,
        };
        out.extend_from_slice(ctx.responses.ok(connection, reply.head_only));
        ctx.stats.requests += 1;
        self.state = match connection {
            ConnectionHeader::Close => State::Done,
            _ => State::Head(HeadScan::default()),
        };
    }

    /// Answer an error, and read no more: we no longer know where a next request starts.
    fn fail(&mut self, status: ErrorStatus, out: &mut Vec<u8>, ctx: &mut Context) {
        log::debug!("{}: http: answering {}", ctx.peer, status.status_line());
        out.extend_from_slice(ctx.responses.error(status));
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
