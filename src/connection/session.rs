//! A connection and its protocol session: the methods through which the loop hands the
//! session what happened (bytes, a timeout, a shutdown, a message for the room) and keeps
//! what the session answers, consistent with the connection's buffers and phase.

use std::sync::Arc;

use super::{Connection, Phase, MAX_PENDING_OUTPUT};
use crate::broadcast::{Frame, Said};
use crate::protocol::{Context, Delivery, Next, Session};
use crate::scratch::Scratch;

impl Connection {
    /// Hand the session the first `n` bytes of the read buffer, after whatever it left
    /// unconsumed last time, and keep what it does not consume now. Its answer is left in
    /// `scratch.output`, for the loop to write next.
    pub fn offer(&mut self, n: usize, scratch: &mut Scratch) {
        let new_input = &scratch.read_buffer[..n];
        scratch.output.clear();
        // Usually nothing is held over and the session reads straight from the read buffer;
        // only after a partial request are the new bytes appended to the held ones.
        let held_over = !self.pending_input.is_empty();
        if held_over {
            self.pending_input.extend_from_slice(new_input);
        }
        let input: &[u8] = if held_over {
            &self.pending_input
        } else {
            new_input
        };
        let out_budget = MAX_PENDING_OUTPUT.saturating_sub(self.unsent());
        let mut ctx = Context {
            responses: &scratch.responses,
            out_budget,
            peer: self.peer,
            stats: &mut scratch.stats,
            broadcast: &mut scratch.said,
        };
        let outcome = self.session.on_input(input, &mut scratch.output, &mut ctx);
        // For the room, which will skip us: we have our own copy (`broadcast::Said`; the
        // skip is in `room::queue_frames`).
        let from = self.token;
        let said = scratch.said.drain(..).map(|frame| Said { from, frame });
        scratch.outbox.extend(said);
        let consumed = outcome.consumed.min(input.len());
        self.answered |= outcome.answered;
        self.input_stalled = consumed < input.len() && scratch.output.len() >= out_budget;
        if held_over {
            self.pending_input.drain(..consumed);
            if self.pending_input.is_empty() {
                scratch.pool.give_back(&mut self.pending_input);
            }
        } else if consumed < new_input.len() {
            self.pending_input = scratch.pool.take();
            self.pending_input.extend_from_slice(&new_input[consumed..]);
        }
        if outcome.next == Next::CloseAfterFlush {
            self.set_phase(Phase::Flushing);
        }
    }

    /// Input held back for lack of output room goes first, once there is room: offer it
    /// again (with nothing new). Returns whether it did.
    pub fn resume_stalled_input(&mut self, scratch: &mut Scratch) -> bool {
        let output_has_room = self.unsent() < MAX_PENDING_OUTPUT;
        if !(self.input_stalled && self.phase == Phase::Open && output_has_room) {
            return false;
        }
        self.input_stalled = false;
        self.offer(0, scratch);
        true
    }

    /// The header timeout fired: the session says so (HTTP answers 408), then we close.
    pub fn header_timeout(&mut self, scratch: &mut Scratch) {
        self.last_word(scratch, |session, out, ctx| {
            session.on_header_timeout(out, ctx);
            Next::CloseAfterFlush
        });
    }

    /// The idle timeout fired: the session says its last word (a WebSocket close frame),
    /// then we close, as after any answer. The close is counted as a timeout, whichever
    /// way it ends (`timed_out`).
    pub fn idle_timeout(&mut self, scratch: &mut Scratch) {
        self.timed_out = true;
        self.last_word(scratch, |session, out, _| {
            session.on_idle_timeout(out);
            Next::CloseAfterFlush
        });
    }

    /// The server is stopping: the session says its last word (a WebSocket close frame)
    /// and whether it can go once that is written, or must answer the request in progress
    /// first. Returns false, having done nothing, if it was closing already.
    pub fn server_stopping(&mut self, scratch: &mut Scratch) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let unconsumed = self.pending_input.len();
        self.last_word(scratch, |session, out, _| {
            session.on_shutdown(unconsumed, out)
        });
        true
    }

    /// Let the session answer something that is not input (a timeout, the server
    /// stopping): queue what it writes, and start closing if it says so.
    fn last_word(
        &mut self,
        scratch: &mut Scratch,
        say: impl FnOnce(&mut Session, &mut Vec<u8>, &mut Context) -> Next,
    ) {
        scratch.output.clear();
        let mut ctx = Context {
            responses: &scratch.responses,
            out_budget: MAX_PENDING_OUTPUT,
            peer: self.peer,
            stats: &mut scratch.stats,
            broadcast: &mut scratch.said,
        };
        let next = say(&mut self.session, &mut scratch.output, &mut ctx);
        self.queue_output(&scratch.output, &mut scratch.pool);
        scratch.output.clear();
        if next == Next::CloseAfterFlush {
            self.set_phase(Phase::Flushing);
        }
    }

    /// Another client said something to the room: queue `frame`, shared, if the session is
    /// in the room and keeps up. A client too far behind is closed by its session (1008)
    /// instead (`fall_behind`). Returns whether there is something new to write.
    pub fn take_broadcast(&mut self, frame: &Arc<Frame>, scratch: &mut Scratch) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        scratch.output.clear();
        let held = self.pending_output.held();
        let delivery = self
            .session
            .on_broadcast(held, false, &mut scratch.output, self.peer);
        match delivery {
            Delivery::Skip => false,
            Delivery::Send => {
                self.pending_output.push_frame(frame);
                true
            }
            Delivery::Close => {
                self.fall_behind(scratch);
                true
            }
        }
    }

    /// The room is over `--room-bytes` and this client is among the furthest behind: the
    /// frames it has not begun go, and it gets its close frame (1008) as soon as the one it
    /// is in the middle of is finished. A client closing already only lets go of its frames.
    /// Returns how many frames it let go of.
    pub fn leave_room(&mut self, scratch: &mut Scratch) -> usize {
        if self.phase == Phase::Open {
            scratch.output.clear();
            let held = self.pending_output.held();
            let delivery = self
                .session
                .on_broadcast(held, true, &mut scratch.output, self.peer);
            if delivery == Delivery::Close {
                return self.fall_behind(scratch);
            }
            scratch.output.clear();
        }
        self.pending_output.drop_unstarted_frames(&mut scratch.pool)
    }

    /// The session closed a client that fell behind, its close frame in the loop's output
    /// buffer. The frames it has not begun go: it is not reading, and would only hold them
    /// until the linger timeout; the close frame follows the one it is in the middle of.
    /// Returns how many frames went.
    fn fall_behind(&mut self, scratch: &mut Scratch) -> usize {
        let dropped = self.pending_output.drop_unstarted_frames(&mut scratch.pool);
        self.queue_output(&scratch.output, &mut scratch.pool);
        scratch.output.clear();
        self.set_phase(Phase::Flushing);
        dropped
    }
}
