//! Running the binary in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory with a store path.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("prr.redb")
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Runs `prr --store <store> args...`.
    pub fn prr(&self, args: &[&str]) -> Output {
        self.prr_stdin(args, None)
    }

    pub fn prr_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prr"));
        cmd.arg("--store")
            .arg(self.store())
            .args(args)
            .current_dir(self.dir.path());
        cmd.env_remove("PRR_STORE");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.prr(args);
        assert!(
            out.status.success(),
            "prr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The ndjson rows of `prr show`.
    pub fn show(&self, replica: &str) -> Vec<serde_json::Value> {
        self.ok(&["show", replica, "--format", "ndjson"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The repository's example data.
pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(path)
}

/// A digest of a file's bytes, to compare a store before and after a failed command.
pub fn bytes(p: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(p).unwrap_or_default();
    format!(
        "{} bytes, sha256 {:x}",
        data.len(),
        sha2::Sha256::digest(&data)
    )
}

/// Polls `f` every 100 ms until it gives `Ok`, for at most `secs` seconds; then panics with
/// its last `Err`.
pub fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("{what}: not within {secs} s: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// Polls `holds` until it is true, for at most 60 s ([`eventually`] for a plain condition).
pub fn until(what: &str, mut holds: impl FnMut() -> bool) {
    eventually(what, 60, || {
        holds().then_some(()).ok_or("still false".into())
    })
}

/// Serves `app` (a fake homeserver) on a free loopback port from a thread of its own; its
/// base URL.
pub fn serve_fake(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// A store holding the real `#matrix-spec` state and the demo data (`examples/data/demo`).
pub fn demo_store() -> Scratch {
    let s = Scratch::new();
    s.ok(&[
        "ingest",
        example("real/derived/chitchat_matrix-spec_state.json")
            .to_str()
            .unwrap(),
        example("demo").to_str().unwrap(),
    ]);
    s
}
