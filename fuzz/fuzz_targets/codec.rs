//! The store's decoders on `Rec`: any bytes as a log entry and as a revision chunk (whole and
//! its first record). A value or `Error::Corrupt` naming what, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prr_engine::{Error, oracle};
use prr_replicas::Rec;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = oracle::decode_log_entry::<Rec>(data, 1) {
        assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    }
    let (whole, first) = oracle::decode_revision_chunk::<Rec>(data, "room_state", 1, 0);
    for e in [whole.err(), first.err()].into_iter().flatten() {
        assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    }
});
