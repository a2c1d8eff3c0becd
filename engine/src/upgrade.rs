//! Upgrading the records of a store of an older format: the engine knows how records are laid
//! out in revision chunks and log entries (see `codec`), the program how one of its records
//! was encoded by an older format ([`LegacyRecords`]). [`record_upgrade`] joins the two into
//! the store's [`RecordUpgrade`], set with `RuntimeConfig::with_record_upgrade`.

use std::sync::Arc;

use prr_persist::{RecordUpgrade, UpgradeStrings};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How a program reads one of its records as an older format encoded it, as a current record.
pub trait LegacyRecords<R>: Send + Sync {
    /// Reads the record at the start of `bytes`, written by format `from`, and advances
    /// `bytes` past it; interns in `strings` what the current record needs.
    fn read(&self, from: u32, bytes: &mut &[u8], strings: &mut UpgradeStrings)
    -> Result<R, String>;

    /// Called as the upgrade goes (see [`RecordUpgrade::progress`]).
    fn progress(&self, _done: u64, _total: u64) {}
}

/// Reads a value of type `T` at the start of `bytes` as the store encodes values (bincode),
/// advancing `bytes` past it: what a [`LegacyRecords`] reads a record's fields with.
pub fn read_encoded<T: DeserializeOwned>(bytes: &mut &[u8]) -> Result<T, String> {
    bincode::deserialize_from(bytes).map_err(|e| e.to_string())
}

/// The store's record upgrade for records of type `R`, read by `legacy`.
pub fn record_upgrade<R: Serialize + 'static>(
    legacy: impl LegacyRecords<R> + 'static,
) -> Arc<dyn RecordUpgrade + Send + Sync> {
    Arc::new(Upgrade {
        legacy: Box::new(legacy),
    })
}

struct Upgrade<R> {
    legacy: Box<dyn LegacyRecords<R>>,
}

impl<R: Serialize> Upgrade<R> {
    /// Reads `n` rows `(record, diff)` from `bytes`, appending them re-encoded to `out`.
    fn rows(
        &self,
        from: u32,
        bytes: &mut &[u8],
        n: u64,
        out: &mut Vec<u8>,
        strings: &mut UpgradeStrings,
    ) -> Result<(), String> {
        for i in 0..n {
            let record =
                (self.legacy.read(from, bytes, strings)).map_err(|e| format!("record {i}: {e}"))?;
            let diff: i64 = read_encoded(bytes).map_err(|e| format!("record {i}'s diff: {e}"))?;
            bincode::serialize_into(&mut *out, &(record, diff))
                .map_err(|e| format!("record {i} does not encode: {e}"))?;
        }
        Ok(())
    }
}

/// Reads a bincode length (`u64 LE`).
fn length(bytes: &mut &[u8], what: &str) -> Result<u64, String> {
    read_encoded(bytes).map_err(|e| format!("{what}: {e}"))
}

/// `Some(new)` if it differs from `old`.
fn changed(old: &[u8], new: Vec<u8>) -> Option<Vec<u8>> {
    (new != old).then_some(new)
}

impl<R: Serialize> RecordUpgrade for Upgrade<R> {
    /// A chunk: its record count (`u64 LE`), then its rows.
    fn chunk(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut bytes = payload;
        let n = length(&mut bytes, "the record count")?;
        let mut out = u64::to_le_bytes(n).to_vec();
        self.rows(from, &mut bytes, n, &mut out, strings)?;
        if !bytes.is_empty() {
            return Err(format!("{} bytes after its {n} records", bytes.len()));
        }
        Ok(changed(payload, out))
    }

    /// A log entry: per source replica, its name and its rows (`codec::LoggedDelta`).
    fn log_entry(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut bytes = payload;
        let replicas = length(&mut bytes, "the replica count")?;
        let mut out = u64::to_le_bytes(replicas).to_vec();
        for _ in 0..replicas {
            let name: String = read_encoded(&mut bytes).map_err(|e| format!("a name: {e}"))?;
            let n = length(&mut bytes, &format!("{name}'s record count"))?;
            bincode::serialize_into(&mut out, &name).map_err(|e| e.to_string())?;
            out.extend_from_slice(&n.to_le_bytes());
            (self.rows(from, &mut bytes, n, &mut out, strings))
                .map_err(|e| format!("{name}: {e}"))?;
        }
        if !bytes.is_empty() {
            return Err(format!("{} bytes after its records", bytes.len()));
        }
        Ok(changed(payload, out))
    }

    fn progress(&self, done: u64, total: u64) {
        self.legacy.progress(done, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{LoggedDelta, encode, encode_chunks};
    use prr_persist::ChunkWrite;

    /// Format 5 wrote `(u32, bool)`; the current format writes `(u32, bool, String)`, the
    /// string interned for its flag.
    struct Widening;

    impl LegacyRecords<(u32, bool, u64)> for Widening {
        fn read(
            &self,
            from: u32,
            bytes: &mut &[u8],
            strings: &mut UpgradeStrings,
        ) -> Result<(u32, bool, u64), String> {
            assert_eq!(from, 5);
            let (n, flag): (u32, bool) = read_encoded(bytes)?;
            Ok((n, flag, strings.intern(if flag { "yes" } else { "no" })))
        }
    }

    #[test]
    fn chunks_and_log_entries_are_rewritten_record_by_record() {
        let upgrade = record_upgrade(Widening);
        let mut strings = UpgradeStrings::of(vec![Some("no".into())]);
        let old = [((1u32, true), 1i64), ((2, false), -1)];
        let ChunkWrite::New { payload, .. } = encode_chunks(&old, 16).remove(0) else {
            panic!("a new chunk")
        };
        let new = upgrade.chunk(5, &payload, &mut strings).unwrap().unwrap();
        let want = [((1u32, true, 1u64), 1i64), ((2, false, 0), -1)];
        let ChunkWrite::New {
            payload: expected, ..
        } = encode_chunks(&want, 16).remove(0)
        else {
            panic!("a new chunk")
        };
        assert_eq!(new, expected);
        assert_eq!(strings.get(1), Some("yes"));
        let logged: LoggedDelta<(u32, bool)> =
            vec![("a".into(), old.to_vec()), ("b".into(), vec![])];
        let new = upgrade
            .log_entry(5, &encode(&logged), &mut strings)
            .unwrap();
        let want: LoggedDelta<(u32, bool, u64)> =
            vec![("a".into(), want.to_vec()), ("b".into(), vec![])];
        assert_eq!(new, Some(encode(&want)));
        // Bytes left over, or too few, are refused.
        let mut long = encode(&logged);
        long.push(0);
        assert!(
            upgrade
                .log_entry(5, &long, &mut strings)
                .unwrap_err()
                .contains("1 bytes after")
        );
        let short = &payload[..payload.len() - 1];
        assert!(
            upgrade
                .chunk(5, short, &mut strings)
                .unwrap_err()
                .starts_with("record 1")
        );
    }
}
