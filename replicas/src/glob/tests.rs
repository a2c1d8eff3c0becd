use super::*;
use proptest::prelude::*;

/// Obviously-correct reference matcher: dynamic programming over chars.
fn reference(pattern: &str, text: &str, fold: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // dp[i][j]: p[i..] matches t[j..].
    let mut dp = vec![vec![false; t.len() + 1]; p.len() + 1];
    dp[p.len()][t.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=t.len()).rev() {
            dp[i][j] = match p[i] {
                '*' => dp[i + 1][j] || (j < t.len() && dp[i][j + 1]),
                '?' => j < t.len() && dp[i + 1][j + 1],
                c => {
                    j < t.len()
                        && (if fold {
                            c.eq_ignore_ascii_case(&t[j])
                        } else {
                            c == t[j]
                        })
                        && dp[i + 1][j + 1]
                }
            };
        }
    }
    dp[0][0]
}

fn cs(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

fn ci(pattern: &str, text: &str) -> bool {
    Glob::new_ignore_ascii_case(pattern).matches(text)
}

#[test]
fn empty_pattern() {
    assert!(cs("", ""));
    assert!(!cs("", "a"));
    assert!(ci("", ""));
    assert!(!ci("", " "));
}

#[test]
fn star_alone() {
    for text in ["", "a", "@alice:example.org", "é𝔸İ", "*", "?"] {
        assert!(cs("*", text), "{text:?}");
        assert!(ci("*", text), "{text:?}");
    }
}

#[test]
fn question_mark_is_one_char() {
    assert!(!cs("?", ""));
    assert!(cs("?", "a"));
    assert!(cs("?", "é"));
    assert!(cs("?", "𝔸"));
    assert!(cs("?", "İ"));
    assert!(!cs("?", "ab"));
    assert!(!cs("?", "e\u{301}")); // two chars
    assert!(cs("??", "e\u{301}"));
    assert!(cs("a?c", "a𝔸c"));
    assert!(!cs("a??c", "a𝔸c"));
    assert!(cs("*?", "𝔸"));
    assert!(cs("?*", "𝔸"));
    assert!(!cs("*??", "𝔸"));
    assert!(cs("*?é?*", "x𝔸é𝔸"));
}

#[test]
fn literal_patterns() {
    assert!(cs("@alice:example.org", "@alice:example.org"));
    assert!(!cs("@alice:example.org", "@alice:example.orgx"));
    assert!(!cs("@alice:example.org", "x@alice:example.org"));
    assert!(!cs("@alice:example.org", "@alice:example.or"));
    assert!(!Glob::is_glob("@alice:example.org"));
    assert!(Glob::is_glob("@alice:*"));
    assert!(Glob::is_glob("@alic?:example.org"));
    assert!(!Glob::is_glob(""));
    assert!(!Glob::is_glob("[a-z]\\."));
}

#[test]
fn consecutive_stars() {
    assert!(cs("**", ""));
    assert!(cs("***", "abc"));
    assert!(cs("a**b", "ab"));
    assert!(cs("a**b", "axxb"));
    assert!(!cs("a**b", "axxbc"));
    assert!(cs("**a**", "bab"));
    assert!(!cs("**a**", "bbb"));
    assert!(cs("*?*?*", "ab"));
    assert!(!cs("*?*?*", "a"));
}

#[test]
fn backslash_and_brackets_are_literal() {
    assert!(cs("\\*", "\\x"));
    assert!(cs("\\*", "\\"));
    assert!(!cs("\\*", "*"));
    assert!(cs("[a-z]", "[a-z]"));
    assert!(!cs("[a-z]", "a"));
    assert!(cs("[ab]*", "[ab]c"));
    assert!(cs("a.b", "a.b"));
    assert!(!cs("a.b", "axb"));
    assert!(cs("^a$|b+", "^a$|b+"));
}

#[test]
fn anchoring() {
    assert!(!cs("@spam", "@spammer:example.org"));
    assert!(!cs("example.org", "evil.example.org"));
    assert!(cs("@spam*", "@spammer:example.org"));
    assert!(!cs("*.example.org", "example.org"));
    assert!(cs("*.example.org", "evil.example.org"));
    assert!(!cs("*.example.org", "evil.example.org.uk"));
    assert!(!cs("*example", "example.org"));
    assert!(!cs("a*b", "ab c"));
    assert!(cs("a*b*c", "abbc"));
    assert!(!cs("ab*bc", "abc")); // first and last must not overlap
    assert!(cs("ab*bc", "abbc"));
    assert!(!cs("a?*?a", "aaa"));
    assert!(cs("a?*?a", "aaaa"));
}

#[test]
fn case_modes() {
    assert!(!cs("@Alice:*", "@alice:example.org"));
    assert!(cs("@Alice:*", "@Alice:example.org"));
    assert!(ci("*.EXAMPLE.org", "evil.example.ORG"));
    assert!(ci("Evil.Example.Org", "eVIL.eXAMPLE.oRG"));
    assert!(!cs("Evil.Example.Org", "eVIL.eXAMPLE.oRG"));
    assert!(ci("?X?", "axé"));
    // ASCII folding only.
    assert!(!ci("é", "É"));
    assert!(!ci("i", "İ"));
    assert!(!ci("k", "\u{212a}")); // Kelvin sign
    assert!(ci("K", "k"));
    assert!(ci("\u{212a}*", "\u{212a}x"));
    let glob = Glob::new_ignore_ascii_case("*.Example.ORG");
    assert_eq!(glob.pattern(), "*.Example.ORG");
    assert!(glob.ignores_ascii_case());
    assert!(!Glob::new("x").ignores_ascii_case());
}

#[test]
fn hostile_case() {
    let pattern = "*a*a*a*a*a*a*a*a*b";
    let text = "a".repeat(10_000);
    assert!(!cs(pattern, &text));
    assert!(!ci(pattern, &text));
    assert!(cs(pattern, &format!("{text}b")));
    assert!(ci(pattern, &format!("{text}B")));
    assert!(!cs("*a*a*a*a*a*a*a*a*b*", &text));
    assert!(cs("*a*a*a*a*a*a*a*a*b*", &format!("{text}b{text}")));
    let long = format!("*{}b*", "a".repeat(64));
    assert!(!cs(&long, &text));
    assert!(!ci(&long, &text));
    let with_q = format!("*{}?b*", "a".repeat(64));
    assert!(!cs(&with_q, &text));
    assert!(cs(&with_q, &format!("{text}xb")));
    // Timing smoke test (debug builds too): must not be quadratic-plus.
    let start = std::time::Instant::now();
    for _ in 0..100 {
        assert!(!cs(pattern, &text));
        assert!(!cs("*a*a*a*a*a*a*a*a*b*", &text));
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn user_glob_keys() {
    use IndexKey::*;
    assert_eq!(
        user_glob_key("@spam*:example.org"),
        ColonSuffix(":example.org".into())
    );
    assert_eq!(user_glob_key("*:a:b"), ColonSuffix(":b".into()));
    assert_eq!(
        user_glob_key("@alice:example.org"),
        ColonSuffix(":example.org".into())
    );
    assert_eq!(user_glob_key("@spam*"), Prefix("@spa".into()));
    assert_eq!(user_glob_key("@spam*:*"), Prefix("@spa".into()));
    assert_eq!(user_glob_key("@é𝔸x?"), Prefix("@é𝔸x".into()));
    assert_eq!(user_glob_key("@ab?"), Scan);
    assert_eq!(user_glob_key("*"), Scan);
    assert_eq!(user_glob_key(""), Scan);
    assert_eq!(
        user_keys("@alice:example.org"),
        vec![
            ColonSuffix(":example.org".into()),
            Prefix("@ali".into()),
            Scan
        ]
    );
    assert_eq!(user_keys("abc"), vec![Scan]);
    assert_eq!(user_keys("a:b"), vec![ColonSuffix(":b".into()), Scan]);
}

#[test]
fn server_glob_keys() {
    use IndexKey::*;
    assert_eq!(
        server_glob_key("*.evil.example.org"),
        Labels("example.org".into())
    );
    assert_eq!(server_glob_key("*.evil.org"), Labels("evil.org".into()));
    assert_eq!(server_glob_key("*.Evil.ORG"), Labels("evil.org".into()));
    assert_eq!(server_glob_key("*.org"), Scan);
    assert_eq!(server_glob_key("Evil.*"), Prefix("evil".into()));
    assert_eq!(server_glob_key("example.org"), Prefix("exam".into()));
    assert_eq!(server_glob_key("*"), Scan);
    assert_eq!(
        server_keys("Matrix.Example.ORG"),
        vec![Labels("example.org".into()), Prefix("matr".into()), Scan]
    );
    assert_eq!(
        server_keys("example.org"),
        vec![Labels("example.org".into()), Prefix("exam".into()), Scan]
    );
    assert_eq!(server_keys("a.b"), vec![Labels("a.b".into()), Scan]);
}

/// All strings over `alphabet` with at most `max_len` chars.
fn all_strings(alphabet: &[char], max_len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max_len {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{c}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

#[test]
fn exhaustive_small_cases_agree_with_reference() {
    let texts = all_strings(&['a', 'B', '𝔸'], 4);
    for pattern in all_strings(&['a', 'b', '*', '?'], 5) {
        let glob = Glob::new(&pattern);
        let glob_ci = Glob::new_ignore_ascii_case(&pattern);
        for text in &texts {
            assert_eq!(
                glob.matches(text),
                reference(&pattern, text, false),
                "{pattern:?} {text:?}"
            );
            assert_eq!(
                glob_ci.matches(text),
                reference(&pattern, text, true),
                "{pattern:?} {text:?}"
            );
        }
    }
}

const ALPHABET: &[char] = &['a', 'A', 'b', 'B', ':', '.', '@', 'é', 'İ', '𝔸', 'k', 'K'];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..12)
        .prop_map(|chars| chars.into_iter().collect())
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    let mut with_wild = ALPHABET.to_vec();
    with_wild.extend(['*', '*', '?']);
    prop::collection::vec(prop::sample::select(with_wild), 0..10)
        .prop_map(|chars| chars.into_iter().collect())
}

/// A pattern and a text built to match it (wildcards instantiated with
/// random text, literals with random ASCII case flips when `flip`).
fn matching_pair(flip: bool) -> impl Strategy<Value = (String, String)> {
    (
        pattern_strategy(),
        prop::collection::vec(text_strategy(), 10),
        prop::collection::vec(prop::sample::select(ALPHABET), 10),
        prop::collection::vec(any::<bool>(), 10),
    )
        .prop_map(move |(pattern, fills, ones, flips)| {
            let mut text = String::new();
            for (i, c) in pattern.chars().enumerate() {
                match c {
                    '*' => text.push_str(&fills[i]),
                    '?' => text.push(ones[i]),
                    c if flip && flips[i] => {
                        if c.is_ascii_lowercase() {
                            text.push(c.to_ascii_uppercase());
                        } else {
                            text.push(c.to_ascii_lowercase());
                        }
                    }
                    c => text.push(c),
                }
            }
            (pattern, text)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_reference(pattern in pattern_strategy(), text in text_strategy()) {
        prop_assert_eq!(cs(&pattern, &text), reference(&pattern, &text, false));
        prop_assert_eq!(ci(&pattern, &text), reference(&pattern, &text, true));
    }

    #[test]
    fn agrees_with_reference_small_alphabet(
        pattern in "[abA𝔸*?]{0,7}",
        text in "[abA𝔸]{0,6}",
    ) {
        prop_assert_eq!(cs(&pattern, &text), reference(&pattern, &text, false));
        prop_assert_eq!(ci(&pattern, &text), reference(&pattern, &text, true));
    }

    #[test]
    fn agrees_with_reference_on_matching_pairs((pattern, text) in matching_pair(true)) {
        prop_assert!(ci(&pattern, &text));
        prop_assert_eq!(cs(&pattern, &text), reference(&pattern, &text, false));
    }

    #[test]
    fn instantiated_patterns_match((pattern, text) in matching_pair(false)) {
        prop_assert!(cs(&pattern, &text));
        prop_assert!(ci(&pattern, &text));
    }

    #[test]
    fn agrees_with_reference_on_any_unicode(pattern in "[ab*?é𝔸\\PC]{0,8}", text in "[abé𝔸\\PC]{0,10}") {
        prop_assert_eq!(cs(&pattern, &text), reference(&pattern, &text, false));
        prop_assert_eq!(ci(&pattern, &text), reference(&pattern, &text, true));
    }

    #[test]
    fn is_glob_iff_wildcard(pattern in pattern_strategy()) {
        prop_assert_eq!(Glob::is_glob(&pattern), pattern.contains('*') || pattern.contains('?'));
        let glob = Glob::new(&pattern);
        prop_assert_eq!(glob.pattern(), pattern.as_str());
    }

    #[test]
    fn user_key_complete(pattern in pattern_strategy(), text in text_strategy()) {
        if cs(&pattern, &text) {
            prop_assert!(user_keys(&text).contains(&user_glob_key(&pattern)));
        }
    }

    #[test]
    fn user_key_complete_on_matching_pairs((pattern, text) in matching_pair(false)) {
        prop_assert!(cs(&pattern, &text));
        prop_assert!(user_keys(&text).contains(&user_glob_key(&pattern)));
    }

    #[test]
    fn server_key_complete(pattern in pattern_strategy(), text in text_strategy()) {
        if ci(&pattern, &text) {
            prop_assert!(server_keys(&text).contains(&server_glob_key(&pattern)));
        }
    }

    #[test]
    fn server_key_complete_on_matching_pairs((pattern, text) in matching_pair(true)) {
        prop_assert!(ci(&pattern, &text));
        prop_assert!(server_keys(&text).contains(&server_glob_key(&pattern)));
    }
}

/// Cases of the fuzzing properties below: bounded under `CI=true` (seconds), more by hand.
fn fuzz_cases() -> u32 {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        512
    } else {
        4096
    }
}

/// Any character, the glob's special ones and the alphabet above being likelier.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(ALPHABET),
        1 => Just('*'),
        1 => Just('?'),
    ]
}

/// The worst case of the greedy matcher: a long segment after a star, almost matched at every
/// position of a text of 255 bytes; and the same shapes around the 255-byte bound.
#[test]
fn worst_case_shapes_agree_with_reference() {
    let text = "a".repeat(255);
    for len in [1, 2, 64, 127, 128, 200, 254, 255] {
        for pattern in [
            format!("*{}b", "a".repeat(len)),
            format!("*{}b*", "a".repeat(len)),
            format!("*{}?b", "a".repeat(len)),
            format!("{}*", "?".repeat(len)),
            format!("*a{}", "?".repeat(len)),
        ] {
            assert_eq!(
                cs(&pattern, &text),
                reference(&pattern, &text, false),
                "{pattern}"
            );
        }
    }
}

#[test]
fn runs_of_stars_collapse() {
    let glob = Glob::new("a***b**?*");
    assert_eq!(&*glob.program, b"a*b*?*");
    assert_eq!(glob.min_len(), 3);
    assert_eq!(glob.pattern(), "a***b**?*");
    assert_eq!(Glob::new("*").min_len(), 0);
    assert_eq!(Glob::new_ignore_ascii_case("É?X").min_len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// Fuzzing: arbitrary Unicode patterns and texts, checked against the reference.
    #[test]
    fn fuzz_agrees_with_reference(
        pattern in prop::collection::vec(any_char(), 0..24).prop_map(String::from_iter),
        text in prop::collection::vec(any_char(), 0..40).prop_map(String::from_iter),
    ) {
        prop_assert_eq!(cs(&pattern, &text), reference(&pattern, &text, false));
        prop_assert_eq!(ci(&pattern, &text), reference(&pattern, &text, true));
    }

    /// Fuzzing: arbitrary bytes (made UTF-8, as every text the replicas see is) never panic,
    /// and whatever matches is at least [`Glob::min_len`] long and shares a key with the glob.
    #[test]
    fn fuzz_arbitrary_bytes_never_panic(
        pattern in prop::collection::vec(any::<u8>(), 0..64),
        text in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let pattern = String::from_utf8_lossy(&pattern);
        let text = String::from_utf8_lossy(&text);
        for glob in [Glob::new(&pattern), Glob::new_ignore_ascii_case(&pattern)] {
            if glob.matches(&text) {
                prop_assert!(text.len() >= glob.min_len());
            }
            prop_assert!(!glob.program.windows(2).any(|w| w == b"**"));
        }
        if cs(&pattern, &text) {
            prop_assert!(user_keys(&text).contains(&user_glob_key(&pattern)));
        }
        if ci(&pattern, &text) {
            prop_assert!(server_keys(&text).contains(&server_glob_key(&pattern)));
        }
    }

    /// Fuzzing the index keys: texts built to match arbitrary Unicode patterns always share
    /// the pattern's key.
    #[test]
    fn fuzz_keys_never_exclude_a_match(
        pattern in prop::collection::vec(any_char(), 0..16).prop_map(String::from_iter),
        fills in prop::collection::vec(prop::collection::vec(any_char(), 0..6), 16),
    ) {
        let mut text = String::new();
        for (i, c) in pattern.chars().enumerate() {
            match c {
                '*' => text.extend(fills[i].iter().filter(|c| **c != '*' && **c != '?')),
                '?' => text.push(fills[i].first().copied().unwrap_or('x')),
                c => text.push(c),
            }
        }
        prop_assert!(cs(&pattern, &text), "{:?} {:?}", pattern, text);
        prop_assert!(user_keys(&text).contains(&user_glob_key(&pattern)));
        prop_assert!(ci(&pattern, &text));
        prop_assert!(server_keys(&text).contains(&server_glob_key(&pattern)));
    }
}
