//! `prr-serve`: the long-running prr service, `prr serve`.
//!
//! One **core thread** owns the [`prr_replicas::Matrix`] (reads step the dataflow, so they
//! need it exclusively) and serves commands from a channel, answering each through a oneshot
//! channel; the HTTP handlers (tokio and axum) send it commands. A read waits behind at most
//! one ingest step.
//!
//! - `GET /v1/status`, `GET /v1/replicas/{name}`, `GET /v1/replicas/{name}/deltas`,
//!   `POST /v1/ingest`: the CLI's `status`, `show`, `deltas` and `ingest` over HTTP (JSON and
//!   NDJSON), behind a bearer token when one is configured;
//! - `GET /metrics`: Prometheus (OpenMetrics) text;
//! - with an appservice registration, the homeserver's transactions: one source delta each,
//!   durable before the 200, exactly once by event ID; and catch-up: the state of every room
//!   an instance names, fetched when it is named and again every `resync_every`;
//! - with `--enact`, the effect handlers: the intents of each caught-up instance enacted on
//!   the homeserver, each outcome a source delta (`outcomes`); [`EnactOnce`] is `prr enact`.
//!
//! Every write is durable before it is answered, so a `SIGKILL` loses nothing answered; a
//! storage failure makes writes answer 503 until it clears, reads go on. `SIGTERM` or
//! `SIGINT` stops accepting, finishes what is in flight, captures revisions and returns.
//!
//! ```no_run
//! use prr_engine::RuntimeConfig;
//! use prr_serve::{ServeConfig, serve};
//!
//! let runtime = RuntimeConfig::new().with_store("prr.redb");
//! serve(ServeConfig::new(runtime, "prr.redb").with_listen("127.0.0.1:9797")).unwrap();
//! ```

// Layers, bottom to top: `error`, `priority`, `config`, `metrics`, `received`, `history`; `core` (the
// thread);
// `http` (the /v1 API and middleware), `appservice`, `catchup`, `bot`, `enact` (the effect
// handlers); `run`, `enact_once` (`prr enact`).
mod appservice;
mod bot;
mod catchup;
mod checks;
mod config;
mod core;
mod door;
mod enact;
mod enact_once;
mod error;
mod history;
mod http;
mod metrics;
mod priority;
mod received;
mod run;

pub use config::{
    DEFAULT_ACL_INTERVAL, DEFAULT_COMPACT_EVERY, DEFAULT_CONCURRENCY, DEFAULT_DEDUP_RETENTION,
    DEFAULT_LISTEN, DEFAULT_RESYNC, EnactConfig, MAX_BODY_BYTES, MAX_WAIT_SECS, Registration,
    ServeConfig,
};
pub use enact_once::{EnactOnce, EnactReport};
pub use error::Error;
pub use priority::{BulkPriority, DEFAULT_BULK_PRIORITY};
pub use run::{serve, serve_with};
