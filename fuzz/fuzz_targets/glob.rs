//! Policy-rule globs: any pattern against any text (both UTF-8, split at the first NUL byte),
//! case-sensitive and ASCII-case-insensitive, agree with a plain dynamic-programming matcher;
//! a glob that matches a user or server is filed under one of the keys it is looked up by.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prr_replicas::{Glob, server_glob_key, server_keys, user_glob_key, user_keys};

/// p[i..] matches t[j..], over chars, without any of the matcher's shortcuts.
fn reference(pattern: &str, text: &str, fold: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let mut dp = vec![vec![false; t.len() + 1]; p.len() + 1];
    dp[p.len()][t.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=t.len()).rev() {
            dp[i][j] = match p[i] {
                '*' => dp[i + 1][j] || (j < t.len() && dp[i][j + 1]),
                '?' => j < t.len() && dp[i + 1][j + 1],
                c => {
                    j < t.len()
                        && (c == t[j] || (fold && c.eq_ignore_ascii_case(&t[j])))
                        && dp[i + 1][j + 1]
                }
            };
        }
    }
    dp[0][0]
}

fuzz_target!(|data: &[u8]| {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, text) = data.split_once('\0').unwrap_or((data, ""));
    // The reference is quadratic: keep each run fast.
    if pattern.len() > 300 || text.len() > 300 {
        return;
    }
    let cs = Glob::new(pattern).matches(text);
    assert_eq!(cs, reference(pattern, text, false), "{pattern:?} {text:?}");
    let ci = Glob::new_ignore_ascii_case(pattern).matches(text);
    assert_eq!(ci, reference(pattern, text, true), "{pattern:?} {text:?} (ignore case)");
    if cs {
        assert!(user_keys(text).contains(&user_glob_key(pattern)), "{pattern:?} {text:?}");
    }
    if ci {
        assert!(server_keys(text).contains(&server_glob_key(pattern)), "{pattern:?} {text:?}");
    }
});
