//! Manifest parsing: any text as the value of `instances`, as a file and as a line. A value
//! or an error that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prr_replicas::{parse_file, parse_line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let manifest = format!("{{\"instances\": {text}}}");
    if let Err(e) = parse_file("m.json", manifest.as_bytes()) {
        assert!(e.to_string().starts_with("m.json"), "{e}");
    }
    if !manifest.contains('\n')
        && let Err(e) = parse_line("m.ndjson", 1, &manifest)
    {
        assert!(e.to_string().starts_with("m.ndjson"), "{e}");
    }
});
