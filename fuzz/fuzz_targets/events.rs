//! Event parsing: any bytes as a whole file, and as one NDJSON line. A value or an error that
//! names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prr_replicas::{parse_file, parse_line};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_file("fuzz.json", data) {
        assert!(e.to_string().starts_with("fuzz.json"), "{e}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for (i, line) in text.lines().enumerate() {
            if let Err(e) = parse_line("fuzz.ndjson", i as u64 + 1, line) {
                assert!(e.to_string().starts_with("fuzz.ndjson"), "{e}");
            }
        }
    }
});
