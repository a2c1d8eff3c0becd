//! Finding the virtual environment that `scripts/synapse-venv.sh` creates.

use std::path::{Path, PathBuf};

use crate::Error;

/// The Synapse version the harness runs: `matrix-synapse` on PyPI, pinned in
/// `scripts/synapse-venv.sh` (keep the two in step).
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// The environment variable naming the venv; without it, `target/synapse-venv` in the workspace.
pub const VENV_ENV: &str = "PRR_SYNAPSE_VENV";

/// The file the script writes last, holding the installed version.
const MARKER: &str = ".prr-synapse-version";

/// Where the venv is looked for: `$PRR_SYNAPSE_VENV` if set (relative to the workspace root when
/// relative, as the script takes it), else `<workspace>/target/synapse-venv`.
pub fn venv_dir() -> PathBuf {
    // This crate lives at `<workspace>/testing/synapse`.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var_os(VENV_ENV) {
        Some(v) if !v.is_empty() => workspace.join(v),
        _ => workspace.join("target/synapse-venv"),
    };
    dir.canonicalize().unwrap_or(dir)
}

/// The venv's Python, after checking that the venv was completed by the script for
/// [`SYNAPSE_VERSION`].
pub(crate) fn python(dir: &Path) -> Result<PathBuf, Error> {
    let missing = |reason: String| Error::VenvMissing {
        path: dir.to_path_buf(),
        version: SYNAPSE_VERSION,
        reason,
    };
    let python = dir.join("bin/python");
    if !python.exists() {
        return Err(missing("it has no bin/python".into()));
    }
    match std::fs::read_to_string(dir.join(MARKER)) {
        Ok(v) if v.trim() == SYNAPSE_VERSION => Ok(python),
        Ok(v) => Err(missing(format!("it holds Synapse {}", v.trim()))),
        Err(_) => Err(missing(format!(
            "its install did not finish ({MARKER} is missing)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_pins_the_same_version() {
        let script = include_str!("../../../scripts/synapse-venv.sh");
        assert!(
            script.contains(&format!("\nSYNAPSE_VERSION={SYNAPSE_VERSION}\n")),
            "scripts/synapse-venv.sh must pin matrix-synapse {SYNAPSE_VERSION}"
        );
    }

    #[test]
    fn an_empty_dir_is_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = python(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bin/python"), "{e}");
        assert!(e.contains("scripts/synapse-venv.sh"), "{e}");
    }

    #[test]
    fn another_version_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/python"), "").unwrap();
        std::fs::write(dir.path().join(MARKER), "1.0.0\n").unwrap();
        let e = python(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds Synapse 1.0.0"), "{e}");
        std::fs::write(dir.path().join(MARKER), format!("{SYNAPSE_VERSION}\n")).unwrap();
        assert_eq!(python(dir.path()).unwrap(), dir.path().join("bin/python"));
    }
}
