//! No link of the repository points outside it: a fresh clone has nothing beside the repository
//! and nothing at a local absolute path. In every `*.md` file (outside code blocks) and every doc
//! comment (`//!`, `///`) of every `*.rs` file:
//! - a Markdown link (`[text](target)`, `[label]: target`) must name a file or folder of the
//!   repository that exists, relative to the file (web links, `#anchors` and the Rust paths of
//!   intra-doc links are not files);
//! - a file path in the text (a word with a `/`) must not leave the repository (`../` too many
//!   times), must not be an absolute path under a local root (see [`LOCAL_ROOTS`]) or a local
//!   file URL, and a document or source file (`docs/design.md`, `cli/src/args.rs`) must exist,
//!   relative to the file, its crate or the repository's root. Paths of files that programs
//!   create (`./prr.redb`), of other repositories' files (`src/test/resources/room_1.json`,
//!   not `.md` or `.rs`) and of a user's home (`~/.local/...`) are not checked for existence.
//!
//! The repository is walked from the cli crate's parent, skipping `target/`, `node_modules/`
//! (installed benchmark peers) and hidden folders (`.git/`).

use std::path::{Component, Path, PathBuf};

/// The extensions of the file paths that must exist: documents and sources.
const CHECKED_EXTENSIONS: [&str; 2] = ["md", "rs"];

/// The starts of absolute paths that only exist on somebody's machine.
const LOCAL_ROOTS: [&str; 10] = [
    "/home/", "/work/", "/tmp/", "/root/", "/Users/", "/mnt/", "/opt/", "/var/", "/etc/", "/usr/",
];

/// The repository's root, as a clean absolute path.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `*.md` and `*.rs` files below `dir`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                walk(&path, files);
            }
        } else if name.ends_with(".md") || name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// `base.join(rel)` with `.` and `..` resolved by name; `None` if it climbs above the root.
fn join_clean(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in Path::new(rel).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What is wrong with a reference to `rel` from `bases` (the first base is the file's folder),
/// if anything.
fn check_relative(repo: &Path, bases: &[&Path], rel: &str) -> Option<String> {
    let mut inside = false;
    for base in bases {
        match join_clean(base, rel) {
            Some(path) if path.starts_with(repo) => {
                inside = true;
                if path.exists() {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(if inside {
        format!("`{rel}` does not exist in the repository")
    } else {
        format!("`{rel}` leaves the repository")
    })
}

/// The prose lines of a file that may hold links: `(line number, text)`. Markdown: every line
/// outside fenced code blocks. Rust: the text of doc comments, outside their code blocks.
fn prose_lines(path: &Path, text: &str) -> Vec<(usize, String)> {
    let rust = path.extension().is_some_and(|e| e == "rs");
    let mut lines = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        let prose = if rust {
            let trimmed = line.trim_start();
            match trimmed
                .strip_prefix("//!")
                .or_else(|| trimmed.strip_prefix("///"))
            {
                Some(doc) if !doc.starts_with('/') => doc,
                _ => continue,
            }
        } else {
            line
        };
        let trimmed = prose.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, prose.to_owned()));
        }
    }
    lines
}

/// The targets of the Markdown links of a line: `[text](target)` and `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let end = after.find(')').unwrap_or(after.len());
        targets.push(after[..end].to_owned());
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(close) = trimmed.find("]: ")
    {
        targets.push(trimmed[close + 3..].to_owned());
    }
    targets
        .into_iter()
        .filter_map(|t| {
            let t = t.trim();
            let t = match t.strip_prefix('<') {
                Some(inner) => inner.split('>').next()?,
                None => t.split_whitespace().next()?,
            };
            Some(t.to_owned())
        })
        .collect()
}

/// What is wrong with a Markdown link target, if anything.
fn check_link(repo: &Path, file: &Path, target: &str) -> Option<String> {
    if target.starts_with("file://") {
        return Some(format!("`{target}` is a local file URL"));
    }
    if target.contains("://") || target.starts_with("mailto:") || target.starts_with('#') {
        return None;
    }
    let path = target.split(['#', '?']).next().unwrap_or_default();
    let rust = file.extension().is_some_and(|e| e == "rs");
    if path.is_empty() || (rust && !path.contains('/') && !path.contains('.')) {
        return None; // an intra-doc link to a Rust item
    }
    if path.starts_with('/') || path.starts_with('~') {
        return Some(format!("`{target}` is an absolute local path"));
    }
    check_relative(repo, &[file.parent().unwrap()], path)
}

/// The folder of the crate holding `file` (the nearest with a `Cargo.toml`), or the root.
fn crate_dir<'a>(repo: &'a Path, file: &'a Path) -> &'a Path {
    file.ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(repo))
        .find(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or(repo)
}

/// What is wrong with a word of prose that looks like a file path, if anything.
fn check_word(repo: &Path, file: &Path, word: &str) -> Option<String> {
    let word = word.trim_end_matches(['.', ',', ':', ';', '!', '?']);
    // `path:line` and `path:line:column` name the path.
    let word = match word.split_once(':') {
        Some((path, at))
            if !at.is_empty() && at.chars().all(|c| c.is_ascii_digit() || c == ':') =>
        {
            path
        }
        _ => word,
    };
    if word.starts_with("file://") {
        return Some(format!("`{word}` is a local file URL"));
    }
    let path_like = word.contains('/')
        && !word.contains("://")
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '~'));
    if !path_like {
        return None;
    }
    if LOCAL_ROOTS.iter().any(|root| word.starts_with(root)) {
        return Some(format!("`{word}` is an absolute local path"));
    }
    if word.starts_with('/') || word.starts_with('~') {
        return None; // a URL path such as an API endpoint, or a path in the user's home
    }
    let dir = file.parent().unwrap();
    let bases = if word.starts_with("./") || word.starts_with("../") {
        vec![dir]
    } else {
        vec![dir, crate_dir(repo, file), repo]
    };
    let problem = check_relative(repo, &bases, word)?;
    let extension = word.rsplit_once('.').map(|(_, e)| e);
    let checked = extension.is_some_and(|e| CHECKED_EXTENSIONS.contains(&e));
    (checked || problem.ends_with("leaves the repository")).then_some(problem)
}

/// The words of a line of prose, split at white space, quotes, brackets and Markdown marks.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| c.is_whitespace() || "`\"'()[]{}<>,;*|=".contains(c))
        .filter(|w| !w.is_empty())
}

/// Every reference of the repository that points outside it: `file:line: problem`.
fn broken_references(repo: &Path) -> Vec<String> {
    let mut files = Vec::new();
    walk(repo, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(repo).unwrap().display().to_string();
        for (line_no, line) in prose_lines(file, &text) {
            let from_links = link_targets(&line)
                .into_iter()
                .filter_map(|target| check_link(repo, file, &target));
            let from_words = words(&line).filter_map(|word| check_word(repo, file, word));
            let mut found: Vec<String> = from_links.chain(from_words).collect();
            found.dedup();
            problems.extend(found.into_iter().map(|p| format!("{shown}:{line_no}: {p}")));
        }
    }
    problems
}

#[test]
fn checker_flags_what_leaves_the_repository() {
    let repo = repo();
    let readme = repo.join("README.md");
    let rs = repo.join("cli/src/main.rs");
    assert!(check_link(&repo, &readme, "docs/design.md#store-format").is_none());
    assert!(check_link(&repo, &readme, "https://example.org/x.md").is_none());
    assert!(check_link(&repo, &rs, "crate::Failure").is_none());
    assert!(check_link(&repo, &readme, "../shared/spec/matrix-replicas.md").is_some());
    assert!(check_link(&repo, &readme, "docs/missing.md").is_some());
    assert!(check_link(&repo, &readme, "/work/shared/spec/matrix-replicas.md").is_some());
    assert!(check_word(&repo, &rs, "docs/design.md.").is_none());
    assert!(check_word(&repo, &rs, "cli/src/args.rs:12").is_none());
    assert!(check_word(&repo, &rs, "/_matrix/client/v3/rooms").is_none());
    assert!(check_word(&repo, &rs, "spec/matrix-replicas.md").is_some());
    assert!(check_word(&repo, &rs, "../../shared/x.md").is_some());
    assert!(check_word(&repo, &rs, "/home/me/prr.redb").is_some());
    assert!(check_word(&repo, &rs, "./prr.redb").is_none());
    assert!(check_word(&repo, &rs, "~/.local/share/x").is_none());
    assert_eq!(
        link_targets("see [a](b.md) and [c](<d e.md> \"t\")"),
        vec!["b.md", "d e.md"]
    );
}

#[test]
fn no_markdown_link_or_doc_comment_points_outside_the_repository() {
    let problems = broken_references(&repo());
    assert!(
        problems.is_empty(),
        "{} references point outside the repository or to nothing:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
