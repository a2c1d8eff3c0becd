//! The errors of `prr serve` that stop it (at start, or the runtime failing).

use std::path::PathBuf;

/// Why `prr serve` did not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is wrong (a URL that does not parse, an empty token file, a registration
    /// without its tokens); the message names it.
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Listening on an address other than loopback without `--api-token-file`.
    #[error(
        "refusing to listen on {0} without --api-token-file: anyone who reaches it could read and \
         write the replicas; listen on a loopback address (127.0.0.1, [::1]) or give an API token"
    )]
    NotLoopback(String),
    /// The homeserver refused the bot's access token at start (bot mode).
    #[error("{0}")]
    Unauthorized(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime failed (opening the store, or at shutdown).
    #[error(transparent)]
    Runtime(#[from] prr_engine::Error),
    /// The core thread stopped unexpectedly (it panicked).
    #[error("the core thread stopped unexpectedly")]
    CoreFailed,
}

impl Error {
    /// Whether the error is the caller's (a bad option), not the machine's.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config(_) | Error::NotLoopback(_))
    }
}
