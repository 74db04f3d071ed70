//! The ws chat room, across loops.
//!
//! A chat message must reach every WebSocket client, but a session sees only its own
//! connection. So it leaves the encoded frame in the loop's outbox; once the round's events
//! are handled, the loop takes each frame into the room (`broadcast::Frame`: counted in the
//! room's memory, given its place in the room's history), posts it to the other loops'
//! inboxes and delivers it to its own clients. A server's frames are not masked (RFC 6455
//! §5.1), so one encoding serves every recipient: the loops pass each other a reference to
//! it, and each recipient's output queue holds one, never a copy.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use log::warn;
use mio::{Registry, Waker};

use super::io::Turn;
use super::token::INBOX;
use super::EventLoop;
use crate::broadcast::{Frame, RoomMemory};
use crate::connection::MAX_PENDING_OUTPUT;

/// What every loop of the process shares. Touched on accept and close, and once per
/// broadcast; never per request.
#[derive(Debug, Default)]
pub struct Shared {
    /// Connections open across all loops, for --max-conns.
    pub open_connections: AtomicUsize,
    /// What the chat room holds, over all loops (ws mode).
    pub room: Arc<RoomMemory>,
    /// Every loop's inbox, for broadcasts to reach the WebSocket clients of all loops. Only
    /// ws mode with more than one loop registers any.
    inboxes: Mutex<Vec<Arc<Inbox>>>,
}

/// Where the other loops leave a loop's share of their broadcasts, and the eventfd
/// (`mio::Waker`) they poke so that its `epoll_wait` returns to deliver them.
#[derive(Debug)]
pub struct Inbox {
    frames: Mutex<Vec<Arc<Frame>>>,
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
    /// Take this round's broadcasts into the room, post them to every other loop, and
    /// deliver them here.
    pub(super) fn broadcast(&mut self, now: Instant) {
        let room = &self.shared.room;
        let frames: Vec<Arc<Frame>> = self
            .scratch
            .outbox
            .drain(..)
            .map(|bytes| Frame::new(bytes, room))
            .collect();
        if let Some(own) = &self.inbox {
            for inbox in lock(&self.shared.inboxes).iter() {
                if Arc::ptr_eq(inbox, own) {
                    continue;
                }
                lock(&inbox.frames).extend(frames.iter().cloned());
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
    fn deliver(&mut self, frames: &[Arc<Frame>], now: Instant) {
        for key in self.connection_keys() {
            if self.queue_frames(key, frames, now) {
                self.drive(key, now);
            }
        }
    }

    /// Queue `frames` for one connection; returns whether it has something new to write.
    fn queue_frames(&mut self, key: usize, frames: &[Arc<Frame>], now: Instant) -> bool {
        let mut queued = false;
        for frame in frames {
            let Some(conn) = self.connections.get_mut(key) else {
                return false;
            };
            // Several frames in one round (a burst, or a 1 MiB message or two): before
            // more are queued behind a backlog, let the kernel take what it will, so that
            // a client that reads is not taken for one that doesn't.
            if conn.unsent() >= MAX_PENDING_OUTPUT {
                let written = Turn {
                    conn,
                    scratch: &mut self.scratch,
                }
                .write_now();
                if let Err(exit) = written {
                    self.close(key, exit, now);
                    return false;
                }
            }
            let conn = &mut self.connections[key];
            if !conn.take_broadcast(frame, &mut self.scratch) {
                break;
            }
            queued = true;
        }
        queued
    }
}

/// Lock a mutex of the broadcast plumbing. If another loop panicked while holding it, what
/// it guards is still a list of whole frames: carry on with it rather than panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
