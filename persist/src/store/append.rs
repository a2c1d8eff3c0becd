//! Appending to the source log, and telling after a failed commit whether it took place.
//!
//! A commit that fails (an I/O error, a failed fsync, a full disk) may or may not have reached
//! the disk. [`Store::append`] settles it by reading the store back: the caller learns that
//! the deltas are committed (their seqs), not committed ([`Error::NotCommitted`]), or, when
//! the store cannot be read back at all, in doubt ([`Error::InDoubt`]).

use redb::{ReadableTable, WriteTransaction};

use std::collections::BTreeMap;

use super::{Error, sealed_u64, strings};
use super::{KEY_DICT_LEN, KEY_LAST_SEQ, LOG, META, Store, contained, open_u64, sealed};

/// What [`append_in`] wrote: the last seq and the number of strings before it, and the new
/// seqs.
pub(super) struct Appended {
    last: u64,
    dict_len: u64,
    seqs: Vec<u64>,
}

/// A failed write transaction: why, and what its body returned if it failed at commit.
pub(super) struct WriteFailure<T> {
    error: Error,
    at_commit: Option<T>,
}

impl<T> WriteFailure<T> {
    /// The error, for a write whose outcome either way leaves a sound store (a revision
    /// capture, garbage collection): the next operation reopens the database if need be.
    pub(super) fn into_error(self) -> Error {
        self.error
    }
}

impl Store {
    /// Runs `f` in a write transaction and commits it. A failure of the storage marks the
    /// database for reopening (the transaction is dropped first). A failure at commit carries
    /// what `f` returned: whether that commit took place is not known.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, WriteFailure<T>> {
        let failed = |error: Error, at_commit: Option<T>| WriteFailure {
            error: self.db.failure(error),
            at_commit,
        };
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting_writers.fetch_add(1, SeqCst);
        let txn = self.begin_write();
        self.waiting_writers.fetch_sub(1, SeqCst);
        let txn = txn.map_err(|e| failed(e, None))?;
        let value = match f(&txn) {
            Ok(v) => v,
            Err(e) => {
                drop(txn);
                return Err(failed(e, None));
            }
        };
        match txn.commit() {
            Ok(()) => Ok(value),
            Err(e) => Err(failed(e.into(), Some(value))),
        }
    }

    /// Appends source deltas to the log in one durable transaction (a group commit), together
    /// with the dictionary strings first used by them (`strings[i]` gets id `first_id + i`),
    /// and returns their sequence numbers. When this returns, they are on disk.
    ///
    /// When the commit fails, the store is read back: [`Error::NotCommitted`] when it holds
    /// what it held before, [`Error::InDoubt`] when it cannot be read.
    pub fn append<S: AsRef<str>>(
        &self,
        deltas: &[&[u8]],
        first_id: u64,
        strings: &[S],
    ) -> Result<Vec<u64>, Error> {
        let revived = self.staged_strings();
        let written = contained("log", || {
            Ok::<_, Error>(self.write(|txn| append_in(txn, deltas, first_id, strings, &revived)))
        })?;
        let failure = match written {
            Ok(appended) => {
                self.unstage_strings(&revived);
                return Ok(appended.seqs);
            }
            Err(failure) => failure,
        };
        let what = |before: Option<&Appended>| match before {
            Some(a) if !deltas.is_empty() => {
                format!(
                    "source deltas seq {}..={}",
                    a.last + 1,
                    a.last + deltas.len() as u64
                )
            }
            _ if !deltas.is_empty() => format!(
                "the {} source delta(s) after the last committed seq",
                deltas.len()
            ),
            _ => format!("{} dictionary strings", strings.len()),
        };
        let Some(appended) = failure.at_commit else {
            return Err(Error::NotCommitted {
                what: what(None),
                source: Box::new(failure.error),
            });
        };
        // The commit failed: read the store back to tell whether it took place.
        let what = what(Some(&appended));
        let after = (
            appended.last + deltas.len() as u64,
            appended.dict_len + strings.len() as u64,
        );
        match self.settle_commit() {
            Ok(now) if now == after => {
                self.unstage_strings(&revived);
                Ok(appended.seqs)
            }
            Ok(now) if now == (appended.last, appended.dict_len) => Err(Error::NotCommitted {
                what,
                source: Box::new(failure.error),
            }),
            Ok((seq, dict)) => Err(Error::Corrupt(format!(
                "after a failed commit of {what}, the store holds last seq {seq} and {dict} strings, neither what it held before ({}, {}) nor after ({}, {})",
                appended.last, appended.dict_len, after.0, after.1
            ))),
            Err(reopen) => Err(Error::InDoubt {
                what,
                source: Box::new(failure.error),
                reopen: Box::new(reopen),
            }),
        }
    }

    /// After a failed commit: reopens the database, reads the last seq and the number of
    /// strings back, and commits an empty transaction so that what is read is durable.
    fn settle_commit(&self) -> Result<(u64, u64), Error> {
        self.db.mark_failed();
        if let Err(reopen) = self.db.reopen_if_failed() {
            // The storage still fails: read the file back without writing to it.
            return contained("meta", || {
                self.db.read_back(|txn| {
                    let meta = txn.open_table(META)?;
                    let read = |key: &str| -> Result<u64, Error> {
                        let v = meta.get(key)?.ok_or_else(|| {
                            Error::Corrupt(format!("table meta: `{key}` is missing"))
                        })?;
                        open_u64(key, v.value())
                    };
                    Ok((read(KEY_LAST_SEQ)?, read(KEY_DICT_LEN)?))
                })
            })
            .map_err(|_| reopen);
        }
        let now = (self.last_seq()?, self.meta_u64(KEY_DICT_LEN)?);
        let txn = self.begin_write()?;
        txn.commit().map_err(|e| self.db.failure(e.into()))?;
        Ok(now)
    }
}

/// Writes `deltas` to the log after the last seq, `strings` to the dictionary from
/// `first_id` (which must be the number of ids handed out) and puts back the `revived`
/// strings, in `txn`.
pub(super) fn append_in<S: AsRef<str>>(
    txn: &WriteTransaction,
    deltas: &[&[u8]],
    first_id: u64,
    strings: &[S],
    revived: &BTreeMap<u64, String>,
) -> Result<Appended, Error> {
    let mut meta = txn.open_table(META)?;
    let read = |meta: &redb::Table<&str, &[u8]>, key: &str| -> Result<u64, Error> {
        let v = meta
            .get(key)?
            .ok_or_else(|| Error::Corrupt(format!("table meta: `{key}` is missing")))?;
        open_u64(key, v.value())
    };
    let last = read(&meta, KEY_LAST_SEQ)?;
    let dict_len = read(&meta, KEY_DICT_LEN)?;
    if !strings.is_empty() {
        if first_id != dict_len {
            return Err(Error::Corrupt(format!(
                "new dictionary ids start at {first_id}, but the store holds {dict_len}"
            )));
        }
        meta.insert(
            KEY_DICT_LEN,
            sealed_u64(KEY_DICT_LEN, dict_len + strings.len() as u64).as_slice(),
        )?;
    }
    strings::put_in(txn, dict_len, strings, revived)?;
    let mut log = txn.open_table(LOG)?;
    let mut seqs = Vec::with_capacity(deltas.len());
    for (i, d) in deltas.iter().enumerate() {
        let seq = last + 1 + i as u64;
        log.insert(seq, sealed::log(seq).seal_packed(d).as_slice())?;
        seqs.push(seq);
    }
    meta.insert(
        KEY_LAST_SEQ,
        sealed_u64(KEY_LAST_SEQ, last + deltas.len() as u64).as_slice(),
    )?;
    Ok(Appended {
        last,
        dict_len,
        seqs,
    })
}
