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
//! exponentially, never recurses and never allocates. A glob is compiled once:
//! its pattern (ASCII-lowercased for an ignore-case glob) with every run of
//! `*` collapsed to one. Matching is the greedy single-backtrack algorithm:
//! text and pattern are walked together, byte by byte; at a `*` the positions
//! are remembered, and on a mismatch the walk resumes just after the *last*
//! `*` seen, one character further in the text. An earlier `*` is never
//! revisited (a match of the rest after a later `*` is found by extending that
//! later `*` alone), so the text position of the last `*` only moves forward.
//!
//! **Worst case of one comparison**: with `n` the text's length in bytes, `m`
//! the compiled pattern's and `L` its longest star-free segment (literal bytes
//! and `?`), at most `n · (L + 2) + m` steps, each a byte comparison. A walk
//! that reaches the next `*` passes text no later walk revisits (`n + m` steps
//! in all); a walk that fails takes at most `L + 1` steps and moves the last
//! `*` one character on, which happens at most `n` times. A text shorter than
//! [`Glob::min_len`] is refused in one step. Policy rules compare only texts of
//! at most 255 bytes (user IDs and server names) with globs whose
//! [`Glob::min_len`] is at most 255 (see `rules`), so `n, L ≤ 255` and
//! `m ≤ 511`: at most 66,046 steps (tens of microseconds), and linear
//! (`O(n + m)`) for the usual patterns.
//!
//! # Index keys
//!
//! [`user_glob_key`] and [`server_glob_key`] give the single [`IndexKey`] under
//! which a glob is filed; [`user_keys`] and [`server_keys`] give every key
//! under which a user or server has to be looked up. If a glob matches an
//! entity, the glob's key is always among the entity's keys.

/// Number of leading characters used by [`IndexKey::Prefix`] for user IDs.
pub const USER_PREFIX_LEN: usize = 4;

/// Number of leading characters used by [`IndexKey::Prefix`] for server names.
pub const SERVER_PREFIX_LEN: usize = 4;

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
    /// The pattern with runs of `*` collapsed to one, ASCII-lowercased when
    /// `ignore_ascii_case`. `*` and `?` are ASCII, so they never occur inside
    /// the UTF-8 encoding of another character: the program is walked as bytes.
    program: Box<[u8]>,
    /// Bytes of text the pattern needs at least: its literal bytes plus one
    /// per `?`.
    min_len: usize,
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

    /// The least number of bytes a text must have to match: the pattern's
    /// literal bytes plus one per `?` (a `?` matches one character, of one to
    /// four bytes). No text shorter than this matches.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// Whether the glob matches the whole of `text`. Never allocates; see the
    /// module documentation for its worst case.
    pub fn matches(&self, text: &str) -> bool {
        if text.len() < self.min_len {
            return false;
        }
        let (p, t) = (&*self.program, text.as_bytes());
        let fold = self.ignore_ascii_case;
        let (mut pi, mut ti) = (0, 0);
        // After the last `*` seen: where the pattern resumes, and the text
        // position the `*` has been extended to.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if let Some(&c) = p.get(pi) {
                match c {
                    b'*' => {
                        pi += 1;
                        star = Some((pi, ti));
                        continue;
                    }
                    b'?' => {
                        // `ti` is on a character boundary here: it is moved
                        // by whole characters, or by bytes of a literal
                        // character that matched whole.
                        pi += 1;
                        ti += utf8_len(t[ti]);
                        continue;
                    }
                    c if c == t[ti] || (fold && c == t[ti].to_ascii_lowercase()) => {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            // A mismatch (or the pattern ran out): the last `*` takes one
            // more character, and the rest after it starts over.
            let Some((resume, at)) = star else {
                return false;
            };
            let at = at + utf8_len(t[at]);
            star = Some((resume, at));
            (pi, ti) = (resume, at);
        }
        // The text is consumed (a `?` may have stepped past its end only if
        // the text were not UTF-8): what is left of the pattern must be `*`.
        ti == t.len() && p[pi.min(p.len())..].iter().all(|&c| c == b'*')
    }

    fn compile(pattern: &str, ignore_ascii_case: bool) -> Glob {
        let mut program = Vec::with_capacity(pattern.len());
        let mut min_len = 0;
        for &b in pattern.as_bytes() {
            match b {
                b'*' if program.last() == Some(&b'*') => {}
                b'*' => program.push(b),
                _ => {
                    min_len += 1;
                    program.push(if ignore_ascii_case {
                        b.to_ascii_lowercase()
                    } else {
                        b
                    });
                }
            }
        }
        Glob {
            pattern: pattern.into(),
            ignore_ascii_case,
            program: program.into_boxed_slice(),
            min_len,
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
