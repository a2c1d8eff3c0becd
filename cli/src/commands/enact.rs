//! `prr enact`: the pending intents enacted once on the homeserver (or, `--dry-run`, listed).

use std::path::PathBuf;

use prr_engine::RuntimeConfig;
use prr_replicas::{Action, Matrix};
use prr_serve::{EnactConfig, EnactOnce};
use serde_json::Value;

use super::Ctx;
use crate::args::{EnactOnly, ShowFormat};
use crate::{Failure, exit};

/// `prr enact`'s options.
pub struct Options {
    pub instance: Option<String>,
    pub dry_run: bool,
    pub only: Option<EnactOnly>,
    pub retry_failed: bool,
    pub homeserver: Option<String>,
    pub registration: Option<PathBuf>,
    pub access_token_file: Option<PathBuf>,
    pub format: Option<ShowFormat>,
}

pub fn enact(ctx: &Ctx, o: Options) -> Result<u8, Failure> {
    let only = o.only.map(|a| match a {
        EnactOnly::Bans => Action::Ban,
        EnactOnly::Acl => Action::ServerAcl,
    });
    if o.dry_run {
        let mut m = ctx.open_read()?;
        let rows = dry_run(&mut m, o.instance.as_deref(), only, o.retry_failed)?;
        m.shutdown()?;
        super::query::write_rows(rows, o.format)?;
        return Ok(exit::OK);
    }
    let usage = super::serve::failure;
    if !ctx.store.exists() {
        return Err(super::no_store(&ctx.store));
    }
    super::serve::logging_quiet();
    let runtime = RuntimeConfig::new()
        .with_store(&ctx.store)
        .with_workers(ctx.workers)
        .with_revision_every(ctx.revision_every)
        .with_keep_revisions(ctx.keep_revisions);
    let hs = o.homeserver.as_deref().expect("clap requires it");
    let once = match (&o.registration, &o.access_token_file) {
        (Some(reg), None) => EnactOnce::appservice(runtime, hs, reg),
        (None, Some(token)) => EnactOnce::bot(runtime, hs, token),
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!(
                    "--homeserver needs --registration FILE (appservice) or --access-token-file FILE (bot mode)"
                ),
            ));
        }
    }
    .map_err(usage)?;
    let config = EnactConfig {
        only,
        retry_failed: o.retry_failed,
        ..EnactConfig::default()
    };
    let report = (once.with_instance(o.instance).with_config(config))
        .run()
        .map_err(usage)?;
    let rows: Vec<Value> = report.outcomes.iter().map(|o| o.to_json()).collect();
    super::query::write_rows(rows, o.format)?;
    let failed = (report.outcomes.iter())
        .filter(|o| o.status == prr_replicas::OutcomeStatus::Failed)
        .count();
    for (instance, why) in &report.not_caught_up {
        eprintln!("prr: {instance} not enacted: could not catch up {why}");
    }
    if failed > 0 {
        eprintln!(
            "prr: {failed} action(s) refused by the homeserver (see `prr show outcomes`); \
             `prr enact --retry-failed` tries them again"
        );
    }
    if report.unfinished {
        eprintln!("prr: some actions did not finish (the homeserver failed); they stay pending");
    }
    Ok(
        if failed > 0 || report.unfinished || !report.not_caught_up.is_empty() {
            exit::FAILURE
        } else {
            exit::OK
        },
    )
}

/// The actions a run would take now, from the store as it is (no catch-up).
fn dry_run(
    m: &mut Matrix,
    instance: Option<&str>,
    only: Option<Action>,
    retry_failed: bool,
) -> Result<Vec<Value>, Failure> {
    let instances: Vec<String> = match instance {
        Some(i) => vec![i.to_string()],
        None => {
            let mut all: Vec<String> = (m.show("instances", None, None)?.iter())
                .filter_map(|r| r["instance"].as_str().map(str::to_string))
                .collect();
            all.dedup();
            all
        }
    };
    let mut rows = Vec::new();
    for i in &instances {
        let intents = m.intents(i, only, &[])?;
        for w in &intents.work {
            let refused = w.previous.is_some_and(|p| {
                p.status == prr_replicas::OutcomeStatus::Failed && p.intent == w.intent
            });
            if !refused || retry_failed {
                rows.push(w.to_json());
            }
        }
    }
    Ok(rows)
}
