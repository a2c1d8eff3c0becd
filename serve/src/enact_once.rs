//! `prr enact`: the effect handlers once, without the service. The store is opened as the
//! service opens it (a core thread owns it), each named instance's rooms are caught up (their
//! state fetched from the homeserver and ingested), then one pass enacts what is pending, and
//! the store is closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prr_homeserver::{AccessToken, Homeserver};
use prr_replicas::{Matrix, NewOutcome};
use tokio::sync::watch;

use crate::catchup::{fetch, fetch_as, named_rooms};
use crate::config::{EnactConfig, Registration, homeserver_url, token_file};
use crate::core::Core;
use crate::door::Door;
use crate::enact::{self, Acting, Enactor};
use crate::error::Error;
use crate::metrics::Metrics;

/// What `prr enact` is told.
#[derive(Clone, Debug)]
pub struct EnactOnce {
    runtime: prr_engine::RuntimeConfig,
    homeserver: String,
    registration: Option<Registration>,
    access_token: Option<crate::config::Token>,
    instance: Option<String>,
    config: EnactConfig,
}

/// What `prr enact` did.
#[derive(Debug, Default)]
pub struct EnactReport {
    /// The outcomes recorded, in order.
    pub outcomes: Vec<NewOutcome>,
    /// Instances not enacted because a room they name could not be caught up, with why.
    pub not_caught_up: BTreeMap<String, String>,
    /// Whether some action ended without an outcome (the homeserver failing): it stays
    /// pending.
    pub unfinished: bool,
}

impl EnactOnce {
    /// As the appservice of `registration` on the homeserver at `homeserver`.
    pub fn appservice(
        runtime: prr_engine::RuntimeConfig,
        homeserver: &str,
        registration: &std::path::Path,
    ) -> Result<EnactOnce, Error> {
        Ok(EnactOnce {
            runtime,
            homeserver: homeserver_url(homeserver)?,
            registration: Some(Registration::from_file(registration)?),
            access_token: None,
            instance: None,
            config: EnactConfig::default(),
        })
    }

    /// As the bot account of the access token in `access_token`.
    pub fn bot(
        runtime: prr_engine::RuntimeConfig,
        homeserver: &str,
        access_token: &std::path::Path,
    ) -> Result<EnactOnce, Error> {
        Ok(EnactOnce {
            runtime,
            homeserver: homeserver_url(homeserver)?,
            registration: None,
            access_token: Some(token_file(access_token)?),
            instance: None,
            config: EnactConfig::default(),
        })
    }

    /// Only this instance (else every instance the handler can act as).
    pub fn with_instance(mut self, instance: Option<String>) -> Self {
        self.instance = instance;
        self
    }

    /// What the handlers do (`--only`, `--retry-failed`).
    pub fn with_config(mut self, config: EnactConfig) -> Self {
        self.config = config;
        self
    }

    /// Catches up and enacts once.
    pub fn run(self) -> Result<EnactReport, Error> {
        let runtime = self.runtime.clone();
        let (core_tx, core_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (seq_tx, _seq_rx) = watch::channel(0u64);
        let core = std::thread::Builder::new()
            .name("prr-core".into())
            .spawn(move || {
                let started = Matrix::start(runtime)
                    .and_then(|mut m| Door::start(&mut m).map(|door| (m, door)));
                let (m, door) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = started_tx.send(Ok(()));
                let metrics = Arc::new(Metrics::new());
                Core::new(m, metrics, seq_tx, (Duration::from_secs(3600), None), door).run(core_rx)
            })
            .map_err(|e| Error::Config(format!("cannot start the core thread: {e}")))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = core.join();
                return Err(e.into());
            }
            Err(_) => return Err(Error::CoreFailed),
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
        let report = rt.block_on(self.enact(core_tx));
        drop(rt);
        let stopped = core.join().map_err(|_| Error::CoreFailed)?;
        let report = report?;
        stopped?;
        Ok(report)
    }

    async fn enact(
        self,
        core: std::sync::mpsc::Sender<crate::core::Command>,
    ) -> Result<EnactReport, Error> {
        let token = match (&self.registration, &self.access_token) {
            (Some(reg), _) => reg.as_token.clone(),
            (None, Some(t)) => t.0.clone(),
            (None, None) => unreachable!("a homeserver has a token"),
        };
        let hs = Homeserver::new(&self.homeserver, AccessToken::new(token))
            .map_err(|e| Error::Config(format!("--homeserver: {e}")))?
            .with_retry(enact::RETRY);
        let acting = if self.registration.is_some() {
            Acting::Appservice(hs.clone())
        } else {
            let user = hs.whoami().await.map_err(|e| match e.is_unauthorized() {
                true => Error::Unauthorized(e.to_string()),
                false => Error::Config(format!("--homeserver: {e}")),
            })?;
            Acting::Bot {
                hs: hs.clone(),
                user,
            }
        };
        let named = named_rooms(&core).await.ok_or(Error::CoreFailed)?;
        let instances: Vec<String> = (named.keys())
            .filter(|i| acting.can_act_as(i))
            .filter(|i| self.instance.as_ref().is_none_or(|want| want == *i))
            .cloned()
            .collect();
        if let Some(want) = &self.instance
            && instances.is_empty()
        {
            let why = if named.contains_key(want) {
                "the access token's account is another user"
            } else {
                "the store has no such instance (see `prr show instances`)"
            };
            return Err(Error::Config(format!("cannot enact for {want}: {why}")));
        }
        let mut report = EnactReport::default();
        let mut registered = std::collections::HashSet::new();
        let mut caught_up = Vec::new();
        for instance in instances {
            let mut failure = None;
            for room in &named[&instance] {
                let got = match &acting {
                    Acting::Appservice(hs) => {
                        fetch(hs, &core, &instance, room, &mut registered).await
                    }
                    Acting::Bot { hs, .. } => fetch_as(hs, &core, room).await,
                };
                if let Err(e) = got {
                    failure = Some(format!("{room}: {e}"));
                    break;
                }
            }
            match failure {
                Some(why) => {
                    tracing::warn!(%instance, "not caught up: {why}");
                    report.not_caught_up.insert(instance, why);
                }
                None => caught_up.push(instance),
            }
        }
        let mut enactor = Enactor::new(acting, core, self.config);
        let pass = enactor.pass(&caught_up).await;
        report.outcomes = pass.outcomes;
        report.unfinished = pass.transient;
        Ok(report)
    }
}
