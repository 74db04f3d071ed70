//! Start-up and exit: bind the listening sockets, run one loop per thread, add up the totals.

use std::sync::Arc;
use std::thread;

use log::{error, info};

use crate::cli::Config;
use crate::event_loop::{EventLoop, Shared};
use crate::listener::{self, ListenError};
use crate::stats::Stats;

/// Bind, serve until a signal, and return the totals of every loop.
pub fn run(config: Config) -> Result<Stats, ListenError> {
    // The first listener resolves port 0; the others (one per extra loop) bind the port it
    // got, each with SO_REUSEPORT, so the kernel spreads connections across the loops.
    let first = listener::listen(config.addr, config.backlog, config.reuse_port)?;
    let addr = first.local_addr;
    let somaxconn = listener::somaxconn().map_or_else(|| "unknown".to_string(), |n| n.to_string());
    info!(
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

    let config = Arc::new(config);
    let shared = Arc::new(Shared::default());
    let loops: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let config = Arc::clone(&config);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || EventLoop::new(socket, config, shared).and_then(EventLoop::run))
        })
        .collect();

    let mut totals = Stats::default();
    for (i, handle) in loops.into_iter().enumerate() {
        match handle.map(|h| h.join()) {
            Ok(Ok(Ok(stats))) => totals += stats,
            Ok(Ok(Err(e))) => error!("loop {i} stopped: {e}"),
            Ok(Err(_)) => error!("loop {i} panicked"),
            Err(e) => error!("could not start loop {i}: {e}"),
        }
    }
    info!("totals: {totals}");
    Ok(totals)
}
