//! `prr-replicas`: the Matrix moderation replicas of prr (their contract is
//! `docs/replicas.md`): room state, policy rooms and lists, memberships, members
//! matching policies, and the intents (bans, server ACLs) of each bot instance.
//!
//! Files are parsed ([`parse_file`]), turned into source deltas by the [`Ingestor`] (latest
//! state per key, redactions, manifests), and pushed into a [`prr_engine::Runtime`] running
//! [`matrix_dag`]. Identifiers are interned to integers inside the dataflow; [`to_json`]
//! gives records back as the spec's JSON objects.
//!
//! ```
//! use prr_replicas::{Matrix, parse_file};
//! use prr_engine::RuntimeConfig;
//!
//! let mut m = Matrix::start(RuntimeConfig::new()).unwrap();
//! let manifest = br#"{"instances": [{"id": "@bot:good.example", "watch": ["!list:x"], "protect": ["!room:x"]}]}"#;
//! let events = br#"[
//!   {"event_id": "$1", "room_id": "!list:x", "type": "m.policy.rule.user", "state_key": "r1", "sender": "@mod:x",
//!    "content": {"entity": "@spam*:*", "recommendation": "m.ban", "reason": "spam"}},
//!   {"event_id": "$2", "room_id": "!room:x", "type": "m.room.member", "state_key": "@spammer:evil.example",
//!    "sender": "@spammer:evil.example", "content": {"membership": "join"}}
//! ]"#;
//! m.ingest(&parse_file("manifest.json", manifest).unwrap()).unwrap();
//! m.ingest(&parse_file("events.json", events).unwrap()).unwrap();
//! let bans = m.show("member_bans", None, None).unwrap();
//! assert_eq!(bans[0]["user_id"], "@spammer:evil.example");
//! assert_eq!(bans[0]["reason"], "spam");
//! ```

// The modules in layers, bottom to top; each uses only modules of the layers below it
// (imports name an item's defining module, never the re-exports below):
// 1. `glob`, then `record` (a rule keeps its compiled glob), `parse`, `reduce`;
// 2. `rules` (rule content, match keys), `intent` (intents' fingerprints), `known` (known ids),
//    `facts` (an event's facts parsed from its content), `relations`
//    (the instances' relations), `render`;
// 3. `member_events`, `memberships`, `slots`: what several replicas compute alike;
// 4. `replicas` (one file per replica), then `dag` (assembles them);
// 5. `ingest`, `legacy` (records of older store formats), then `matrix`.
mod dag;
mod door;
mod explain;
mod facts;
// Some of the glob's methods serve only its tests and benchmarks (feature `test-util`).
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
mod glob;
mod ingest;
mod intent;
mod known;
mod legacy;
mod matrix;
mod member_events;
mod memberships;
mod parse;
mod record;
mod reduce;
mod relations;
mod render;
mod replicas;
mod rules;
mod slots;
#[cfg(feature = "test-util")]
mod tripwire;

pub use dag::{REPLICAS, matrix_dag};
pub use door::{DoorIndex, Refusal};
pub use explain::{explain_acl, explain_user};
/// The glob matcher and its index keys: internals, public for the crate's tests and
/// benchmarks only (feature `test-util`), not API.
#[cfg(feature = "test-util")]
pub use glob::{
    Glob, IndexKey, SERVER_PREFIX_LEN, USER_PREFIX_LEN, server_glob_key, server_keys,
    user_glob_key, user_keys,
};
pub use ingest::{Ingestor, Prepared};
pub use legacy::{matrix_records, matrix_records_reporting};
pub use matrix::{
    Gone, IngestSummary, IntentKey, Intents, Matrix, NewOutcome, Pipeline, Previous, Received, Work,
};
pub use parse::{
    Event, Location, ManifestEntry, ParseError, SourceItem, parse_event, parse_file, parse_line,
    redact_content,
};
pub use record::{
    Action, ChosenRule, Class, Delivered, Facts, Kind, MatchKind, Membership, Outcome,
    OutcomeStatus, Rec, RejectReason, Rejected, Relation, RoomState, Rule,
};
pub use render::{NO_REASON, poisoned_json, render_sorted, sort_key, status_json, to_json};
pub use rules::{normalize_server, server_name, sha256_base64};
/// A test replica that panics on one event (feature `test-util`): for quarantine tests.
#[cfg(feature = "test-util")]
pub use tripwire::dag_with_tripwire;
