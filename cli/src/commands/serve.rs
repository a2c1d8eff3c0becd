//! `prr serve`.

use std::path::PathBuf;
use std::time::Duration;

use prr_engine::RuntimeConfig;
use prr_serve::ServeConfig;

use super::Ctx;
use crate::{Failure, exit};

/// `prr serve`'s own options.
pub struct Options {
    pub listen: String,
    pub homeserver: Option<String>,
    pub registration: Option<PathBuf>,
    pub access_token_file: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    pub revision_interval: u64,
    pub resync_every: u64,
    pub dedup_retention: u64,
    pub compact_every: u64,
    pub enact: Option<prr_serve::EnactConfig>,
    pub bulk_priority: prr_serve::BulkPriority,
}

pub fn serve(ctx: &Ctx, o: Options) -> Result<u8, Failure> {
    logging();
    let usage = failure;
    if o.revision_interval == 0 {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("--revision-interval must be at least 1 second"),
        ));
    }
    let runtime = RuntimeConfig::new()
        .with_store(&ctx.store)
        .with_workers(ctx.workers)
        .with_revision_every(ctx.revision_every)
        .with_keep_revisions(ctx.keep_revisions);
    let mut config = ServeConfig::new(runtime, &ctx.store)
        .with_listen(o.listen)
        .with_revision_interval(Duration::from_secs(o.revision_interval))
        .with_resync_every(Duration::from_secs(o.resync_every))
        .map_err(usage)?
        .with_dedup_retention(Duration::from_secs(o.dedup_retention))
        .map_err(usage)?
        .with_compact_every(Duration::from_secs(o.compact_every))
        .map_err(usage)?
        .with_bulk_priority(o.bulk_priority);
    if let Some(path) = &o.api_token_file {
        config = config.with_api_token_file(path).map_err(usage)?;
    }
    match (&o.homeserver, &o.registration, &o.access_token_file) {
        (Some(hs), Some(reg), None) => config = config.with_appservice(hs, reg).map_err(usage)?,
        (Some(hs), None, Some(token)) => config = config.with_bot(hs, token).map_err(usage)?,
        (Some(_), None, None) => {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!(
                    "--homeserver needs --registration FILE (appservice) or --access-token-file FILE (bot mode)"
                ),
            ));
        }
        // clap refuses the other combinations.
        _ => {}
    }
    if let Some(enact) = o.enact {
        config = config.with_enact(enact);
    }
    prr_serve::serve(config).map_err(usage)?;
    Ok(exit::OK)
}

/// A `prr serve` or `prr enact` error as the command's failure: a bad option is a usage
/// error (exit 2), anything else a failure (exit 1).
pub(super) fn failure(e: prr_serve::Error) -> Failure {
    let code = if e.is_usage() {
        exit::USAGE
    } else {
        exit::FAILURE
    };
    Failure::new(code, e)
}

/// Logs to standard error, filtered by `RUST_LOG` (default `warn`): a one-shot command
/// (`prr enact`) says only what went wrong unless asked.
pub(super) fn logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
