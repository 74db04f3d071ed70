//! `sockloop`: parse the command line, start the loops, and turn start-up failures into one
//! line and exit code 1. Bad flags exit with 2, clap's convention; a second SIGINT or SIGTERM
//! exits with 128 + its number, as a shell reports a process a signal killed.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = sockloop::cli::Args::parse();
    let config = match args.resolve() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("sockloop: {message}");
            return ExitCode::from(1);
        }
    };
    match sockloop::server::run(config) {
        // A second signal: the shell's convention, 128 + the signal's number.
        Ok(finished) => match finished.cut_short_by {
            Some(signal) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX)),
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("sockloop: {e}");
            ExitCode::from(1)
        }
    }
}
