//! The W3 workload: W1's files, a policy list watched by every instance, and its changes.

use std::collections::HashMap;
use std::path::Path;

use prr_benches::Workload;
use prr_replicas::{ManifestEntry, SourceItem};
use serde_json::{Value, json};

use crate::ops::{state_event, user_rule, write_items, write_ops};

/// The W3 change kinds, in table order: (key, description).
pub(crate) const W3_KINDS: [(&str, &str); 4] = [
    ("literal", "new literal user ban"),
    ("glob-new", "new glob ban (~1% of members)"),
    ("glob-modify", "glob modified (~1% to ~1%)"),
    ("glob-remove", "glob removed (~1%)"),
];

/// What the W3 setup chose, for the report.
pub(crate) struct W3Plan {
    pub(crate) globs: Vec<(String, f64)>,
    pub(crate) present: usize,
    pub(crate) literal_rooms: Vec<usize>,
    pub(crate) instances: usize,
}

/// Writes the W3 workload: W1's files, the fan-out list (`95-w3-list.json`), the manifest
/// delta adding it to every instance (`96-w3-manifest.json`), and the ops file.
pub(crate) fn write_w3(
    w: &Workload,
    dir: &Path,
    ops_path: &Path,
    reps: usize,
) -> anyhow::Result<W3Plan> {
    w.write(dir)?;
    // Present members over every protected room, and in how many rooms each is present.
    let mut rooms_of: HashMap<String, usize> = HashMap::new();
    let mut instances_manifest = Vec::new();
    for f in w.files() {
        for item in &f.items {
            match item {
                SourceItem::Event(e) if e.event_type == "m.room.member" => {
                    let present = matches!(
                        e.content.get("membership").and_then(Value::as_str),
                        Some("join" | "invite" | "knock")
                    );
                    if present && let Some(k) = &e.state_key {
                        *rooms_of.entry(k.clone()).or_default() += 1;
                    }
                }
                SourceItem::Manifest(entries) => instances_manifest = entries.clone(),
                _ => {}
            }
        }
    }
    let present = rooms_of.len();
    let mut per_server: HashMap<&str, usize> = HashMap::new();
    for u in rooms_of.keys() {
        if let Some((_, server)) = u.split_once(':') {
            *per_server.entry(server).or_default() += 1;
        }
    }
    // Globs `@*:server` (servers without a port) by closeness of their share to 1%.
    let mut candidates: Vec<(String, f64)> = per_server
        .iter()
        .filter(|(s, _)| !s.contains(':'))
        .map(|(s, n)| (format!("@*:{s}"), *n as f64 / present.max(1) as f64))
        .collect();
    candidates.sort_by(|a, b| {
        (a.1 - 0.01)
            .abs()
            .total_cmp(&(b.1 - 0.01).abs())
            .then(a.0.cmp(&b.0))
    });
    anyhow::ensure!(candidates.len() >= 4, "too few servers for the W3 globs");
    let globs: Vec<(String, f64)> = candidates.into_iter().take(4).collect();
    // Literal bans: the users present in the most protected rooms.
    let mut by_rooms: Vec<(&String, &usize)> = rooms_of.iter().collect();
    by_rooms.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let literal: Vec<(String, usize)> = by_rooms
        .iter()
        .take(reps.max(1))
        .map(|(u, n)| ((*u).clone(), **n))
        .collect();

    let room = "!w3list:w3.example";
    let mut list = vec![state_event(
        "$w3c".into(),
        room,
        "m.room.create",
        "",
        "@mod:w3.example",
        json!({"creator": "@mod:w3.example", "room_version": "10"}),
    )];
    // A hundred literal rules naming users who are not around, and the two globs changed below.
    for n in 0..100 {
        list.push(user_rule(
            format!("$w3b{n}"),
            room,
            &format!("base:{n}"),
            Some(&format!("@gone{n}:w3.example")),
        ));
    }
    list.push(user_rule(
        "$w3m0".into(),
        room,
        "w3:modify",
        Some(&globs[1].0),
    ));
    list.push(user_rule(
        "$w3r0".into(),
        room,
        "w3:remove",
        Some(&globs[3].0),
    ));
    write_items(&dir.join("95-w3-list.json"), &list)?;
    let manifest = SourceItem::Manifest(
        instances_manifest
            .into_iter()
            .map(|e| match e {
                ManifestEntry::Set {
                    id,
                    mut watch,
                    protect,
                } => {
                    watch.push(room.to_string());
                    ManifestEntry::Set { id, watch, protect }
                }
                other => other,
            })
            .collect(),
    );
    let instances = match &manifest {
        SourceItem::Manifest(e) => e.len(),
        _ => 0,
    };
    write_items(&dir.join("96-w3-manifest.json"), &[manifest])?;

    let mut ops: Vec<(String, bool, Vec<SourceItem>)> = Vec::new();
    let op = |kind: &str, timed: bool, item: SourceItem| (kind.to_string(), timed, vec![item]);
    for r in 0..reps {
        let lit = &literal[r % literal.len()].0;
        ops.push(op(
            "literal",
            true,
            user_rule(format!("$w3l{r}a"), room, "w3:literal", Some(lit)),
        ));
        ops.push(op(
            "literal-undo",
            false,
            user_rule(format!("$w3l{r}b"), room, "w3:literal", None),
        ));
        ops.push(op(
            "glob-new",
            true,
            user_rule(format!("$w3g{r}a"), room, "w3:glob", Some(&globs[0].0)),
        ));
        ops.push(op(
            "glob-new-undo",
            false,
            user_rule(format!("$w3g{r}b"), room, "w3:glob", None),
        ));
        let to = if r % 2 == 0 { &globs[2].0 } else { &globs[1].0 };
        ops.push(op(
            "glob-modify",
            true,
            user_rule(format!("$w3m{}", r + 1), room, "w3:modify", Some(to)),
        ));
        ops.push(op(
            "glob-remove",
            true,
            user_rule(format!("$w3r{r}a"), room, "w3:remove", None),
        ));
        ops.push(op(
            "glob-remove-undo",
            false,
            user_rule(format!("$w3r{r}b"), room, "w3:remove", Some(&globs[3].0)),
        ));
    }
    // Back to the first glob when the number of modifications is odd.
    if reps % 2 == 1 {
        ops.push(op(
            "glob-modify-undo",
            false,
            user_rule("$w3mz".into(), room, "w3:modify", Some(&globs[1].0)),
        ));
    }
    write_ops(ops_path, &ops)?;
    Ok(W3Plan {
        globs,
        present,
        literal_rooms: literal.iter().map(|(_, n)| *n).collect(),
        instances,
    })
}
