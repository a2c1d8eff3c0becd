//! Matrix policy-rule globs, and index keys that narrow which globs a
//! given user or server has to be compared with.
//!
//! # Glob syntax
//!
//! * `*` matches zero or more characters;
//! * `?` matches exactly one Unicode scalar value (one `char`, whatever the
//!   length of its UTF-8 encoding);
//! * every other character is literal, including `.`, `\`, `[` and `]`:
//!   there are no escapes and no character classes.
//!
//! A glob matches the *whole* text (it is anchored at both ends).
//!
//! # Case
//!
//! [`Glob::new`] builds a case-sensitive glob (for user and room entities).
//! [`Glob::new_ignore_ascii_case`] builds a glob for server entities that
//! compares with *ASCII* case folding only: `A`–`Z` equal `a`–`z`, and every
//! non-ASCII character is compared exactly (so `É` does not match `é`, and the
//! Kelvin sign does not match `k`). Server names are DNS names or IP literals,
//! which are case-insensitive in ASCII only; full Unicode folding would make
//! matching depend on the Unicode version and allow confusable matches.
//!
//! # Complexity
//!
//! Patterns come from untrusted sources, so matching never backtracks
//! exponentially. The pattern is split once, at construction, into literal
//! segments between stars. Matching anchors the first segment at the start of
//! the text and the last at its end, then finds each middle segment at its
//! leftmost position after the previous one (which is always correct for
//! star-separated segments). Segments without `?` are searched with
//! [`str::find`] (linear); segments containing `?` are tried at each
//! candidate position, which costs at most `O(n · min(n, m))` for a text of
//! `n` bytes and a pattern of `m` bytes, and is linear in practice.
//!
//! # Index keys
//!
//! [`user_glob_key`] and [`server_glob_key`] give the single [`IndexKey`] under
//! which a glob is filed; [`user_keys`] and [`server_keys`] give every key
//! under which a user or server has to be looked up. If a glob matches an
//! entity, the glob's key is always among the entity's keys.

use std::borrow::Cow;

/// Number of leading characters used by [`IndexKey::Prefix`] for user IDs.
pub const USER_PREFIX_LEN: usize = 4;

/// Number of leading characters used by [`IndexKey::Prefix`] for server names.
pub const SERVER_PREFIX_LEN: usize = 4;

/// One piece of a star-free segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Piece {
    /// Literal text (never empty; ASCII-lowercased in ignore-case globs).
    Lit(Box<str>),
    /// This many consecutive `?` (at least one).
    Any(usize),
}

/// A star-free part of a pattern: literals and `?`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Segment {
    pieces: Vec<Piece>,
    /// Minimum number of bytes of text this segment can match.
    min_len: usize,
    /// Whether the segment contains `?`.
    has_any: bool,
}

/// The compiled shape of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Shape {
    /// No star: the whole text must match this segment.
    Exact(Segment),
    /// At least one star: `first*middle[0]*…*middle[k]*last`, with empty
    /// middle segments (from consecutive stars) dropped.
    Star {
        first: Segment,
        middle: Vec<Segment>,
        last: Segment,
    },
}

/// A compiled Matrix glob (`*` and `?` wildcards, everything else literal,
/// anchored at both ends).
///
/// Build it once with [`Glob::new`] (case-sensitive, for user and room
/// entities) or [`Glob::new_ignore_ascii_case`] (ASCII case folding only, for
/// server entities), then call [`Glob::matches`] as often as needed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Glob {
    pattern: Box<str>,
    ignore_ascii_case: bool,
    shape: Shape,
}

impl Glob {
    /// Compiles a case-sensitive glob (for user and room entities).
    pub fn new(pattern: &str) -> Glob {
        Glob::compile(pattern, false)
    }

    /// Compiles a glob that compares with ASCII case folding only (for server
    /// entities): ASCII letters match regardless of case, every other
    /// character must be equal.
    pub fn new_ignore_ascii_case(pattern: &str) -> Glob {
        Glob::compile(pattern, true)
    }

    /// Whether `pattern` contains a wildcard (`*` or `?`); if it does not, a
    /// glob built from it matches only the pattern itself.
    pub fn is_glob(pattern: &str) -> bool {
        pattern.contains(['*', '?'])
    }

    /// The pattern this glob was compiled from, exactly as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether this glob compares with ASCII case folding (built with
    /// [`Glob::new_ignore_ascii_case`]).
    pub fn ignores_ascii_case(&self) -> bool {
        self.ignore_ascii_case
    }

    /// Whether the glob matches the whole of `text`.
    ///
    /// An ignore-case glob lower-cases (ASCII) a text containing ASCII
    /// upper-case letters into a temporary string before matching; a text
    /// that is already lower-case is matched in place.
    pub fn matches(&self, text: &str) -> bool {
        let text: Cow<'_, str> =
            if self.ignore_ascii_case && text.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(text.to_ascii_lowercase())
            } else {
                Cow::Borrowed(text)
            };
        let text: &str = &text;
        match &self.shape {
            Shape::Exact(seg) => seg.match_at(text.as_bytes(), 0) == Some(text.len()),
            Shape::Star {
                first,
                middle,
                last,
            } => {
                let bytes = text.as_bytes();
                let Some(mut pos) = first.match_at(bytes, 0) else {
                    return false;
                };
                let Some(limit) = last.match_back(bytes, bytes.len()) else {
                    return false;
                };
                if limit < pos {
                    return false;
                }
                // The first and last segments have fixed positions; the
                // middle segments must fit, in order, in text[pos..limit].
                let window = &text[..limit];
                for seg in middle {
                    match seg.find(window, pos) {
                        Some(end) => pos = end,
                        None => return false,
                    }
                }
                true
            }
        }
    }

    fn compile(pattern: &str, ignore_ascii_case: bool) -> Glob {
        let folded: Cow<'_, str> = if ignore_ascii_case {
            Cow::Owned(pattern.to_ascii_lowercase())
        } else {
            Cow::Borrowed(pattern)
        };
        let mut parts = folded.split('*').map(Segment::parse);
        let first = parts.next().unwrap_or_default();
        let mut rest: Vec<Segment> = parts.collect();
        let shape = match rest.pop() {
            None => Shape::Exact(first),
            Some(last) => {
                rest.retain(|seg| !seg.pieces.is_empty());
                Shape::Star {
                    first,
                    middle: rest,
                    last,
                }
            }
        };
        Glob {
            pattern: pattern.into(),
            ignore_ascii_case,
            shape,
        }
    }
}

/// Length in bytes of the UTF-8 sequence whose first byte is `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0x80..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Whether `b` is a UTF-8 continuation byte.
fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

impl Segment {
    /// Parses a star-free part of a pattern.
    fn parse(part: &str) -> Segment {
        let mut seg = Segment::default();
        let mut rest = part;
        while !rest.is_empty() {
            let lit_len = rest.find('?').unwrap_or(rest.len());
            if lit_len > 0 {
                seg.pieces.push(Piece::Lit(rest[..lit_len].into()));
                seg.min_len += lit_len;
                rest = &rest[lit_len..];
            }
            let anys = rest.len() - rest.trim_start_matches('?').len();
            if anys > 0 {
                seg.pieces.push(Piece::Any(anys));
                seg.min_len += anys;
                seg.has_any = true;
                rest = &rest[anys..];
            }
        }
        seg
    }

    /// Matches the segment against `text` starting at byte `start` (a char
    /// boundary); returns the byte offset just past the match.
    fn match_at(&self, text: &[u8], start: usize) -> Option<usize> {
        let mut i = start;
        for piece in &self.pieces {
            match piece {
                Piece::Lit(lit) => {
                    let lit = lit.as_bytes();
                    let end = i.checked_add(lit.len()).filter(|&e| e <= text.len())?;
                    if &text[i..end] != lit {
                        return None;
                    }
                    i = end;
                }
                Piece::Any(n) => {
                    for _ in 0..*n {
                        let &lead = text.get(i)?;
                        i += utf8_len(lead);
                    }
                }
            }
        }
        Some(i)
    }

    /// Matches the segment against `text` so that it ends at byte `end` (a
    /// char boundary); returns the byte offset where the match starts.
    fn match_back(&self, text: &[u8], end: usize) -> Option<usize> {
        let mut i = end;
        for piece in self.pieces.iter().rev() {
            match piece {
                Piece::Lit(lit) => {
                    let lit = lit.as_bytes();
                    let start = i.checked_sub(lit.len())?;
                    // A literal starts with a non-continuation byte, so an
                    // equal slice starts on a char boundary.
                    if &text[start..i] != lit {
                        return None;
                    }
                    i = start;
                }
                Piece::Any(n) => {
                    for _ in 0..*n {
                        i = i.checked_sub(1)?;
                        while is_continuation(text[i]) {
                            i -= 1;
                        }
                    }
                }
            }
        }
        Some(i)
    }

    /// Finds the leftmost match of this (non-empty) segment lying entirely in
    /// `text[from..]` (`from` a char boundary); returns the byte offset just
    /// past it.
    fn find(&self, text: &str, from: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        if !self.has_any {
            // A single literal: a linear substring search.
            let Some(Piece::Lit(lit)) = self.pieces.first() else {
                return Some(from);
            };
            return text[from..].find(&**lit).map(|off| from + off + lit.len());
        }
        let mut s = from;
        while bytes.len() - s >= self.min_len {
            if let Some(Piece::Lit(lit)) = self.pieces.first() {
                // Jump to the next occurrence of the leading literal.
                s += text[s..].find(&**lit)?;
                if bytes.len() - s < self.min_len {
                    return None;
                }
            }
            if let Some(end) = self.match_at(bytes, s) {
                return Some(end);
            }
            s += utf8_len(bytes[s]);
        }
        None
    }
}

/// The key under which a glob is indexed, or one of the keys under which an
/// entity (user ID or server name) is looked up.
///
/// A glob is filed under exactly one key ([`user_glob_key`],
/// [`server_glob_key`]); an entity is looked up under several ([`user_keys`],
/// [`server_keys`]). Every glob that matches an entity is filed under one of
/// the entity's keys, so only those globs need to be compared with it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKey {
    /// The user ID's part from its last `:` to the end (e.g. `":example.org"`).
    ColonSuffix(String),
    /// The first few characters of the entity ([`USER_PREFIX_LEN`] or
    /// [`SERVER_PREFIX_LEN`]), ASCII-lowercased for servers.
    Prefix(String),
    /// The last two labels of an ASCII-lowercased server name (the part after
    /// its second-to-last `.`), or the whole name if it has fewer than two
    /// dots.
    Labels(String),
    /// Globs with no usable literal part; every entity must be compared with
    /// them.
    Scan,
}

/// The literal part of `pattern` before its first wildcard.
fn literal_prefix(pattern: &str) -> &str {
    pattern.find(['*', '?']).map_or(pattern, |i| &pattern[..i])
}

/// The literal part of `pattern` after its last wildcard.
fn literal_suffix(pattern: &str) -> &str {
    pattern
        .rfind(['*', '?'])
        .map_or(pattern, |i| &pattern[i + 1..])
}

/// The first `n` chars of `s`, if it has at least `n`.
fn first_chars(s: &str, n: usize) -> Option<&str> {
    match s.char_indices().nth(n) {
        Some((i, _)) => Some(&s[..i]),
        None if s.chars().count() == n => Some(s),
        None => None,
    }
}

/// The part of `s` after its second-to-last `.`, if it has at least two.
fn last_two_labels(s: &str) -> Option<&str> {
    let last = s.rfind('.')?;
    let second = s[..last].rfind('.')?;
    Some(&s[second + 1..])
}

/// The index key of a (case-sensitive) user-ID glob.
///
/// With `S` the literal suffix of the pattern (after its last wildcard) and
/// `P` its literal prefix (before its first wildcard): if `S` contains `:`,
/// [`IndexKey::ColonSuffix`] of `S` from its last `:`; else if `P` has at
/// least [`USER_PREFIX_LEN`] chars, [`IndexKey::Prefix`] of its first
/// [`USER_PREFIX_LEN`] chars; else [`IndexKey::Scan`].
pub fn user_glob_key(pattern: &str) -> IndexKey {
    let suffix = literal_suffix(pattern);
    if let Some(colon) = suffix.rfind(':') {
        return IndexKey::ColonSuffix(suffix[colon..].to_owned());
    }
    match first_chars(literal_prefix(pattern), USER_PREFIX_LEN) {
        Some(prefix) => IndexKey::Prefix(prefix.to_owned()),
        None => IndexKey::Scan,
    }
}

/// The keys under which a user ID is looked up: [`IndexKey::ColonSuffix`]
/// (from its last `:`) if it has a `:`, [`IndexKey::Prefix`] if it has at
/// least [`USER_PREFIX_LEN`] chars, and always [`IndexKey::Scan`].
pub fn user_keys(user: &str) -> Vec<IndexKey> {
    let mut keys = Vec::with_capacity(3);
    if let Some(colon) = user.rfind(':') {
        keys.push(IndexKey::ColonSuffix(user[colon..].to_owned()));
    }
    if let Some(prefix) = first_chars(user, USER_PREFIX_LEN) {
        keys.push(IndexKey::Prefix(prefix.to_owned()));
    }
    keys.push(IndexKey::Scan);
    keys
}

/// The index key of a server glob (matched with ASCII case folding, see
/// [`Glob::new_ignore_ascii_case`]); the pattern is ASCII-lowercased first.
///
/// With `S` the literal suffix of the pattern: if `S` contains at least two
/// `.`, [`IndexKey::Labels`] of the part of `S` after its second-to-last `.`
/// (`*.evil.example.org` gives `Labels("example.org")`); else if the literal
/// prefix has at least [`SERVER_PREFIX_LEN`] chars, [`IndexKey::Prefix`] of
/// its first [`SERVER_PREFIX_LEN`] chars; else [`IndexKey::Scan`].
pub fn server_glob_key(pattern: &str) -> IndexKey {
    let pattern = pattern.to_ascii_lowercase();
    if let Some(labels) = last_two_labels(literal_suffix(&pattern)) {
        return IndexKey::Labels(labels.to_owned());
    }
    match first_chars(literal_prefix(&pattern), SERVER_PREFIX_LEN) {
        Some(prefix) => IndexKey::Prefix(prefix.to_owned()),
        None => IndexKey::Scan,
    }
}

/// The keys under which a server name (without port) is looked up, after
/// ASCII-lowercasing it: [`IndexKey::Labels`] (the part after its
/// second-to-last `.`, or the whole name if it has fewer than two dots),
/// [`IndexKey::Prefix`] if it has at least [`SERVER_PREFIX_LEN`] chars, and
/// always [`IndexKey::Scan`].
pub fn server_keys(server: &str) -> Vec<IndexKey> {
    let server = server.to_ascii_lowercase();
    let mut keys = Vec::with_capacity(3);
    let labels = last_two_labels(&server).unwrap_or(&server);
    keys.push(IndexKey::Labels(labels.to_owned()));
    if let Some(prefix) = first_chars(&server, SERVER_PREFIX_LEN) {
        keys.push(IndexKey::Prefix(prefix.to_owned()));
    }
    keys.push(IndexKey::Scan);
    keys
}

#[cfg(test)]
mod tests;
