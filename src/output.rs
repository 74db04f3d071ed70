//! What a connection owes its peer: the bytes the kernel has not taken yet, in order.
//!
//! Most of the time this is nothing at all: the answer went out in one `write(2)` straight
//! from the loop's output buffer, and a connection that owes nothing holds no memory for it
//! (one word in its slab entry). When the kernel leaves us bytes in hand, they queue here as
//! chunks of two kinds:
//! - **own bytes**: the unsent tail of an answer, a pong, a close frame; in a buffer lent by
//!   the pool (`buffers`), copied there once;
//! - **shared frames**: a broadcast of the chat room, never copied: the queue keeps a
//!   reference to the one frame every recipient shares (`broadcast::Frame`), and its own
//!   position in it.
//!
//! The loop writes the queue with `sendmsg(2)` and an array of iovecs, one per chunk (see
//! [`Output::gather`]). The kernel takes them in array order, each whole before the next,
//! but may stop anywhere (writev(2): "writes out the entire contents of iov[0] before
//! proceeding to iov[1]", and a call may transfer fewer bytes than requested): at a chunk
//! boundary or in the middle of one. So the queue keeps one position, in its front chunk,
//! and [`Output::advance`] moves it by whatever the kernel says it took.
//!
//! A WebSocket peer must receive each frame whole, so a frame the kernel has begun is never
//! given up: [`Output::drop_unstarted_frames`], used when the room drops a client, lets go
//! only of the frames not begun.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use crate::broadcast::Frame;
use crate::buffers::BufferPool;

/// What a recipient's hold on a shared frame costs the room: its place in the queue. Counted
/// with the frames, so that a flood of tiny messages cannot make the slots the real cost.
pub const SLOT_BYTES: usize = std::mem::size_of::<Chunk>();

/// The bytes a connection owes, oldest first. `None` while it owes nothing: a queue is
/// made on the first byte the kernel refuses and freed with the last one it takes.
#[derive(Debug, Default)]
pub struct Output {
    queue: Option<Box<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Never empty, and no chunk is empty.
    chunks: VecDeque<Chunk>,
    /// How much of the front chunk the kernel has taken: always less than its length.
    front_sent: usize,
    /// Bytes not taken yet, over every chunk.
    unsent: usize,
    /// How many chunks are shared frames.
    slots: usize,
}

#[derive(Debug)]
enum Chunk {
    Own(Vec<u8>),
    Shared(Slot),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(bytes) => bytes,
            Chunk::Shared(slot) => slot.frame.bytes(),
        }
    }
}

/// One recipient's reference to a shared frame. It charges the room for its place while it
/// lives; `pinned` when its connection was dropped in the middle of the frame.
#[derive(Debug)]
struct Slot {
    frame: Arc<Frame>,
    pinned: bool,
}

impl Slot {
    fn new(frame: &Arc<Frame>) -> Slot {
        frame.room().charge(SLOT_BYTES);
        Slot {
            frame: Arc::clone(frame),
            pinned: false,
        }
    }

    fn pin(&mut self) {
        if !self.pinned {
            self.pinned = true;
            self.frame.pin();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.pinned {
            self.frame.unpin();
        }
        self.frame.room().release(SLOT_BYTES);
    }
}

impl Output {
    /// Whether nothing is owed. The hot path asks this of every answer: one compare.
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    /// Bytes the kernel has not taken yet.
    pub fn unsent(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.unsent)
    }

    /// What we hold for this peer: the bytes it has not been sent, and a slot for each shared
    /// frame among them. A client this far behind is closed rather than waited for.
    pub fn held(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.unsent + q.slots * SLOT_BYTES)
    }

    /// Owe `bytes` too, after everything owed already: copied into a buffer of our own.
    /// Usually there are none (the kernel took the whole answer): that check is inlined
    /// where it is asked, the rest is not.
    #[inline]
    pub fn push_bytes(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        if !bytes.is_empty() {
            self.append(bytes, pool);
        }
    }

    fn append(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        let queue = self.queue.get_or_insert_with(Box::default);
        queue.unsent += bytes.len();
        let only_chunk = queue.chunks.len() == 1;
        if let Some(Chunk::Own(last)) = queue.chunks.back_mut() {
            if only_chunk && queue.front_sent > 0 {
                // Drop the bytes already sent before adding more, so that a buffer that never
                // quite empties (echo to a slow reader) does not grow for ever.
                last.drain(..queue.front_sent);
                queue.front_sent = 0;
            }
            last.extend_from_slice(bytes);
            return;
        }
        let mut own = pool.take();
        own.extend_from_slice(bytes);
        queue.chunks.push_back(Chunk::Own(own));
    }

    /// Owe the bytes in `buffer`, a buffer from the pool, without copying them: splice's
    /// leftovers arrive this way.
    pub fn push_buffer(&mut self, mut buffer: Vec<u8>, pool: &mut BufferPool) {
        if self.queue.is_some() {
            self.push_bytes(&buffer, pool);
            pool.give_back(&mut buffer);
            return;
        }
        if buffer.is_empty() {
            pool.give_back(&mut buffer);
            return;
        }
        let queue = self.queue.insert(Box::default());
        queue.unsent = buffer.len();
        queue.chunks.push_back(Chunk::Own(buffer));
    }

    /// Owe `frame` too, shared: no copy, one slot.
    pub fn push_frame(&mut self, frame: &Arc<Frame>) {
        if frame.is_empty() {
            return;
        }
        let queue = self.queue.get_or_insert_with(Box::default);
        queue.unsent += frame.len();
        queue.slots += 1;
        queue.chunks.push_back(Chunk::Shared(Slot::new(frame)));
    }

    /// Fill `slices` with the unsent bytes, in order, one iovec per chunk, as many chunks as
    /// fit; returns how many it filled. The first starts where the kernel stopped last time.
    pub fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let Some(queue) = &self.queue else {
            return 0;
        };
        let mut skip = queue.front_sent;
        let mut filled = 0;
        for (slice, chunk) in slices.iter_mut().zip(&queue.chunks) {
            *slice = IoSlice::new(&chunk.bytes()[skip..]);
            skip = 0;
            filled += 1;
        }
        filled
    }

    /// The kernel took `n` bytes: the chunks it finished go (own buffers back to the pool,
    /// shared frames let go), and the front one keeps its new position. Returns how many of
    /// the `n` bytes lay beyond the queue (the caller's answer, gathered after it). The
    /// queue itself goes once it is empty: a connection that owes nothing holds nothing.
    pub fn advance(&mut self, n: usize, pool: &mut BufferPool) -> usize {
        let Some(queue) = &mut self.queue else {
            return n;
        };
        let mut left = n;
        while let Some(front) = queue.chunks.front_mut() {
            let rest = front.bytes().len() - queue.front_sent;
            if left < rest {
                // The kernel stopped inside this chunk.
                queue.front_sent += left;
                queue.unsent -= left;
                return 0;
            }
            left -= rest;
            queue.unsent -= rest;
            queue.front_sent = 0;
            match queue.chunks.pop_front() {
                Some(Chunk::Own(mut bytes)) => pool.give_back(&mut bytes),
                Some(Chunk::Shared(_)) => queue.slots -= 1,
                None => {}
            }
        }
        self.queue = None;
        left
    }

    /// The room is done with this client: let go of every shared frame the kernel has not
    /// begun. The one it is in the middle of, if any, stays and is pinned: the peer must get
    /// it whole, or its stream of frames would break off in the middle of one. Own bytes
    /// stay (a pong, a close frame already queued). Returns how many frames were dropped.
    pub fn drop_unstarted_frames(&mut self, pool: &mut BufferPool) -> usize {
        let Some(queue) = &mut self.queue else {
            return 0;
        };
        let begun = queue.front_sent > 0;
        if begun {
            if let Some(Chunk::Shared(slot)) = queue.chunks.front_mut() {
                slot.pin();
            }
        }
        let before = queue.chunks.len();
        let mut index = 0;
        queue.chunks.retain(|chunk| {
            let keep = (index == 0 && begun) || matches!(chunk, Chunk::Own(_));
            index += 1;
            keep
        });
        let dropped = before - queue.chunks.len();
        if queue.chunks.is_empty() {
            self.release(pool);
            return dropped;
        }
        queue.slots -= dropped;
        let total: usize = queue.chunks.iter().map(|c| c.bytes().len()).sum();
        queue.unsent = total - queue.front_sent;
        dropped
    }

    /// The room offset of the oldest shared frame not begun: how far behind the room this
    /// connection is, or `None` if dropping it would free no frame.
    pub fn oldest_unstarted_frame(&self) -> Option<u64> {
        let queue = self.queue.as_ref()?;
        let skip = usize::from(queue.front_sent > 0);
        queue
            .chunks
            .iter()
            .skip(skip)
            .find_map(|chunk| match chunk {
                Chunk::Shared(slot) => Some(slot.frame.offset()),
                Chunk::Own(_) => None,
            })
    }

    /// The room offset of the frame this connection was dropped in the middle of, if it is
    /// still there.
    pub fn pinned_frame(&self) -> Option<u64> {
        match self.queue.as_ref()?.chunks.front()? {
            Chunk::Shared(slot) if slot.pinned => Some(slot.frame.offset()),
            _ => None,
        }
    }

    /// The connection is closing: own buffers back to the pool, shared frames let go.
    pub fn release(&mut self, pool: &mut BufferPool) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        for chunk in queue.chunks {
            if let Chunk::Own(mut bytes) = chunk {
                pool.give_back(&mut bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::RoomMemory;

    fn frame(room: &Arc<RoomMemory>, byte: u8, len: usize) -> Arc<Frame> {
        Frame::new(Arc::from(vec![byte; len]), room)
    }

    /// What the peer would read if the kernel took `n` bytes per call.
    fn drain(output: &mut Output, n: usize, pool: &mut BufferPool) -> Vec<u8> {
        let mut wire = Vec::new();
        while !output.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = output.gather(&mut slices);
            let mut take = n;
            for slice in &slices[..count] {
                let k = take.min(slice.len());
                wire.extend_from_slice(&slice[..k]);
                take -= k;
            }
            let taken = n - take;
            assert_eq!(output.advance(taken, pool), 0);
        }
        wire
    }

    #[test]
    fn own_bytes_and_shared_frames_go_out_in_order_whatever_the_kernel_takes_at_a_time() {
        let room = Arc::new(RoomMemory::default());
        let mut pool = BufferPool::new();
        for n in [1, 2, 3, 5, 7, 100] {
            let mut output = Output::default();
            output.push_bytes(b"ab", &mut pool);
            output.push_frame(&frame(&room, b'x', 3));
            output.push_bytes(b"cd", &mut pool);
            output.push_bytes(b"e", &mut pool);
            output.push_frame(&frame(&room, b'y', 4));
            output.push_frame(&frame(&room, b'z', 1));
            output.push_bytes(b"f", &mut pool);
            assert_eq!(output.unsent(), 14);
            assert_eq!(
                drain(&mut output, n, &mut pool),
                b"abxxxcdeyyyyzf",
                "{n} at a time"
            );
            assert_eq!(room.held(), 0, "every frame let go");
        }
    }

    #[test]
    fn bytes_beyond_the_queue_are_the_callers() {
        let mut pool = BufferPool::new();
        let mut output = Output::default();
        output.push_bytes(b"abc", &mut pool);
        assert_eq!(output.advance(2, &mut pool), 0);
        assert_eq!(output.unsent(), 1);
        assert_eq!(output.advance(5, &mut pool), 4);
        assert!(output.is_empty());
    }

    #[test]
    fn a_connection_that_owes_nothing_holds_nothing() {
        let room = Arc::new(RoomMemory::default());
        let mut pool = BufferPool::new();
        let mut output = Output::default();
        output.push_frame(&frame(&room, 1, 10));
        output.push_bytes(b"pong", &mut pool);
        output.advance(14, &mut pool);
        assert!(output.queue.is_none());
        assert_eq!((output.unsent(), output.held()), (0, 0));
        assert_eq!(std::mem::size_of::<Output>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn one_frame_for_many_recipients_is_held_once_plus_a_slot_each() {
        let room = Arc::new(RoomMemory::default());
        let mut pool = BufferPool::new();
        let news = frame(&room, b'n', 1 << 20);
        let mut outputs: Vec<Output> = (0..100).map(|_| Output::default()).collect();
        for output in &mut outputs {
            output.push_frame(&news);
        }
        drop(news);
        assert_eq!(room.held(), (1 << 20) + 100 * SLOT_BYTES);
        assert_eq!(outputs[0].held(), (1 << 20) + SLOT_BYTES);
        for output in &mut outputs[..99] {
            output.release(&mut pool);
        }
        assert_eq!(room.held(), (1 << 20) + SLOT_BYTES, "one recipient left");
        assert_eq!(outputs[99].advance(1 << 20, &mut pool), 0);
        assert_eq!(room.held(), 0);
    }

    #[test]
    fn dropping_a_client_keeps_the_frame_it_is_in_and_its_own_bytes() {
        let room = Arc::new(RoomMemory::default());
        let mut pool = BufferPool::new();
        let mut output = Output::default();
        output.push_frame(&frame(&room, b'a', 4));
        output.push_frame(&frame(&room, b'b', 4));
        output.push_bytes(b"P", &mut pool);
        output.push_frame(&frame(&room, b'c', 4));
        output.advance(1, &mut pool); // the kernel took one byte of the first frame
        assert_eq!(output.oldest_unstarted_frame(), Some(4));
        assert_eq!(output.pinned_frame(), None);
        assert_eq!(output.drop_unstarted_frames(&mut pool), 2);
        assert_eq!(output.oldest_unstarted_frame(), None);
        assert_eq!(output.pinned_frame(), Some(0));
        assert_eq!(room.held(), 4 + SLOT_BYTES, "only the frame begun");
        assert_eq!(room.pinned(), 4);
        output.push_bytes(b"C", &mut pool); // the close frame
        assert_eq!(drain(&mut output, 3, &mut pool), b"aaaPC");
        assert_eq!((room.held(), room.pinned()), (0, 0));
    }

    #[test]
    fn a_frame_not_begun_is_dropped_whole() {
        let room = Arc::new(RoomMemory::default());
        let mut pool = BufferPool::new();
        let mut output = Output::default();
        output.push_frame(&frame(&room, b'a', 4));
        assert_eq!(output.drop_unstarted_frames(&mut pool), 1);
        assert!(output.is_empty());
        assert_eq!((room.held(), room.pinned()), (0, 0));
    }

    #[test]
    fn appending_to_a_buffer_half_sent_drops_the_sent_part_first() {
        let mut pool = BufferPool::new();
        let mut output = Output::default();
        output.push_bytes(&[1; 1000], &mut pool);
        output.advance(900, &mut pool);
        output.push_bytes(&[2; 10], &mut pool);
        let Some(queue) = &output.queue else {
            panic!("owes bytes")
        };
        assert_eq!((queue.front_sent, queue.chunks[0].bytes().len()), (0, 110));
    }

    #[test]
    fn a_chunk_is_three_words() {
        assert_eq!(SLOT_BYTES, 3 * std::mem::size_of::<usize>());
    }
}
