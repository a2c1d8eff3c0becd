//! Encodings of engine values in the store: source deltas in the log and revision chunks.
//!
//! Both are bincode 1.3 with its default options: little-endian, fixed-width integers, and
//! lengths as u64, so the bytes do not depend on the host.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// Records per revision chunk, unless the runtime is configured otherwise.
pub(crate) const CHUNK_RECORDS: usize = 8192;

/// A source delta as written to the log: per source replica (by name), its updates.
pub(crate) type LoggedDelta<R> = Vec<(String, Vec<(R, i64)>)>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("in-memory values always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    bincode::deserialize(bytes).map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))
}

/// Decodes chunk `i` of revision `(replica, as_of)`.
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    bytes: &[u8],
    replica: &str,
    as_of: u64,
    i: u32,
) -> Result<Vec<(R, isize)>, Error> {
    let rows: Vec<(R, i64)> = decode(bytes, &chunk_name(replica, as_of, i))?;
    Ok(rows.into_iter().map(|(r, d)| (r, d as isize)).collect())
}

/// The first record of chunk `i` of revision `(replica, as_of)`: a chunk's encoding starts
/// with its length and first record, and the rest is ignored.
pub(crate) fn decode_first<R: DeserializeOwned>(
    bytes: &[u8],
    replica: &str,
    as_of: u64,
    i: u32,
) -> Result<R, Error> {
    let (_len, (first, _diff)): (u64, (R, i64)) = decode(bytes, &chunk_name(replica, as_of, i))?;
    Ok(first)
}

/// How errors name a revision chunk.
fn chunk_name(replica: &str, as_of: u64, i: u32) -> String {
    format!("revision ({replica}, {as_of}) chunk {i}")
}

/// Splits sorted records into encoded chunks of at most `per_chunk` records.
pub(crate) fn encode_chunks<R: Serialize>(rows: &[(R, i64)], per_chunk: usize) -> Vec<Vec<u8>> {
    rows.chunks(per_chunk.max(1)).map(|c| encode(&c)).collect()
}
