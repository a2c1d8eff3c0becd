//! The threads that decode a restore's seed revisions in the background, each revision in
//! parts shared among the threads, the smallest revision first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prr_persist::{RevisionInfo, Store};

use crate::codec;
use crate::error::Error;
use crate::record::Record;
use crate::revision::Decoding;
use crate::updates::sorted;

/// The decoded rows of a part of a revision.
type PartRows<R> = Vec<(R, isize)>;

/// A revision to decode: its header.
pub(crate) type ToDecode = Arc<RevisionInfo>;

/// Starts decoding `revisions` (as of `as_of`, each sorted by record) in the background, by
/// as many threads as there are cores, the smallest first, each revision's chunks shared among
/// the threads. Returns each revision's decoding, in the order given (nothing waits for them;
/// their first reader of all of one does, and lookups read the chunks they need meanwhile),
/// and the threads. With `paused` (tests), the threads wait until they are stopped.
pub(crate) fn decode_in_background<R: Record>(
    store: &Arc<Store>,
    revisions: Vec<ToDecode>,
    as_of: u64,
    paused: bool,
    ids: &codec::IdCheck<R>,
) -> (Vec<Arc<Decoding<R>>>, Decoders<R>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cells = Vec::with_capacity(revisions.len());
    let mut queue = Vec::with_capacity(revisions.len());
    for r in revisions {
        debug_assert_eq!(r.as_of, as_of);
        let cell = Decoding::stored(store, r.clone(), ids.clone());
        cells.push(cell.clone());
        queue.push((std::cmp::Reverse(r.records), r.chunk_count(), r, cell));
    }
    // Popped from the end: the smallest first. Those are what indexes are built from
    // (rules, instances); the large ones are mostly looked up, which their chunks serve
    // until they are decoded.
    queue.sort_by_key(|r| r.0);
    let mut pieces = Vec::new();
    for (_, chunks, info, cell) in queue {
        let n = chunks.div_ceil(threads as u32).max(1);
        let parts = chunks.div_ceil(n).max(1) as usize;
        let assembly = Arc::new(Assembly {
            info,
            parts: Mutex::new((0..parts).map(|_| None).collect()),
            remaining: AtomicUsize::new(parts),
            cell,
            ids: ids.clone(),
        });
        // The last part first: within a revision, the first part is popped first.
        for part in (0..parts).rev() {
            let from = (part as u32 * n).min(chunks);
            pieces.push(DecodePiece {
                part,
                range: from..(from + n).min(chunks),
                assembly: assembly.clone(),
            });
        }
    }
    let pieces = Arc::new(Mutex::new(pieces));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..threads)
        .map(|_| {
            let (pieces, store, stop) = (pieces.clone(), store.clone(), stop.clone());
            std::thread::spawn(move || {
                loop {
                    while paused && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let piece = pieces.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(piece) = piece else { break };
                    piece.run(&store, &stop);
                }
            })
        })
        .collect();
    let decoders = Decoders {
        stop,
        threads,
        decodings: cells.clone(),
    };
    (cells, decoders)
}

/// `revisions` (as of `as_of`), decoded by no thread of their own: each is read by chunk when
/// looked up, and decoded whole by its first reader of all of it (see [`Decoding::lazy`]).
/// The `Decoders` returned has no threads; the dataflow keeps it all the same, for the
/// decodings it lists: a seed that does not decode is reported from them, and a stop waits
/// for them all.
pub(crate) fn decode_when_read<R: Record>(
    store: &Arc<Store>,
    revisions: Vec<ToDecode>,
    ids: &codec::IdCheck<R>,
) -> (Vec<Arc<Decoding<R>>>, Decoders<R>) {
    let cells: Vec<_> = (revisions.into_iter())
        .map(|r| Decoding::lazy(store, r, ids.clone()))
        .collect();
    let decoders = Decoders {
        stop: Arc::new(AtomicBool::new(true)),
        threads: Vec::new(),
        decodings: cells.clone(),
    };
    (cells, decoders)
}

/// The threads that decode a restore's seed revisions in the background (see
/// [`decode_in_background`]), owned by the dataflow they serve. Dropping them stops them:
/// each finishes the piece it decodes, then the revisions left undecoded are abandoned (a
/// reader of all of one decodes it itself). So no thread outlives the dataflow holding the
/// store: the file is closed cleanly when the runtime, and every revision it handed out, are
/// dropped, and a process that exits right after a restore leaves nothing to repair.
pub(crate) struct Decoders<R> {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    decodings: Vec<Arc<Decoding<R>>>,
}

impl<R> Decoders<R> {
    /// The revisions they decode.
    pub(crate) fn decodings(&self) -> &[Arc<Decoding<R>>] {
        &self.decodings
    }

    /// Stops the threads: each finishes the piece it decodes. They no longer hold the store.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<R> Drop for Decoders<R> {
    fn drop(&mut self) {
        self.stop();
        for d in &self.decodings {
            d.abandon();
        }
    }
}

/// A revision decoded in the background in parts (see [`decode_in_background`]): the
/// thread that decodes its last part assembles it.
struct Assembly<R> {
    /// The revision's header.
    info: Arc<RevisionInfo>,
    /// Each part's rows, once decoded.
    parts: Mutex<Vec<Option<PartRows<R>>>>,
    remaining: AtomicUsize,
    cell: Arc<Decoding<R>>,
    ids: codec::IdCheck<R>,
}

/// Some chunks of a revision to decode.
struct DecodePiece<R> {
    part: usize,
    range: std::ops::Range<u32>,
    assembly: Arc<Assembly<R>>,
}

/// Why a piece's decoding ended early.
enum Halt {
    /// The threads are stopping: the revision is abandoned.
    Stopped,
    Failed(Error),
}

impl From<prr_persist::Error> for Halt {
    fn from(e: prr_persist::Error) -> Self {
        Halt::Failed(e.into())
    }
}

impl<R: Record> DecodePiece<R> {
    /// Decodes the piece, giving up between two chunks once `stop` is set (a piece is a
    /// part of a revision of a million records: finishing it would hold a stop for a tenth
    /// of a second).
    fn run(self, store: &Store, stop: &AtomicBool) {
        let a = &self.assembly;
        let (name, as_of) = (&a.info.replica, a.info.as_of);
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rows = Vec::new();
            let n = self.range.len();
            store.for_each_chunk_of(&a.info, self.range.clone(), |i, chunk| {
                if stop.load(Ordering::Relaxed) {
                    return Err(Halt::Stopped);
                }
                let part =
                    codec::decode_chunk(chunk, name, as_of, i, &a.ids).map_err(Halt::Failed)?;
                if rows.is_empty() {
                    rows.reserve(part.len() * n);
                }
                rows.extend(part);
                Ok(())
            })?;
            Ok::<_, Halt>(rows)
        }));
        let rows = match decoded {
            Ok(Ok(rows)) => rows,
            Ok(Err(Halt::Stopped)) => return,
            Ok(Err(Halt::Failed(e))) => return a.cell.set(Err(e.to_string())),
            Err(_) => {
                return a
                    .cell
                    .set(Err(format!("decoding revision ({name}, {as_of}) panicked")));
            }
        };
        a.parts.lock().expect("decoded parts lock")[self.part] = Some(rows);
        if a.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let parts = std::mem::take(&mut *a.parts.lock().expect("decoded parts lock"));
            let mut all = Vec::with_capacity(parts.iter().flatten().map(Vec::len).sum());
            for part in parts.into_iter().flatten() {
                all.extend(part);
            }
            a.cell.set(Ok(Arc::new(sorted(all))));
        }
    }
}
