//! Buffers lent to connections only while they hold bytes.
//!
//! Most connections, most of the time, have nothing waiting: the request arrived whole and
//! the answer went out in one `write(2)`. Such a connection owns no buffer at all. Only when
//! the kernel leaves us with bytes in hand (half a request, or the tail of a write that did
//! not fit in the socket's send buffer) does the connection borrow a buffer from this pool,
//! and it gives it back the moment those bytes are gone. The pool keeps a few returned
//! buffers so that this back and forth does not call the allocator each time, and lets big
//! ones go so that a burst does not pin memory for ever.
//!
//! [`PageAligned`] is the other kind: the loop's one read buffer, placed at the start of a
//! page so that the kernel's copies into it run at full speed (see its doc).

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

/// A fixed-size byte buffer whose first byte is the first byte of a page.
///
/// Why it matters: `read(2)` on a TCP socket is a `memcpy` in the kernel, from the pages the
/// data arrived in (on loopback, pages the sender filled from their start) into our buffer.
/// A CPU runs such a copy as loads from the source interleaved with stores to the
/// destination, and it decides whether a load may run ahead of an earlier store by
/// comparing only the low 12 bits of their addresses (4K aliasing). When the destination
/// sits within a few bytes of the source's offset in its page, but not at it, loads seem to
/// depend on stores just made, wait for them, and the copy runs at half speed or worse. A
/// big `Vec` comes from `mmap`, and glibc's header puts its first byte 16 bytes into the
/// page: exactly such a few bytes. At offset 0 the two run in step, and nothing waits.
/// (Measured with the bare floor, `benches/load.sh` `ONLY=offsets`: 8 and 16 bytes in, or
/// 16 before the page's end, cost 1.5–1.9× the CPU per 64 KiB message; 0, 32, 48, 64 and
/// 2048 do not.)
///
/// No allocator call here gives a stricter alignment (a `Vec<u8>` must be freed with the
/// alignment it was made with), so the buffer takes one page more than it needs and starts
/// at the first page boundary inside it.
pub struct PageAligned {
    storage: Box<[u8]>,
    start: usize,
    len: usize,
}

impl PageAligned {
    /// `len` zeroed bytes from the start of a page.
    pub fn new(len: usize) -> PageAligned {
        let page = rustix::param::page_size();
        let storage = vec![0u8; len + page].into_boxed_slice();
        // align_offset of a u8 pointer to a power of two is exact, never "can't".
        let start = storage.as_ptr().align_offset(page).min(page);
        PageAligned {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for PageAligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PageAligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_aligned_buffer_starts_on_a_page_and_has_its_length() {
        let page = rustix::param::page_size();
        for len in [1, 4096, 128 * 1024] {
            let mut buffer = PageAligned::new(len);
            assert_eq!(buffer.as_ptr() as usize % page, 0, "len {len}");
            assert_eq!(buffer.len(), len);
            buffer[len - 1] = 7;
        }
    }

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
