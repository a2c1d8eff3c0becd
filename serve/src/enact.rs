//! The effect handlers: the intents of each caught-up instance enacted on the homeserver,
//! each action's outcome recorded as a source delta before the next action of its room.
//!
//! A pass reads an instance's `pending` intents ([`prr_replicas::Matrix::intents`]), skips
//! those whose last attempt was refused for the same intent (unless told to retry) and ACLs set
//! less than `acl_interval` ago, and runs the rooms in parallel (at most `concurrency` at
//! once), each room's actions in order. When an action's turn comes, an intent that is no
//! longer pending, or no longer the same, is `withdrawn`, not enacted; otherwise a `started`
//! outcome is recorded, the homeserver asked, and the outcome recorded. An intent that left
//! `pending` without a `done` outcome is settled at the next pass: `done` when it was started
//! and the replicas show it achieved (a handler stopped between the homeserver's answer and
//! the outcome), else `withdrawn`; this covers intents that came and went between two passes. A ban the homeserver
//! refuses while the user is banned already is `done`. `429` and `5xx` are retried by the
//! client ([`prr_homeserver::Retry`]); when its retries run out the intent stays pending
//! without an outcome and a later pass tries again. Other refusals are `failed` with the
//! homeserver's errcode and message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prr_homeserver::{Error as HsError, Homeserver, Retry};
use prr_replicas::{Action, IntentKey, NewOutcome, OutcomeStatus, Previous, Work};
use tokio::sync::{Semaphore, watch};

use crate::catchup::{Shared, lock};
use crate::config::EnactConfig;
use crate::core::{Command, ask};

/// How the handlers' calls retry `429`, `5xx` and network errors before the intent is left
/// for a later pass.
pub(crate) const RETRY: Retry = Retry {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
    attempts: Some(6),
};

/// How soon a pass whose actions failed for a passing reason (the homeserver down, rate
/// limits past the client's retries) is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(30);

/// How the handler reaches the homeserver as an instance.
#[derive(Clone, Debug)]
pub(crate) enum Acting {
    /// An appservice: masquerades as every instance (`?user_id=`).
    Appservice(Homeserver),
    /// Bot mode: the account `user`, which acts only for its own instance.
    Bot { hs: Homeserver, user: String },
}

impl Acting {
    /// Whether this handler acts for `instance`.
    pub(crate) fn can_act_as(&self, instance: &str) -> bool {
        match self {
            Acting::Appservice(_) => true,
            Acting::Bot { user, .. } => user == instance,
        }
    }

    /// The client acting as `instance`, if this handler can.
    fn as_instance(&self, instance: &str) -> Option<Homeserver> {
        match self {
            Acting::Appservice(hs) => Some(hs.acting_as(instance)),
            Acting::Bot { hs, user } => (user == instance).then(|| hs.clone()),
        }
    }
}

/// How `hs` acts: as an appservice, or as the bot account its token is (asked with
/// `whoami`, retried until the homeserver answers; `None` when it refuses the token).
pub(crate) async fn acting(hs: Homeserver, appservice: bool) -> Option<Acting> {
    if appservice {
        return Some(Acting::Appservice(hs));
    }
    loop {
        match hs.whoami().await {
            Ok(user) => return Some(Acting::Bot { hs, user }),
            Err(e) if e.is_unauthorized() => {
                tracing::error!(error = %e, "effects stopped");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "effects: the homeserver does not answer; retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// The effect handlers' state across passes.
pub(crate) struct Enactor {
    acting: Acting,
    core: Sender<Command>,
    config: EnactConfig,
    /// When each room's ACL was last set: (instance, room).
    last_acl: HashMap<(String, String), Instant>,
    /// Intents a pass saw pending and that have no outcome from this handler since: one
    /// that leaves `pending` without a `done` outcome is withdrawn.
    seen: HashMap<IntentKey, (u64, Option<Previous>)>,
}

/// What one pass did.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// The outcomes recorded, in the order they were.
    pub outcomes: Vec<NewOutcome>,
    /// Whether some action ended without an outcome (to try again later).
    pub transient: bool,
    /// The soonest an ACL deferred by the interval may be set.
    pub next_acl: Option<Duration>,
}

fn now_ms() -> i64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0, |d| d.as_millis() as i64)
}

/// How one action ended.
enum Ended {
    Outcome(NewOutcome),
    /// No outcome: a passing failure, or the service is stopping.
    Transient,
}

impl Enactor {
    pub(crate) fn new(acting: Acting, core: Sender<Command>, config: EnactConfig) -> Enactor {
        Enactor {
            acting,
            core,
            config,
            last_acl: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// One pass over `instances`: every pending action they may take now.
    pub(crate) async fn pass(&mut self, instances: &[String]) -> Pass {
        let mut pass = Pass::default();
        for instance in instances {
            let Some(hs) = self.acting.as_instance(instance) else {
                continue;
            };
            let only = self.config.only;
            let got = ask(&self.core, |reply| Command::Intents {
                instance: instance.clone(),
                only,
                reply,
            })
            .await;
            let intents = match got {
                Some(Ok(i)) => i,
                Some(Err(e)) => {
                    tracing::error!(%instance, error = %e, "cannot read the intents");
                    pass.transient = true;
                    continue;
                }
                None => return pass, // stopping
            };
            let mut withdrawn = Vec::new();
            for g in intents.gone {
                let seen = self.seen.remove(&g.key);
                let intent = (g.previous.map(|p| p.intent))
                    .or(seen.map(|(i, _)| i))
                    .unwrap_or_default();
                let started = g
                    .previous
                    .is_some_and(|p| p.status == OutcomeStatus::Started);
                let mut o = withdraw(g.key, intent, intents.seq, g.previous);
                if started && g.achieved {
                    // Sent before the handler stopped, and the homeserver's state shows it.
                    o.status = OutcomeStatus::Done;
                }
                withdrawn.push(o);
            }
            // Intents seen pending before that left it without an outcome.
            let now_pending: std::collections::HashSet<&IntentKey> =
                intents.work.iter().map(|w| &w.key).collect();
            let left: Vec<IntentKey> = (self.seen.keys())
                .filter(|k| k.instance == *instance && !now_pending.contains(k))
                .cloned()
                .collect();
            for key in left {
                if let Some((intent, previous)) = self.seen.remove(&key) {
                    withdrawn.push(withdraw(key, intent, intents.seq, previous));
                }
            }
            if !withdrawn.is_empty() && !self.record(&withdrawn, &mut pass).await {
                return pass;
            }
            let mut rooms: BTreeMap<String, Vec<Work>> = BTreeMap::new();
            for w in intents.work {
                if let Some(p) = w.previous
                    && p.status == OutcomeStatus::Failed
                    && p.intent == w.intent
                    && !self.config.retry_failed
                {
                    continue; // refused for this very intent: an operator must ask
                }
                self.seen.insert(w.key.clone(), (w.intent, w.previous));
                if w.key.action == Action::ServerAcl {
                    let at = (instance.clone(), w.key.room_id.clone());
                    if let Some(t) = self.last_acl.get(&at) {
                        let since = t.elapsed();
                        if since < self.config.acl_interval {
                            let wait = self.config.acl_interval - since;
                            pass.next_acl = Some(pass.next_acl.map_or(wait, |n| n.min(wait)));
                            continue;
                        }
                    }
                    self.last_acl.insert(at, Instant::now());
                }
                rooms.entry(w.key.room_id.clone()).or_default().push(w);
            }
            let limit = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (_, works) in rooms {
                let (hs, core, limit) = (hs.clone(), self.core.clone(), limit.clone());
                tasks.spawn(async move {
                    let _turn = limit.acquire_owned().await;
                    enact_room(&hs, &core, works).await
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (outcomes, transient) = done.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "an effect task failed");
                    (Vec::new(), true)
                });
                pass.transient |= transient;
                for o in &outcomes {
                    self.seen.remove(&o.key);
                }
                pass.outcomes.extend(outcomes);
            }
        }
        pass
    }

    /// Records `outcomes` through the core; false when the service is stopping.
    async fn record(&mut self, outcomes: &[NewOutcome], pass: &mut Pass) -> bool {
        match record(&self.core, outcomes.to_vec()).await {
            Some(true) => {
                pass.outcomes.extend_from_slice(outcomes);
                true
            }
            Some(false) => {
                pass.transient = true;
                true
            }
            None => false,
        }
    }
}

/// A `withdrawn` outcome.
fn withdraw(key: IntentKey, intent: u64, seq: u64, previous: Option<Previous>) -> NewOutcome {
    NewOutcome {
        key,
        status: OutcomeStatus::Withdrawn,
        error: None,
        intent_seq: seq,
        attempts: previous.map_or(0, |p| p.attempts),
        at: now_ms(),
        intent,
    }
}

/// Records outcomes as one source delta: `Some(true)` when durable, `Some(false)` when the
/// commit failed (logged), `None` when the service is stopping.
async fn record(core: &Sender<Command>, outcomes: Vec<NewOutcome>) -> Option<bool> {
    match ask(core, |reply| Command::Outcomes { outcomes, reply }).await? {
        Ok(_) => Some(true),
        Err(e) => {
            tracing::error!(error = %e, "cannot record outcomes");
            Some(false)
        }
    }
}

/// One room's actions in order, each outcome durable before the next action. Returns the
/// outcomes and whether some action ended without one.
async fn enact_room(
    hs: &Homeserver,
    core: &Sender<Command>,
    works: Vec<Work>,
) -> (Vec<NewOutcome>, bool) {
    let mut outcomes = Vec::new();
    let mut transient = false;
    for w in works {
        let still = ask(core, |reply| Command::StillPending {
            work: Box::new(w.clone()),
            reply,
        })
        .await;
        let ended = match still {
            None => return (outcomes, true),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the intents");
                Ended::Transient
            }
            Some(Ok(false)) => {
                Ended::Outcome(withdraw(w.key.clone(), w.intent, w.intent_seq, w.previous))
            }
            Some(Ok(true)) => {
                // Recorded before the homeserver is asked: a handler stopped before the answer
                // settles it at its next run.
                let mut started = withdraw(w.key.clone(), w.intent, w.intent_seq, w.previous);
                started.status = OutcomeStatus::Started;
                started.attempts += 1;
                match record(core, vec![started]).await {
                    None => return (outcomes, true),
                    Some(false) => Ended::Transient,
                    Some(true) => act(hs, &w).await,
                }
            }
        };
        match ended {
            Ended::Transient => transient = true,
            Ended::Outcome(o) => match record(core, vec![o.clone()]).await {
                Some(true) => outcomes.push(o),
                Some(false) => transient = true,
                None => return (outcomes, true),
            },
        }
    }
    (outcomes, transient)
}

/// Sends one action to the homeserver.
async fn act(hs: &Homeserver, w: &Work) -> Ended {
    let key = &w.key;
    let result = match key.action {
        Action::Ban => {
            let reason = w.reason.as_deref().unwrap_or_default();
            match hs.ban(&key.room_id, &key.target, reason).await {
                // A user banned already counts as done.
                Err(HsError::Refused { .. })
                    if matches!(
                        hs.membership(&key.room_id, &key.target).await,
                        Ok(Some(m)) if m == "ban"
                    ) =>
                {
                    Ok(())
                }
                other => other,
            }
        }
        Action::ServerAcl => {
            let content = w.content.clone().unwrap_or_default();
            (hs.set_state(&key.room_id, "m.room.server_acl", "", &content)
                .await)
                .map(|_| ())
        }
    };
    let outcome = |status, error| NewOutcome {
        key: key.clone(),
        status,
        error,
        intent_seq: w.intent_seq,
        attempts: w.previous.map_or(0, |p| p.attempts) + 1,
        at: now_ms(),
        intent: w.intent,
    };
    match result {
        Ok(()) => {
            tracing::info!(instance = %key.instance, room = %key.room_id, action = key.action.as_str(), target = %key.target, "done");
            Ended::Outcome(outcome(OutcomeStatus::Done, None))
        }
        Err(HsError::Refused {
            status,
            errcode,
            message,
            ..
        }) => {
            let errcode = if errcode.is_empty() {
                format!("HTTP_{status}")
            } else {
                errcode
            };
            tracing::warn!(instance = %key.instance, room = %key.room_id, action = key.action.as_str(), target = %key.target, %errcode, "refused: {message}");
            Ended::Outcome(outcome(OutcomeStatus::Failed, Some((errcode, message))))
        }
        Err(e) => {
            tracing::warn!(instance = %key.instance, room = %key.room_id, action = key.action.as_str(), error = %e, "not done; tried again later");
            Ended::Transient
        }
    }
}

/// Runs the handlers until `stopping`: a pass over the caught-up instances after each new
/// source delta (debounced), when a deferred ACL is due, and again after passing failures.
pub(crate) async fn run(
    mut enactor: Enactor,
    caught_up: Shared,
    mut seq: watch::Receiver<u64>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let instances: Vec<String> = {
            let c = lock(&caught_up);
            (c.instances.iter())
                .filter(|(_, (done, _))| *done)
                .map(|(i, _)| i.clone())
                .collect()
        };
        let pass = enactor.pass(&instances).await;
        if !pass.outcomes.is_empty() {
            tracing::info!(outcomes = pass.outcomes.len(), "effects pass");
        }
        let mut wait = Duration::from_secs(3600);
        if pass.transient {
            wait = wait.min(RETRY_EVERY);
        }
        if let Some(acl) = pass.next_acl {
            wait = wait.min(acl);
        }
        // Catch-up may finish without a new delta: look again now and then.
        wait = wait.min(Duration::from_secs(5));
        tokio::select! {
            changed = seq.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
