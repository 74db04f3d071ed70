//! Start-up and exit: bind the listening sockets, run one loop per thread, add up the totals.

use std::sync::{mpsc, Arc};
use std::thread;

use log::{error, info};

use crate::cli::Config;
use crate::event_loop::{EventLoop, Finished, Shared};
use crate::listener::{self, ListenError};
use crate::stats::Stats;

/// Why the server did not run to a clean exit.
#[derive(Debug)]
pub enum RunError {
    /// The listening socket could not be set up: nothing was served.
    Listen(ListenError),
    /// This many loops stopped on an error or a panic (each was logged as it happened).
    LoopsFailed(usize),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RunError::Listen(e) => e.fmt(f),
            RunError::LoopsFailed(n) => write!(f, "{n} event loop(s) failed; see the log above"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<ListenError> for RunError {
    fn from(e: ListenError) -> RunError {
        RunError::Listen(e)
    }
}

/// Bind, serve until a signal, and return the totals of every loop.
pub fn run(config: Config) -> Result<Finished, RunError> {
    // Every write to a client passes MSG_NOSIGNAL (mio and std do), but splice(2) into a
    // socket can't: a peer that is gone would raise SIGPIPE, whose default action kills the
    // process. Rust's runtime ignores SIGPIPE before main; say so here too, once for the
    // whole process, for whoever calls this from elsewhere.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    let (listeners, listening) = bind(&config)?;
    let loops = start_loops(listeners, Arc::new(config));
    // Only now: whoever waits for this line (a test, a script) may signal us at once.
    info!("{listening}");
    add_up(loops)
}

type LoopThread = std::io::Result<thread::JoinHandle<std::io::Result<Finished>>>;

/// One listening socket per loop, and the start-up line that says what the kernel made of
/// the first. The first listener resolves port 0; the others (one per extra loop) bind the
/// port it got, each with SO_REUSEPORT, so the kernel spreads connections across the loops.
fn bind(config: &Config) -> Result<(Vec<mio::net::TcpListener>, String), ListenError> {
    let first = listener::listen(config.addr, config.backlog, config.reuse_port)?;
    let addr = first.local_addr;
    let somaxconn = listener::somaxconn().map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let listening = format!(
        "listening on {addr} mode={} backlog={} (effective {}, somaxconn {somaxconn}) {} threads={}",
        config.mode.name(),
        config.backlog,
        first.effective_backlog,
        listener::describe_options(&first.socket),
        config.threads,
    );
    let mut listeners = vec![first.socket];
    for _ in 1..config.threads {
        listeners.push(listener::listen(addr, config.backlog, true)?.socket);
    }
    Ok((listeners, listening))
}

/// A thread per loop, returned once every loop is built, its signal pipe registered: a
/// SIGTERM before that would be lost to it (it would never stop), or, before any loop, kill
/// the process with the default action. A loop says so whether or not building worked; one
/// that panics drops its sender unsent, which also ends the wait.
fn start_loops(listeners: Vec<mio::net::TcpListener>, config: Arc<Config>) -> Vec<LoopThread> {
    let shared = Arc::new(Shared::default());
    let (built_tx, built) = mpsc::channel::<()>();
    let loops = listeners
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let config = Arc::clone(&config);
            let shared = Arc::clone(&shared);
            let built_tx = built_tx.clone();
            thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || {
                    let event_loop = EventLoop::new(i, socket, config, shared);
                    // The receiver is gone only if the main thread is, and then so are we.
                    let _ = built_tx.send(());
                    drop(built_tx);
                    event_loop.and_then(EventLoop::run)
                })
        })
        .collect();
    drop(built_tx);
    // Every loop built, or failed to be (its sender dropped unsent).
    let _ = built.iter().count();
    loops
}

/// Wait for every loop to end, and add up their totals.
fn add_up(loops: Vec<LoopThread>) -> Result<Finished, RunError> {
    let mut totals = Stats::default();
    let mut cut_short_by = None;
    let mut failed = 0;
    for (i, handle) in loops.into_iter().enumerate() {
        let stopped = match handle.map(|h| h.join()) {
            Ok(Ok(Ok(finished))) => {
                totals += finished.stats;
                cut_short_by = cut_short_by.or(finished.cut_short_by);
                continue;
            }
            Ok(Ok(Err(e))) => format!("stopped: {e}"),
            Ok(Err(_)) => "panicked".to_string(),
            Err(e) => format!("could not start: {e}"),
        };
        error!("loop {i} {stopped}");
        failed += 1;
    }
    info!("totals: {totals}");
    match failed {
        0 => Ok(Finished {
            stats: totals,
            cut_short_by,
        }),
        n => Err(RunError::LoopsFailed(n)),
    }
}
