//! The command-line options the benchmark binaries share, the workload directory they name,
//! and the argument lists a parent passes to the children it runs.
//!
//! A binary flattens the option groups it takes into its own `clap` parser
//! (`#[command(flatten)]`), so every binary spells `--size`, `--seed`, `--workers`,
//! `--max-rss-gib` and `--cap-secs` alike, with the same defaults. Its children (hidden
//! subcommands of the same binary) flatten [`StoreArgs`] or [`RuntimeArgs`]; the parent
//! builds their command lines with [`ChildArgs`](crate::harness::child::ChildArgs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use prr_engine::RuntimeConfig;

use crate::harness::child::Limits;
use crate::workload::{Size, Workload, WorkloadConfig, list_files};

/// `--size` and `--seed`: the generated workload a benchmark runs on.
#[derive(Clone, Copy, Debug, Args)]
pub struct WorkloadArgs {
    /// The workload size.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    pub size: Size,
    /// The workload's seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl WorkloadArgs {
    /// The size's name, as given on the command line.
    pub fn name(&self) -> &'static str {
        self.size.name()
    }

    /// The configuration of the workload these options name.
    pub fn config(&self) -> WorkloadConfig {
        WorkloadConfig::for_size(self.size).with_seed(self.seed)
    }

    /// The generated workload, with its configuration.
    pub fn generate(&self) -> (WorkloadConfig, Workload) {
        let config = self.config();
        let workload = Workload::generate(&config);
        (config, workload)
    }

    /// The directory `work/workload-SIZE-SEED`, holding the workload once this returns (see
    /// [`WorkloadArgs::write_unless_present`]).
    pub fn prepare_in(
        &self,
        who: &str,
        workload: &Workload,
        work: &Path,
    ) -> anyhow::Result<PathBuf> {
        let dir = work.join(format!("workload-{}-{}", self.name(), self.seed));
        self.write_unless_present(who, workload, &dir)?;
        Ok(dir)
    }

    /// Makes `dir` hold the workload: used as is when it holds files, else `workload` is
    /// written there (`who` names the benchmark in the line printed then).
    pub fn write_unless_present(
        &self,
        who: &str,
        workload: &Workload,
        dir: &Path,
    ) -> anyhow::Result<()> {
        if !dir.exists() || list_files(dir)?.is_empty() {
            eprintln!(
                "{who}: generating the {} workload into {}",
                self.name(),
                dir.display()
            );
            workload.write(dir)?;
        }
        Ok(())
    }
}

/// `--dir`: a workload directory given on the command line, or one in a temporary directory.
#[derive(Clone, Debug, Args)]
pub struct DirArgs {
    /// The workload directory: used as is when it holds files, else generated there
    /// (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl DirArgs {
    /// The workload directory (`--dir`, else `TMP/workload`), holding the workload once this
    /// returns (see [`WorkloadArgs::write_unless_present`]).
    pub fn prepare(
        &self,
        who: &str,
        args: &WorkloadArgs,
        workload: &Workload,
        tmp: &Path,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.dir.clone().unwrap_or_else(|| tmp.join("workload"));
        args.write_unless_present(who, workload, &dir)?;
        Ok(dir)
    }
}

/// `--work-dir`: where a benchmark's stores go.
#[derive(Clone, Debug, Args)]
pub struct WorkDirArgs {
    /// Where the stores go, and the generated workload unless `--dir` names one (default: a
    /// temporary directory, deleted at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

impl WorkDirArgs {
    /// The directory (`--work-dir`, else `default`), created if missing.
    pub fn prepare(&self, default: &Path) -> anyhow::Result<PathBuf> {
        let dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| default.to_path_buf());
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

/// `--workers`: timely workers of the measured runtime.
#[derive(Clone, Copy, Debug, Args)]
pub struct WorkersArgs {
    /// Timely workers (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub workers: u64,
}

/// `--max-rss-gib`: the memory limit of each child process.
#[derive(Clone, Copy, Debug, Args)]
pub struct MemoryArgs {
    /// Memory limit of each child, in GiB: a child above it is killed and reported so,
    /// rather than left to the OOM killer.
    #[arg(long, default_value_t = 16.0)]
    pub max_rss_gib: f64,
}

impl MemoryArgs {
    /// The limit in bytes (`None` for 0: no limit).
    pub fn max_rss(&self) -> Option<u64> {
        let bytes = (self.max_rss_gib * (1u64 << 30) as f64) as u64;
        (bytes > 0).then_some(bytes)
    }

    /// The limits of a child without a time limit.
    pub fn uncapped(&self) -> Limits {
        Limits {
            cap: None,
            max_rss: self.max_rss(),
        }
    }

    /// The limits of a child killed after `cap`.
    pub fn capped(&self, cap: &CapArgs) -> Limits {
        Limits {
            cap: Some(cap.cap()),
            max_rss: self.max_rss(),
        }
    }
}

/// `--cap-secs`: the time limit of each peer's child process.
#[derive(Clone, Copy, Debug, Args)]
pub struct CapArgs {
    /// Each peer's time limit, in seconds (prr itself has none).
    #[arg(long, default_value_t = 600)]
    pub cap_secs: u64,
}

impl CapArgs {
    /// The time limit.
    pub fn cap(&self) -> Duration {
        Duration::from_secs(self.cap_secs)
    }
}

/// Whether `name` is in a `--skip` list.
pub fn skipped(skip: &[String], name: &str) -> bool {
    skip.iter().any(|s| s == name)
}

/// A child's `--store PATH --workers N`: a runtime on a store.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// The store file.
    #[arg(long)]
    pub store: PathBuf,
    /// Timely workers.
    #[arg(long)]
    pub workers: u64,
}

impl StoreArgs {
    /// A runtime configuration on the store, with the workers.
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig::new()
            .with_store(&self.store)
            .with_workers(self.workers as usize)
    }
}

/// A child's `--dir DIR --store PATH --workers N`: a workload directory to ingest into a store.
#[derive(Clone, Debug, Args)]
pub struct IngestArgs {
    /// The workload directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The store it goes into, and the workers.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A child's `--workers N [--store PATH]`: a runtime with a store, or without one (raw
/// differential dataflow).
#[derive(Clone, Debug, Args)]
pub struct RuntimeArgs {
    /// Timely workers.
    #[arg(long)]
    pub workers: u64,
    /// The store file (none: no store).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl RuntimeArgs {
    /// A runtime configuration with the workers, on the store if there is one (no revision
    /// captured at shutdown: a measuring child ends without one).
    pub fn config(&self) -> RuntimeConfig {
        let config = RuntimeConfig::new().with_workers(self.workers as usize);
        match &self.store {
            Some(s) => config.with_store(s).with_revision_on_shutdown(false),
            None => config,
        }
    }
}
