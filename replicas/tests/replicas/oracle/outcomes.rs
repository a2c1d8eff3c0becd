//! The oracle's effect handlers' side: the outcomes recorded, by intent, and which server ACL
//! intent each served, for `outcomes` and `pending` in [`Oracle::replicas`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Oracle, Rows};

/// An intent's key in `outcomes` and `pending`: `(instance, room_id, action, target)`.
pub type IntentKey = (String, String, String, String);

/// One `outcomes` record.
#[derive(Clone, Debug)]
pub(super) struct OutcomeRecord {
    /// The row as `outcomes` shows it.
    pub(super) row: Value,
    /// For a `server_acl` outcome, the deny list of the intent it served.
    pub(super) served: Option<BTreeSet<String>>,
}

impl OutcomeRecord {
    pub(super) fn done(&self) -> bool {
        self.row["status"] == "done"
    }
}

/// Which `server_acl` intent an outcome served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The instance's intent now (a `pending` intent the handler read).
    Current,
    /// The intent the key's earlier outcome served (an intent no longer pending).
    Previous,
}

impl Oracle {
    /// Records outcomes, rows as `outcomes` shows them, in order, each replacing the earlier
    /// outcome of its intent (one source delta). A `server_acl` outcome keeps the deny list of
    /// the intent it served, as the oracle computes it: the instance's current one, or the one
    /// its key's earlier outcome served.
    pub fn record_outcomes(&mut self, outcomes: &[(Value, Served)]) {
        let current = self.acl_intents();
        for (row, served) in outcomes {
            let field = |f: &str| row[f].as_str().expect("outcome key field").to_owned();
            let key = (
                field("instance"),
                field("room_id"),
                field("action"),
                field("target"),
            );
            let deny = match (key.2.as_str(), served) {
                ("server_acl", Served::Current) => Some(
                    current
                        .get(&key.0)
                        .unwrap_or_else(|| panic!("no server ACL intent for {key:?}"))
                        .clone(),
                ),
                ("server_acl", Served::Previous) => self
                    .outcomes
                    .get(&key)
                    .unwrap_or_else(|| panic!("no earlier outcome for {key:?}"))
                    .served
                    .clone(),
                _ => None,
            };
            let record = OutcomeRecord {
                row: row.clone(),
                served: deny,
            };
            self.outcomes.insert(key, record);
        }
    }

    /// Each instance's server ACL intent: its deny list (`server_acl`).
    fn acl_intents(&self) -> BTreeMap<String, BTreeSet<String>> {
        let replicas = self.replicas();
        (replicas["server_acl"].iter())
            .map(|row| {
                let instance = row["instance"].as_str().unwrap().to_owned();
                let deny = row["deny"].as_array().unwrap();
                let deny = deny.iter().map(|d| d.as_str().unwrap().to_owned());
                (instance, deny.collect())
            })
            .collect()
    }

    /// The outcome of an intent, as `outcomes` shows it.
    pub fn outcome(&self, key: &IntentKey) -> Option<&Value> {
        self.outcomes.get(key).map(|o| &o.row)
    }

    /// The outcomes of `instance`'s intents, as `outcomes` shows them, by key.
    pub fn outcomes_of<'a>(
        &'a self,
        instance: &'a str,
    ) -> impl Iterator<Item = (&'a IntentKey, &'a Value)> + 'a {
        (self.outcomes.iter())
            .filter(move |(k, _)| k.0 == instance)
            .map(|(k, o)| (k, &o.row))
    }

    /// `outcomes` and `pending` from the other replicas' rows: each `member_bans` record is a
    /// ban intent, each `acl_sync` record out of sync an ACL intent; an intent is pending
    /// without a `done` outcome (for an ACL, one that served the instance's current deny list).
    pub(super) fn effects(
        &self,
        member_bans: &[Value],
        server_acl: &[Value],
        acl_sync: &[Value],
    ) -> (Vec<Value>, Vec<Value>) {
        let text = |row: &Value, f: &str| row[f].as_str().expect("a string field").to_owned();
        let deny: BTreeMap<String, Vec<String>> = (server_acl.iter())
            .map(|row| {
                let deny = row["deny"].as_array().expect("deny").iter();
                let deny = deny.map(|d| d.as_str().expect("an entity").to_owned());
                (text(row, "instance"), deny.collect())
            })
            .collect();
        let mut pending = Rows::default();
        let mut intend = |key: IntentKey| {
            let row =
                json!({"instance": key.0, "room_id": key.1, "action": key.2, "target": key.3});
            pending.put(&[&key.0, &key.1, &key.2, &key.3], row);
        };
        for row in member_bans {
            let key = (
                text(row, "instance"),
                text(row, "room_id"),
                "ban".to_owned(),
                text(row, "user_id"),
            );
            if !self.outcomes.get(&key).is_some_and(OutcomeRecord::done) {
                intend(key);
            }
        }
        for row in acl_sync.iter().filter(|r| r["in_sync"] == false) {
            let instance = text(row, "instance");
            let current = &deny[&instance];
            let key = (
                instance,
                text(row, "room_id"),
                "server_acl".into(),
                String::new(),
            );
            let done = self.outcomes.get(&key).is_some_and(|o| {
                o.done()
                    && o.served
                        .as_ref()
                        .is_some_and(|s| s.iter().eq(current.iter()))
            });
            if !done {
                intend(key);
            }
        }
        let mut outcomes = Rows::default();
        for ((instance, room_id, action, target), o) in &self.outcomes {
            outcomes.put(&[instance, room_id, action, target], o.row.clone());
        }
        (outcomes.into_vec(), pending.into_vec())
    }
}
