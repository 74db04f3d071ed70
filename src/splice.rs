//! Echo without copying (`--splice`): `splice(2)` moves bytes from a socket into a pipe
//! and from the pipe back out to the socket, inside the kernel.
//!
//! `read(2)` + `write(2)` copies every byte twice, socket to user memory and back. A pipe
//! holds references to pages, not bytes: splicing from a TCP socket into a pipe takes
//! references to the pages the received data sits in (`skb_splice_bits`), and splicing
//! from the pipe into a socket hands those same pages to the send queue. At 64 KiB a
//! message those two copies were a third of the echo server's CPU time.
//!
//! One pipe serves a whole loop: it is empty between calls, because whatever the socket's
//! send buffer does not take is read out of the pipe into the connection's pending output
//! (see [`Pipe::echo`]). So a connection holds no pipe and no buffer while idle.
//!
//! Why it is not the default: the send queue then holds the pages the peer's packets
//! arrived in, but TCP charges the socket only for the bytes (`tcp_sendmsg_locked` with
//! `MSG_SPLICE_PAGES` charges `copy`). A remote peer that sends many tiny segments, each
//! in a page of its own, and reads nothing back, could make a few KiB of charged send
//! buffer pin megabytes. HAProxy's splice options are opt-in too. On loopback, where the
//! sender packs its data into its own pages, the question does not arise.
//!
//! Only echo mode uses this: the other protocols have to look at the bytes.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use log::trace;
use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags, SpliceFlags};

/// The pipe's size in bytes, which the kernel rounds to slots of one page each (4 KiB on
/// x86-64): 256 slots. See [`Pipe::drained`] for why the slot count matters.
const PIPE_SIZE: usize = 1024 * 1024;

/// What one [`Pipe::echo`] did.
#[derive(Debug)]
pub struct Echoed {
    /// Bytes taken from the socket; 0 means the peer sent FIN.
    pub read: usize,
    /// Bytes of those written back; the rest were appended to the pending output, unless
    /// writing failed.
    pub written: usize,
    /// Writing back failed (the peer reset, EPIPE): the connection is done, and what was
    /// not written is dropped. `read` and `written` still say what moved, for the counts.
    pub write_error: Option<io::Error>,
}

pub struct Pipe {
    read_end: File,
    write_end: OwnedFd,
    /// How many buffers the pipe holds (`F_GETPIPE_SZ` / page size).
    slots: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        // pipe2(2), non-blocking at both ends so that no splice ever sleeps on the pipe.
        let (read_end, write_end) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // F_SETPIPE_SZ (fcntl(2)): a bigger pipe if the system allows it (fs.pipe-max-size,
        // and the per-user fs.pipe-user-pages-soft). If it refuses, the default 16 slots
        // work too; they only make more reads ambiguous (see `drained`).
        if let Err(e) = fcntl_setpipe_size(&write_end, PIPE_SIZE) {
            trace!("fcntl(F_SETPIPE_SZ, {PIPE_SIZE}) → {e}; keeping the default size");
        }
        let size = fcntl_getpipe_size(&write_end)?;
        Ok(Pipe {
            read_end: File::from(read_end),
            write_end,
            slots: (size / rustix::param::page_size()).max(1),
        })
    }

    /// Move up to `max` bytes from `socket` through the pipe and back into `socket`. The
    /// part the socket's send buffer would not take is appended to `unsent`, so the pipe is
    /// empty again when this returns, whatever happened: the next connection must not get
    /// this one's bytes.
    ///
    /// `Err(Socket)` means nothing was read (EAGAIN when there was nothing to read,
    /// ECONNRESET…); a failure writing back is in [`Echoed::write_error`]. `Err(Pipe)`
    /// means the pipe itself failed and may hold stale bytes: the caller must stop using
    /// it.
    pub fn echo(
        &mut self,
        socket: impl AsFd,
        peer: SocketAddr,
        max: usize,
        unsent: &mut Vec<u8>,
    ) -> Result<Echoed, PipeError> {
        let socket = socket.as_fd();
        let read = splice(socket, &self.write_end, max).map_err(PipeError::Socket)?;
        trace!("{peer}: splice socket→pipe → {read} bytes");
        let mut written = 0;
        let mut write_error = None;
        while written < read {
            match splice(&self.read_end, socket, read - written) {
                Ok(0) => break, // cannot happen with bytes in the pipe; be safe anyway
                Ok(n) => {
                    trace!(
                        "{peer}: splice pipe→socket → {n} of {} bytes",
                        read - written
                    );
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        "{peer}: splice pipe→socket → WouldBlock ({} bytes wait)",
                        read - written
                    );
                    break;
                }
                Err(e) => {
                    trace!("{peer}: splice pipe→socket → {e}");
                    write_error = Some(e);
                    break;
                }
            }
        }
        // Empty the pipe: what is left goes out later from the connection's own buffer, or
        // nowhere if the socket failed.
        let left = read - written;
        if left > 0 {
            let start = unsent.len();
            unsent.resize(start + left, 0);
            if let Err(e) = self.read_end.read_exact(&mut unsent[start..]) {
                unsent.truncate(start);
                return Err(PipeError::Pipe(e));
            }
            if write_error.is_some() {
                unsent.truncate(start);
            }
        }
        Ok(Echoed {
            read,
            written,
            write_error,
        })
    }

    /// Whether a read of `read` bytes, asked for `max`, emptied the socket's receive queue.
    ///
    /// A short `read(2)` means drained: TCP copies all it has, up to the length asked. A
    /// short splice does not, quite. `tcp_read_sock` also stops when the pipe is full, and
    /// a slot holds as little as one byte: each piece of a received packet's data takes a
    /// slot of its own, unless it continues the previous piece in the same page. But the
    /// pipe started empty and every slot holds at least one byte, so fewer bytes than
    /// slots means the pipe was not full, and the queue was empty.
    ///
    /// The other places a splice stops short are taken care of elsewhere: TCP's urgent mark
    /// and a queued FIN come flagged by epoll, and those rounds read(2) (see
    /// `Connection::note_event` and `may_splice`, and `read_once` in `event_loop/io.rs`).
    /// One is not: data in a packet's header area is copied into a fresh page, and if that
    /// allocation failed, the splice would stop early. It is an order-0 GFP_KERNEL
    /// allocation, which the kernel retries rather than fails unless the process is being
    /// killed for want of memory.
    ///
    /// So a splice of as many bytes as the pipe has slots, or more, costs one more call,
    /// which says EAGAIN: from 256 bytes with the 1 MiB pipe we ask for, from 16 bytes if
    /// the system kept the default 64 KiB.
    pub fn drained(&self, read: usize, max: usize) -> bool {
        read < max && read < self.slots
    }
}

#[derive(Debug)]
pub enum PipeError {
    /// The socket failed; the pipe is empty and fine.
    Socket(io::Error),
    /// The pipe failed and may hold stale bytes: drop it.
    Pipe(io::Error),
}

/// One non-blocking `splice(2)` of up to `len` bytes, between a pipe and a socket (either
/// way). `SPLICE_F_NONBLOCK` makes the pipe side non-blocking (the socket is already).
/// (`SPLICE_F_MOVE` would be a no-op.) Public for `examples/echo_load`, which sends its
/// messages into sockets through a pipe too.
pub fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    // Null offsets: sockets and pipes have no file position to splice from or to.
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::NONBLOCK,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    /// A connected pair standing in for a TCP connection: splice works on Unix stream
    /// sockets the same way. The server's end is non-blocking, as the loop's sockets are.
    fn pair() -> (UnixStream, UnixStream) {
        let (client, server) = UnixStream::pair().expect("socketpair");
        server.set_nonblocking(true).expect("nonblocking");
        (client, server)
    }

    #[test]
    fn bytes_come_straight_back() {
        let mut pipe = Pipe::new().expect("pipe");
        let (mut client, server) = pair();
        client.write_all(b"hello").expect("write");
        let mut unsent = Vec::new();
        let echoed = pipe.echo(&server, PEER, 1024, &mut unsent).expect("echo");
        assert_eq!((echoed.read, echoed.written), (5, 5));
        assert!(unsent.is_empty());
        let mut back = [0u8; 5];
        client.read_exact(&mut back).expect("read");
        assert_eq!(&back, b"hello");
        assert!(pipe.drained(5, 1024));
    }

    #[test]
    fn what_the_socket_refuses_is_kept_and_the_pipe_left_empty() {
        let mut pipe = Pipe::new().expect("pipe");
        let (mut client, mut server) = pair();
        // Fill the server's send direction: the client reads nothing yet.
        let mut filled = 0;
        loop {
            match server.write(&[0u8; 4096]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        let message: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&message).expect("write");
        let mut unsent = Vec::new();
        let echoed = pipe.echo(&server, PEER, 4096, &mut unsent).expect("echo");
        assert_eq!(echoed.read, 1000);
        assert_eq!(echoed.written + unsent.len(), 1000);
        assert_eq!(unsent, message[echoed.written..]);

        // The next connection through the same pipe gets its own bytes and nothing else.
        let (mut other, other_server) = pair();
        other.write_all(b"mine").expect("write");
        let mut other_unsent = Vec::new();
        let echoed = pipe
            .echo(&other_server, PEER, 4096, &mut other_unsent)
            .expect("echo");
        assert_eq!((echoed.read, echoed.written), (4, 4));
        let mut back = [0u8; 4];
        other.read_exact(&mut back).expect("read");
        assert_eq!(&back, b"mine");
        assert!(filled > 0);
    }

    #[test]
    fn end_of_stream_reads_zero_and_an_empty_socket_would_block() {
        let mut pipe = Pipe::new().expect("pipe");
        let (client, server) = pair();
        let mut unsent = Vec::new();
        match pipe.echo(&server, PEER, 1024, &mut unsent) {
            Err(PipeError::Socket(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            other => panic!("expected WouldBlock, got {other:?}"),
        }
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let echoed = pipe.echo(&server, PEER, 1024, &mut unsent).expect("echo");
        assert_eq!((echoed.read, echoed.written), (0, 0));
    }

    #[test]
    fn a_peer_that_is_gone_fails_the_write_back_and_leaves_the_pipe_empty() {
        let mut pipe = Pipe::new().expect("pipe");
        let (mut client, server) = pair();
        client.write_all(b"bye").expect("write");
        drop(client);
        let mut unsent = Vec::new();
        let echoed = pipe.echo(&server, PEER, 1024, &mut unsent).expect("echo");
        assert_eq!((echoed.read, echoed.written), (3, 0));
        assert!(echoed.write_error.is_some(), "{echoed:?}");
        assert!(unsent.is_empty(), "bytes for a dead peer are dropped");

        let (mut other, other_server) = pair();
        other.write_all(b"next").expect("write");
        let echoed = pipe
            .echo(&other_server, PEER, 1024, &mut unsent)
            .expect("echo");
        assert_eq!((echoed.read, echoed.written), (4, 4));
        let mut back = [0u8; 4];
        other.read_exact(&mut back).expect("read");
        assert_eq!(&back, b"next");
    }

    #[test]
    fn a_short_splice_means_drained_only_if_the_pipe_cannot_be_full() {
        let pipe = Pipe::new().expect("pipe");
        assert!(pipe.drained(0, 1024));
        assert!(pipe.drained(pipe.slots - 1, 1 << 20));
        // As many bytes as slots: possibly one byte per slot and a full pipe.
        assert!(!pipe.drained(pipe.slots, 1 << 20));
        assert!(!pipe.drained(1024, 1024));
    }
}
