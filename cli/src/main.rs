//! `prr`: the command line of the Persistent Replica Runtime.

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::Cli;

/// Exit statuses (documented in the README and in `prr --help`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The store or the runtime failed (I/O, a damaged or locked store).
    pub const FAILURE: u8 = 1;
    /// Bad usage: an unknown command, option or replica.
    pub const USAGE: u8 = 2;
    /// Bad input data: a file or line that does not parse or validate. Nothing was stored.
    pub const INVALID_INPUT: u8 = 3;
    /// `check` found problems, or `rebuild --check` found differences.
    pub const DIFFERENCES: u8 = 4;
    /// The source deltas were committed (the output names them: do not send them again), but
    /// the revision capture after them failed; the next command that captures retries it.
    pub const NOT_CAPTURED: u8 = 5;
}

/// An error with the exit status it calls for.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// A failure with this status.
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error: anyhow::Error = e.into();
        let code = match error.downcast_ref::<prr_engine::Error>() {
            Some(prr_engine::Error::UnknownReplica { .. }) => exit::USAGE,
            Some(prr_engine::Error::FutureSeq { .. }) => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failure { code, error }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) if is_broken_pipe(&f.error) => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("prr: error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// A reader that stopped reading (`prr show | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
