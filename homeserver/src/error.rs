//! The errors of a call to the homeserver.

/// Why a call to the homeserver failed, after the retries its `Retry` allows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL is not an `http` or `https` URL.
    #[error("homeserver URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The homeserver does not accept the token (`401`): nothing will work until an operator
    /// gives another one.
    #[error(
        "{what}: the homeserver refused the access token ({errcode}: {message}); check the token file or the registration's as_token"
    )]
    Unauthorized {
        /// The call, e.g. `GET /_matrix/client/v3/sync`.
        what: String,
        /// The Matrix error code (`M_UNKNOWN_TOKEN`, `M_MISSING_TOKEN`, ...).
        errcode: String,
        /// The homeserver's message.
        message: String,
    },
    /// The homeserver refused the request (a `4xx` other than `401` and `429`): retrying the
    /// same request will not help.
    #[error("{what}: {status} {errcode}: {message}")]
    Refused {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The Matrix error code, or `""` when the body had none.
        errcode: String,
        /// The homeserver's message (or the start of the body).
        message: String,
    },
    /// The homeserver kept failing (`429`, `5xx`, network errors) until the retries ran out.
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// The call.
        what: String,
        /// How many times it was sent.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The homeserver answered `200` with a body that is not what the API promises.
    #[error("{what}: the homeserver's answer is not valid: {reason}")]
    BadResponse {
        /// The call.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Whether the error is the homeserver refusing the token: a source stops on it with a
    /// clear message rather than retrying.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }
}
