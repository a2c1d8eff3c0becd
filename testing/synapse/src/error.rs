//! The harness's one error type.

use std::path::PathBuf;

/// What went wrong while starting, stopping or talking to Synapse.
///
/// Messages never contain access tokens, appservice tokens or the shared secret. `Debug` shows
/// the same message as `Display`, so that a test returning `Result<(), Error>` (or a boxed
/// error) prints what to do, not a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The virtual environment with the pinned Synapse is missing or holds another version.
    #[error(
        "no usable Synapse {version} venv at {}: {reason}. Create it with \
         `bash scripts/synapse-venv.sh` from the workspace root (`.ci/run` does so before the \
         tests), or set PRR_SYNAPSE_VENV to a venv made by that script",
        path.display()
    )]
    VenvMissing {
        /// Where the venv was looked for.
        path: PathBuf,
        /// The Synapse version the harness expects.
        version: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or process operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "start Synapse from", ...).
        what: &'static str,
        /// The file or program concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another server took the port picked for Synapse before Synapse could bind it, on every
    /// port tried.
    #[error(
        "port {0} on 127.0.0.1 was taken by another server before Synapse could bind it, as was every port tried before it"
    )]
    PortTaken(u16),
    /// Synapse exited or did not answer in time while starting or stopping.
    #[error("Synapse {phase}: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Process {
        /// `did not start`, `did not stop`, ...
        phase: &'static str,
        /// The cause.
        reason: String,
        /// Synapse's log file (it survives until the [`Synapse`](crate::Synapse) is dropped).
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// An HTTP request could not be made, or its answer could not be read.
    #[error("{method} {path}: {source}")]
    Transport {
        /// The HTTP method.
        method: &'static str,
        /// The request path, without the homeserver's address.
        path: String,
        /// The cause.
        source: Box<ureq::Error>,
    },
    /// The homeserver answered with a status other than 2xx.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The request path, without the homeserver's address.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The Matrix `errcode` of the answer, when it has one.
        errcode: Option<String>,
        /// The answer's body.
        body: String,
    },
    /// The homeserver answered 2xx, but not with what the API promises.
    #[error("{method} {path}: unexpected answer: {reason}")]
    Response {
        /// The HTTP method.
        method: &'static str,
        /// The request path, without the homeserver's address.
        path: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The caller asked for something this Synapse cannot do (an appservice user on a Synapse
    /// started without an appservice, a request while it is stopped, ...).
    #[error("{0}")]
    Usage(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// The HTTP status of a [`Error::Status`] answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Matrix `errcode` (`M_FORBIDDEN`, ...) of a [`Error::Status`] answer.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Error::Status { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }
}
