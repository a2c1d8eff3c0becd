//! Encodings of engine values in the store: source deltas in the log and revision chunks.
//!
//! Both are bincode 1.3 with its default options: little-endian, fixed-width integers, and
//! lengths as u64, so the bytes do not depend on the host.

use prr_persist::ChunkWrite;
use serde::{Serialize, de::DeserializeOwned};

use crate::dictionary::Dictionary;
use crate::error::Error;
use crate::record::RecordIds;

/// Checks that the records read from the store use only ids of the dictionary (see
/// [`RecordIds`]); without a [`RecordIds`], nothing is checked.
pub(crate) struct IdCheck<R> {
    ids: Option<RecordIds<R>>,
    dictionary: Dictionary,
}

impl<R> Clone for IdCheck<R> {
    fn clone(&self) -> Self {
        IdCheck {
            ids: self.ids,
            dictionary: self.dictionary.clone(),
        }
    }
}

impl<R> IdCheck<R> {
    /// Checks the ids `ids` lists against `dictionary` (its length when checked).
    pub(crate) fn new(ids: Option<RecordIds<R>>, dictionary: Dictionary) -> Self {
        IdCheck { ids, dictionary }
    }

    /// An [`IdCheck`] that checks nothing (tests of decoding alone).
    #[cfg(test)]
    pub(crate) fn unchecked() -> Self {
        IdCheck::new(None, Dictionary::new())
    }

    /// `Error::Corrupt` naming `what` and the record's position when a record of `rows`
    /// holds an id at or past the dictionary's length.
    pub(crate) fn rows<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a R>,
        what: impl Fn() -> String,
    ) -> Result<(), Error>
    where
        R: 'a,
    {
        let Some(ids) = self.ids else { return Ok(()) };
        let strings = self.dictionary.strings();
        for (n, r) in rows.into_iter().enumerate() {
            let mut bad = None;
            ids(r, &mut |id| {
                if !strings.knows(id) {
                    bad.get_or_insert(id);
                }
            });
            if let Some(id) = bad {
                let len = strings.len() as u64;
                let why = if id < len {
                    "whose string was collected".to_string()
                } else {
                    format!("but the dictionary holds {len} strings")
                };
                return Err(Error::Corrupt(format!(
                    "{}: record {n} uses dictionary id {id}, {why}",
                    what()
                )));
            }
        }
        Ok(())
    }
}

/// Records per revision chunk, unless the runtime is configured otherwise.
pub(crate) const CHUNK_RECORDS: usize = 1024;

/// A source delta as written to the log: per source replica (by name), its updates.
pub(crate) type LoggedDelta<R> = Vec<(String, Vec<(R, i64)>)>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("in-memory values always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    bincode::deserialize(bytes).map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))
}

/// Decodes log entry `seq`, checking its ids.
pub(crate) fn decode_log<R: DeserializeOwned>(
    bytes: &[u8],
    seq: u64,
    ids: &IdCheck<R>,
) -> Result<LoggedDelta<R>, Error> {
    let what = || format!("log entry {seq}");
    let logged: LoggedDelta<R> = decode(bytes, &what())?;
    for (_, rows) in &logged {
        ids.rows(rows.iter().map(|(r, _)| r), what)?;
    }
    Ok(logged)
}

/// Decodes chunk `i` of revision `(replica, as_of)`, checking its ids.
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    bytes: &[u8],
    replica: &str,
    as_of: u64,
    i: u32,
    ids: &IdCheck<R>,
) -> Result<Vec<(R, isize)>, Error> {
    let rows: Vec<(R, i64)> = decode(bytes, &chunk_name(replica, as_of, i))?;
    ids.rows(rows.iter().map(|(r, _)| r), || {
        chunk_name(replica, as_of, i)
    })?;
    Ok(rows.into_iter().map(|(r, d)| (r, d as isize)).collect())
}

/// The first record of chunk `i` of revision `(replica, as_of)`: a chunk's encoding starts
/// with its length and first record, and the rest is ignored.
pub(crate) fn decode_first<R: DeserializeOwned>(
    bytes: &[u8],
    replica: &str,
    as_of: u64,
    i: u32,
    ids: &IdCheck<R>,
) -> Result<R, Error> {
    let (_len, (first, _diff)): (u64, (R, i64)) = decode(bytes, &chunk_name(replica, as_of, i))?;
    ids.rows([&first], || chunk_name(replica, as_of, i))?;
    Ok(first)
}

/// How errors name a revision chunk.
pub(crate) fn chunk_name(replica: &str, as_of: u64, i: u32) -> String {
    format!("revision ({replica}, {as_of}) chunk {i}")
}

/// Splits sorted records into encoded chunks (each the encoding of a `Vec<(R, i64)>`) of at
/// most `per_chunk` records, at boundaries set by the records themselves: a chunk ends after
/// a record whose encoding hashes to a multiple of `per_chunk / 4` once it holds `per_chunk /
/// 4` records, or at `per_chunk`. A change to a few records then changes the chunks that hold
/// them and leaves the others' contents, hence their keys, as they were: a revision of the
/// same replica a little later shares them (see `docs/design.md`).
pub(crate) fn encode_chunks<R: Serialize>(rows: &[(R, i64)], per_chunk: usize) -> Vec<ChunkWrite> {
    let mut encoder = ChunkEncoder::new(per_chunk);
    let mut out: Vec<ChunkWrite> = rows.iter().filter_map(|row| encoder.push(row)).collect();
    out.extend(encoder.finish());
    out
}

/// Encodes rows into chunks one row at a time (see [`encode_chunks`]), so that a large
/// replica's chunks can be written while the rest is encoded.
pub(crate) struct ChunkEncoder {
    max: usize,
    min: usize,
    spread: u128,
    body: Vec<u8>,
    records: u32,
}

impl ChunkEncoder {
    pub(crate) fn new(per_chunk: usize) -> Self {
        let max = per_chunk.max(1);
        ChunkEncoder {
            max,
            min: (max / 4).max(1),
            spread: (max / 4).max(1) as u128,
            body: Vec::new(),
            records: 0,
        }
    }

    /// Encodes `row`; the chunk it ends, if it ends one.
    pub(crate) fn push<R: Serialize>(&mut self, row: &(R, i64)) -> Option<ChunkWrite> {
        let start = self.body.len();
        bincode::serialize_into(&mut self.body, row).expect("in-memory values always encode");
        self.records += 1;
        let records = self.records as usize;
        let ends = records >= self.max
            || (records >= self.min
                && prr_persist::chunk_key(&self.body[start..]).is_multiple_of(self.spread));
        ends.then(|| self.take())
    }

    /// The last chunk, if rows are left.
    pub(crate) fn finish(mut self) -> Option<ChunkWrite> {
        (self.records > 0).then(|| self.take())
    }

    fn take(&mut self) -> ChunkWrite {
        let mut payload = Vec::with_capacity(8 + self.body.len());
        payload.extend_from_slice(&u64::from(self.records).to_le_bytes());
        payload.append(&mut self.body);
        ChunkWrite::New {
            payload,
            records: std::mem::take(&mut self.records),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    /// A record with the shapes of real ones: ids, options, strings, a shared payload, a
    /// list, and several variants.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Rec {
        Pair(u64, u64),
        State {
            room: u64,
            ts: Option<u64>,
            redacted: bool,
        },
        Shared(Arc<(u64, String, Option<u32>)>),
        Many(Vec<(u32, i64)>),
    }

    fn rec() -> impl Strategy<Value = Rec> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Rec::Pair(a, b)),
            (any::<u64>(), any::<Option<u64>>(), any::<bool>())
                .prop_map(|(room, ts, redacted)| { Rec::State { room, ts, redacted } }),
            (any::<u64>(), ".{0,12}", any::<Option<u32>>()).prop_map(|t| Rec::Shared(Arc::new(t))),
            prop::collection::vec(any::<(u32, i64)>(), 0..4).prop_map(Rec::Many),
        ]
    }

    /// Heavy in CI's 2 cores only as far as a few seconds go.
    fn cases() -> u32 {
        if std::env::var("CI").is_ok() {
            256
        } else {
            2048
        }
    }

    /// Every decoder on `bytes`: a value or an error naming what, never a panic.
    fn decode_all(bytes: &[u8]) {
        if let Err(e) = decode_log::<Rec>(bytes, 9, &IdCheck::unchecked()) {
            assert!(e.to_string().contains("log entry 9 does not decode"), "{e}");
        }
        if let Err(e) = decode_chunk::<Rec>(bytes, "r", 4, 2, &IdCheck::unchecked()) {
            assert!(e.to_string().contains("revision (r, 4) chunk 2"), "{e}");
        }
        if let Err(e) = decode_first::<Rec>(bytes, "r", 4, 2, &IdCheck::unchecked()) {
            assert!(e.to_string().contains("revision (r, 4) chunk 2"), "{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Arbitrary bytes.
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&bytes);
        }

        /// Real encodings, then damaged: bytes overwritten, cut short, or a length prefix set
        /// huge (which must not allocate it).
        #[test]
        fn damaged_encodings_decode_or_fail_cleanly(
            rows in prop::collection::vec((rec(), any::<i64>()), 1..12),
            name in ".{0,8}",
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            huge in any::<prop::sample::Index>(),
        ) {
            let chunk = encode(&rows);
            let log = encode(&vec![(name, rows.clone())]);
            let decoded: Vec<(Rec, isize)> = decode_chunk(&chunk, "r", 1, 0, &IdCheck::unchecked()).unwrap();
            prop_assert_eq!(decoded.len(), rows.len());
            prop_assert_eq!(decode_first::<Rec>(&chunk, "r", 1, 0, &IdCheck::unchecked()).unwrap(), rows[0].0.clone());
            for original in [chunk, log] {
                let mut bytes = original.clone();
                for (at, b) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= b | 1;
                }
                decode_all(&bytes);
                decode_all(&original[..cut.index(original.len())]);
                let mut long = original.clone();
                let at = huge.index(long.len().saturating_sub(7).max(1));
                let end = (at + 8).min(long.len());
                long[at..end].fill(0xff);
                decode_all(&long);
            }
        }
    }

    /// The payloads and record counts of `chunks`, all new.
    fn payloads(chunks: &[ChunkWrite]) -> Vec<(Vec<u8>, u32)> {
        (chunks.iter())
            .map(|c| match c {
                ChunkWrite::New { payload, records } => (payload.clone(), *records),
                ChunkWrite::Stored(_) => panic!("encode_chunks writes new chunks"),
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases() / 4))]

        /// Chunks hold the records in order, at most `per_chunk` each, each the encoding of
        /// its `Vec`.
        #[test]
        fn chunks_hold_the_records_in_order(
            keys in prop::collection::btree_set(any::<u64>(), 0..3000),
            per_chunk in 1usize..200,
        ) {
            let rows: Vec<(u64, i64)> = keys.iter().map(|k| (*k, 1)).collect();
            let mut back: Vec<(u64, i64)> = Vec::new();
            for (payload, records) in payloads(&encode_chunks(&rows, per_chunk)) {
                prop_assert!(records as usize <= per_chunk && records > 0);
                let part: Vec<(u64, i64)> = decode(&payload, "chunk").unwrap();
                prop_assert_eq!(part.len(), records as usize);
                back.extend(part);
            }
            prop_assert_eq!(&back, &rows);
        }
    }

    /// A record added or removed changes the contents of few chunks (those around it); the
    /// others keep their contents, hence their keys.
    #[test]
    fn a_small_change_changes_few_chunks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut rows: Vec<(u64, i64)> = (0..50_000u64).map(|k| (k * 3, 1)).collect();
        let mut new_total = 0;
        for _ in 0..100 {
            let before: std::collections::HashSet<Vec<u8>> = payloads(&encode_chunks(&rows, 512))
                .into_iter()
                .map(|c| c.0)
                .collect();
            if rng.random_bool(0.5) {
                rows.remove(rng.random_range(0..rows.len()));
            } else {
                let k = rng.random_range(0..150_000u64) | 1;
                if let Err(at) = rows.binary_search_by_key(&k, |r| r.0) {
                    rows.insert(at, (k, 1));
                }
            }
            let after = payloads(&encode_chunks(&rows, 512));
            assert!(after.len() > 150, "{} chunks", after.len());
            let new = after.iter().filter(|c| !before.contains(&c.0)).count();
            assert!(new <= 6, "{new} new chunks of {}", after.len());
            new_total += new;
        }
        assert!(new_total <= 300, "{new_total} new chunks in 100 changes");
    }
}
