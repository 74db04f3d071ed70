//! A message for the whole room: one frame in memory however many connections send it, and
//! the room's count of the memory it holds.
//!
//! A text message in ws mode goes to every client, and its frame is the same bytes for each
//! of them: a server's frames are not masked (RFC 6455 §5.1). So it is encoded once, and
//! every connection that has yet to send it keeps a reference to it in its output queue
//! (`output`, a `Slot`), with its own position in it. The frame is freed when the last of
//! them has written it or let it go.
//!
//! [`RoomMemory`], one for the whole process, counts what the room holds: each frame's bytes
//! once, from the moment a loop posts it until its last reference goes, whichever loops its
//! recipients are on; and each recipient's slot for it. `--room-bytes` bounds that count
//! (`event_loop::room` says who is dropped when it is over).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use mio::Token;

/// What the room holds, across loops. The counters are only read to compare with the bound
/// and to report; nothing else is published through them, so `Relaxed` is enough.
#[derive(Debug, Default)]
pub struct RoomMemory {
    /// Bytes of every frame alive, each counted once, plus each recipient's slot.
    held: AtomicUsize,
    /// The part of `held` that is frames a dropped client is still in the middle of: they
    /// must be finished (or the connection end) before they can go, so dropping more clients
    /// would not free them. The linger timeout ends those clients if they never read.
    pinned: AtomicUsize,
    /// Bytes ever broadcast. A frame's offset is this count when it was posted: its place in
    /// the room's history, so that "how far behind" compares across loops.
    history: AtomicU64,
}

impl RoomMemory {
    /// Bytes the room holds (frames once, and slots).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Of those, bytes that dropping clients cannot free (see `pinned`).
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Whether the room holds more than `bound` bytes that dropping its slowest clients
    /// could free.
    pub fn over(&self, bound: usize) -> bool {
        self.held().saturating_sub(self.pinned()) > bound
    }

    /// Bytes broadcast so far: the offset the next frame gets.
    pub fn history(&self) -> u64 {
        self.history.load(Ordering::Relaxed)
    }

    pub(crate) fn charge(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A frame a session of this loop asked to broadcast, and its sender's token: the sender
/// wrote its own copy at once, in order with the rest of its output (`protocol::ws`), so the
/// room must skip it.
#[derive(Debug)]
pub struct Said {
    pub from: Token,
    pub frame: Arc<[u8]>,
}

/// A frame on its way to the room's clients: counted once (`Frame`), with the sender's token
/// when the sender is a client of this loop. From another loop there is no one here to skip.
#[derive(Debug)]
pub struct Post {
    pub from: Option<Token>,
    pub frame: Arc<Frame>,
}

/// One encoded message for the room, shared by every connection that has yet to send it.
pub struct Frame {
    bytes: Arc<[u8]>,
    /// The room's history before this frame, in bytes (see `RoomMemory::history`).
    offset: u64,
    /// How many dropped clients are stuck in the middle of it (see `RoomMemory::pinned`).
    pins: AtomicUsize,
    room: Arc<RoomMemory>,
}

impl Frame {
    /// Take `bytes`, as a session left them in the outbox, into the room: counted from now
    /// until the last reference goes.
    pub fn new(bytes: Arc<[u8]>, room: &Arc<RoomMemory>) -> Arc<Frame> {
        let len = bytes.len();
        room.charge(len);
        let offset = room.history.fetch_add(len as u64, Ordering::Relaxed);
        Arc::new(Frame {
            bytes,
            offset,
            pins: AtomicUsize::new(0),
            room: Arc::clone(room),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Where the frame starts in the room's history.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn room(&self) -> &RoomMemory {
        &self.room
    }

    /// A dropped client is in the middle of this frame: it cannot go until that client has
    /// finished it or is closed. Counted once however many are.
    pub(crate) fn pin(&self) {
        if self.pins.fetch_add(1, Ordering::Relaxed) == 0 {
            self.room.pinned.fetch_add(self.len(), Ordering::Relaxed);
        }
    }

    pub(crate) fn unpin(&self) {
        if self.pins.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.room.pinned.fetch_sub(self.len(), Ordering::Relaxed);
        }
    }
}

impl Drop for Frame {
    /// The last reference is gone: the room no longer holds these bytes. (A pinning slot
    /// holds a reference, so no pin is left by now.)
    fn drop(&mut self) {
        self.room.release(self.len());
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Frame({} B at {})", self.len(), self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_counted_once_while_any_reference_holds_it() {
        let room = Arc::new(RoomMemory::default());
        let frame = Frame::new(Arc::from(vec![7u8; 1000]), &room);
        let copies: Vec<Arc<Frame>> = (0..100).map(|_| Arc::clone(&frame)).collect();
        assert_eq!(room.held(), 1000);
        drop(frame);
        assert_eq!(room.held(), 1000, "still held by the copies");
        drop(copies);
        assert_eq!(room.held(), 0);
    }

    #[test]
    fn frames_take_their_place_in_the_rooms_history() {
        let room = Arc::new(RoomMemory::default());
        let first = Frame::new(Arc::from(vec![0u8; 10]), &room);
        let second = Frame::new(Arc::from(vec![0u8; 5]), &room);
        assert_eq!(
            (first.offset(), second.offset(), room.history()),
            (0, 10, 15)
        );
    }

    #[test]
    fn pinned_bytes_count_once_and_are_not_over_the_bound() {
        let room = Arc::new(RoomMemory::default());
        let frame = Frame::new(Arc::from(vec![0u8; 100]), &room);
        assert!(room.over(99));
        frame.pin();
        frame.pin();
        assert_eq!(room.pinned(), 100);
        assert!(
            !room.over(99),
            "dropping clients cannot free a pinned frame"
        );
        frame.unpin();
        assert_eq!(room.pinned(), 100);
        frame.unpin();
        assert_eq!(room.pinned(), 0);
    }
}
