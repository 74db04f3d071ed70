//! Holding one of the server's threads still while the others run, with ptrace(2).
//!
//! SIGSTOP stops every thread of a process at once. Some promises are about what one event
//! loop does with events that piled up while it was busy, with the rest of the server
//! running meanwhile: a signal handled by another thread, a broadcast from another loop.
//! `PTRACE_SEIZE` then `PTRACE_INTERRUPT` stop exactly one thread (a "group-stop"-free
//! ptrace-stop, ptrace(2), PTRACE_INTERRUPT); the kernel keeps queueing its socket events
//! meanwhile, and `PTRACE_DETACH` lets it go on where it was.
//!
//! A tracer is a thread, not a process: every call below must come from the thread that
//! paused, which a test's own thread is. The server is the test's child and runs as the same
//! user, so no capability is needed (ptrace(2), "Ptrace access mode checking").
#![allow(dead_code)] // not every test binary uses every helper

use std::fs;
use std::io;

/// One thread of another process, held in a ptrace-stop until [`Paused::resume`] or drop.
pub struct Paused {
    tid: libc::pid_t,
    attached: bool,
}

/// The thread id of the thread named `name` (`/proc/PID/task/TID/comm`; sockloop names its
/// loops `loop-0`, `loop-1`, …).
pub fn thread_named(pid: u32, name: &str) -> Option<libc::pid_t> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .and_then(|task| task.file_name().to_str()?.parse().ok())
}

impl Paused {
    /// Stop thread `tid` and wait until it is stopped.
    pub fn thread(tid: libc::pid_t) -> io::Result<Paused> {
        // SAFETY: ptrace(2) with PTRACE_SEIZE takes a tid and no pointers (addr and data 0).
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut paused = Paused {
            tid,
            attached: true,
        };
        // SAFETY: as above; the thread is ours to trace now.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut status = 0;
        // SAFETY: waitpid(2) on a thread we trace; __WALL since it is not a process leader.
        let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if waited != tid || !libc::WIFSTOPPED(status) {
            let error = io::Error::other(format!(
                "waitpid({tid}) → {waited}, status {status:#x}: not a ptrace-stop"
            ));
            paused.detach();
            return Err(error);
        }
        Ok(paused)
    }

    /// Let the thread go on.
    pub fn resume(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            // SAFETY: PTRACE_DETACH of a thread we trace and that is stopped; data 0
            // delivers no signal.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0, 0) };
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.detach();
    }
}
