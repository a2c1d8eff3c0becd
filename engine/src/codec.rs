//! Encodings of engine values in the store: source deltas in the log and revision chunks.
//!
//! Both are bincode 1.3 with its default options: little-endian, fixed-width integers, and
//! lengths as u64, so the bytes do not depend on the host.

use serde::{Serialize, de::DeserializeOwned};

/// Records per revision chunk.
pub(crate) const CHUNK_RECORDS: usize = 8192;

/// A source delta as written to the log: per source replica (by name), its updates.
pub(crate) type LoggedDelta<R> = Vec<(String, Vec<(R, i64)>)>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("in-memory values always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, crate::Error> {
    bincode::deserialize(bytes)
        .map_err(|e| crate::Error::Corrupt(format!("{what} does not decode: {e}")))
}

/// Decodes `bytes`, or (when `prefix`) the value at their beginning, ignoring the rest.
pub(crate) fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    prefix: bool,
) -> Result<T, crate::Error> {
    if !prefix {
        return decode(bytes, what);
    }
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| crate::Error::Corrupt(format!("{what} does not decode: {e}")))
}

/// Splits sorted records into encoded chunks.
pub(crate) fn encode_chunks<R: Serialize>(rows: &[(R, i64)]) -> Vec<Vec<u8>> {
    rows.chunks(CHUNK_RECORDS).map(|c| encode(&c)).collect()
}
