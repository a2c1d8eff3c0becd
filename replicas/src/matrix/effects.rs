//! The effect handlers' side of the replicas: the `pending` intents of an instance with what
//! to send for each, and outcomes recorded as source deltas.

use std::collections::HashMap;
use std::sync::Arc;

use prr_engine::{Error, Id, SourceDelta};
use serde_json::{Value, json};

use super::Matrix;
use crate::intent::{acl_fingerprint_of, ban_fingerprint_of};
use crate::record::{Action, Outcome, OutcomeStatus, Rec};
use crate::render::{NO_REASON, sort_key};

/// An intent's key in `outcomes` and `pending`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntentKey {
    /// The instance.
    pub instance: String,
    /// The protected room.
    pub room_id: String,
    /// The action.
    pub action: Action,
    /// The user to ban, or `""` for `server_acl`.
    pub target: String,
}

/// An intent's earlier outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    /// How it ended.
    pub status: OutcomeStatus,
    /// How many times it was tried.
    pub attempts: u32,
    /// The fingerprint of the intent it served.
    pub intent: u64,
}

/// One `pending` intent with what the handler sends for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// Its key.
    pub key: IntentKey,
    /// A ban's reason (the rule's, or `<no reason supplied>`).
    pub reason: Option<String>,
    /// A server ACL's content: `allow`, `deny`, `allow_ip_literals`.
    pub content: Option<Value>,
    /// The intent's fingerprint.
    pub intent: u64,
    /// The seq the replicas were read at: the intent an outcome serves.
    pub intent_seq: u64,
    /// Its outcome so far, if any (never `done`: that one is not pending).
    pub previous: Option<Previous>,
}

/// What an effect handler did for an intent, to record in `outcomes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOutcome {
    /// The intent.
    pub key: IntentKey,
    /// How it ended.
    pub status: OutcomeStatus,
    /// The homeserver's `errcode` and message, for a refusal.
    pub error: Option<(String, String)>,
    /// The seq of the intent it served.
    pub intent_seq: u64,
    /// How many times it was tried in all.
    pub attempts: u32,
    /// When it ended (ms since the Unix epoch).
    pub at: i64,
    /// The fingerprint of the intent it served.
    pub intent: u64,
}

impl IntentKey {
    /// The key's fields as JSON (`instance`, `room_id`, `action`, `target`) with `more` after
    /// them.
    fn json_with(&self, more: Value) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("instance".into(), self.instance.clone().into());
        m.insert("room_id".into(), self.room_id.clone().into());
        m.insert("action".into(), self.action.as_str().into());
        m.insert("target".into(), self.target.clone().into());
        if let Value::Object(more) = more {
            m.extend(more);
        }
        Value::Object(m)
    }
}

impl NewOutcome {
    /// The outcome as its `outcomes` record's JSON.
    pub fn to_json(&self) -> Value {
        self.key.json_with(json!({
            "status": self.status.as_str(),
            "error": (self.error.as_ref()).map(|(c, m)| json!({"errcode": c, "error": m})),
            "intent_seq": self.intent_seq,
            "attempts": self.attempts,
            "at": self.at,
        }))
    }
}

impl Work {
    /// The pending action as JSON (what `prr enact --dry-run` prints): its key, the ban's
    /// reason or the ACL's content, and its earlier outcome's status.
    pub fn to_json(&self) -> Value {
        self.key.json_with(json!({
            "reason": self.reason,
            "content": self.content,
            "previous": self.previous.map(|p| p.status.as_str()),
        }))
    }
}

/// An instance's intents as the handler sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intents {
    /// The seq the replicas were read at.
    pub seq: u64,
    /// The `pending` intents, in key order (room, then action, then target).
    pub work: Vec<Work>,
    /// Intents that are no longer pending and have no `done` outcome: those whose last outcome
    /// is `failed` or `started`, and those `appeared` names (seen pending since the handler's
    /// last read) with no outcome yet.
    pub gone: Vec<Gone>,
}

/// An intent that left `pending` without a `done` outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    /// Its key.
    pub key: IntentKey,
    /// Its last outcome, if any.
    pub previous: Option<Previous>,
    /// Whether the replicas show the action as achieved: the user's membership is `ban`, or
    /// the room's ACL is in sync with the intent. A `started` action that is achieved is done.
    pub achieved: bool,
}

impl Matrix {
    /// The records of `replica` in `instance`'s partition.
    fn partition_rows(&mut self, replica: &str, instance: Id) -> Result<Vec<Rec>, Error> {
        let id = self.rt.replica(replica)?;
        let rows = self.rt.read(id, Some(instance))?;
        Ok((rows.into_iter())
            .flat_map(|(r, m)| std::iter::repeat_n(r, m.max(0) as usize))
            .collect())
    }

    /// `instance`'s `pending` intents with what to send for each (only `action`'s when
    /// given), and its failed intents that are no longer intended, as of the last final seq.
    ///
    /// `appeared` are keys the handler saw enter `pending` since its last read (from the
    /// replica's deltas): those no longer pending without an outcome are `gone` too.
    pub fn intents(
        &mut self,
        instance: &str,
        only: Option<Action>,
        appeared: &[IntentKey],
    ) -> Result<Intents, Error> {
        let intent_seq = self.rt.last_seq().0;
        let Some(inst) = self.rt.dictionary().lookup(instance) else {
            return Ok(Intents {
                seq: intent_seq,
                ..Intents::default()
            });
        };
        let dict = self.rt.dictionary().clone();
        let key_of = |instance: Id, room: Id, action: Action, target: Id| IntentKey {
            instance: dict.get(instance),
            room_id: dict.get(room),
            action,
            target: dict.get(target),
        };
        let mut previous: HashMap<IntentKey, Previous> = HashMap::new();
        for r in self.partition_rows("outcomes", inst)? {
            if let Rec::Outcome(o) = r {
                let key = key_of(o.instance, o.room, o.action, o.target);
                previous.insert(
                    key,
                    Previous {
                        status: o.status,
                        attempts: o.attempts,
                        intent: o.intent,
                    },
                );
            }
        }
        let mut bans: HashMap<(Id, Id), (String, u64)> = HashMap::new();
        for r in self.partition_rows("member_bans", inst)? {
            if let Rec::Ban {
                room, user, rule, ..
            } = r
            {
                let reason = rule.reason.map_or(NO_REASON.to_string(), |r| dict.get(r));
                let fp = ban_fingerprint_of(&dict.get(rule.room), &dict.get(rule.event), &reason);
                bans.insert((room, user), (reason, fp));
            }
        }
        let acl = (self.partition_rows("server_acl", inst)?.into_iter()).find_map(|r| match r {
            Rec::Acl { deny, .. } => {
                let deny: Vec<String> = deny.iter().map(|d| dict.get(*d)).collect();
                let fp = acl_fingerprint_of(deny.iter().map(String::as_str));
                let content = json!({"allow": ["*"], "deny": deny, "allow_ip_literals": false});
                Some((content, fp))
            }
            _ => None,
        });
        let mut pending = self.partition_rows("pending", inst)?;
        pending.sort_by_cached_key(|r| sort_key(&dict, r));
        let mut out = Intents {
            seq: intent_seq,
            ..Intents::default()
        };
        for r in pending {
            let Rec::Pending {
                instance,
                room,
                action,
                target,
            } = r
            else {
                continue;
            };
            let key = key_of(instance, room, action, target);
            let prev = previous.remove(&key);
            if only.is_some_and(|a| a != action) {
                continue;
            }
            let (reason, content, intent) = match action {
                Action::Ban => match bans.get(&(room, target)) {
                    Some((reason, fp)) => (Some(reason.clone()), None, *fp),
                    None => continue,
                },
                Action::ServerAcl => match &acl {
                    Some((content, fp)) => (None, Some(content.clone()), *fp),
                    None => continue,
                },
            };
            out.work.push(Work {
                key,
                reason,
                content,
                intent,
                intent_seq,
                previous: prev,
            });
        }
        // What is left of the outcomes is not pending: done, or no longer intended.
        let pending_keys: std::collections::HashSet<IntentKey> =
            out.work.iter().map(|w| w.key.clone()).collect();
        let mut gone_keys: Vec<(IntentKey, Option<Previous>)> = (previous.iter())
            .filter(|(_, p)| matches!(p.status, OutcomeStatus::Failed | OutcomeStatus::Started))
            .map(|(k, p)| (k.clone(), Some(*p)))
            .collect();
        for k in appeared {
            if k.instance == instance && !pending_keys.contains(k) && !previous.contains_key(k) {
                gone_keys.push((k.clone(), None));
            }
        }
        gone_keys.retain(|(k, _)| only.is_none_or(|a| a == k.action));
        gone_keys.sort_by(|a, b| a.0.cmp(&b.0));
        gone_keys.dedup_by(|a, b| a.0 == b.0);
        for (key, previous) in gone_keys {
            let achieved = self.achieved(&key)?;
            out.gone.push(Gone {
                key,
                previous,
                achieved,
            });
        }
        Ok(out)
    }

    /// Whether the replicas show `key`'s action as achieved: the user banned in the room, or
    /// the room's ACL in sync with the instance's intent.
    fn achieved(&mut self, key: &IntentKey) -> Result<bool, Error> {
        Ok(match key.action {
            Action::Ban => (self.show("room_members", Some(&key.room_id), None)?.iter())
                .any(|r| r["user_id"] == key.target.as_str() && r["membership"] == "ban"),
            Action::ServerAcl => (self.show("acl_sync", Some(&key.instance), None)?.iter())
                .any(|r| r["room_id"] == key.room_id.as_str() && r["in_sync"] == true),
        })
    }

    /// Whether `work`'s intent is still pending, the same (its fingerprint) as when it was
    /// read: an intent that left its replica before its turn is withdrawn, not enacted.
    pub fn still_pending(&mut self, work: &Work) -> Result<bool, Error> {
        let dict = self.rt.dictionary().clone();
        let key = &work.key;
        let (Some(inst), Some(room), Some(target)) = (
            dict.lookup(&key.instance),
            dict.lookup(&key.room_id),
            dict.lookup(&key.target),
        ) else {
            return Ok(false);
        };
        let pending = (self.partition_rows("pending", inst)?.iter()).any(|r| {
            matches!(r, Rec::Pending { room: r_room, action, target: t, .. }
                if (*r_room, *action, *t) == (room, key.action, target))
        });
        if !pending {
            return Ok(false);
        }
        let intent = match key.action {
            Action::Ban => {
                (self.partition_rows("member_bans", inst)?.into_iter()).find_map(|r| match r {
                    Rec::Ban {
                        room: r_room,
                        user,
                        rule,
                        ..
                    } if (r_room, user) == (room, target) => {
                        let reason = rule.reason.map_or(NO_REASON.to_string(), |r| dict.get(r));
                        let (rr, re) = (dict.get(rule.room), dict.get(rule.event));
                        Some(ban_fingerprint_of(&rr, &re, &reason))
                    }
                    _ => None,
                })
            }
            Action::ServerAcl => {
                (self.partition_rows("server_acl", inst)?.into_iter()).find_map(|r| match r {
                    Rec::Acl { deny, .. } => Some(crate::intent::acl_fingerprint(&dict, &deny)),
                    _ => None,
                })
            }
        };
        Ok(intent == Some(work.intent))
    }

    /// Records `outcomes` in `outcomes` as one source delta (each replacing the intent's
    /// earlier outcome), durable and final when this returns. `None` when empty.
    pub fn record_outcomes(
        &mut self,
        outcomes: &[NewOutcome],
    ) -> Result<Option<prr_engine::Seq>, Error> {
        if outcomes.is_empty() {
            return Ok(None);
        }
        let replica = self.rt.replica("outcomes")?;
        let dict = self.rt.dictionary().clone();
        let mut delta = SourceDelta::new();
        let mut by_instance: HashMap<Id, Vec<Rec>> = HashMap::new();
        for o in outcomes {
            let instance = dict.intern(&o.key.instance);
            if let std::collections::hash_map::Entry::Vacant(e) = by_instance.entry(instance) {
                e.insert(self.partition_rows("outcomes", instance)?);
            }
            let record = Outcome {
                instance,
                room: dict.intern(&o.key.room_id),
                action: o.key.action,
                target: dict.intern(&o.key.target),
                status: o.status,
                error: (o.error.as_ref()).map(|(c, m)| (dict.intern(c), dict.intern(m))),
                intent_seq: o.intent_seq,
                attempts: o.attempts,
                at: o.at,
                intent: o.intent,
            };
            let rows = by_instance.get_mut(&instance).expect("loaded");
            let same_key = |r: &Rec| match r {
                Rec::Outcome(p) => {
                    (p.room, p.action, p.target) == (record.room, record.action, record.target)
                }
                _ => false,
            };
            if let Some(i) = rows.iter().position(same_key) {
                delta.remove(replica, rows.swap_remove(i));
            }
            let rec = Rec::Outcome(Arc::new(record));
            rows.push(rec.clone());
            delta.insert(replica, rec);
        }
        let seq = self.rt.push(delta)?;
        self.rt.step_until(seq)?;
        Ok(Some(seq))
    }
}
