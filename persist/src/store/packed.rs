//! Packed payloads (format 7): how a revision chunk or a source-log entry is kept inside its
//! seal. One codec byte, then the bytes:
//! - [`RAW`]: the payload as it is (what packing would not make smaller, such as a single
//!   join);
//! - [`LZ4`]: `decoded length u32 LE`, then the payload compressed as one LZ4 block (the
//!   `lz4_flex` crate's block format, without a frame).
//!
//! The checksum of the seal covers the packed bytes, so damage is caught before anything is
//! decoded; a packed value that still does not decode (a codec this build does not know, a
//! length that does not match) is `Error::Corrupt` too, never a panic.

use std::borrow::Cow;

use crate::Error;

/// The codec byte of a payload kept as it is.
pub(crate) const RAW: u8 = 0;
/// The codec byte of a payload compressed as one LZ4 block.
pub(crate) const LZ4: u8 = 1;

/// Payloads shorter than this are kept raw: LZ4 seldom shortens them, and a commit of one
/// join should not pay for trying.
const MIN_PACKED: usize = 64;

/// LZ4 expands at most 255-fold: a decoded length past this bound for its compressed length
/// is damage, caught before anything is allocated for it.
const MAX_RATIO: usize = 255;

/// `payload` packed (compressed when that makes it smaller, else raw), appended to `out`.
pub(crate) fn pack_into(payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if payload.len() >= MIN_PACKED
        && let Ok(len) = u32::try_from(payload.len())
    {
        out.resize(
            start + 5 + lz4_flex::block::get_maximum_output_size(payload.len()),
            0,
        );
        out[start] = LZ4;
        out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
        if let Ok(n) = lz4_flex::block::compress_into(payload, &mut out[start + 5..])
            && 5 + n < 1 + payload.len()
        {
            out.truncate(start + 5 + n);
            return;
        }
        out.truncate(start);
    }
    out.reserve(1 + payload.len());
    out.push(RAW);
    out.extend_from_slice(payload);
}

/// The payload of `packed`, or `Error::Corrupt` naming `what` when it does not decode.
pub(crate) fn unpack<'a>(
    packed: &'a [u8],
    what: impl Fn() -> String,
) -> Result<Cow<'a, [u8]>, Error> {
    let corrupt = |why: String| Error::Corrupt(format!("{} does not decode: {why}", what()));
    match packed.split_first() {
        Some((&RAW, payload)) => Ok(Cow::Borrowed(payload)),
        Some((&LZ4, rest)) => {
            let Some((len, body)) = rest.split_first_chunk::<4>() else {
                return Err(corrupt("its compressed length is cut short".into()));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > body.len().saturating_mul(MAX_RATIO) {
                return Err(corrupt(format!(
                    "{len} bytes cannot come from {} compressed bytes",
                    body.len()
                )));
            }
            let mut out = vec![0u8; len];
            match lz4_flex::block::decompress_into(body, &mut out) {
                Ok(n) if n == len => Ok(Cow::Owned(out)),
                Ok(n) => Err(corrupt(format!("{n} bytes where it says {len}"))),
                Err(e) => Err(corrupt(e.to_string())),
            }
        }
        Some((codec, _)) => Err(corrupt(format!("unknown codec {codec}"))),
        None => Err(corrupt("it is empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(payload: &[u8]) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        pack_into(payload, &mut out);
        assert_eq!(&out[..6], b"prefix", "packing appends");
        out.split_off(6)
    }

    #[test]
    fn payloads_pack_and_unpack_to_themselves() {
        let repetitive: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        // xorshift64: bytes LZ4 finds no repeats in.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        for payload in [&b""[..], b"one join", &repetitive, &noise] {
            let packed = pack(payload);
            assert_eq!(&*unpack(&packed, || "x".into()).unwrap(), payload);
        }
        assert_eq!(pack(&repetitive)[0], LZ4);
        assert!(pack(&repetitive).len() < repetitive.len() / 10);
        // What LZ4 does not shorten is kept raw, one byte longer.
        assert_eq!(pack(b"one join"), b"\0one join");
        assert_eq!(pack(&noise)[0], RAW);
        assert_eq!(pack(&noise).len(), noise.len() + 1);
    }

    #[test]
    fn a_packed_value_that_does_not_decode_is_damage_not_a_panic() {
        let repetitive: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let packed = pack(&repetitive);
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "it is empty"),
            (vec![9, 1, 2], "unknown codec 9"),
            (vec![LZ4, 1, 2], "cut short"),
            (packed[..packed.len() - 3].to_vec(), "does not decode"),
        ];
        let mut longer = packed.clone();
        longer[1..5].copy_from_slice(&(repetitive.len() as u32 + 1).to_le_bytes());
        cases.push((longer, "where it says"));
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push((huge, "cannot come from"));
        // Every single changed byte of the body either decodes to other bytes (the seal's
        // checksum catches those) or fails; none panics.
        for i in 5..packed.len() {
            let mut bad = packed.clone();
            bad[i] ^= 0x5a;
            let _ = unpack(&bad, || "x".into());
        }
        for (bad, want) in cases {
            let e = unpack(&bad, || "table chunks: chunk 7".into()).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("table chunks: chunk 7 does not decode"),
                "{text}"
            );
            assert!(text.contains(want), "{want}: {text}");
        }
    }
}
