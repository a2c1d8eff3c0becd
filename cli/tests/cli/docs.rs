//! The documentation runs: every `$ prr ...` command of the README's console blocks, every
//! example of `prr --help` and of each command's `--help`, and the README's set-up script.
//!
//! Commands run with `bash -o pipefail` in a [`Sandbox`], a scratch directory standing in for
//! the repository's root: it holds a copy of `examples/data/`, and `./prr.redb` there (the
//! default store) starts absent. The tested `prr` is first on `PATH`. The adaptations, all here:
//! - `HOME` is a scratch home with `~/.local/share/bash-completion/completions/`, where the
//!   completions example writes;
//! - `tail -f FILE` runs as `cat FILE` (it would never end), and `events.ndjson` holds the demo
//!   room's events, one per line;
//! - `scripts/demo.sh` runs the tested binary (`PRR_BIN`) instead of `cargo run --release`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch repository root to run documented commands in.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &repo().join("examples/data"),
            &dir.path().join("examples/data"),
        );
        std::fs::create_dir_all(
            dir.path()
                .join("home/.local/share/bash-completion/completions"),
        )
        .unwrap();
        let room = std::fs::read(repo().join("examples/data/demo/20-demo-room.json")).unwrap();
        let events: Vec<Value> = serde_json::from_slice(&room).unwrap();
        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.path().join("events.ndjson"), lines).unwrap();
        Sandbox { dir }
    }

    /// Runs a documented command line (after the adaptations in the module's doc).
    fn run(&self, command: &str) -> Output {
        let command = command.replace("tail -f ", "cat ");
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_prr")).parent().unwrap();
        let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        Command::new("bash")
            .args(["-o", "pipefail", "-c", &command])
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("PRR_BIN", env!("CARGO_BIN_EXE_prr"))
            .env_remove("PRR_STORE")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, command: &str) -> String {
        let out = self.run(command);
        assert!(
            out.status.success(),
            "`{command}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One `$ command` of a console block, with the output lines shown under it.
struct Shown {
    line: usize,
    command: String,
    output: Vec<String>,
}

/// The commands of the ```` ```console ```` blocks of a Markdown text, in order.
fn console_commands(markdown: &str) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_console = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.starts_with("```") {
            in_console = line == "```console";
        } else if !in_console {
        } else if let Some(command) = line.strip_prefix("$ ") {
            shown.push(Shown {
                line: i + 1,
                command: command.to_owned(),
                output: Vec::new(),
            });
        } else {
            let last = shown
                .last_mut()
                .unwrap_or_else(|| panic!("README.md:{}: output before any `$ ` command", i + 1));
            last.output.push(line.to_owned());
        }
    }
    shown
}

/// Whether `actual` is `expected`, line for line, where an expected `...` line stands for any
/// number of lines (none included).
fn matches_with_elision(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches_with_elision(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line == first && matches_with_elision(rest, more)),
    }
}

#[test]
fn elision_matches_any_run_of_lines() {
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(matches_with_elision(
        &lines(&["a", "...", "d"]),
        &["a", "b", "c", "d"]
    ));
    assert!(matches_with_elision(&lines(&["a", "..."]), &["a"]));
    assert!(!matches_with_elision(
        &lines(&["a", "...", "d"]),
        &["a", "b"]
    ));
    assert!(!matches_with_elision(&lines(&["a"]), &["a", "b"]));
}

#[test]
fn readme_console_examples_run_and_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let shown = console_commands(&readme);
    assert!(
        shown.len() >= 10,
        "README.md: only {} commands",
        shown.len()
    );
    let sandbox = Sandbox::new();
    for s in shown {
        assert!(
            s.command.contains("prr "),
            "README.md:{}: a console command that does not run prr: {}",
            s.line,
            s.command
        );
        let out = sandbox.ok(&s.command);
        if s.output.is_empty() {
            continue;
        }
        let actual: Vec<&str> = out.lines().collect();
        assert!(
            matches_with_elision(&s.output, &actual),
            "README.md:{}: `{}` printed\n{out}\nbut the README shows\n{}",
            s.line,
            s.command,
            s.output.join("\n")
        );
    }
}

/// The examples of a `--help` text: the indented lines after `Example:` or `Examples:`, a line
/// indented further continuing the one before.
fn help_examples(help: &str) -> Vec<String> {
    let mut examples: Vec<String> = Vec::new();
    let mut in_examples = false;
    for line in help.lines() {
        if matches!(line, "Example:" | "Examples:") {
            in_examples = true;
        } else if !line.starts_with("  ") {
            in_examples = false;
        } else if in_examples && line.starts_with("    ") {
            let last = examples
                .last_mut()
                .expect("a continuation after an example");
            last.push('\n');
            last.push_str(line);
        } else if in_examples {
            examples.push(line.trim().to_owned());
        }
    }
    examples
}

/// The commands that `prr --help` lists (without `help`).
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_examples_run() {
    let sandbox = Sandbox::new();
    let top = sandbox.ok("prr --help");
    let mut examples = help_examples(&top);
    assert!(!examples.is_empty(), "prr --help shows no example");
    let names = commands(&top);
    assert!(names.len() >= 10, "prr --help lists {names:?}");
    for name in &names {
        let help = sandbox.ok(&format!("prr {name} --help"));
        let own = help_examples(&help);
        assert!(!own.is_empty(), "prr {name} --help shows no example");
        examples.extend(own);
    }
    // The top-level examples come first: the first one ingests the example data.
    for example in &examples {
        sandbox.ok(example);
    }
}

#[test]
fn readme_setup_commands_name_the_scripts_and_demo_prints_the_intents() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for line in ["bash scripts/demo.sh", "bash scripts/test.sh"] {
        assert!(readme.contains(line), "README.md lacks `{line}`");
    }
    let test = std::fs::read_to_string(repo().join("scripts/test.sh")).unwrap();
    assert!(
        test.lines()
            .any(|l| l.starts_with("cargo test --workspace")),
        "scripts/test.sh does not run `cargo test --workspace`, as the README says"
    );
    let sandbox = Sandbox::new();
    let script = repo().join("scripts/demo.sh");
    let out = sandbox.ok(&format!("bash '{}'", script.display()));
    assert!(
        sandbox.dir.path().join("prr.redb").is_file(),
        "no ./prr.redb"
    );
    for expected in [
        "-- member_bans",
        r#""user_id":"@spammer1:spam.example""#,
        "-- server_acl",
        r#""deny":["*.spam.example","spam.example","troll.example"]"#,
        "-- acl_sync",
    ] {
        assert!(
            out.contains(expected),
            "demo.sh printed\n{out}\nwithout {expected}"
        );
    }
}
