//! `Store::check`: every checksum and every invariant of the store that can be seen without
//! knowing what the opaque values encode (the caller checks that, through its closures).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redb::ReadableTable;

use super::revisions::{CHUNKS, REVISIONS, RevisionInfo, chunk_key, open_chunk};
use super::strings::{self, STRINGS};
use super::{KEY_DICT_LEN, KEY_LAST_SEQ, LOG, Store, callback, chunks_ahead, contained, open_log};
use crate::Error;

impl Store {
    /// Checks the store: every value's checksum; the metadata; the dictionary's blocks
    /// ascending without overlap, below `dict_len`, their entries whole and UTF-8; the log contiguous up to `last_seq`; each
    /// revision's listed chunks present, holding the contents of their key and the records
    /// its header says, and `as_of <= last_seq`; no chunk listed by no revision. `decode_log`
    /// checks a log entry's payload (given its seq); `decode_chunk` a chunk's (given a
    /// revision that lists it, `as_of` and its number there; once per chunk) and returns its
    /// number of records. Returns the problems found, each naming the
    /// table and the entry (empty when the store is sound); a part of the file the storage
    /// library fails to read is a problem too.
    pub fn check(
        &self,
        mut decode_log: impl FnMut(u64, &[u8]) -> Result<(), String>,
        mut decode_chunk: impl FnMut(&str, u64, u32, &[u8]) -> Result<u64, String>,
    ) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let note = |r: Result<(), Error>, problems: &mut Vec<String>| {
            if let Err(e) = r {
                problems.push(match e {
                    Error::Corrupt(m) => m,
                    e => e.to_string(),
                });
            }
        };
        let meta = |key: &str, problems: &mut Vec<String>| match self.meta_u64(key) {
            Ok(v) => Some(v),
            Err(e) => {
                note(Err(e), problems);
                None
            }
        };
        let last_seq = meta(KEY_LAST_SEQ, &mut problems);
        let dict_len = meta(KEY_DICT_LEN, &mut problems);
        let r = contained("dictionary", || {
            let txn = self.begin_read()?;
            let table = txn.open_table(STRINGS)?;
            let mut end = 0u64;
            for entry in table.iter()? {
                let (k, v) = entry?;
                let first = k.value();
                if first < end {
                    problems.push(format!(
                        "table strings: block at id {first} overlaps the block ending at id {end}"
                    ));
                }
                match strings::read_block(first, v.value(), |_, _| ()) {
                    Ok((e, _)) => end = e,
                    Err(Error::Corrupt(m)) => problems.push(m),
                    Err(e) => return Err(e),
                }
            }
            if let Some(n) = dict_len
                && end > n
            {
                problems.push(format!(
                    "table strings: holds ids up to {}, meta `dict_len` says {n} were handed out",
                    end - 1
                ));
            }
            Ok(())
        });
        note(r, &mut problems);
        let r = contained("log", || {
            let txn = self.begin_read()?;
            let log = txn.open_table(LOG)?;
            let mut previous: Option<u64> = None;
            for entry in log.iter()? {
                let (k, v) = entry?;
                let seq = k.value();
                if seq == 0 || last_seq.is_some_and(|l| seq > l) {
                    problems.push(format!(
                        "table log: entry at seq {seq} is outside 1..={}",
                        last_seq.map_or("?".into(), |l| l.to_string())
                    ));
                }
                if let Some(p) = previous
                    && seq != p + 1
                {
                    problems.push(format!("table log: a gap between seq {p} and seq {seq}"));
                }
                previous = Some(seq);
                match open_log(seq, v.value()) {
                    Ok(payload) => {
                        if let Err(e) = callback(|| decode_log(seq, &payload)) {
                            problems.push(format!(
                                "table log: entry at seq {seq} does not decode: {e}"
                            ));
                        }
                    }
                    Err(Error::Corrupt(m)) => problems.push(m),
                    Err(e) => return Err(e),
                }
            }
            if let (Some(p), Some(l)) = (previous, last_seq)
                && p != l
            {
                problems.push(format!(
                    "table log: ends at seq {p}, meta `last_seq` says {l}"
                ));
            }
            Ok(())
        });
        note(r, &mut problems);
        // Quarantine entries: sealed, decodable, naming a seq that was committed.
        match self.quarantined() {
            Ok(q) => problems.extend(
                q.iter()
                    .filter(|e| e.seq == 0 || last_seq.is_some_and(|l| e.seq > l))
                    .map(|e| {
                        format!(
                            "table quarantine: entry at seq {} is outside 1..={}",
                            e.seq,
                            last_seq.map_or("?".into(), |l| l.to_string())
                        )
                    }),
            ),
            Err(e) => note(Err(e), &mut problems),
        }
        // Headers, then chunks: every chunk checked, counted against its header.
        let mut headers: BTreeMap<(String, u64), Option<RevisionInfo>> = BTreeMap::new();
        let r = contained("revisions", || {
            let txn = self.begin_read()?;
            let revs = txn.open_table(REVISIONS)?;
            for entry in revs.iter()? {
                let (k, v) = entry?;
                let (replica, as_of) = k.value();
                match RevisionInfo::decode(replica, as_of, v.value()) {
                    Ok(info) => {
                        if last_seq.is_some_and(|l| as_of > l) {
                            problems.push(format!(
                                "table revisions: revision ({replica}, {as_of}) is newer than the last seq {}",
                                last_seq.unwrap_or(0)
                            ));
                        }
                        headers.insert((replica.to_string(), as_of), Some(info));
                    }
                    Err(Error::Corrupt(m)) => {
                        problems.push(m);
                        headers.insert((replica.to_string(), as_of), None);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        note(r, &mut problems);
        // Chunks: each listed one read, checked and decoded once (revisions share them),
        // counted against its entry and its revision's header; none listed by no revision.
        let r = contained("chunks", || {
            let txn = self.begin_read()?;
            let chunks = txn.open_table(CHUNKS)?;
            // Per key: the records it decodes to, or None when it is damaged.
            let mut seen: HashMap<u128, Option<u64>> = HashMap::new();
            for ((replica, as_of), info) in &headers {
                let Some(info) = info else { continue };
                let mut records = Some(0u64);
                for (i, c) in info.chunks.iter().enumerate() {
                    let whose = || format!("revision ({replica}, {as_of}) chunk {i}");
                    let n = match seen.get(&c.key) {
                        Some(n) => *n,
                        None => {
                            let n = match chunks.get(c.key)? {
                                None => {
                                    problems.push(format!(
                                        "table chunks: {} (key {:032x}) is missing",
                                        whose(),
                                        c.key
                                    ));
                                    None
                                }
                                Some(v) => match open_chunk(c.key, v.value(), whose) {
                                    Ok(payload) if chunk_key(&payload) != c.key => {
                                        problems.push(format!(
                                            "table chunks: {} (key {:032x}) holds contents of another key",
                                            whose(),
                                            c.key
                                        ));
                                        None
                                    }
                                    Ok(payload) => match callback(|| {
                                        decode_chunk(replica, *as_of, i as u32, &payload)
                                    }) {
                                        Ok(n) => Some(n),
                                        Err(e) => {
                                            problems.push(format!(
                                                "table chunks: {} does not decode: {e}",
                                                whose()
                                            ));
                                            None
                                        }
                                    },
                                    Err(Error::Corrupt(m)) => {
                                        problems.push(m);
                                        None
                                    }
                                    Err(e) => return Err(e),
                                },
                            };
                            seen.insert(c.key, n);
                            n
                        }
                    };
                    if let Some(n) = n
                        && n != u64::from(c.records)
                    {
                        problems.push(format!(
                            "table revisions: revision ({replica}, {as_of}) lists chunk {i} with {} records, it holds {n}",
                            c.records
                        ));
                    }
                    records = records.zip(n).map(|(a, b)| a + b);
                }
                if let Some(records) = records
                    && records != info.records
                {
                    problems.push(format!(
                        "table chunks: revision ({replica}, {as_of}) holds {records} records, its header says {}",
                        info.records
                    ));
                }
            }
            // A header that does not decode may list any chunk: none is called unlisted then.
            if headers.values().all(Option::is_some) {
                // Chunks written ahead of a capture's headers are not unlisted: the capture
                // lists them, or the next one deletes them (see `chunks_ahead`).
                let mut listed: BTreeSet<u128> = (headers.values().flatten())
                    .flat_map(|info| info.chunks.iter().map(|c| c.key))
                    .collect();
                listed.extend(chunks_ahead::ahead_in(&txn)?);
                for entry in chunks.iter()? {
                    let (k, _) = entry?;
                    if !listed.contains(&k.value()) {
                        problems.push(format!(
                            "table chunks: chunk (key {:032x}) is listed by no revision",
                            k.value()
                        ));
                    }
                }
            }
            Ok(())
        });
        note(r, &mut problems);
        Ok(problems)
    }
}
