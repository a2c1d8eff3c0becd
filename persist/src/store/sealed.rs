//! Checksummed values (formats 2 and 3): every value prr writes, except the format version, is
//! `crc32 u32 LE | payload`, where the CRC-32 (IEEE) covers the value's *context* (its table
//! and key, so a value moved to another key is caught too) followed by the payload.

use std::borrow::Cow;

use super::packed;
use crate::Error;

/// The bytes a value's checksum covers before its payload: a tag naming its table, then its
/// key, each part as written by [`Context::part`].
pub(crate) struct Context(crc32fast::Hasher);

impl Context {
    /// A context starting with `tag` (the table's name).
    pub(crate) fn new(tag: &str) -> Self {
        let mut c = Context(crc32fast::Hasher::new());
        c.bytes(tag.as_bytes());
        c
    }

    /// Adds a length-prefixed byte string (`u32 LE` length, then the bytes).
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(&(b.len() as u32).to_le_bytes());
        self.0.update(b);
        self
    }

    /// Adds a `u64 LE`.
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    /// Adds a `u128 LE`.
    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    /// Adds a `u32 LE`.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    fn crc(&self, payload: &[u8]) -> u32 {
        let mut h = self.0.clone();
        h.update(payload);
        h.finalize()
    }

    /// `payload` sealed: its checksum, then the payload.
    pub(crate) fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&self.crc(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The payload of a sealed value, or `Error::Corrupt` naming `what` when it is too short
    /// or its checksum does not match.
    pub(crate) fn open<'a>(
        &self,
        sealed: &'a [u8],
        what: impl Fn() -> String,
    ) -> Result<&'a [u8], Error> {
        let Some((crc, payload)) = sealed.split_first_chunk::<4>() else {
            return Err(Error::Corrupt(format!(
                "{} has {} bytes, too short for its checksum",
                what(),
                sealed.len()
            )));
        };
        if u32::from_le_bytes(*crc) != self.crc(payload) {
            return Err(Error::Corrupt(format!("{} fails its checksum", what())));
        }
        Ok(payload)
    }

    /// `payload` packed (see `packed`: compressed when that makes it smaller), then sealed:
    /// how format 7 keeps revision chunks and log entries.
    pub(crate) fn seal_packed(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        packed::pack_into(payload, &mut out);
        let crc = self.crc(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The payload of a value sealed by [`Context::seal_packed`]: its checksum checked, then
    /// unpacked; `Error::Corrupt` naming `what` when either fails.
    pub(crate) fn open_packed<'a>(
        &self,
        sealed: &'a [u8],
        what: impl Fn() -> String,
    ) -> Result<Cow<'a, [u8]>, Error> {
        packed::unpack(self.open(sealed, &what)?, what)
    }
}

/// The context of log entry `seq`.
pub(crate) fn log(seq: u64) -> Context {
    let mut c = Context::new("log");
    c.u64(seq);
    c
}

/// The context of dictionary entry `id`.
pub(crate) fn dict(id: u64) -> Context {
    let mut c = Context::new("dictionary");
    c.u64(id);
    c
}

/// The context of revision `(replica, as_of)`'s header.
pub(crate) fn header(replica: &str, as_of: u64) -> Context {
    let mut c = Context::new("revisions");
    c.bytes(replica.as_bytes()).u64(as_of);
    c
}

/// The context of the chunk of content key `key` (format 3).
pub(crate) fn chunk(key: u128) -> Context {
    let mut c = Context::new("chunks");
    c.u128(key);
    c
}

/// The context of chunk `i` of revision `(replica, as_of)` in format 2's `revision_chunks`.
pub(crate) fn chunk_v2(replica: &str, as_of: u64, i: u32) -> Context {
    let mut c = Context::new("revision_chunks");
    c.bytes(replica.as_bytes()).u64(as_of).u32(i);
    c
}

/// The context of quarantine entry `seq`.
pub(crate) fn quarantine(seq: u64) -> Context {
    let mut c = Context::new("quarantine");
    c.u64(seq);
    c
}

/// The context of the `meta` entry `name`.
pub(crate) fn meta(name: &str) -> Context {
    let mut c = Context::new("meta");
    c.bytes(name.as_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_own_key_and_intact() {
        let sealed = log(7).seal(b"payload");
        assert_eq!(log(7).open(&sealed, || "x".into()).unwrap(), b"payload");
        assert!(
            log(8).open(&sealed, || "x".into()).is_err(),
            "moved to another key"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            let e = log(7).open(&bad, || "log entry 7".into()).unwrap_err();
            assert!(
                e.to_string().contains("log entry 7 fails its checksum"),
                "{e}"
            );
        }
        let e = log(7).open(&[1, 2], || "log entry 7".into()).unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
        // The replica name is length-prefixed: ("ab", ..) and ("a", ..) never share bytes.
        assert_ne!(
            chunk_v2("ab", 1, 0).seal(b""),
            chunk_v2("a", 1, 0).seal(b"")
        );
        assert_ne!(chunk(1).seal(b""), chunk(2).seal(b""));
    }

    #[test]
    fn a_packed_value_is_sealed_over_its_packed_bytes() {
        let payload: Vec<u8> = (0..4000u32).flat_map(|i| (i % 5).to_le_bytes()).collect();
        for payload in [&payload[..], b"one join"] {
            let sealed = log(3).seal_packed(payload);
            // The same bytes as packing, then sealing what packing made.
            let mut packed = Vec::new();
            packed::pack_into(payload, &mut packed);
            assert_eq!(sealed, log(3).seal(&packed));
            assert_eq!(
                &*log(3).open_packed(&sealed, || "x".into()).unwrap(),
                payload
            );
        }
    }
}
