//! Deadlines for 10,000 connections without scanning them.
//!
//! Every timeout here has one fixed length per kind: idle (--idle-timeout), request head
//! (--header-timeout), lingering close. When all deadlines of a kind are "now + the same
//! length", the order in which connections are scheduled *is* the order in which they
//! expire. So each kind is a plain FIFO list: schedule = append at the tail, the next to
//! expire is always the head, and moving a connection that just saw traffic is an unlink and
//! an append. Every operation is O(1), and the loop's `epoll_wait` timeout is just the
//! earliest of three heads. (libev's documentation calls this the "doubly-linked list"
//! strategy for fixed timeouts; nginx keeps a red-black tree because its timeouts vary.)
//!
//! The list links live inside the connections themselves (an intrusive list), keyed by slab
//! index, so a timer costs no allocation and a few bytes per connection.

use std::time::{Duration, Instant};

use slab::Slab;

/// Which deadline a connection is waiting on. A connection is on at most one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No traffic in either direction for --idle-timeout.
    Idle = 0,
    /// An HTTP request head left unfinished for --header-timeout (slowloris).
    Header = 1,
    /// Closing: our last bytes must keep moving, then we wait for the peer's FIN before
    /// close(2), so that its unread input doesn't turn our close into a reset.
    Linger = 2,
}

const KINDS: usize = 3;
const NIL: u32 = u32::MAX;

/// Milliseconds since the loop started: 8 bytes where an `Instant` takes 16, and 10,000
/// connections each carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(u64);

/// A connection's place on a list.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    prev: u32,
    next: u32,
    deadline: Millis,
    kind: Option<Kind>,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            prev: NIL,
            next: NIL,
            deadline: Millis(0),
            kind: None,
        }
    }
}

impl Link {
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }
}

/// Anything kept in the slab that carries a [`Link`].
pub trait Linked {
    fn link(&mut self) -> &mut Link;
}

#[derive(Debug)]
pub struct Timers {
    epoch: Instant,
    length: [Duration; KINDS],
    head: [u32; KINDS],
    tail: [u32; KINDS],
}

impl Timers {
    pub fn new(idle: Duration, header: Duration, linger: Duration) -> Timers {
        Timers {
            epoch: Instant::now(),
            length: [idle, header, linger],
            head: [NIL; KINDS],
            tail: [NIL; KINDS],
        }
    }

    pub fn millis(&self, now: Instant) -> Millis {
        Millis(now.saturating_duration_since(self.epoch).as_millis() as u64)
    }

    /// Put `key` at the tail of `kind`'s list, due one timeout length from `now`.
    pub fn schedule<T: Linked>(
        &mut self,
        slab: &mut Slab<T>,
        key: usize,
        kind: Kind,
        now: Instant,
    ) {
        let deadline = Millis(self.millis(now).0 + self.length[kind as usize].as_millis() as u64);
        let k = kind as usize;
        let key32 = key as u32;
        // Already the tail of this list: the new deadline is the latest, so the order holds.
        if self.tail[k] == key32 {
            if let Some(entry) = slab.get_mut(key) {
                entry.link().deadline = deadline;
            }
            return;
        }
        self.cancel(slab, key);
        let old_tail = self.tail[k];
        if let Some(entry) = slab.get_mut(key) {
            *entry.link() = Link {
                prev: old_tail,
                next: NIL,
                deadline,
                kind: Some(kind),
            };
        } else {
            return;
        }
        match slab.get_mut(old_tail as usize) {
            Some(prev) if old_tail != NIL => prev.link().next = key32,
            _ => self.head[k] = key32,
        }
        self.tail[k] = key32;
    }

    /// Take `key` off whatever list it is on.
    pub fn cancel<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let Some(entry) = slab.get_mut(key) else {
            return;
        };
        let link = std::mem::take(entry.link());
        let Some(kind) = link.kind else {
            return;
        };
        let k = kind as usize;
        match slab.get_mut(link.prev as usize) {
            Some(prev) if link.prev != NIL => prev.link().next = link.next,
            _ => self.head[k] = link.next,
        }
        match slab.get_mut(link.next as usize) {
            Some(next) if link.next != NIL => next.link().prev = link.prev,
            _ => self.tail[k] = link.prev,
        }
    }

    /// How long `epoll_wait` may sleep before the earliest deadline; `None` when no
    /// connection has one.
    pub fn next_timeout<T: Linked>(&self, slab: &mut Slab<T>, now: Instant) -> Option<Duration> {
        let now = self.millis(now);
        (0..KINDS)
            .filter_map(|k| {
                slab.get_mut(self.head[k] as usize)
                    .map(|e| e.link().deadline)
            })
            .min()
            .map(|due| Duration::from_millis(due.0.saturating_sub(now.0)))
    }

    /// One connection whose deadline has passed, taken off its list, with the kind it was
    /// waiting on. Call until `None`.
    pub fn pop_expired<T: Linked>(
        &mut self,
        slab: &mut Slab<T>,
        now: Instant,
    ) -> Option<(usize, Kind)> {
        let now = self.millis(now);
        for k in 0..KINDS {
            let head = self.head[k] as usize;
            let Some(entry) = slab.get_mut(head) else {
                continue;
            };
            let link = *entry.link();
            if link.deadline <= now {
                let kind = link.kind?;
                self.cancel(slab, head);
                return Some((head, kind));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Entry(Link);
    impl Linked for Entry {
        fn link(&mut self) -> &mut Link {
            &mut self.0
        }
    }

    fn timers() -> Timers {
        Timers::new(
            Duration::from_secs(60),
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn connections_expire_in_the_order_they_were_last_touched() {
        let mut slab: Slab<Entry> = Slab::new();
        let mut t = timers();
        let start = t.epoch;
        let keys: Vec<usize> = (0..3).map(|_| slab.insert(Entry::default())).collect();
        for (i, &key) in keys.iter().enumerate() {
            t.schedule(
                &mut slab,
                key,
                Kind::Idle,
                start + Duration::from_secs(i as u64),
            );
        }
        // Traffic on the first connection moves it behind the others.
        t.schedule(
            &mut slab,
            keys[0],
            Kind::Idle,
            start + Duration::from_secs(5),
        );
        assert_eq!(
            t.next_timeout(&mut slab, start),
            Some(Duration::from_secs(61))
        );
        let later = start + Duration::from_secs(100);
        let order: Vec<usize> =
            std::iter::from_fn(|| t.pop_expired(&mut slab, later).map(|e| e.0)).collect();
        assert_eq!(order, vec![keys[1], keys[2], keys[0]]);
        assert_eq!(t.next_timeout(&mut slab, later), None);
    }

    #[test]
    fn nothing_expires_early_and_cancel_unlinks_from_the_middle() {
        let mut slab: Slab<Entry> = Slab::new();
        let mut t = timers();
        let start = t.epoch;
        let a = slab.insert(Entry::default());
        let b = slab.insert(Entry::default());
        let c = slab.insert(Entry::default());
        for key in [a, b, c] {
            t.schedule(&mut slab, key, Kind::Header, start);
        }
        t.cancel(&mut slab, b);
        assert_eq!(
            t.pop_expired(&mut slab, start + Duration::from_secs(9)),
            None
        );
        let late = start + Duration::from_secs(10);
        assert_eq!(t.pop_expired(&mut slab, late), Some((a, Kind::Header)));
        assert_eq!(t.pop_expired(&mut slab, late), Some((c, Kind::Header)));
        assert_eq!(t.pop_expired(&mut slab, late), None);
    }

    #[test]
    fn a_connection_is_on_one_list_at_a_time() {
        let mut slab: Slab<Entry> = Slab::new();
        let mut t = timers();
        let start = t.epoch;
        let a = slab.insert(Entry::default());
        t.schedule(&mut slab, a, Kind::Header, start);
        t.schedule(&mut slab, a, Kind::Linger, start);
        let late = start + Duration::from_secs(100);
        assert_eq!(t.pop_expired(&mut slab, late), Some((a, Kind::Linger)));
        assert_eq!(t.pop_expired(&mut slab, late), None);
    }
}
