//! `prr-replicas`: the Matrix moderation replicas of prr (see `spec/matrix-replicas.md` in
//! the shared design documents): room state, policy rooms and lists, memberships, members
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

mod dag;
mod glob;
mod ingest;
mod matrix;
mod parse;
mod record;
mod render;
mod resume;
mod rules;

pub use dag::{REPLICAS, matrix_dag};
pub use glob::{
    Glob, IndexKey, SERVER_PREFIX_LEN, USER_PREFIX_LEN, server_glob_key, server_keys,
    user_glob_key, user_keys,
};
pub use ingest::{Ingestor, Prepared};
pub use matrix::{IngestSummary, Matrix, Pipeline};
pub use parse::{
    Event, Location, ManifestEntry, ParseError, SourceItem, parse_file, parse_line, redact_content,
};
pub use record::{
    Class, Kind, MatchKind, Membership, Rec, RejectReason, Relation, RoomState, Rule,
};
pub use render::{NO_REASON, render_sorted, sort_key, to_json};
pub use rules::{normalize_server, server_name, sha256_base64};
