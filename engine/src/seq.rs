//! The source sequence number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The sequence number of a source delta: the timely timestamp of everything derived from it.
///
/// `Seq(0)` is the empty beginning of a store; the first source delta is `Seq(1)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number before any source delta.
    pub const ZERO: Seq = Seq(0);

    /// The next sequence number.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

impl From<u64> for Seq {
    fn from(value: u64) -> Self {
        Seq(value)
    }
}
