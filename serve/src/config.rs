//! What `prr serve` is told: the address, the store, the API token, the homeserver source.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prr_engine::RuntimeConfig;
use serde::Deserialize;

use crate::error::Error;
use crate::priority::{BulkPriority, DEFAULT_BULK_PRIORITY};
use prr_replicas::Action;

/// The address `prr serve` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";

/// How often the rooms the instances name are fetched again unless told otherwise: 1 h.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(3600);

/// How long `source_events` keeps an event received by default: a day.
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the service compacts in process by default: a day.
pub const DEFAULT_COMPACT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The longest a `GET /v1/replicas/{name}/deltas?wait=` request waits, in seconds: a longer
/// `wait` is cut to it.
pub const MAX_WAIT_SECS: u64 = 300;

/// The largest request body accepted (`POST /v1/ingest`, appservice transactions): 256 MiB.
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// The default of `--acl-interval`: an ACL is set at most this often per room.
pub const DEFAULT_ACL_INTERVAL: Duration = Duration::from_secs(15);

/// The default of `--enact-concurrency`: rooms acted on at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What the effect handlers do.
#[derive(Clone, Debug)]
pub struct EnactConfig {
    /// Only bans or only ACLs (`--only`).
    pub only: Option<Action>,
    /// At most one ACL per room this often.
    pub acl_interval: Duration,
    /// Rooms acted on at once.
    pub concurrency: usize,
    /// Whether intents refused before are tried again (an operator asks).
    pub retry_failed: bool,
}

impl Default for EnactConfig {
    fn default() -> Self {
        EnactConfig {
            only: None,
            acl_interval: DEFAULT_ACL_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            retry_failed: false,
        }
    }
}

/// An appservice registration (the YAML file given to Synapse's `app_service_config_files`).
/// Only the fields prr uses are read; others are ignored.
#[derive(Clone, Deserialize)]
pub struct Registration {
    /// The appservice's ID.
    pub id: String,
    /// Where the homeserver sends transactions (this service's address, as the homeserver
    /// sees it); may be absent or `null`.
    #[serde(default)]
    pub url: Option<String>,
    /// The token the appservice uses towards the homeserver (never logged).
    pub as_token: String,
    /// The token the homeserver presents to the appservice (never logged).
    pub hs_token: String,
    /// The local part of the appservice's own user.
    pub sender_localpart: String,
    /// The users, aliases and rooms the appservice is interested in, as written.
    #[serde(default)]
    pub namespaces: serde_norway::Value,
}

impl std::fmt::Debug for Registration {
    // Tokens are never printed, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("sender_localpart", &self.sender_localpart)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Reads and checks a registration file: `id`, `as_token`, `hs_token` and
    /// `sender_localpart` must be non-empty strings.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = read(path)?;
        let reg: Registration = serde_norway::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: not an appservice registration: {e}",
                path.display()
            ))
        })?;
        for (field, value) in [
            ("id", &reg.id),
            ("as_token", &reg.as_token),
            ("hs_token", &reg.hs_token),
            ("sender_localpart", &reg.sender_localpart),
        ] {
            if value.trim().is_empty() {
                return Err(Error::Config(format!(
                    "{}: field `{field}` is empty",
                    path.display()
                )));
            }
        }
        Ok(reg)
    }
}

/// The configuration of `prr serve`: built with `with_*` setters; the address is checked when
/// the service starts.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub(crate) listen: String,
    pub(crate) runtime: RuntimeConfig,
    pub(crate) store: PathBuf,
    pub(crate) api_token: Option<Token>,
    pub(crate) homeserver: Option<String>,
    pub(crate) registration: Option<Registration>,
    /// Bot mode: the bot account's access token.
    pub(crate) access_token: Option<Token>,
    pub(crate) revision_interval: Duration,
    /// Capture revisions after this many source deltas too (taken from the runtime's
    /// configuration by `serve`, so that the core starts them in the background).
    pub(crate) revision_every: Option<u64>,
    pub(crate) resync_every: Duration,
    /// How long `source_events` keeps an event received (`--dedup-retention`).
    pub(crate) dedup_retention: Duration,
    /// How often the core compacts in process (`--compact-every`).
    pub(crate) compact_every: Duration,
    /// `--enact`: the effect handlers, when on.
    pub(crate) enact: Option<EnactConfig>,
    /// `--bulk-priority`: the priority of the threads that do bulk work.
    pub(crate) bulk_priority: BulkPriority,
}

/// A secret read from a file; its `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Token(pub(crate) String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl ServeConfig {
    /// Serve the Matrix replicas of the runtime `runtime` (whose store is `store`), listening
    /// on [`DEFAULT_LISTEN`], without an API token or a homeserver source, capturing revisions
    /// every 60 s when something changed.
    pub fn new(runtime: RuntimeConfig, store: impl Into<PathBuf>) -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.to_string(),
            runtime,
            store: store.into(),
            api_token: None,
            homeserver: None,
            registration: None,
            access_token: None,
            revision_interval: Duration::from_secs(60),
            revision_every: None,
            resync_every: DEFAULT_RESYNC,
            dedup_retention: DEFAULT_DEDUP_RETENTION,
            compact_every: DEFAULT_COMPACT_EVERY,
            enact: None,
            bulk_priority: DEFAULT_BULK_PRIORITY,
        }
    }

    /// Enact the intents of the caught-up instances on the homeserver (`--enact`): needs a
    /// homeserver source (checked when the service starts).
    pub fn with_enact(mut self, enact: EnactConfig) -> Self {
        self.enact = Some(enact);
        self
    }

    /// Run the threads that do bulk work at `priority` (default [`DEFAULT_BULK_PRIORITY`]):
    /// the core thread, the dataflow worker threads it starts, and the parsing of ingest and
    /// preview bodies. The HTTP threads keep the process's priority, so a check at the door
    /// takes a core from a join wave at once (on Linux, where each thread has its own policy
    /// and nice value; elsewhere this does nothing).
    pub fn with_bulk_priority(mut self, priority: BulkPriority) -> Self {
        self.bulk_priority = priority;
        self
    }

    /// Listen on `addr` (`HOST:PORT`; port 0 picks a free port, printed at start).
    pub fn with_listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Require `Authorization: Bearer <token>` on every `/v1` request, the token being the
    /// file's contents without surrounding whitespace (an empty token is refused).
    pub fn with_api_token_file(mut self, path: &Path) -> Result<Self, Error> {
        self.api_token = Some(token_file(path)?);
        Ok(self)
    }

    /// Capture revisions this often while source deltas arrive (besides every
    /// `revision_every` deltas and at shutdown).
    pub fn with_revision_interval(mut self, every: Duration) -> Self {
        self.revision_interval = every;
        self
    }

    /// With a homeserver source, fetch the state of every room the instances name again this
    /// often (and ingest what differs), to heal events the homeserver lost. At least 1 s.
    pub fn with_resync_every(mut self, every: Duration) -> Result<Self, Error> {
        self.resync_every = at_least_a_second("--resync-every", every)?;
        Ok(self)
    }

    /// Keep an event a homeserver source delivered in `source_events` (deduplicated by its
    /// ID) at least this long after it was received and after the service started; then it
    /// leaves, unless it is the current `room_state` record at its key. At least 1 s.
    pub fn with_dedup_retention(mut self, keep: Duration) -> Result<Self, Error> {
        self.dedup_retention = at_least_a_second("--dedup-retention", keep)?;
        Ok(self)
    }

    /// Compact in process this often (at least 1 s): capture revisions, delete the source log
    /// before the oldest retained revision and the revisions no longer retained, and collect
    /// the dictionary's strings that nothing retained uses, from the store and from memory
    /// (the dataflow restarts from the revisions; commands wait meanwhile).
    pub fn with_compact_every(mut self, every: Duration) -> Result<Self, Error> {
        self.compact_every = at_least_a_second("--compact-every", every)?;
        Ok(self)
    }

    /// Receive the homeserver's appservice transactions: `homeserver` is its client-server
    /// URL, `registration` the registration file also given to the homeserver.
    pub fn with_appservice(mut self, homeserver: &str, registration: &Path) -> Result<Self, Error> {
        self.homeserver = Some(homeserver_url(homeserver)?);
        self.registration = Some(Registration::from_file(registration)?);
        Ok(self)
    }

    /// Bot mode: follow the homeserver's `/sync` as the account of the access token (the
    /// file's contents), as Draupnir does in bot mode; the instance manifest comes from the
    /// account's Draupnir configuration in its account data.
    pub fn with_bot(mut self, homeserver: &str, access_token: &Path) -> Result<Self, Error> {
        self.homeserver = Some(homeserver_url(homeserver)?);
        self.access_token = Some(token_file(access_token)?);
        Ok(self)
    }

    /// The address to bind: `listen` resolved; without an API token every address it
    /// resolves to must be a loopback address.
    pub(crate) fn bind_addr(&self) -> Result<SocketAddr, Error> {
        let addrs: Vec<SocketAddr> = (self.listen.to_socket_addrs())
            .map_err(|e| Error::Config(format!("--listen {}: {e}", self.listen)))?
            .collect();
        let Some(first) = addrs.first() else {
            return Err(Error::Config(format!(
                "--listen {}: resolves to no address",
                self.listen
            )));
        };
        if self.api_token.is_none() && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(Error::NotLoopback(self.listen.clone()));
        }
        Ok(*first)
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn token_file(path: &Path) -> Result<Token, Error> {
    let token = read(path)?.trim().to_string();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "{}: the token file is empty",
            path.display()
        )));
    }
    Ok(Token(token))
}

/// Checks a homeserver URL: `http` or `https`, with a host. Returns it without a trailing `/`.
pub(crate) fn homeserver_url(url: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Config(format!("--homeserver {url}: {why}"));
    let uri: axum::http::Uri = url.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("the URL must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `every`, refused with the option's name when shorter than a second.
fn at_least_a_second(option: &str, every: Duration) -> Result<Duration, Error> {
    if every < Duration::from_secs(1) {
        return Err(Error::Config(format!(
            "{option} {}s: must be at least 1s",
            every.as_secs_f64()
        )));
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homeserver_urls_need_a_scheme_and_a_host() {
        assert_eq!(
            homeserver_url("https://matrix.example.org/").unwrap(),
            "https://matrix.example.org"
        );
        assert!(homeserver_url("http://localhost:8008").is_ok());
        for bad in ["matrix.example.org", "ftp://x.org", "https://", "::"] {
            assert!(homeserver_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_addresses_are_allowed() {
        let c = ServeConfig::new(RuntimeConfig::new(), "s.redb");
        assert!(c.clone().with_listen("127.0.0.1:0").bind_addr().is_ok());
        assert!(c.clone().with_listen("[::1]:0").bind_addr().is_ok());
        assert!(matches!(
            c.clone().with_listen("0.0.0.0:0").bind_addr(),
            Err(Error::NotLoopback(_))
        ));
        let mut with_token = c.with_listen("0.0.0.0:0");
        with_token.api_token = Some(Token("t".into()));
        assert!(with_token.bind_addr().is_ok());
    }

    #[test]
    fn a_registration_needs_its_tokens_and_never_prints_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.yaml");
        std::fs::write(
            &path,
            "id: prr\nurl: http://localhost:9797\nas_token: secret-as\nhs_token: secret-hs\n\
             sender_localpart: prr\nnamespaces:\n  users: []\n  rooms: []\n",
        )
        .unwrap();
        let reg = Registration::from_file(&path).unwrap();
        assert_eq!(reg.hs_token, "secret-hs");
        let shown = format!("{reg:?}");
        assert!(!shown.contains("secret"), "{shown}");
        std::fs::write(
            &path,
            "id: prr\nas_token: a\nhs_token: ''\nsender_localpart: p\n",
        )
        .unwrap();
        let e = Registration::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("hs_token"), "{e}");
        std::fs::write(&path, "- not a mapping\n").unwrap();
        assert!(Registration::from_file(&path).is_err());
    }
}
