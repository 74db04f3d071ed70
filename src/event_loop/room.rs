//! The ws chat room, across loops.
//!
//! A chat message must reach every WebSocket client, but a session sees only its own
//! connection. So it leaves the encoded frame in the loop's outbox; once the round's events
//! are handled, the loop posts the frames to the other loops' inboxes and delivers them to
//! its own clients. A server's frames are not masked (RFC 6455 §5.1), so one encoding
//! serves every recipient, and the loops pass each other a reference to it.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use log::warn;
use mio::{Registry, Token, Waker};

use super::token::INBOX;
use super::EventLoop;

/// A frame for the room, and the connection of this loop that sent it, if one did: that one
/// wrote its own copy at once, in order with the rest of its output (see `protocol::ws`),
/// so the room skips it. A frame from another loop has no sender here.
#[derive(Debug)]
pub struct Post {
    pub from: Option<Token>,
    pub frame: Arc<[u8]>,
}

/// What every loop of the process shares. Touched on accept and close, and once per
/// broadcast; never per request.
#[derive(Debug, Default)]
pub struct Shared {
    /// Connections open across all loops, for --max-conns.
    pub open_connections: AtomicUsize,
    /// Every loop's inbox, for broadcasts to reach the WebSocket clients of all loops. Only
    /// ws mode with more than one loop registers any.
    inboxes: Mutex<Vec<Arc<Inbox>>>,
}

/// Where the other loops leave a loop's share of their broadcasts, and the eventfd
/// (`mio::Waker`) they poke so that its `epoll_wait` returns to deliver them.
#[derive(Debug)]
pub struct Inbox {
    frames: Mutex<Vec<Post>>,
    waker: Waker,
}

impl Inbox {
    /// Make this loop's inbox and let the other loops reach it.
    pub fn open(registry: &Registry, shared: &Shared) -> std::io::Result<Arc<Inbox>> {
        let inbox = Arc::new(Inbox {
            frames: Mutex::new(Vec::new()),
            waker: Waker::new(registry, INBOX)?,
        });
        lock(&shared.inboxes).push(Arc::clone(&inbox));
        Ok(inbox)
    }
}

impl EventLoop {
    /// Deliver this round's broadcasts here, and post them to every other loop.
    pub(super) fn broadcast(&mut self, now: Instant) {
        let frames = std::mem::take(&mut self.scratch.outbox);
        if let Some(own) = &self.inbox {
            for inbox in lock(&self.shared.inboxes).iter() {
                if Arc::ptr_eq(inbox, own) {
                    continue;
                }
                // The senders are all on this loop: nobody there to skip.
                lock(&inbox.frames).extend(frames.iter().map(|post| Post {
                    from: None,
                    frame: Arc::clone(&post.frame),
                }));
                // An eventfd write: the other loop's epoll_wait returns with INBOX.
                if let Err(e) = inbox.waker.wake() {
                    warn!("could not wake another loop for a broadcast: {e}");
                }
            }
        }
        self.deliver(&frames, now);
    }

    /// Another loop posted broadcasts for our clients.
    pub(super) fn on_inbox(&mut self, now: Instant) {
        let frames = match &self.inbox {
            Some(inbox) => std::mem::take(&mut *lock(&inbox.frames)),
            None => return,
        };
        self.deliver(&frames, now);
    }

    /// Queue `frames` on every open connection whose session takes them, and write them
    /// now: "write first" here too. A client too far behind is closed by its session (1008)
    /// rather than buffered for; nobody is waited for.
    fn deliver(&mut self, frames: &[Post], now: Instant) {
        for key in self.connection_keys() {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.take_broadcast(frames, &mut self.scratch) {
                self.drive(key, now);
            }
        }
    }
}

/// Lock a mutex of the broadcast plumbing. If another loop panicked while holding it, what
/// it guards is still a list of whole frames: carry on with it rather than panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
