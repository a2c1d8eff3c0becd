//! Benchmarks for Matrix policy-rule globs.

use criterion::{Criterion, criterion_main};
use prr_replicas::Glob;
use std::hint::black_box;

/// Pathological patterns against a 10,000-character text. Star-separated
/// literal segments are searched in linear time; the last case (a long
/// segment containing `?`) shows the `O(n · m)` worst case of `?` segments.
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
    criterion::criterion_group!(benches, super::glob_hostile, super::glob_typical);
}

criterion_main!(group::benches);
