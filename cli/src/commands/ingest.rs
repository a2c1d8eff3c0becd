//! `prr ingest`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use prr_engine::{DeltaCount, ReplicaId};
use prr_replicas::{Pipeline, Rec, SourceItem, parse_file};

use super::Ctx;
use crate::{Failure, exit};

/// Inputs at least this large get a progress line on a terminal.
const PROGRESS_BYTES: u64 = 8 << 20;

/// The files named by the arguments: directories expand to their files sorted by name.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
        } else if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(Failure::new(
                exit::INVALID_INPUT,
                anyhow::anyhow!("{}: no such file or directory", p.display()),
            ));
        }
    }
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        Ok(buf)
    } else {
        Ok(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
    }
}

/// The files `paths` name, their total size, and whether that is large enough for progress
/// lines on this terminal.
fn inputs(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, u64, bool), Failure> {
    let files = expand(paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = std::io::stderr().is_terminal() && total >= PROGRESS_BYTES;
    Ok((files, total, progress))
}

/// How errors and progress name a file (`-` is `<stdin>`).
fn name_of(f: &Path) -> String {
    if f.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        f.display().to_string()
    }
}

/// A file's name and its items.
pub(super) type Parsed = (String, Vec<SourceItem>);

/// Reads and parses every file that `paths` name (directories expand to their files sorted
/// by name), with a progress line on a terminal for large inputs: `(name, items)` each. The
/// first invalid file is the error: nothing is stored before every file is valid. Also
/// whether the input is large enough for progress lines on this terminal.
pub(super) fn parse_all(paths: &[PathBuf]) -> Result<(Vec<Parsed>, bool), Failure> {
    let (files, total, progress) = inputs(paths)?;
    let mut parsed: Vec<Parsed> = Vec::with_capacity(files.len());
    let mut done = 0u64;
    for f in &files {
        let name = name_of(f);
        let bytes = read(f)?;
        done += bytes.len() as u64;
        let items = parse_file(&name, &bytes).map_err(|e| Failure::new(exit::INVALID_INPUT, e))?;
        if progress {
            eprint!(
                "\rprr: parsed {}/{} files, {} of {} MiB",
                parsed.len() + 1,
                files.len(),
                done >> 20,
                total >> 20
            );
        }
        parsed.push((name, items));
    }
    if progress {
        eprintln!();
    }
    Ok((parsed, progress))
}

/// A file that the validating pass of `prr ingest` read: where to read it again, and what it
/// was then, so that the ingesting pass can tell that it is the file validated.
struct Validated {
    name: String,
    /// `None` for standard input, which cannot be read twice: its bytes are kept.
    path: Option<PathBuf>,
    bytes: Option<Vec<u8>>,
    digest: [u8; 32],
    items: usize,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The validating pass: reads and parses every file (directories expand to their files
/// sorted by name) and keeps of each only its name, digest and item count (standard input
/// is kept whole): memory holds one parsed file at a time, not all. The first invalid file is
/// the error. Also whether the input is large enough for progress lines on this terminal.
fn validate_all(paths: &[PathBuf]) -> Result<(Vec<Validated>, u64, bool), Failure> {
    let (files, total, progress) = inputs(paths)?;
    let mut validated = Vec::with_capacity(files.len());
    let mut done = 0u64;
    for f in &files {
        let stdin = f.as_os_str() == "-";
        let name = name_of(f);
        let bytes = read(f)?;
        done += bytes.len() as u64;
        let items = parse_file(&name, &bytes)
            .map_err(|e| Failure::new(exit::INVALID_INPUT, e))?
            .len();
        if progress {
            eprint!(
                "\rprr: validated {}/{} files, {} of {} MiB",
                validated.len() + 1,
                files.len(),
                done >> 20,
                total >> 20
            );
        }
        validated.push(Validated {
            name,
            path: (!stdin).then(|| f.clone()),
            digest: digest(&bytes),
            bytes: stdin.then_some(bytes),
            items,
        });
    }
    if progress {
        eprintln!();
    }
    Ok((validated, done, progress))
}

/// The ingesting pass's read of a validated file: its items, parsed again from the same bytes
/// (a file changed since it was validated is an error, naming it).
fn reparse(v: &mut Validated) -> Result<Vec<SourceItem>, String> {
    let bytes = match (v.bytes.take(), &v.path) {
        (Some(b), _) => b,
        (None, Some(p)) => {
            std::fs::read(p).map_err(|e| format!("cannot read {} again: {e}", v.name))?
        }
        (None, None) => return Err(format!("{}: read twice", v.name)),
    };
    if digest(&bytes) != v.digest {
        return Err(format!(
            "{} changed after it was validated; it was not ingested",
            v.name
        ));
    }
    parse_file(&v.name, &bytes)
        .map_err(|e| format!("{} changed after it was validated: {e}", v.name))
}

pub fn ingest(ctx: &Ctx, paths: &[PathBuf]) -> Result<u8, Failure> {
    // Every file is parsed and validated before anything is stored; then each group of files
    // is read and parsed again when its turn comes, so that only the groups in hand are held.
    let (mut files, _, progress) = validate_all(paths)?;
    let mut m = ctx.open()?;
    let names: Vec<String> = m
        .runtime()
        .dag()
        .replicas()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    // Stored replicas report the records their deltas changed, counted in the dataflow (their
    // records are not copied out of it). A view (evaluated when read) reports the net change of
    // its record count, counted from its inputs' deltas without building it: following its
    // deltas would build them (18.9M `policy_list` records for a large manifest), and counting
    // it before and after would read its inputs whole. Those inputs are followed whole.
    let mut views = Vec::new();
    for n in &names {
        let id = m.runtime().replica(n)?;
        if m.runtime().dag().replica(id).is_view() {
            let inputs = m.runtime().dag().inputs_of(id).to_vec();
            views.push((n.clone(), id, inputs));
        }
    }
    let view_inputs: BTreeSet<ReplicaId> = views.iter().flat_map(|v| v.2.clone()).collect();
    let mut counted = Vec::new();
    let mut followed = Vec::new();
    for n in &names {
        let id = m.runtime().replica(n)?;
        if view_inputs.contains(&id) {
            followed.push((id, n.clone(), m.runtime().subscribe(id)?));
        } else if !m.runtime().dag().replica(id).is_view() {
            counted.push((n.clone(), m.runtime().subscribe_counts(id)?));
        }
    }
    let mut input_updates: BTreeMap<ReplicaId, Vec<(Rec, isize)>> = BTreeMap::new();
    let mut changes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut seqs = Vec::new();
    // Each file is its own source delta (its own Seq); consecutive files share one durable
    // commit (a group commit). The groups form a pipeline: while the workers compute one
    // group, the next is prepared and committed.
    let drain = |changes: &mut BTreeMap<String, (u64, u64)>,
                 input_updates: &mut BTreeMap<ReplicaId, Vec<(Rec, isize)>>| {
        for (n, sub) in &counted {
            for c in sub.try_iter() {
                let e = changes.entry(n.clone()).or_default();
                e.0 += c.added;
                e.1 += c.removed;
            }
        }
        for (id, n, sub) in &followed {
            for d in sub.try_iter() {
                let c = DeltaCount::of(&d);
                let e = changes.entry(n.clone()).or_default();
                e.0 += c.added;
                e.1 += c.removed;
                input_updates.entry(*id).or_default().extend(d.updates);
            }
        }
    };
    let before = m.runtime().last_seq().0;
    let names_of: Vec<String> = files.iter().map(|v| v.name.clone()).collect();
    // A failure says exactly which files are committed (file `i` is seq `before + 1 + i`).
    let failed = |m: &mut prr_replicas::Matrix, context: String, e: prr_engine::Error| {
        let now = m.runtime().last_seq().0;
        let ack = acknowledgement(&names_of, before, now, e.is_in_doubt());
        Failure::new(exit::FAILURE, anyhow::anyhow!("{context}: {e}\n{ack}"))
    };
    let mut start = 0;
    let mut pipeline = Pipeline::new();
    while start < files.len() {
        let end = Pipeline::group_end(start, files.len(), |f| files[f].items);
        let mut group: Vec<Vec<SourceItem>> = Vec::with_capacity(end - start);
        for v in &mut files[start..end] {
            match reparse(v) {
                Ok(items) => group.push(items),
                Err(e) => {
                    // The groups before are committed (or in the pipeline): finish them, and
                    // say which files are in.
                    let finished = pipeline.finish(&mut m);
                    let now = m.runtime().last_seq().0;
                    let ack = acknowledgement(&names_of, before, now, false);
                    let e = match finished {
                        Ok(()) => e,
                        Err(f) => format!("{e}; and computing the groups before it: {f}"),
                    };
                    return Err(Failure::new(
                        exit::INVALID_INPUT,
                        anyhow::anyhow!("{e}\n{ack}"),
                    ));
                }
            }
        }
        let group_ref: Vec<&[SourceItem]> = group.iter().map(Vec::as_slice).collect();
        let context = if end - start == 1 {
            format!("while ingesting {}", files[start].name)
        } else {
            format!(
                "while ingesting {} .. {}",
                files[start].name,
                files[end - 1].name
            )
        };
        // One group computes while the next is committed (`Pipeline`).
        let got = match pipeline.submit(&mut m, &group_ref) {
            Ok(got) => got,
            // Committed; the revision capture due after them failed: say so, and go on (the
            // next capture retries it).
            Err(e) if !e.committed().is_empty() => {
                eprintln!("prr: warning: {e}");
                e.committed().to_vec()
            }
            Err(e) => return Err(failed(&mut m, context, e)),
        };
        // Committed: the parsed items are not needed any more.
        drop(group_ref);
        drop(group);
        seqs.extend(got);
        drain(&mut changes, &mut input_updates);
        if progress {
            eprint!("\rprr: ingested {}/{} source deltas", end, files.len());
        }
        start = end;
    }
    if let Err(e) = pipeline.finish(&mut m) {
        return Err(failed(
            &mut m,
            "while computing the ingested deltas".into(),
            e,
        ));
    }
    drain(&mut changes, &mut input_updates);
    if progress {
        eprintln!();
    }
    for (n, id, inputs) in views {
        let updates = |i: usize| input_updates.get(&inputs[i]).map_or(&[][..], Vec::as_slice);
        let change = m
            .runtime()
            .view_records_change(id, updates(0), updates(1))?;
        changes.insert(n, (change.max(0) as u64, change.min(0).unsigned_abs()));
    }
    // Counted, not rendered: a store of real data can hold many.
    let rejects_id = m.runtime().replica("rejects")?;
    let rejects = m.runtime().records(rejects_id)?;
    let poisoned: Vec<String> = (m.runtime().newly_poisoned().iter())
        .map(|s| s.0.to_string())
        .collect();
    // The deltas are committed: a failure of the revision capture at shutdown is reported
    // after the summary, with its own exit status.
    let capture_failed = m.shutdown().err();
    let mut out = std::io::stdout().lock();
    match (seqs.first(), seqs.last()) {
        (Some(a), Some(b)) => writeln!(
            out,
            "ingested {} source deltas (seq {}..={})",
            seqs.len(),
            a.0,
            b.0
        )?,
        _ => writeln!(out, "ingested 0 source deltas")?,
    }
    for n in &names {
        let (added, removed) = changes.get(n).copied().unwrap_or_default();
        if added + removed > 0 {
            writeln!(out, "  {n:<15} +{added} -{removed}")?;
        }
    }
    writeln!(out, "rejects: {rejects} (see `prr show rejects`)")?;
    if !poisoned.is_empty() {
        writeln!(
            out,
            "poisoned: seq {} quarantined, a replica panicked on them (see `prr show poisoned`)",
            poisoned.join(", ")
        )?;
    }
    match capture_failed {
        None => Ok(exit::OK),
        Some(e) => Err(Failure::new(
            exit::NOT_CAPTURED,
            anyhow::anyhow!(
                "the source deltas above are committed and durable (do not ingest them again), but the revision capture after them failed: {e}; the next command that captures revisions (ingest, compact, stream) retries it"
            ),
        )),
    }
}

/// Which files of a failed ingest are committed, which may be (`in_doubt`: the failing group's
/// commit could not be read back), and which are not: file `i` of `names` is seq
/// `before + 1 + i`, and the store's last committed seq is `now`.
fn acknowledgement(names: &[String], before: u64, now: u64, in_doubt: bool) -> String {
    let committed = (now.saturating_sub(before) as usize).min(names.len());
    let mut lines = Vec::new();
    if committed == 0 {
        lines.push("committed: none of the files".to_string());
    } else {
        lines.push(format!(
            "committed: {} of {} files ({} .. {}) as seq {}..={}; do not ingest them again",
            committed,
            names.len(),
            names[0],
            names[committed - 1],
            before + 1,
            now
        ));
    }
    let mut rest = committed;
    if in_doubt && rest < names.len() {
        lines.push(format!(
            "in doubt: from {} on, the group whose commit failed may or may not be committed: once the storage works, `prr status` shows the last seq ({} if none of it is)",
            names[rest], now
        ));
        rest = names.len();
    }
    if rest < names.len() {
        lines.push(format!(
            "not committed: {} files from {} on; ingest them again",
            names.len() - rest,
            names[rest]
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"[{"event_id": "$1", "room_id": "!r:x", "type": "m.room.member",
        "state_key": "@a:x", "sender": "@a:x", "content": {"membership": "join"}}]"#;

    /// The ingesting pass reads the file the validating pass validated, or says it changed.
    #[test]
    fn a_file_changed_after_validation_is_not_ingested() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, EVENT).unwrap();
        let (mut files, bytes, _) = validate_all(std::slice::from_ref(&path)).unwrap();
        assert_eq!((files.len(), files[0].items), (1, 1));
        assert_eq!(bytes, EVENT.len() as u64);
        assert_eq!(reparse(&mut files[0]).unwrap().len(), 1);

        std::fs::write(&path, EVENT.replace("@a:x", "@b:x")).unwrap();
        let e = reparse(&mut files[0]).unwrap_err();
        assert!(e.contains("a.json changed after it was validated"), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(reparse(&mut files[0]).unwrap_err().contains("cannot read"));
    }
}
