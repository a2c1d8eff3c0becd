//! The records of the Matrix replicas: small tuples of interned ids.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use prr_engine::Id;
use serde::{Deserialize, Serialize};

use crate::glob::Glob;

mod facts;

pub use facts::Facts;
pub(crate) use facts::acl_equals;

/// A `room_state` record: the latest state event at `(room, type, state_key)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomState {
    /// `room_id`.
    pub room: Id,
    /// `type`.
    pub event_type: Id,
    /// `state_key`.
    pub state_key: Id,
    /// `event_id`.
    pub event_id: Id,
    /// `sender`.
    pub sender: Id,
    /// `origin_server_ts`.
    pub ts: Option<i64>,
    /// The content, as compact JSON text (stripped when redacted).
    pub content: Id,
    /// Whether the event was redacted.
    pub redacted: bool,
    /// What the computations read of the content, parsed from it once at ingest (added by
    /// format 6). Not shown in output.
    pub facts: Facts,
}

/// What a manifest says of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Relation {
    /// The instance exists (`room` is unused, 0).
    Exists,
    /// The instance watches policy room `room`.
    Watch,
    /// The instance protects room `room`.
    Protect,
}

/// A rule's kind (ordered as its name sorts: room, server, user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `room` rules.
    Room,
    /// `server` rules.
    Server,
    /// `user` rules.
    User,
}

impl Kind {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Server => "server",
            Kind::User => "user",
        }
    }
}

/// How a rule's entity is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchKind {
    /// A glob (contains `*` or `?`).
    Glob,
    /// A SHA-256 hash of the entity.
    Hashed,
    /// A literal entity.
    Literal,
}

impl MatchKind {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Glob => "glob",
            MatchKind::Hashed => "hashed",
            MatchKind::Literal => "literal",
        }
    }
}

/// A recommendation's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// `m.ban`, `org.matrix.mjolnir.ban`.
    Ban,
    /// `m.takedown`, `org.matrix.msc4204.takedown`.
    Takedown,
    /// `org.matrix.mjolnir.allow`.
    Allow,
    /// Anything else.
    Unknown,
}

impl Class {
    /// The class of a recommendation.
    pub fn of(recommendation: &str) -> Class {
        match recommendation {
            "m.ban" | "org.matrix.mjolnir.ban" => Class::Ban,
            "m.takedown" | "org.matrix.msc4204.takedown" => Class::Takedown,
            "org.matrix.mjolnir.allow" => Class::Allow,
            _ => Class::Unknown,
        }
    }

    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ban => "ban",
            Class::Takedown => "takedown",
            Class::Allow => "allow",
            Class::Unknown => "unknown",
        }
    }

    /// Whether the class bans (`ban` or `takedown`).
    pub fn bans(self) -> bool {
        matches!(self, Class::Ban | Class::Takedown)
    }
}

/// A policy rule in force (a `policy_room` record).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// The policy room.
    pub room: Id,
    /// `user`, `server` or `room`.
    pub kind: Kind,
    /// The slot's state key.
    pub state_key: Id,
    /// The event type that took the slot.
    pub event_type: Id,
    /// The event.
    pub event_id: Id,
    /// Its sender.
    pub sender: Id,
    /// Literal, glob or hashed.
    pub matcher: MatchKind,
    /// The entity (not for hashed rules).
    pub entity: Option<Id>,
    /// The SHA-256 (hashed rules only), as written.
    pub sha256: Option<Id>,
    /// The recommendation, as written.
    pub recommendation: Id,
    /// Its class.
    pub class: Class,
    /// The reason, if a string.
    pub reason: Option<Id>,
    /// The entity's glob (glob rules only), compiled at the rule's first comparison.
    #[serde(skip)]
    pub(crate) compiled: CompiledGlob,
}

impl Rule {
    /// The rule's glob, compiled by `compile` at the first call and kept with the rule: every
    /// record sharing the rule's `Arc` (its `policy_room` record, the join's copies of it, its
    /// matches) shares one compiled glob, so a rule is compiled once, not once per comparison.
    pub(crate) fn glob(&self, compile: impl FnOnce() -> Glob) -> &Glob {
        self.compiled.0.get_or_init(compile)
    }
}

/// A rule's compiled glob, a cache beside the rule's fields: never written to the store, and
/// not part of the rule's identity (all are equal, so rules compare, order and hash by their
/// fields alone, as before).
#[derive(Clone, Default)]
pub(crate) struct CompiledGlob(OnceLock<Glob>);

#[cfg(test)]
impl CompiledGlob {
    /// Whether the rule's glob has been compiled.
    pub(crate) fn is_compiled(&self) -> bool {
        self.0.get().is_some()
    }
}

impl PartialEq for CompiledGlob {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CompiledGlob {}

impl PartialOrd for CompiledGlob {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CompiledGlob {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

impl Hash for CompiledGlob {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for CompiledGlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same whether compiled or not: equal rules print alike.
        f.write_str("CompiledGlob")
    }
}

/// A membership value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Membership {
    /// `ban`.
    Ban,
    /// `invite`.
    Invite,
    /// `join`.
    Join,
    /// `knock`.
    Knock,
    /// `leave`.
    Leave,
}

impl Membership {
    /// Parses a membership value.
    pub fn parse(s: &str) -> Option<Membership> {
        Some(match s {
            "ban" => Membership::Ban,
            "invite" => Membership::Invite,
            "join" => Membership::Join,
            "knock" => Membership::Knock,
            "leave" => Membership::Leave,
            _ => return None,
        })
    }

    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Ban => "ban",
            Membership::Invite => "invite",
            Membership::Join => "join",
            Membership::Knock => "knock",
            Membership::Leave => "leave",
        }
    }

    /// Whether the user is present (join, invite or knock).
    pub fn present(self) -> bool {
        matches!(
            self,
            Membership::Join | Membership::Invite | Membership::Knock
        )
    }
}

/// Why an event is in `rejects`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// A rule whose `entity` is not a string.
    EntityNotString,
    /// A rule with neither entity nor hash.
    NoEntityOrHash,
    /// A rule without a string `recommendation`.
    RecommendationNotString,
    /// A member event whose `membership` is missing or not a string.
    MembershipMissing,
    /// A member event whose `membership` is not a known value.
    MembershipUnknown,
    /// An event a homeserver source delivered that is not a valid event (see `source_events`):
    /// the interned text says which field and why.
    InvalidEvent(Id),
}

impl RejectReason {
    /// The replica that rejected it.
    pub fn replica(self) -> &'static str {
        match self {
            RejectReason::EntityNotString
            | RejectReason::NoEntityOrHash
            | RejectReason::RecommendationNotString => "policy_room",
            RejectReason::MembershipMissing | RejectReason::MembershipUnknown => "room_members",
            RejectReason::InvalidEvent(_) => "room_state",
        }
    }

    /// A sentence for people; for [`RejectReason::InvalidEvent`] only its gist: the
    /// interned text gives the field (see `to_json`).
    pub fn message(self) -> &'static str {
        match self {
            RejectReason::EntityNotString => "`entity` is not a string",
            RejectReason::NoEntityOrHash => {
                "no `entity` and no `hashes.sha256` or `org.matrix.msc4205.hashes.sha256` string"
            }
            RejectReason::RecommendationNotString => "`recommendation` is missing or not a string",
            RejectReason::MembershipMissing => "`membership` is missing or not a string",
            RejectReason::MembershipUnknown => {
                "`membership` is not join, invite, knock, leave or ban"
            }
            RejectReason::InvalidEvent(_) => "not a valid event",
        }
    }
}

/// What an effect handler does for an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Ban a user from a protected room (a `member_bans` intent).
    Ban,
    /// Set a protected room's `m.room.server_acl` (a `server_acl` intent, for a room whose
    /// `acl_sync` is false).
    ServerAcl,
}

impl Action {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::ServerAcl => "server_acl",
        }
    }

    /// The action named `s` in output.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "ban" => Some(Action::Ban),
            "server_acl" => Some(Action::ServerAcl),
            _ => None,
        }
    }
}

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OutcomeStatus {
    /// The homeserver did it (or it was so already: a user banned before).
    Done,
    /// The homeserver refused it; not retried until the intent changes or an operator asks.
    Failed,
    /// The intent left its replica before its turn: nothing was done.
    Withdrawn,
    /// The handler is sending it: recorded before the homeserver is asked, so that a handler
    /// stopped before the answer settles it at its next run (done when the homeserver's state
    /// shows it, else sent again or withdrawn).
    Started,
}

impl OutcomeStatus {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Done => "done",
            OutcomeStatus::Failed => "failed",
            OutcomeStatus::Withdrawn => "withdrawn",
            OutcomeStatus::Started => "started",
        }
    }
}

/// An `outcomes` record: what an effect handler did for one intent. The first four fields are
/// the key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Outcome {
    /// The instance.
    pub instance: Id,
    /// The protected room.
    pub room: Id,
    /// The action.
    pub action: Action,
    /// The banned user, or the empty string for `server_acl`.
    pub target: Id,
    /// How it ended.
    pub status: OutcomeStatus,
    /// The homeserver's `errcode` and message, for a refusal.
    pub error: Option<(Id, Id)>,
    /// The `Seq` of the intent it served (the replicas' seq when the handler read it).
    pub intent_seq: u64,
    /// How many times the handler tried it, over every run.
    pub attempts: u32,
    /// When it ended, in milliseconds since the Unix epoch.
    pub at: i64,
    /// The fingerprint of the intent it served (see `crate::effects::fingerprint`): a `done`
    /// ACL serves only the intent with the same deny list; a `failed` action is retried when
    /// the intent's fingerprint changes. Not shown in output.
    pub intent: u64,
}

/// A record of any Matrix replica. Each replica holds one variant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rec {
    /// `room_state`: shared, so that the ingest state, the dataflow's input and its
    /// arrangements hold one copy of an event.
    RoomState(Arc<RoomState>),
    /// `instances` (the manifests' source replica): `(instance, relation, room)`.
    Instance {
        /// The instance (a user ID).
        instance: Id,
        /// What the manifest says.
        relation: Relation,
        /// The room (0 for `Exists`).
        room: Id,
    },
    /// `policy_room`.
    Rule(Arc<Rule>),
    /// `policy_list`.
    ListRule {
        /// The instance.
        instance: Id,
        /// The rule.
        rule: Arc<Rule>,
    },
    /// `room_members`.
    Member {
        /// The room.
        room: Id,
        /// The user.
        user: Id,
        /// The membership.
        membership: Membership,
        /// The display name, if a string.
        displayname: Option<Id>,
    },
    /// `member_set`.
    MemberSet {
        /// The instance.
        instance: Id,
        /// The user.
        user: Id,
        /// Protected rooms the user is present in.
        rooms: u32,
    },
    /// `member_matches`.
    Match {
        /// The instance.
        instance: Id,
        /// The user.
        user: Id,
        /// The matching rule.
        rule: Arc<Rule>,
    },
    /// `member_bans`.
    Ban {
        /// The instance.
        instance: Id,
        /// The protected room.
        room: Id,
        /// The user.
        user: Id,
        /// The chosen rule (shared, so that the variant stays small).
        rule: Arc<ChosenRule>,
    },
    /// `server_acl`.
    Acl {
        /// The instance.
        instance: Id,
        /// The denied entities, sorted by their text.
        deny: Vec<Id>,
    },
    /// `acl_sync`.
    AclSync {
        /// The instance.
        instance: Id,
        /// The protected room.
        room: Id,
        /// Whether the room's ACL equals the intent.
        in_sync: bool,
    },
    /// `rejects` (shared, so that the variant stays small).
    Reject(Arc<Rejected>),
    /// `source_events` as format 4 stored it, without the time it was received: read from
    /// older stores only (see [`Rec::SourceEvent`]), and replaced by a [`Rec::SourceEvent`]
    /// received at the first pruning (`Matrix::prune_source_events`). Its place in this enum
    /// is that of format 4's `SourceEvent`, so format 4's bytes decode unchanged.
    UntimedSourceEvent(Arc<Delivered>),
    /// `outcomes`: what an effect handler did for an intent.
    Outcome(Arc<Outcome>),
    /// `pending`: an intent without a `done` outcome, what the handlers would do next.
    Pending {
        /// The instance.
        instance: Id,
        /// The protected room.
        room: Id,
        /// The action.
        action: Action,
        /// The user to ban, or the empty string for `server_acl`.
        target: Id,
    },
    /// `source_positions`: where a homeserver source is (a `/sync` client's `next_batch`),
    /// committed in the same source delta as what it brought, so that a restart resumes
    /// there with no gap and no duplicate.
    SourcePosition {
        /// The source's name (e.g. `sync:@bot:example.org`).
        source: Id,
        /// Its position (opaque to prr).
        position: Id,
    },
    /// `source_events`: an event that a homeserver source (an appservice transaction)
    /// delivered and that was kept (a state event or a redaction), valid or not. Its event ID
    /// is never applied again while the record is kept (see `Matrix::prune_source_events`).
    /// Added by format 5, last in this enum so that format 4's records keep their tags.
    SourceEvent {
        /// The event (shared, so that the variant stays small).
        event: Arc<Delivered>,
        /// When it was received, in seconds since the Unix epoch. Not shown in output.
        received: u64,
    },
}

/// The rule a `member_bans` record chose. Its fields are encoded in the record's place, as
/// the record's own were before it was shared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChosenRule {
    /// The rule's room.
    pub room: Id,
    /// The rule's event.
    pub event: Id,
    /// The rule's reason.
    pub reason: Option<Id>,
}

/// A `rejects` record: an event that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejected {
    /// The room.
    pub room: Id,
    /// The event.
    pub event_id: Id,
    /// Its type.
    pub event_type: Id,
    /// Its state key.
    pub state_key: Id,
    /// Why.
    pub reason: RejectReason,
}

/// An event a homeserver source delivered, as `source_events` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Delivered {
    /// The room (the empty string when the event named none).
    pub room: Id,
    /// The event ID (for an event without one, `~sha256:` and the hash of its JSON).
    pub event_id: Id,
    /// Its type (empty when missing).
    pub event_type: Id,
    /// Its state key (empty for a redaction without one).
    pub state_key: Id,
    /// Why it is not a valid event; `None` for a valid one (applied to `room_state`).
    pub invalid: Option<Id>,
}

impl Rec {
    /// The event of a `source_events` record, of either format.
    pub fn delivered(&self) -> Option<&Delivered> {
        match self {
            Rec::SourceEvent { event, .. } | Rec::UntimedSourceEvent(event) => Some(event.as_ref()),
            _ => None,
        }
    }
}

impl Rec {
    /// The partition of a record: its room or its instance.
    pub fn partition(&self) -> u64 {
        match self {
            Rec::RoomState(r) => r.room,
            Rec::Instance { instance, .. } => *instance,
            Rec::Rule(r) => r.room,
            Rec::ListRule { instance, .. } => *instance,
            Rec::Member { room, .. } => *room,
            Rec::MemberSet { instance, .. } => *instance,
            Rec::Match { instance, .. } => *instance,
            Rec::Ban { instance, .. } => *instance,
            Rec::Acl { instance, .. } => *instance,
            Rec::AclSync { instance, .. } => *instance,
            Rec::Reject(r) => r.room,
            Rec::SourceEvent { event, .. } | Rec::UntimedSourceEvent(event) => event.room,
            Rec::SourcePosition { source, .. } => *source,
            Rec::Outcome(o) => o.instance,
            Rec::Pending { instance, .. } => *instance,
        }
    }
}

impl Rule {
    /// Calls `f` with each dictionary id of the rule.
    pub(crate) fn ids(&self, f: &mut dyn FnMut(Id)) {
        for id in [
            self.room,
            self.state_key,
            self.event_type,
            self.event_id,
            self.sender,
            self.recommendation,
        ] {
            f(id);
        }
        for id in [self.entity, self.sha256, self.reason]
            .into_iter()
            .flatten()
        {
            f(id);
        }
    }
}

impl Rec {
    /// Calls `f` with each dictionary id the record holds (every field of type `Id`): the
    /// engine checks records read from the store against the dictionary with it.
    pub fn ids(&self, f: &mut dyn FnMut(Id)) {
        match self {
            Rec::RoomState(r) => {
                for id in [
                    r.room,
                    r.event_type,
                    r.state_key,
                    r.event_id,
                    r.sender,
                    r.content,
                ] {
                    f(id);
                }
                r.facts.ids(f);
            }
            Rec::Instance { instance, room, .. } => {
                f(*instance);
                f(*room);
            }
            Rec::Rule(rule) => rule.ids(f),
            Rec::ListRule { instance, rule } | Rec::Match { instance, rule, .. } => {
                f(*instance);
                rule.ids(f);
                if let Rec::Match { user, .. } = self {
                    f(*user);
                }
            }
            Rec::Member {
                room,
                user,
                displayname,
                ..
            } => {
                f(*room);
                f(*user);
                if let Some(d) = displayname {
                    f(*d);
                }
            }
            Rec::MemberSet { instance, user, .. } => {
                f(*instance);
                f(*user);
            }
            Rec::Ban {
                instance,
                room,
                user,
                rule,
            } => {
                for id in [*instance, *room, *user, rule.room, rule.event] {
                    f(id);
                }
                if let Some(r) = rule.reason {
                    f(r);
                }
            }
            Rec::Acl { instance, deny } => {
                f(*instance);
                deny.iter().for_each(|id| f(*id));
            }
            Rec::AclSync { instance, room, .. } => {
                f(*instance);
                f(*room);
            }
            Rec::Reject(r) => {
                for id in [r.room, r.event_id, r.event_type, r.state_key] {
                    f(id);
                }
                if let RejectReason::InvalidEvent(text) = r.reason {
                    f(text);
                }
            }
            Rec::SourceEvent { event, .. } | Rec::UntimedSourceEvent(event) => {
                for id in [
                    event.room,
                    event.event_id,
                    event.event_type,
                    event.state_key,
                ] {
                    f(id);
                }
                if let Some(text) = event.invalid {
                    f(text);
                }
            }
            Rec::SourcePosition { source, position } => {
                f(*source);
                f(*position);
            }
            Rec::Outcome(o) => {
                for id in [o.instance, o.room, o.target] {
                    f(id);
                }
                if let Some((errcode, message)) = o.error {
                    f(errcode);
                    f(message);
                }
            }
            Rec::Pending {
                instance,
                room,
                target,
                ..
            } => {
                for id in [*instance, *room, *target] {
                    f(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Every arranged record is sized by the largest variant: rules, `room_state` records,
    /// a ban's chosen rule, rejects and delivered events are shared behind an `Arc` so that the
    /// membership records, by far the most numerous, pay for no larger variant (`Rec` was 72
    /// bytes before format 6; a `room_members` record is the largest now).
    #[test]
    fn records_stay_small() {
        let size = std::mem::size_of::<Rec>();
        assert!(size <= 40, "Rec is {size} bytes");
    }
}
