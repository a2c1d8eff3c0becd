//! The modules of every crate of the workspace form layers: no module uses one that uses it
//! back, directly or through others. A module and its own parent or child may use each other
//! (Rust's usual shape: a parent declares its children and re-exports from them).
//!
//! The uses are read from the text: every `crate::`, `super::` and `self::` path (and the
//! paths of `use` groups), outside the file's `#[cfg(test)] mod tests` block. A path through
//! the crate root's re-exports (`crate::Error`) counts as a use of the module the root
//! re-exports it from (`pub use error::Error;` in `lib.rs`), so a re-export does not hide a
//! cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path in its crate (`[]` for the root, `["worker", "compile"]`).
type Module = Vec<String>;

/// The crates of the workspace: folders of the repository with a `Cargo.toml` and a `src/`.
fn crates() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

/// The modules of a crate's `src/` and their files (binaries under `src/bin/` excepted).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.first().is_some_and(|m| m == "bin") {
                continue;
            }
            if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
                module.clear();
            } else if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            out.insert(module, path);
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The file's text without its unit-test module (tests may use anything).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Every path that starts with `crate`, `super` or `self` in `text`, with `use` groups
/// expanded: `crate::a::{b, c::D}` gives `crate::a::b` and `crate::a::c::D`.
fn paths(text: &str) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| bytes[i..].starts_with(h.as_bytes()));
        match head {
            Some(h) if starts_word => {
                let prefix = vec![h.trim_end_matches(':').to_string()];
                i = expand(text, i + h.len(), prefix, &mut out);
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads a path's rest from `at` (after a `::`), pushing every full path; returns where it
/// ended.
fn expand(text: &str, mut at: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            // A group: each item is a path relative to the prefix.
            at += 1;
            loop {
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
                let before = at;
                at = expand(text, at, prefix.clone(), out);
                if at == before {
                    at += 1; // `*` or something unexpected: skip it
                }
            }
        }
        let start = at;
        while at < bytes.len() && is_ident(bytes[at]) {
            at += 1;
        }
        if at == start {
            if prefix.len() > 1 {
                out.push(prefix);
            }
            return at;
        }
        prefix.push(text[start..at].to_string());
        if bytes[at..].starts_with(b"::") {
            at += 2;
        } else {
            // `self` inside a group names the prefix itself; `as` renames are irrelevant.
            if prefix.last().is_some_and(|s| s == "self") {
                prefix.pop();
            }
            out.push(prefix);
            return at;
        }
    }
}

/// The crate root's re-exports: a public name -> the module it comes from.
fn reexports(root: &str, mods: &BTreeMap<Module, PathBuf>) -> BTreeMap<String, Module> {
    let mut out = BTreeMap::new();
    for statement in root.split(';') {
        let Some(at) = statement.find("pub use ") else {
            continue;
        };
        let rest = statement[at + "pub use ".len()..].trim();
        let mut expanded = Vec::new();
        expand(rest, 0, vec!["crate".into()], &mut expanded);
        for path in expanded {
            let name = path.last().unwrap().clone();
            if let Some(module) = resolve(mods, &path[1..]) {
                out.insert(name, module);
            }
        }
    }
    out
}

/// The longest module of `mods` that `path` names.
fn resolve(mods: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| mods.contains_key(m))
}

/// The uses between the modules of one crate, parent-child uses left out.
fn edges(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules(src);
    let root_text = mods
        .get(&Vec::new())
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_default();
    let reexported = reexports(&root_text, &mods);
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        for path in paths(without_tests(&text)) {
            let mut full: Module = match path[0].as_str() {
                "crate" => Vec::new(),
                "super" => module[..module.len().saturating_sub(1)].to_vec(),
                _ => module.clone(),
            };
            let mut rest = &path[1..];
            while rest.first().is_some_and(|s| s == "super") {
                full.pop();
                rest = &rest[1..];
            }
            full.extend(rest.iter().cloned());
            let target = match resolve(&mods, &full) {
                Some(t) => t,
                // Through the root: a re-exported name.
                None => match full.first().and_then(|name| reexported.get(name)) {
                    Some(t) => t.clone(),
                    None => continue,
                },
            };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                out.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    out
}

/// A cycle of `edges`, if there is one, as the modules on it.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|x| x == m).unwrap();
                return Some(stack[at..].to_vec());
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(c) = visit(m, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "(root)".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_module_of_any_crate_uses_one_that_uses_it_back() {
    let mut found = Vec::new();
    for krate in crates() {
        if let Some(c) = cycle(&edges(&krate.join("src"))) {
            let names: Vec<String> = c.iter().map(name).collect();
            found.push(format!(
                "{}: {} -> {}",
                krate.file_name().unwrap().to_string_lossy(),
                names.join(" -> "),
                names[0]
            ));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The reader sees uses through groups, `super`, and the root's re-exports, and leaves
/// parents and children out.
#[test]
fn the_reader_sees_groups_supers_and_reexports() {
    let got = paths("use crate::a::{b, c::{D, e::F}}; x = super::g::H; use self::i;");
    let want: Vec<Vec<&str>> = vec![
        vec!["crate", "a", "b"],
        vec!["crate", "a", "c", "D"],
        vec!["crate", "a", "c", "e", "F"],
        vec!["super", "g", "H"],
        vec!["self", "i"],
    ];
    assert_eq!(got, want);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    let files = [
        ("lib.rs", "mod a; mod b; pub use a::Thing;"),
        ("a.rs", "mod child; use crate::b::Other;"),
        ("a/child.rs", "use super::Parent;"),
        (
            "b.rs",
            "use crate::Thing;\n#[cfg(test)]\nmod tests { use crate::x::Y; }",
        ),
    ];
    for (path, text) in files {
        std::fs::write(src.join(path), text).unwrap();
    }
    let e = edges(src);
    let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
    assert_eq!(e[&m("a")], BTreeSet::from([m("b")]));
    assert_eq!(
        e[&m("b")],
        BTreeSet::from([m("a")]),
        "through the re-export"
    );
    assert!(
        !e.contains_key(&m("a::child")),
        "a child may use its parent"
    );
    assert!(cycle(&e).is_some());
}
