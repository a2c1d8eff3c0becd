//! The commands.

mod admin;
mod enact;
mod explain;
mod ingest;
mod preview;
mod query;
mod serve;
mod stream;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prr_engine::{RecordUpgrade, RuntimeConfig};
use prr_replicas::{Matrix, REPLICAS, matrix_records_reporting};

use crate::args::{Cli, Command};
use crate::{Failure, exit};

/// What a command opens.
pub(crate) struct Ctx {
    pub store: std::path::PathBuf,
    pub workers: usize,
    pub revision_every: Option<u64>,
    pub keep_revisions: usize,
}

impl Ctx {
    /// The runtime on the store, for commands that write.
    pub fn open(&self) -> Result<Matrix, Failure> {
        self.open_with(false)
    }

    /// The runtime for `prr stream`, which runs until its input ends: the revisions it resumed
    /// from are decoded ahead, in the background, for the changes that need them whole.
    pub fn open_streaming(&self) -> Result<Matrix, Failure> {
        self.open_with(true)
    }

    /// The runtime; with `decode_ahead`, see `RuntimeConfig::with_decode_ahead` (a command
    /// that applies its input and exits decodes only what it touches).
    fn open_with(&self, decode_ahead: bool) -> Result<Matrix, Failure> {
        let config = RuntimeConfig::new()
            .with_store(&self.store)
            .with_decode_ahead(decode_ahead)
            .with_workers(self.workers)
            .with_revision_every(self.revision_every)
            .with_keep_revisions(self.keep_revisions)
            .with_record_upgrade(store_upgrade());
        Ok(Matrix::start(config)?)
    }

    /// The runtime on an existing store, for commands that write but must not create one
    /// (`compact`, `rebuild`): a missing file is `no store at PATH`, as for the readers.
    pub fn open_existing(&self) -> Result<Matrix, Failure> {
        match std::fs::metadata(&self.store) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_store(&self.store)),
            // Anything else (a loop, permission denied) is for the store to say.
            _ => self.open(),
        }
    }

    /// The runtime for commands that only read: no revision capture at exit, and a missing
    /// store file is `no store at PATH` (exit 1); nothing is created.
    pub fn open_read(&self) -> Result<Matrix, Failure> {
        let config = RuntimeConfig::new()
            .with_store(&self.store)
            .with_workers(self.workers)
            .with_decode_ahead(false)
            .with_read_only(true)
            .with_record_upgrade(store_upgrade());
        Ok(Matrix::start(config)?)
    }
}

/// The Matrix replicas' upgrade of a store of an older format, with a progress line on a
/// terminal (an upgrade of a large store takes seconds); quiet in pipes.
pub fn store_upgrade() -> Arc<dyn RecordUpgrade + Send + Sync> {
    let terminal = std::io::stderr().is_terminal();
    let shown = AtomicU64::new(u64::MAX);
    matrix_records_reporting(move |done, total| {
        let percent = done * 100 / total.max(1);
        if !terminal || shown.swap(percent, Ordering::Relaxed) == percent {
            return;
        }
        eprint!(
            "\rprr: upgrading the store to the current format: {percent}% ({done} of {total} chunks and log entries)"
        );
        if done == total {
            eprintln!();
        }
    })
}

/// The error of every command that reads a store that is not there.
fn no_store(path: &std::path::Path) -> Failure {
    Failure::new(
        exit::FAILURE,
        anyhow::anyhow!("no store at {}", path.display()),
    )
}

/// Checks the global options' ranges before anything is opened: a usage error that gives the
/// reason and the limit.
fn limits(cli: &Cli) -> Result<(), Failure> {
    let usage = |m: String| Err(Failure::new(exit::USAGE, anyhow::anyhow!(m)));
    let max = RuntimeConfig::max_workers();
    if cli.workers == 0 {
        return usage("--workers must be at least 1".into());
    }
    if cli.workers > max {
        let cores = max / RuntimeConfig::WORKERS_PER_CORE;
        return usage(format!(
            "--workers {} is too many: this machine has {cores} cores, and prr starts at most \
             {} worker threads per core, so at most {max}; more threads than cores only slow \
             every step down",
            cli.workers,
            RuntimeConfig::WORKERS_PER_CORE,
        ));
    }
    if cli.keep_revisions == 0 {
        return usage("--keep-revisions must be at least 1 (the newest revision is kept)".into());
    }
    if cli.revision_every == Some(0) {
        return usage(
            "--revision-every must be at least 1; leave it out to capture revisions only at \
             the end of each command"
                .into(),
        );
    }
    Ok(())
}

/// A storage failure whose message does not name the store gets its path, once.
fn name_the_store(mut f: Failure, path: &std::path::Path) -> Failure {
    let storage = f.error.chain().any(|c| {
        matches!(
            c.downcast_ref::<prr_engine::Error>(),
            Some(prr_engine::Error::Store(_) | prr_engine::Error::Corrupt(_))
        )
    });
    let shown = path.display().to_string();
    if storage && !format!("{:#}", f.error).contains(&shown) {
        f.error = f.error.context(format!("store {shown}"));
    }
    f
}

/// Checks replica names before anything is opened, so a typo never touches the store.
fn known_replicas<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), Failure> {
    for n in names {
        if !REPLICAS.contains(&n.as_str()) {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!(
                    "unknown replica `{n}`; the replicas are: {}",
                    REPLICAS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Runs a command; returns the exit status.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    limits(&cli)?;
    match &cli.command {
        Command::Show { replica, .. } if replica == query::POISONED => {}
        Command::Show { replica, .. } | Command::Deltas { replica, .. } => {
            known_replicas([replica])?
        }
        Command::Revisions {
            replica: Some(r), ..
        } => known_replicas([r])?,
        Command::Rebuild { replicas, .. } => known_replicas(replicas)?,
        Command::Stream { emit, .. } | Command::Preview { emit, .. } => known_replicas(emit)?,
        _ => {}
    }
    let ctx = Ctx {
        store: cli.store,
        workers: cli.workers,
        revision_every: cli.revision_every,
        keep_revisions: cli.keep_revisions,
    };
    command(&ctx, cli.command).map_err(|f| name_the_store(f, &ctx.store))
}

fn command(ctx: &Ctx, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Ingest { paths } => ingest::ingest(ctx, &paths),
        Command::Explain {
            instance,
            user,
            room,
            acl,
            format,
        } => explain::explain(
            ctx,
            &instance,
            user.as_deref(),
            room.as_deref(),
            acl,
            format,
        ),
        Command::Preview {
            paths,
            emit,
            format,
        } => preview::preview(ctx, &paths, &emit, format),
        Command::Show {
            replica,
            partition,
            as_of,
            format,
        } if replica == query::POISONED => query::show_poisoned(ctx, partition, as_of, format),
        Command::Show {
            replica,
            partition,
            as_of,
            format,
        } => query::show(ctx, &replica, partition.as_deref(), as_of, format),
        Command::Deltas {
            replica,
            since,
            format,
        } => query::deltas(ctx, &replica, since, format),
        Command::Status { format } => admin::status(ctx, format),
        Command::Revisions { replica, format } => admin::revisions(ctx, replica.as_deref(), format),
        Command::Compact => admin::compact(ctx),
        Command::Rebuild { replicas, check } => admin::rebuild(ctx, &replicas, check),
        Command::Check { door: None } => admin::check(ctx),
        Command::Check { door: Some(door) } => explain::door(ctx, &door),
        Command::AckPoisoned { seq } => admin::ack_poisoned(ctx, seq),
        Command::Stream { emit, max_batch } => stream::stream(ctx, &emit, max_batch),
        Command::Serve {
            listen,
            homeserver,
            registration,
            access_token_file,
            api_token_file,
            revision_interval,
            resync_every,
            dedup_retention,
            compact_every,
            enact,
            acl_interval,
            enact_concurrency,
            bulk_priority,
        } => serve::serve(
            ctx,
            serve::Options {
                listen,
                homeserver,
                registration,
                access_token_file,
                api_token_file,
                revision_interval,
                resync_every,
                dedup_retention,
                compact_every,
                enact: enact.then(|| prr_serve::EnactConfig {
                    only: None,
                    acl_interval: std::time::Duration::from_secs(acl_interval),
                    concurrency: enact_concurrency,
                    retry_failed: false,
                }),
                bulk_priority,
            },
        ),
        Command::Enact {
            instance,
            dry_run,
            only,
            retry_failed,
            homeserver,
            registration,
            access_token_file,
            format,
        } => enact::enact(
            ctx,
            enact::Options {
                instance,
                dry_run,
                only,
                retry_failed,
                homeserver,
                registration,
                access_token_file,
                format,
            },
        ),
        Command::Graph { format } => admin::graph(ctx, format),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "prr", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_10_a_storage_error_names_the_store_once() {
        let path = std::path::Path::new("/var/lib/prr/prr.redb");
        let damaged = Failure::new(
            exit::FAILURE,
            prr_engine::Error::Corrupt("log entry 7 does not decode".into()),
        );
        let named = format!("{:#}", name_the_store(damaged, path).error);
        assert!(
            named.starts_with("store /var/lib/prr/prr.redb: "),
            "{named}"
        );
        let already = Failure::new(
            exit::FAILURE,
            anyhow::anyhow!("no store at /var/lib/prr/prr.redb"),
        );
        let kept = format!("{:#}", name_the_store(already, path).error);
        assert_eq!(kept, "no store at /var/lib/prr/prr.redb");
    }
}
