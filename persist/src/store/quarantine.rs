//! The `quarantine` table: source deltas set aside because a replica's computation panicked
//! on them (see `docs/design.md`).

use redb::ReadableTable;

use super::{LOG, QUARANTINE, Store, contained, sealed};
use crate::Error;

/// A source delta set aside (quarantined): a replica's computation panicked on it. Its log
/// entry stays until it is acknowledged; every replay skips it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The delta's sequence number.
    pub seq: u64,
    /// When it was quarantined, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The panic's message.
    pub message: String,
}

impl Quarantined {
    /// The sealed value: `crc32 | unix_ms u64 LE | message UTF-8`.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.message.len());
        b.extend_from_slice(&self.unix_ms.to_le_bytes());
        b.extend_from_slice(self.message.as_bytes());
        sealed::quarantine(self.seq).seal(&b)
    }

    fn decode(seq: u64, b: &[u8]) -> Result<Self, Error> {
        let b =
            sealed::quarantine(seq).open(b, || format!("table quarantine: entry at seq {seq}"))?;
        let damaged =
            |why: &str| Error::Corrupt(format!("table quarantine: entry at seq {seq} {why}"));
        let (time, message) = b
            .split_first_chunk::<8>()
            .ok_or_else(|| damaged(&format!("has {} bytes, expected at least 8", b.len())))?;
        let message =
            std::str::from_utf8(message).map_err(|_| damaged("has a message that is not UTF-8"))?;
        Ok(Quarantined {
            seq,
            unix_ms: u64::from_le_bytes(*time),
            message: message.to_string(),
        })
    }
}

impl Store {
    /// Quarantines the source delta at `seq` (a committed log entry) durably: every replay skips
    /// it from now on. Quarantining it again replaces its message and time.
    pub fn quarantine(&self, entry: &Quarantined) -> Result<(), Error> {
        contained("quarantine", || {
            let txn = self.begin_write()?;
            {
                if txn.open_table(LOG)?.get(entry.seq)?.is_none() {
                    return Err(Error::Missing(format!(
                        "no source-log entry at seq {} to quarantine",
                        entry.seq
                    )));
                }
                let mut q = txn.open_table(QUARANTINE)?;
                q.insert(entry.seq, entry.encode().as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The quarantined source deltas, by `seq` (none in a store that never quarantined one).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, Error> {
        contained("quarantine", || {
            let txn = self.begin_read()?;
            let q = match txn.open_table(QUARANTINE) {
                Ok(q) => q,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in q.iter()? {
                let (k, v) = entry?;
                out.push(Quarantined::decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Drops the quarantined delta at `seq` for good, in one transaction: its quarantine entry
    /// goes, and its log entry (if still retained) is replaced by `replacement`, the caller's
    /// encoding of an empty delta (sealed here), so the log stays contiguous and replays apply
    /// nothing at `seq`. An error if `seq` is not quarantined.
    pub fn drop_quarantined(&self, seq: u64, replacement: &[u8]) -> Result<(), Error> {
        contained("quarantine", || {
            let txn = self.begin_write()?;
            {
                let mut q = txn.open_table(QUARANTINE)?;
                if q.remove(seq)?.is_none() {
                    return Err(Error::Missing(format!("no quarantined delta at seq {seq}")));
                }
                let mut log = txn.open_table(LOG)?;
                if log.get(seq)?.is_some() {
                    log.insert(seq, sealed::log(seq).seal_packed(replacement).as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}
