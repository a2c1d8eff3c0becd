//! `prr`: the command line of the Persistent Replica Runtime.

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::Cli;

/// mimalloc, not glibc's allocator: a fresh large `prr ingest` peaks 17% lower with it
/// (measured side by side: docs/benchmarks.md, "The allocator"). Programs that embed the
/// libraries choose their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            Some(prr_engine::Error::InvalidConfig(_)) => exit::USAGE,
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
            eprintln!("prr: error: {}", message(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// The error and its causes, `outer: inner: ...`, each said once: a cause whose text the
/// message already holds (an error that shows its source in its own text, as
/// `storage error: {0}` does) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A reader that stopped reading (`prr show | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "storage error: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn problem_10_a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(Outer(io)).context("store /x/prr.redb");
        assert_eq!(
            message(&e),
            "store /x/prr.redb: storage error: disk on fire"
        );
        let chained = anyhow::anyhow!("inner cause").context("outer");
        assert_eq!(message(&chained), "outer: inner cause");
    }
}
