//! `prr show` and `prr deltas`.

use std::io::{IsTerminal, Write};

use prr_engine::Seq;
use prr_replicas::poisoned_json;

use super::Ctx;
use crate::args::{DeltasFormat, ShowFormat};
use crate::output::{flat_delta, table};
use crate::{Failure, exit};

/// The name `prr show` takes for the quarantined source deltas (no replica has it).
pub const POISONED: &str = "poisoned";

pub fn show(
    ctx: &Ctx,
    replica: &str,
    partition: Option<&str>,
    as_of: Option<u64>,
    format: Option<ShowFormat>,
) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    let rows = m.show(replica, partition, as_of.map(Seq))?;
    write_rows(rows, format)?;
    m.shutdown()?;
    Ok(exit::OK)
}

/// `prr show poisoned`: the quarantined source deltas, by seq, as `{"seq", "quarantined_at",
/// "message"}` objects.
pub fn show_poisoned(
    ctx: &Ctx,
    partition: Option<String>,
    as_of: Option<u64>,
    format: Option<ShowFormat>,
) -> Result<u8, Failure> {
    if partition.is_some() || as_of.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "`prr show poisoned` lists the quarantined source deltas: it takes neither --partition nor --as-of"
            ),
        ));
    }
    let mut m = ctx.open_read()?;
    let rows = (m.runtime().poisoned().into_iter())
        .map(|q| poisoned_json(&q))
        .collect();
    write_rows(rows, format)?;
    m.shutdown()?;
    Ok(exit::OK)
}

/// `format`, or by default a table on a terminal, else NDJSON.
pub(super) fn or_default(format: Option<ShowFormat>) -> ShowFormat {
    format.unwrap_or(if std::io::stdout().is_terminal() {
        ShowFormat::Table
    } else {
        ShowFormat::Ndjson
    })
}

/// Writes `show`'s rows in `format` (by default a table on a terminal, else NDJSON).
pub(super) fn write_rows(
    rows: Vec<serde_json::Value>,
    format: Option<ShowFormat>,
) -> Result<(), Failure> {
    let format = or_default(format);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        ShowFormat::Ndjson => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        ShowFormat::Json => writeln!(out, "{}", serde_json::Value::Array(rows))?,
        ShowFormat::Table => write!(out, "{}", table(&rows))?,
    }
    out.flush()?;
    Ok(())
}

pub fn deltas(ctx: &Ctx, replica: &str, since: u64, format: DeltasFormat) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    let rows = m.deltas(replica, Seq(since))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        DeltasFormat::Ndjson => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        DeltasFormat::Table => {
            let flat: Vec<serde_json::Value> = rows.iter().map(flat_delta).collect();
            write!(out, "{}", table(&flat))?;
        }
    }
    out.flush()?;
    m.shutdown()?;
    Ok(exit::OK)
}
