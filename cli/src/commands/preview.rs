//! `prr preview`: what ingesting files would change, committing nothing.

use std::io::Write;
use std::path::PathBuf;

use prr_replicas::SourceItem;
use serde_json::Value;

use super::Ctx;
use super::ingest::parse_all;
use crate::args::ShowFormat;
use crate::output::{flat_delta, table};
use crate::{Failure, exit};

pub fn preview(
    ctx: &Ctx,
    paths: &[PathBuf],
    emit: &[String],
    format: Option<ShowFormat>,
) -> Result<u8, Failure> {
    let (parsed, _) = parse_all(paths)?;
    // Read-only: the store file is not changed by a preview.
    let mut m = ctx.open_read()?;
    let batches: Vec<&[SourceItem]> = parsed.iter().map(|(_, i)| i.as_slice()).collect();
    let rows = m.preview(&batches, emit)?;
    m.shutdown()?;
    let format = super::query::or_default(format);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        ShowFormat::Ndjson => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        ShowFormat::Json => writeln!(out, "{}", Value::Array(rows))?,
        ShowFormat::Table => {
            if rows.is_empty() {
                writeln!(out, "no changes")?;
            }
            // One table per replica, in the order of the deltas' first appearance.
            let mut names: Vec<&str> = Vec::new();
            for r in &rows {
                let name = r["replica"].as_str().unwrap_or_default();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            for name in names {
                let flat: Vec<Value> = (rows.iter())
                    .filter(|r| r["replica"] == name)
                    .map(flat_delta)
                    .collect();
                writeln!(out, "{name}:")?;
                write!(out, "{}", table(&flat))?;
            }
        }
    }
    out.flush()?;
    Ok(exit::OK)
}
