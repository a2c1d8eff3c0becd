//! A real Synapse homeserver for prr's tests.
//!
//! [`Synapse::start`] runs the pinned `matrix-synapse` ([`SYNAPSE_VERSION`]) from the virtual
//! environment that `scripts/synapse-venv.sh` creates under `target/synapse-venv` (or
//! `$PRR_SYNAPSE_VENV`), on 127.0.0.1 with SQLite, a registration shared secret, no rate
//! limits, registration closed and optionally one appservice ([`AppserviceRegistration`]),
//! whose YAML file `prr serve --registration` can read too. When the venv is missing, starting
//! fails with [`Error::VenvMissing`], which says how to create it: tests never skip silently.
//!
//! [`Client`] acts as one user over the client-server API: rooms (room version 12 by default:
//! room ids without a server part), state events, [`PolicyRule`]s (literal, glob and MSC4205
//! hashed), redactions, memberships, account data, and `/state` exports in the shapes `prr ingest`
//! reads.
//!
//! ```no_run
//! use prr_synapse_harness::{PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig};
//!
//! let synapse = Synapse::start(SynapseConfig::new())?;
//! let admin = synapse.register("admin", "pw", true)?;
//! let list = admin.create_room(&RoomOptions::new().with_name("ban list"))?;
//! admin.send_rule(&list, &PolicyRule::entity(RuleKind::User, "@spam*:localhost"))?;
//! admin.send_rule(&list, &PolicyRule::hashed(RuleKind::Server, "evil.example"))?;
//! let state = admin.state_export(&list)?; // a JSON array, as `prr ingest` takes it
//! # let _ = state;
//! # Ok::<(), prr_synapse_harness::Error>(())
//! ```
//!
//! With an appservice: the registration is made first, so that the service it names (`prr
//! serve`) can start with the same file before Synapse does.
//!
//! ```no_run
//! use prr_synapse_harness::{AppserviceRegistration, Synapse, SynapseConfig, free_port};
//!
//! let url = format!("http://127.0.0.1:{}", free_port()?);
//! let registration = AppserviceRegistration::new("localhost", Some(&url));
//! # let registration_file = std::env::temp_dir().join("registration.yaml");
//! registration.write(&registration_file)?;
//! // ... start `prr serve --registration <registration_file>` listening at `url` here ...
//! let synapse = Synapse::start(SynapseConfig::new().with_appservice(registration))?;
//! let bot = synapse.register_appservice_user("prr_bot")?; // in the `@prr_.*` namespace
//! assert_eq!(bot.whoami()?, "@prr_bot:localhost");
//! # Ok::<(), prr_synapse_harness::Error>(())
//! ```

mod appservice;
mod client;
mod config;
mod error;
mod http;
mod policy;
mod server;
mod venv;
mod yaml;

pub use appservice::{AppserviceRegistration, Namespace, regex_escape};
pub use client::{Client, RoomOptions};
pub use config::SynapseConfig;
pub use error::Error;
pub use http::{Method, encode};
pub use policy::{PolicyRule, RuleKind, sha256_base64};
pub use server::{Synapse, free_port};
pub use venv::{SYNAPSE_VERSION, VENV_ENV, venv_dir};
