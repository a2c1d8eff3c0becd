//! The commands.

mod admin;
mod ingest;
mod query;
mod stream;

use prr_engine::RuntimeConfig;
use prr_replicas::{Matrix, REPLICAS};

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
        let config = RuntimeConfig::new()
            .with_store(&self.store)
            .with_workers(self.workers)
            .with_revision_every(self.revision_every)
            .with_keep_revisions(self.keep_revisions);
        Ok(Matrix::start(config)?)
    }

    /// The runtime for commands that only read: no revision capture at exit, and a missing
    /// store file reads as an empty store without creating one.
    pub fn open_read(&self) -> Result<Matrix, Failure> {
        if !self.store.exists() {
            return Ok(Matrix::start(
                RuntimeConfig::new().with_workers(self.workers),
            )?);
        }
        let config = RuntimeConfig::new()
            .with_store(&self.store)
            .with_workers(self.workers)
            .with_read_only(true);
        Ok(Matrix::start(config)?)
    }
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
    if cli.workers == 0 {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("--workers must be at least 1"),
        ));
    }
    match &cli.command {
        Command::Show { replica, .. } if replica == query::POISONED => {}
        Command::Show { replica, .. } | Command::Deltas { replica, .. } => {
            known_replicas([replica])?
        }
        Command::Revisions {
            replica: Some(r), ..
        } => known_replicas([r])?,
        Command::Rebuild { replicas, .. } => known_replicas(replicas)?,
        Command::Stream { emit, .. } => known_replicas(emit)?,
        _ => {}
    }
    let ctx = Ctx {
        store: cli.store,
        workers: cli.workers,
        revision_every: cli.revision_every,
        keep_revisions: cli.keep_revisions,
    };
    match cli.command {
        Command::Ingest { paths } => ingest::ingest(&ctx, &paths),
        Command::Show {
            replica,
            partition,
            as_of,
            format,
        } if replica == query::POISONED => query::show_poisoned(&ctx, partition, as_of, format),
        Command::Show {
            replica,
            partition,
            as_of,
            format,
        } => query::show(&ctx, &replica, partition.as_deref(), as_of, format),
        Command::Deltas {
            replica,
            since,
            format,
        } => query::deltas(&ctx, &replica, since, format),
        Command::Status { format } => admin::status(&ctx, format),
        Command::Revisions { replica, format } => {
            admin::revisions(&ctx, replica.as_deref(), format)
        }
        Command::Compact => admin::compact(&ctx),
        Command::Rebuild { replicas, check } => admin::rebuild(&ctx, &replicas, check),
        Command::Check => admin::check(&ctx),
        Command::AckPoisoned { seq } => admin::ack_poisoned(&ctx, seq),
        Command::Stream { emit, max_batch } => stream::stream(&ctx, &emit, max_batch),
        Command::Graph { format } => admin::graph(&ctx, format),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "prr", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}
