//! Revisions at a restore point and their lazy decoding: a stored revision is looked up by
//! chunk until it is decoded whole (on other threads, see `decoders`), and read whole by its
//! first reader that needs all of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use prr_persist::{RevisionInfo, Store};

use crate::codec::{self, IdCheck};
use crate::error::{Error, damage_panic};
use crate::record::Record;
use crate::updates::sorted;

/// Decodes a chunk (its bytes, the revision's replica and `as_of`, its number) into `T`.
type ChunkDecoder<R, T> = fn(&[u8], &str, u64, u32, &IdCheck<R>) -> Result<T, Error>;

/// A replica's consolidated contents at a restore point, sorted by record, shared.
pub(crate) type Rows<R> = Arc<Vec<(R, isize)>>;

/// A revision decoded on another thread: the restore does not wait for it, its first reader
/// of all of it does ([`Decoding::wait`]). Until then, a revision in the store can be looked
/// up by chunk ([`Decoding::range`]): the chunks a lookup needs are read and decoded, once.
pub(crate) struct Decoding<R> {
    cell: OnceLock<Result<Rows<R>, String>>,
    /// Dropped once the outcome is set: the chunks read meanwhile, and the store handle
    /// (which `Runtime::compact_store` needs back).
    chunks: Mutex<Option<Arc<Chunks<R>>>>,
    /// No thread decodes it any more (the runtime stopped its decoders, see
    /// [`Decoding::abandon`]): a reader of all of it decodes it itself.
    abandoned: AtomicBool,
    /// Notified, with `chunks` locked, when the outcome is set or it is abandoned.
    changed: Condvar,
    /// The stored revision's header, if it was read from the store: which chunks hold which
    /// records (an incremental capture shares the chunks it leaves alone, see `capture`).
    header: Option<Arc<RevisionInfo>>,
}

/// A stored revision's chunks, read when first needed (see [`Decoding::range`]).
struct Chunks<R> {
    /// Not a strong handle: the runtime that owns the store closes it when it stops, whatever
    /// revisions are still held (a read after that fails: "the store is closed").
    store: Weak<Store>,
    /// The revision's header.
    info: Arc<RevisionInfo>,
    /// Each chunk's first record.
    firsts: Vec<OnceLock<R>>,
    /// Each chunk's records.
    decoded: Vec<OnceLock<Vec<(R, isize)>>>,
    /// Checks the ids of the records read.
    ids: IdCheck<R>,
}

impl<R> Decoding<R> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Decoding {
            cell: OnceLock::new(),
            chunks: Mutex::new(None),
            abandoned: AtomicBool::new(false),
            changed: Condvar::new(),
            header: None,
        })
    }

    /// A revision to decode (on another thread), that can be looked up by chunk meanwhile:
    /// the revision `info` heads, in `store`, while it is open.
    pub(crate) fn stored(
        store: &Arc<Store>,
        info: Arc<RevisionInfo>,
        ids: IdCheck<R>,
    ) -> Arc<Self> {
        let chunks = info.chunks.len();
        Arc::new(Decoding {
            cell: OnceLock::new(),
            chunks: Mutex::new(Some(Arc::new(Chunks {
                store: Arc::downgrade(store),
                info: info.clone(),
                firsts: (0..chunks).map(|_| OnceLock::new()).collect(),
                decoded: (0..chunks).map(|_| OnceLock::new()).collect(),
                ids,
            }))),
            abandoned: AtomicBool::new(false),
            changed: Condvar::new(),
            header: Some(info),
        })
    }

    /// A stored revision that no thread decodes: read by chunk when looked up, and decoded
    /// whole by its first reader of all of it, on that reader's thread.
    pub(crate) fn lazy(store: &Arc<Store>, info: Arc<RevisionInfo>, ids: IdCheck<R>) -> Arc<Self> {
        let d = Self::stored(store, info, ids);
        d.abandon();
        d
    }

    /// The stored revision's header, if it was read from the store.
    pub(crate) fn header(&self) -> Option<&Arc<RevisionInfo>> {
        self.header.as_ref()
    }

    /// A revision decoded already.
    pub(crate) fn done(rows: Rows<R>) -> Arc<Self> {
        let d = Self::new();
        d.set(Ok(rows));
        d
    }

    /// Sets the outcome (once; a second outcome is ignored), and lets go of the chunks.
    pub(crate) fn set(&self, outcome: Result<Rows<R>, String>) {
        let _ = self.cell.set(outcome);
        self.chunks.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.changed.notify_all();
    }

    /// Marks it as decoded by no other thread: its decoders stopped (they are joined before
    /// this is called). A reader of all of it then decodes it on its own thread.
    pub(crate) fn abandon(&self) {
        let _chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        self.abandoned.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// The outcome, if decoding is over.
    pub(crate) fn try_get(&self) -> Option<Result<&Rows<R>, &str>> {
        self.cell.get().map(|r| r.as_ref().map_err(String::as_str))
    }
}

impl<R: Record> Decoding<R> {
    /// The rows, or why they could not be decoded, waiting until decoded (decoding them here
    /// if no other thread does any more).
    pub(crate) fn wait(&self) -> Result<&Rows<R>, &str> {
        loop {
            if let Some(outcome) = self.cell.get() {
                return outcome.as_ref().map_err(String::as_str);
            }
            if self.abandoned.load(Ordering::SeqCst) {
                self.decode_here();
                continue;
            }
            let chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
            if self.cell.get().is_none() && !self.abandoned.load(Ordering::SeqCst) {
                drop(self.changed.wait(chunks).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// Decodes every chunk (those read by lookups already are not read again), on this thread
    /// and as many more as there are other cores, each a run of chunks, and sets the outcome:
    /// the rows, or why the first chunk that failed could not be read.
    fn decode_here(&self) {
        let chunks = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(chunks) = chunks else {
            // The outcome is set before the chunks go; a decoding made without chunks is
            // given its outcome by its maker.
            return self.set(Err("a revision with nothing to decode it from".into()));
        };
        let n = chunks.decoded.len();
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
        let run = |from: usize| -> Result<Vec<(R, isize)>, String> {
            let mut rows = Vec::new();
            for i in from..(from + per).min(n) {
                rows.extend_from_slice(self.try_chunk(&chunks, i)?);
            }
            Ok(rows)
        };
        let runs: Vec<Result<Vec<(R, isize)>, String>> = std::thread::scope(|s| {
            let others: Vec<_> = (per..n)
                .step_by(per)
                .map(|from| s.spawn(move || run(from)))
                .collect();
            let mut runs = vec![run(0)];
            runs.extend(others.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a thread decoding it panicked".into()))
            }));
            runs
        });
        let mut all = Vec::with_capacity(runs.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum());
        for rows in runs {
            match rows {
                Ok(rows) => all.extend(rows),
                Err(e) => return self.set(Err(e)),
            }
        }
        self.set(Ok(Arc::new(sorted(all))));
    }

    /// The rows, waiting until decoded.
    ///
    /// # Panics
    /// If they could not be decoded (a corrupt store: `prr check` reports it).
    pub(crate) fn rows(&self) -> &Rows<R> {
        self.wait()
            .unwrap_or_else(|e| damage_panic(format!("store is damaged: {e}")))
    }

    /// The records whose `key` is `k`, in order; `key` must order as the records do (a
    /// leading field, or fields, of them). From the decoded rows if they are, else from the
    /// chunks that can hold them; or why a chunk it reads does not decode (the outcome then
    /// says so too, for the reader of all of it and the runtime).
    pub(crate) fn try_range<K: Ord>(
        &self,
        key: impl Fn(&R) -> K,
        k: &K,
    ) -> Result<Vec<(R, isize)>, String> {
        if let Some(outcome) = self.try_get() {
            return Ok(sorted_range(outcome.map_err(str::to_string)?, &key, k).to_vec());
        }
        let chunks = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(chunks) = chunks.as_deref() else {
            return Ok(sorted_range(self.wait().map_err(str::to_string)?, &key, k).to_vec());
        };
        let n = chunks.firsts.len();
        let first = |i: usize| self.try_first(chunks, i).map(&key);
        // The chunks that start before `k`: the last of them may hold its first records, and
        // later chunks hold more while they start at `k`.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if first(mid)? < *k {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let after = lo;
        let mut out = Vec::new();
        let mut i = after.saturating_sub(1);
        while i < n && (i < after || first(i)? == *k) {
            let rows = self.failing(self.try_chunk(chunks, i))?;
            out.extend(sorted_range(rows, &key, k).iter().cloned());
            i += 1;
        }
        Ok(out)
    }

    /// Chunk `i`'s records, of a stored revision whose chunk `j` holds the rows
    /// `offsets[j]..offsets[j + 1]` (as its header counts them): sliced from the rows if they
    /// are decoded whole, else read from the store.
    pub(crate) fn chunk_rows(
        &self,
        i: usize,
        offsets: &[usize],
    ) -> Result<Vec<(R, isize)>, String> {
        self.in_chunk(
            i,
            offsets,
            |rows| rows.to_vec(),
            |chunks| self.failing(self.try_chunk(chunks, i)).map(<[_]>::to_vec),
        )
    }

    /// Chunk `i`'s first record, as [`Decoding::chunk_rows`] finds it.
    pub(crate) fn chunk_first(&self, i: usize, offsets: &[usize]) -> Result<R, String> {
        self.in_chunk(
            i,
            offsets,
            |rows| rows.first().map(|(r, _)| r.clone()),
            |chunks| self.try_first(chunks, i).cloned().map(Some),
        )?
        .ok_or_else(|| format!("chunk {i} of a stored revision is empty"))
    }

    /// `whole` of chunk `i`'s rows when decoded whole, else `read` of the chunks.
    fn in_chunk<T>(
        &self,
        i: usize,
        offsets: &[usize],
        whole: impl FnOnce(&[(R, isize)]) -> T,
        read: impl FnOnce(&Chunks<R>) -> Result<T, String>,
    ) -> Result<T, String> {
        let chunks = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (self.try_get(), chunks) {
            (None, Some(chunks)) => read(&chunks),
            _ => {
                let rows = self.wait().map_err(str::to_string)?;
                match (offsets.get(i), offsets.get(i + 1)) {
                    (Some(&from), Some(&to)) if from <= to && to <= rows.len() => {
                        Ok(whole(&rows[from..to]))
                    }
                    _ => Err(format!(
                        "a stored revision's header counts {} records, it holds {}",
                        offsets.last().copied().unwrap_or(0),
                        rows.len()
                    )),
                }
            }
        }
    }

    /// Chunk `i`'s first record, read once, or why it cannot be.
    fn try_first<'a>(&'a self, chunks: &'a Chunks<R>, i: usize) -> Result<&'a R, String> {
        if let Some(first) = chunks.firsts[i].get() {
            return Ok(first);
        }
        let first = self.failing(Self::try_read_chunk(chunks, i, codec::decode_first))?;
        Ok(chunks.firsts[i].get_or_init(|| first))
    }

    /// `result`; a failure also becomes the outcome, so that the reader that waits for all of
    /// it, and the runtime, learn why.
    fn failing<T>(&self, result: Result<T, String>) -> Result<T, String> {
        result.inspect_err(|e| self.set(Err(e.clone())))
    }

    /// Chunk `i`'s records, read and decoded once, or why they cannot be.
    fn try_chunk<'a>(
        &'a self,
        chunks: &'a Chunks<R>,
        i: usize,
    ) -> Result<&'a [(R, isize)], String> {
        if let Some(rows) = chunks.decoded[i].get() {
            return Ok(rows);
        }
        let rows = Self::try_read_chunk(chunks, i, codec::decode_chunk)?;
        Ok(chunks.decoded[i].get_or_init(|| rows))
    }

    /// Reads chunk `i` and decodes it with `decode`, or says why it cannot.
    fn try_read_chunk<T>(
        chunks: &Chunks<R>,
        i: usize,
        decode: ChunkDecoder<R, T>,
    ) -> Result<T, String> {
        let (name, as_of) = (&chunks.info.replica, chunks.info.as_of);
        let Some(store) = chunks.store.upgrade() else {
            return Err(format!(
                "revision ({name}, {as_of}): the store is closed (its runtime stopped)"
            ));
        };
        let mut out = None;
        let i = i as u32;
        store
            .for_each_chunk_of(&chunks.info, i..i + 1, |_, bytes| {
                out = Some(decode(bytes, name, as_of, i, &chunks.ids)?);
                Ok::<_, Error>(())
            })
            .map_err(|e| e.to_string())?;
        out.ok_or_else(|| format!("revision ({name}, {as_of}) chunk {i} is missing"))
    }
}

/// The records of sorted `rows` whose `key` is `k`.
fn sorted_range<'a, R, K: Ord>(
    rows: &'a [(R, isize)],
    key: &impl Fn(&R) -> K,
    k: &K,
) -> &'a [(R, isize)] {
    let start = rows.partition_point(|(r, _)| key(r) < *k);
    let len = rows[start..].partition_point(|(r, _)| key(r) == *k);
    &rows[start..start + len]
}

/// A replica's revision at the restore point, shared with the runtime: looked up by key
/// without decoding all of it ([`Revision::range`]), or read whole ([`Revision::rows`]).
///
/// Until it is decoded whole, it reads the store, which it does not keep open: once its runtime
/// has shut down, reading what it has not read yet fails ("the store is closed").
pub struct Revision<R>(Arc<Decoding<R>>);

impl<R> std::fmt::Debug for Revision<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.try_get() {
            Some(Ok(rows)) => write!(f, "Revision({} records)", rows.len()),
            Some(Err(e)) => write!(f, "Revision(failed: {e})"),
            None => write!(f, "Revision(decoding)"),
        }
    }
}

impl<R> Clone for Revision<R> {
    fn clone(&self) -> Self {
        Revision(self.0.clone())
    }
}

impl<R: Record> Default for Revision<R> {
    fn default() -> Self {
        Revision(Decoding::done(Arc::default()))
    }
}

impl<R: Record> Revision<R> {
    pub(crate) fn new(decoding: Arc<Decoding<R>>) -> Self {
        Revision(decoding)
    }

    /// Its decoding.
    pub(crate) fn decoding(&self) -> &Arc<Decoding<R>> {
        &self.0
    }

    /// A revision of the given rows (sorted by record).
    pub fn of(rows: Arc<Vec<(R, isize)>>) -> Self {
        Revision(Decoding::done(rows))
    }

    /// The records whose `key` is `k`, in record order. `key` must order as the records do:
    /// a leading field, or leading fields, of them. Reads only the chunks that can hold them
    /// while the revision is not decoded whole.
    ///
    /// # Panics
    /// If the revision does not decode (a corrupt store).
    pub fn range<K: Ord>(&self, key: impl Fn(&R) -> K, k: &K) -> Vec<(R, isize)> {
        self.0
            .try_range(key, k)
            .unwrap_or_else(|message| damage_panic(message))
    }

    /// The records whose `key` is `k`, like [`Revision::range`], or why the revision cannot
    /// be read: a corrupt store ([`Error::Corrupt`]), or a store closed since.
    pub fn try_range<K: Ord>(
        &self,
        key: impl Fn(&R) -> K,
        k: &K,
    ) -> Result<Vec<(R, isize)>, Error> {
        self.0.try_range(key, k).map_err(Error::Corrupt)
    }

    /// All the records, sorted: waits until the revision is decoded.
    ///
    /// # Panics
    /// If the revision does not decode (a corrupt store).
    pub fn rows(&self) -> &Arc<Vec<(R, isize)>> {
        self.0.rows()
    }

    /// All the records, like [`Revision::rows`], or why the revision cannot be read: a
    /// corrupt store ([`Error::Corrupt`]), or a store closed since.
    pub fn try_rows(&self) -> Result<&Arc<Vec<(R, isize)>>, Error> {
        self.0.wait().map_err(|e| Error::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use prr_persist::{ChunkWrite, RevisionWrite};

    use super::*;

    /// A store's directory, the store, and a decoding of its revision.
    type Stored = (tempfile::TempDir, Arc<Store>, Arc<Decoding<(u32, u32)>>);

    /// A store with one revision of `rows` in chunks of `per_chunk` records, as a decoding
    /// that reads it by chunk (nothing decodes it whole).
    fn stored(rows: &[((u32, u32), i64)], per_chunk: usize) -> Stored {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let chunks: Vec<ChunkWrite> = (rows.chunks(per_chunk))
            .map(|c| ChunkWrite::New {
                payload: codec::encode(&c),
                records: c.len() as u32,
            })
            .collect();
        let write = RevisionWrite {
            replica: "r".into(),
            logic_version: 1,
            description_hash: 7,
            records: rows.len() as u64,
            chunks,
            overwrite: false,
        };
        let info = store
            .write_revisions(5, &[write], 0, &[] as &[&str])
            .unwrap()
            .remove(0);
        let store = Arc::new(store);
        let d = Decoding::stored(&store, Arc::new(info), IdCheck::unchecked());
        (dir, store, d)
    }

    /// Lookups by chunk find what a search of the whole finds: keys within one chunk, across
    /// two or more chunk boundaries, before the first record, after the last, and between;
    /// by a leading field and by the whole record.
    #[test]
    fn lookups_by_chunk_find_what_the_whole_holds() {
        let mut rows: Vec<((u32, u32), i64)> = Vec::new();
        for a in [1u32, 2, 4, 7] {
            // Key 4 spans three chunks of 3; the others fit in one or two.
            let n = if a == 4 { 8 } else { a };
            rows.extend((0..n).map(|b| ((a, b * 2), 1 + b as i64)));
        }
        let whole: Vec<((u32, u32), isize)> = rows.iter().map(|(r, d)| (*r, *d as isize)).collect();
        for per_chunk in [1, 2, 3, 5, 100] {
            let (_dir, _store, d) = stored(&rows, per_chunk);
            for a in 0..9u32 {
                let got = d.try_range(|r| r.0, &a).unwrap();
                assert_eq!(got, sorted_range(&whole, &|r: &(u32, u32)| r.0, &a), "{a}");
                for b in 0..18u32 {
                    let got = d.try_range(|r| *r, &(a, b)).unwrap();
                    let want = sorted_range(&whole, &|r: &(u32, u32)| *r, &(a, b));
                    assert_eq!(got, want, "({a}, {b}) in chunks of {per_chunk}");
                }
            }
            assert!(d.try_get().is_none(), "lookups do not decode the whole");
            // Once decoded whole, lookups search the rows.
            d.set(Ok(Arc::new(whole.clone())));
            assert_eq!(d.try_range(|r| r.0, &4).unwrap().len(), 8);
        }
    }

    /// A revision that its decoding threads abandoned (they stopped) is decoded by its first
    /// reader of all of it, on the reader's thread, after lookups read some chunks already
    /// (also a reader that was waiting already: it wakes); then it lets go of the store.
    #[test]
    fn an_abandoned_revision_is_decoded_by_its_reader() {
        let rows: Vec<((u32, u32), i64)> = (0..50u32).map(|i| ((i / 4, i), 1)).collect();
        let whole: Vec<((u32, u32), isize)> = rows.iter().map(|(r, d)| (*r, *d as isize)).collect();
        let (_dir, store, d) = stored(&rows, 7);
        assert_eq!(d.try_range(|r| r.0, &5).unwrap().len(), 4);
        let waiting = {
            let d = d.clone();
            std::thread::spawn(move || d.wait().map(|rows| rows.len()).map_err(str::to_string))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        d.abandon();
        assert_eq!(waiting.join().unwrap(), Ok(50));
        assert_eq!(d.wait().unwrap().as_slice(), whole.as_slice());
        assert_eq!(
            Arc::weak_count(&store),
            0,
            "the decoded revision let go of the store"
        );
    }

    /// A revision whose store was closed (its runtime stopped) cannot be read: a reader of all
    /// of it, waiting or not, learns why, and a lookup fails with the same reason.
    #[test]
    fn a_revision_of_a_closed_store_says_so() {
        let rows: Vec<((u32, u32), i64)> = (0..20u32).map(|i| ((i, i), 1)).collect();
        let (_dir, store, d) = stored(&rows, 7);
        let waiting = {
            let d = d.clone();
            std::thread::spawn(move || d.wait().map(|rows| rows.len()).map_err(str::to_string))
        };
        drop(store);
        d.abandon();
        let why = waiting.join().unwrap().unwrap_err();
        assert!(
            why.contains("revision (r, 5): the store is closed"),
            "{why}"
        );
        assert_eq!(d.wait().unwrap_err(), why);
        assert_eq!(d.try_range(|r| r.0, &3).unwrap_err(), why);
    }

    /// A chunk that does not decode fails the lookup that reads it, and the outcome says which
    /// revision and chunk, for the runtime to report.
    #[test]
    fn a_chunk_that_does_not_decode_fails_its_lookup_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let good = codec::encode(&[((1u32, 1u32), 1i64)].as_slice());
        let write = RevisionWrite {
            replica: "r".into(),
            logic_version: 1,
            description_hash: 7,
            records: 2,
            chunks: [good, vec![1, 0, 0]]
                .map(|payload| ChunkWrite::New {
                    payload,
                    records: 1,
                })
                .to_vec(),
            overwrite: false,
        };
        let info = store
            .write_revisions(5, &[write], 0, &[] as &[&str])
            .unwrap()
            .remove(0);
        let store = Arc::new(store);
        let d: Arc<Decoding<(u32, u32)>> =
            Decoding::stored(&store, Arc::new(info), IdCheck::unchecked());
        let failed = d.try_range(|r| r.0, &3).unwrap_err();
        let why = d.try_get().unwrap().unwrap_err();
        assert_eq!(failed, why);
        assert!(why.contains("revision (r, 5) chunk 1"), "{why}");
    }
}
