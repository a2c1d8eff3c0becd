//! Benchmarks for Matrix policy-rule globs.

use criterion::{Criterion, criterion_main};
use prr_replicas::Glob;
use std::hint::black_box;

/// One comparison at the bound the replicas enforce (texts and needed
/// lengths of at most 255 bytes): the matcher's worst case, `n · (L + 2) + m`
/// steps, is a long star-free segment almost matched at every position.
fn glob_worst_case(c: &mut Criterion) {
    let text = "a".repeat(255);
    let mut group = c.benchmark_group("glob_worst_case");
    for len in [16, 64, 127, 200, 254] {
        let glob = Glob::new(&format!("*{}b", "a".repeat(len)));
        group.bench_function(format!("star_a{len}_b/255_a"), |b| {
            b.iter(|| glob.matches(black_box(&text)))
        });
    }
    let q = Glob::new(&format!("*{}?b", "a".repeat(127)));
    group.bench_function("star_a127_q_b/255_a", |b| {
        b.iter(|| q.matches(black_box(&text)))
    });
    let hostile = Glob::new("*a*a*a*a*a*a*a*a*b");
    group.bench_function("star_a_x8_b/255_a", |b| {
        b.iter(|| hostile.matches(black_box(&text)))
    });
    // Issue 15's 64 KiB rule: compiled once per rule (never compared: it needs more bytes
    // than any ID has; a shorter text is refused in one step).
    let long = format!("{}*b", "*a".repeat(32_767));
    group.bench_function("compile/star_a_x32767_b", |b| {
        b.iter(|| Glob::new(black_box(&long)))
    });
    let long_glob = Glob::new(&long);
    group.bench_function("star_a_x32767_b/255_a", |b| {
        b.iter(|| long_glob.matches(black_box(&text)))
    });
    group.finish();
}

/// Pathological patterns against a 10,000-character text (longer than any
/// ID: the replicas never compare one, but the matcher stays linear on them).
fn glob_hostile(c: &mut Criterion) {
    let text = "a".repeat(10_000);
    let text_b = format!("{text}b");
    let hostile = Glob::new("*a*a*a*a*a*a*a*a*b");
    let hostile_ci = Glob::new_ignore_ascii_case("*a*a*a*a*a*a*a*a*b");
    let hostile_mid = Glob::new("*a*a*a*a*a*a*a*a*b*");
    let long_literal = Glob::new(&format!("*{}b*", "a".repeat(64)));
    let long_q = Glob::new(&format!("*{}?b*", "a".repeat(64)));
    let mut group = c.benchmark_group("glob_hostile");
    group.bench_function("star_a_x8_b/10k_a", |b| {
        b.iter(|| hostile.matches(black_box(&text)))
    });
    group.bench_function("star_a_x8_b/10k_a_then_b", |b| {
        b.iter(|| hostile.matches(black_box(&text_b)))
    });
    group.bench_function("star_a_x8_b_ignore_case/10k_a", |b| {
        b.iter(|| hostile_ci.matches(black_box(&text)))
    });
    group.bench_function("star_a_x8_b_star/10k_a", |b| {
        b.iter(|| hostile_mid.matches(black_box(&text)))
    });
    group.bench_function("star_a64b_star/10k_a", |b| {
        b.iter(|| long_literal.matches(black_box(&text)))
    });
    group.bench_function("star_a64_q_b_star/10k_a", |b| {
        b.iter(|| long_q.matches(black_box(&text)))
    });
    group.finish();
}

/// Realistic rules against realistic user IDs and server names.
fn glob_typical(c: &mut Criterion) {
    let users = [
        "@alice:example.org",
        "@spammer123:evil.example.net",
        "@bob:matrix.org",
        "@spam:spam.example",
        "@_bridge_user_12345678:bridge.example.com",
    ];
    let servers = [
        "matrix.org",
        "evil.example.org",
        "EVIL.Example.ORG",
        "chat.example.com",
        "sub.domain.example.org",
    ];
    let spam = Glob::new("@spam*:*");
    let suffix = Glob::new("*.example.org");
    let server_ci = Glob::new_ignore_ascii_case("*.example.org");
    let q = Glob::new("@spam?er???:*");
    let mut group = c.benchmark_group("glob_typical");
    group.bench_function("compile/@spam*:*", |b| {
        b.iter(|| Glob::new(black_box("@spam*:*")))
    });
    group.bench_function("@spam*:*/5_users", |b| {
        b.iter(|| users.iter().filter(|u| spam.matches(black_box(u))).count())
    });
    group.bench_function("@spam?er???:*/5_users", |b| {
        b.iter(|| users.iter().filter(|u| q.matches(black_box(u))).count())
    });
    group.bench_function("*.example.org/5_servers", |b| {
        b.iter(|| {
            servers
                .iter()
                .filter(|s| suffix.matches(black_box(s)))
                .count()
        })
    });
    group.bench_function("*.example.org_ignore_case/5_servers", |b| {
        b.iter(|| {
            servers
                .iter()
                .filter(|s| server_ci.matches(black_box(s)))
                .count()
        })
    });
    group.finish();
}

/// The generated group function is undocumented, hence the `allow`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::glob_worst_case,
        super::glob_hostile,
        super::glob_typical
    );
}

criterion_main!(group::benches);
