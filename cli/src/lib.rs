//! The command line is the `prr` binary (`src/main.rs`). This library target exists so that
//! `cargo test` compiles and runs the README's Rust snippet as a doc test.

/// The README: its Rust snippet (Embedded use) runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;
