//! The ws chat room, across loops, and the bound on its memory.
//!
//! A chat message must reach every WebSocket client, but a session sees only its own
//! connection. So it leaves the encoded frame in the loop's outbox; once the round's events
//! are handled, the loop takes each frame into the room (`broadcast::Frame`: counted in the
//! room's memory, given its place in the room's history), posts it to the other loops'
//! inboxes and delivers it to its own clients. A server's frames are not masked (RFC 6455
//! §5.1), so one encoding serves every recipient: the loops pass each other a reference to
//! it, and each recipient's output queue holds one, never a copy.
//!
//! # The bound
//! A client that stops reading is closed (1008) once we hold a message's worth for it
//! (`protocol::ws::MAX_UNREAD`), but that bound is per client: 10,000 clients that stop at
//! different moments each hold different messages. So the room has a bound of its own,
//! `--room-bytes`, on what it holds over all loops: every frame once while anyone still
//! has to send it, and a slot per recipient (`broadcast::RoomMemory`). After each delivery,
//! if the room is over it, the clients furthest behind are dropped, one group at a time,
//! until it is not:
//! - "Furthest behind" is the place, in the room's history, of the oldest frame a client has
//!   not begun to send: that frame and every later one are what it holds. Dropping the
//!   clients with the oldest such frame frees it (and any others only they hold), and
//!   nobody else's.
//! - A dropped client lets go of every frame it has not begun, and gets its close frame
//!   (1008) after the one it is in the middle of, which must be finished or the peer's
//!   stream of frames would break off inside one. That frame stays counted, but as pinned
//!   (`RoomMemory::pinned`): dropping others would not free it, so it does not make the room
//!   drop anyone else. The usual Flushing and Lingering path ends the connection, and the
//!   linger timeout ends it if the peer never reads again.
//! - But clients that stop at different moments are each in a different frame, and the
//!   linger timeout lets each keep it for 2 s: a thousand clients that stop one after
//!   another, 80 a second, while 1 MiB messages go by, held 160 of them at once. So while
//!   the room holds more than its bound even counting those, the dropped clients stuck in
//!   the oldest of them are closed at once rather than at their linger timeout. They have
//!   not read for a while (a client that reads finishes its frame and gets the close frame
//!   behind it in a moment), and the linger timeout would close them without their close
//!   frame all the same.
//! - Each loop sees only its own clients, and a frame is freed only when the clients of
//!   every loop have let it go. So each loop publishes the place of its own furthest-behind
//!   client (`Inbox::oldest`), and drops its clients only while they are at least as far
//!   behind as any other loop's: the others drop theirs when their turn comes, at their next
//!   delivery, and every loop delivers every message.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use log::{info, warn};
use mio::{Registry, Waker};

use super::io::Turn;
use super::token::INBOX;
use super::{EventLoop, Exit};
use crate::broadcast::{Frame, Post, RoomMemory};
use crate::connection::{Phase, MAX_PENDING_OUTPUT};

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
    frames: Mutex<Vec<Post>>,
    waker: Waker,
    /// The room offset of the oldest frame this loop's clients have not begun to send
    /// (`u64::MAX`: none), as of its last delivery: how far behind its furthest-behind
    /// client is, for the other loops to compare with theirs.
    oldest: AtomicU64,
}

impl Inbox {
    /// Make this loop's inbox and let the other loops reach it.
    pub fn open(registry: &Registry, shared: &Shared) -> std::io::Result<Arc<Inbox>> {
        let inbox = Arc::new(Inbox {
            frames: Mutex::new(Vec::new()),
            waker: Waker::new(registry, INBOX)?,
            oldest: AtomicU64::new(u64::MAX),
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
        let frames: Vec<Post> = self
            .scratch
            .outbox
            .drain(..)
            .map(|said| Post {
                from: Some(said.from),
                frame: Frame::new(said.frame, room),
            })
            .collect();
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
    /// rather than buffered for; nobody is waited for. Then hold the room to its bound.
    fn deliver(&mut self, frames: &[Post], now: Instant) {
        for key in self.connection_keys() {
            if self.queue_frames(key, frames, now) {
                self.drive(key, now);
            }
        }
        self.hold_the_room_to_its_bound(now);
    }

    /// Queue `frames` for one connection; returns whether it has something new to write.
    fn queue_frames(&mut self, key: usize, frames: &[Post], now: Instant) -> bool {
        let mut queued = false;
        for post in frames {
            let Some(conn) = self.connections.get_mut(key) else {
                return queued;
            };
            // The sender wrote its own copy at once, in order with the rest of its output
            // (`protocol::ws`): skip it.
            if post.from == Some(conn.token()) {
                continue;
            }
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
            let Some(conn) = self.connections.get_mut(key) else {
                return queued;
            };
            if !conn.take_broadcast(&post.frame, &mut self.scratch) {
                break;
            }
            queued = true;
        }
        queued
    }

    /// Over `--room-bytes`, drop the clients furthest behind, group by group, until the
    /// room is back under it or another loop's clients are further behind (see the module
    /// docs). Then say how far behind ours are, for the other loops.
    fn hold_the_room_to_its_bound(&mut self, now: Instant) {
        let bound = self.config.room_bytes;
        if self.shared.room.over(bound) {
            let mut behind: Vec<(u64, usize)> = self
                .connections
                .iter()
                .filter_map(|(key, conn)| Some((conn.oldest_unstarted_frame()?, key)))
                .collect();
            behind.sort_unstable();
            let elsewhere = self.oldest_elsewhere();
            for (offset, key) in behind {
                if !self.shared.room.over(bound) || offset > elsewhere {
                    break;
                }
                self.drop_from_room(key, offset, now);
            }
        }
        if self.shared.room.held() > bound && self.shared.room.pinned() > 0 {
            self.close_the_stuck(bound, now);
        }
        self.publish_oldest();
    }

    /// The room holds more than its bound even counting the frames dropped clients are
    /// stuck in: close those clients, the furthest behind first, until it does not (see the
    /// module docs). Other loops' clients may be stuck in the same frames; they are closed
    /// when those loops come here, and these would be at their linger timeout anyway.
    fn close_the_stuck(&mut self, bound: usize, now: Instant) {
        let mut stuck: Vec<(u64, usize)> = self
            .connections
            .iter()
            .filter_map(|(key, conn)| Some((conn.pinned_frame()?, key)))
            .collect();
        stuck.sort_unstable();
        for (_, key) in stuck {
            if self.shared.room.held() <= bound {
                break;
            }
            if let Some(conn) = self.connections.get(key) {
                info!(
                    "{}: dropped from the room, and still in the middle of a frame while the \
                     room holds {} B: closed now rather than at the linger timeout",
                    conn.peer(),
                    self.shared.room.held()
                );
            }
            self.close(key, Exit::RoomFull, now);
        }
    }

    /// The room is over its bound and this client is the furthest behind.
    fn drop_from_room(&mut self, key: usize, offset: u64, now: Instant) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        // One closing already (answering a close frame, say) only lets go of its frames: it
        // gets no 1008, and is not counted as dropped.
        let was_open = conn.phase() == Phase::Open;
        let room = &self.shared.room;
        let behind = room.history().saturating_sub(offset);
        let frames = conn.leave_room(&mut self.scratch);
        if was_open {
            info!(
                "{}: the room holds {} B, over --room-bytes {}; furthest behind ({behind} B \
                 of the room's messages unsent): {frames} frames let go, closing it with 1008",
                conn.peer(),
                room.held(),
                self.config.room_bytes,
            );
            self.scratch.stats.room_drops += 1;
        }
        self.drive(key, now);
    }

    /// How far behind the other loops' furthest-behind clients are, as they last said.
    fn oldest_elsewhere(&self) -> u64 {
        let Some(own) = &self.inbox else {
            return u64::MAX;
        };
        lock(&self.shared.inboxes)
            .iter()
            .filter(|inbox| !Arc::ptr_eq(inbox, own))
            .map(|inbox| inbox.oldest.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Tell the other loops how far behind this loop's furthest-behind client is.
    fn publish_oldest(&self) {
        let Some(own) = &self.inbox else {
            return;
        };
        let oldest = self
            .connections
            .iter()
            .filter_map(|(_, conn)| conn.oldest_unstarted_frame())
            .min()
            .unwrap_or(u64::MAX);
        own.oldest.store(oldest, Ordering::Relaxed);
    }
}

/// Lock a mutex of the broadcast plumbing. If another loop panicked while holding it, what
/// it guards is still a list of whole frames: carry on with it rather than panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
