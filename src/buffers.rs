//! Buffers lent to connections only while they hold bytes.
//!
//! Most connections, most of the time, have nothing waiting: the request arrived whole and
//! the answer went out in one `write(2)`. Such a connection owns no buffer at all. Only when
//! the kernel leaves us with bytes in hand (half a request, or the tail of a write that did
//! not fit in the socket's send buffer) does the connection borrow a buffer from this pool,
//! and it gives it back the moment those bytes are gone. The pool keeps a few returned
//! buffers so that this back and forth does not call the allocator each time, and lets big
//! ones go so that a burst does not pin memory for ever.

/// Buffers larger than this are freed rather than kept: one client's 1 MiB backlog must not
/// stay resident after it has drained.
const MAX_KEPT_CAPACITY: usize = 64 * 1024;
/// At most this many buffers are kept: 16 × 64 KiB = 1 MiB per loop at the very most.
const MAX_KEPT_BUFFERS: usize = 16;

#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
}

impl BufferPool {
    pub fn new() -> BufferPool {
        BufferPool {
            free: Vec::with_capacity(MAX_KEPT_BUFFERS),
        }
    }

    /// An empty buffer, reused if one is at hand.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Hand a buffer back, leaving an unallocated `Vec` in its place.
    pub fn give_back(&mut self, buffer: &mut Vec<u8>) {
        let mut buffer = std::mem::take(buffer);
        if buffer.capacity() == 0 {
            return;
        }
        if buffer.capacity() <= MAX_KEPT_CAPACITY && self.free.len() < MAX_KEPT_BUFFERS {
            buffer.clear();
            self.free.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_and_the_slot_left_unallocated() {
        let mut pool = BufferPool::new();
        let mut held = pool.take();
        held.extend_from_slice(b"half a request");
        let ptr = held.as_ptr();
        pool.give_back(&mut held);
        assert_eq!(held.capacity(), 0);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
    }

    #[test]
    fn big_buffers_are_freed_not_kept() {
        let mut pool = BufferPool::new();
        let mut big = vec![0u8; MAX_KEPT_CAPACITY + 1];
        pool.give_back(&mut big);
        assert!(pool.free.is_empty());
    }
}
