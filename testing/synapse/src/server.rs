//! [`Synapse`]: one homeserver process, its directory and its log.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::config::{Layout, homeserver_yaml};
use crate::http::{Http, Method, field};
use crate::{AppserviceRegistration, Client, Error, SynapseConfig, venv};

/// Runs Synapse's homeserver module and stops it when standard input closes.
const LAUNCHER: &str = include_str!("launcher.py");

/// How long a clean stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How many Synapses of this process may be starting at once. A start is mostly CPU (Python
/// imports, a new database); on 2 cores, five at once made each take five times as long.
const PARALLEL_STARTS: usize = 2;

/// The number of Synapses starting now, and a wake-up for those waiting for their turn.
static STARTING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A turn to start; ends on drop.
struct StartTurn;

impl StartTurn {
    fn take() -> StartTurn {
        let (count, turn) = &STARTING;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= PARALLEL_STARTS {
            n = turn.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        StartTurn
    }
}

impl Drop for StartTurn {
    fn drop(&mut self) {
        let (count, turn) = &STARTING;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        turn.notify_one();
    }
}

/// A Synapse homeserver running on 127.0.0.1, owned by the test.
///
/// [`Synapse::start`] makes a temporary directory (config, SQLite database, signing key, media,
/// the appservice registration, `homeserver.log`), starts Synapse there and waits until it
/// answers as itself: `/_matrix/key/v2/server` names its signing key, whose id is random, so
/// that another Synapse that holds the port (a [`free_port`] taken again in between) is never
/// taken for this one; Synapse is started again on another port then. [`Synapse::stop`] stops it (SIGTERM, then a wait),
/// [`Synapse::restart`] starts it again on the same directory and port; dropping it stops it
/// and deletes the directory. Should the test process die first, Synapse stops by itself: it
/// watches its standard input, whose other end the test process holds.
pub struct Synapse {
    config: SynapseConfig,
    /// Deleted on drop, after the process is gone.
    dir: tempfile::TempDir,
    python: PathBuf,
    port: u16,
    http: Http,
    shared_secret: String,
    appservice_file: Option<PathBuf>,
    child: Option<Child>,
    /// The id of its signing key (`a_` and random hex): what tells it from another Synapse.
    key_id: String,
}

/// How many ports [`Synapse::start`] tries when the one it picked is taken meanwhile.
const PORT_TRIES: usize = 5;

impl std::fmt::Debug for Synapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synapse")
            .field("base_url", &self.http.base_url())
            .field("server_name", &self.config.server_name)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for Synapse, or for the appservice
/// that Synapse's registration must name before either starts).
pub fn free_port() -> Result<u16, Error> {
    let io = |source| Error::Io {
        what: "bind a port on",
        path: PathBuf::from("127.0.0.1"),
        source,
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

/// Writes `text` to the file `name` in `dir`.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| Error::Io {
        what: "write",
        path,
        source,
    })
}

impl Synapse {
    /// Writes the config into a new temporary directory, starts Synapse and waits until it
    /// answers. Fails with [`Error::VenvMissing`] (saying how to create the venv) when the
    /// pinned Synapse is not installed, and with [`Error::Process`] (with the log's last lines)
    /// when Synapse exits or does not answer within the start timeout.
    pub fn start(config: SynapseConfig) -> Result<Synapse, Error> {
        let venv_dir = config.venv.clone().unwrap_or_else(venv::venv_dir);
        let python = venv::python(&venv_dir)?;
        let dir = tempfile::Builder::new()
            .prefix("prr-synapse-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "create a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let shared_secret = crate::appservice::random_token();
        let appservice_file = match &config.appservice {
            Some(r) => {
                let path = dir.path().join("appservice.yaml");
                r.write(&path)?;
                Some(path)
            }
            None => None,
        };
        // An ed25519 signing key: Synapse derives the key pair from the 32-byte seed.
        let seed: [u8; 32] = rand::random();
        let seed = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
        let key_id = format!("a_{:016x}", rand::random::<u64>());
        write_file(
            dir.path(),
            "signing.key",
            &format!("ed25519 {key_id} {seed}\n"),
        )?;
        write_file(dir.path(), "launcher.py", LAUNCHER)?;
        let mut synapse = Synapse {
            config,
            dir,
            python,
            port: 0,
            http: Http::new("http://127.0.0.1:0", Duration::from_secs(30)),
            shared_secret,
            appservice_file,
            child: None,
            key_id,
        };
        for _ in 0..PORT_TRIES {
            // A log of this try only: an earlier try's bind failure is not this one's.
            let _ = std::fs::remove_file(synapse.log_path());
            synapse.port = free_port()?;
            let yaml = homeserver_yaml(
                &synapse.config,
                &Layout {
                    dir: synapse.dir.path(),
                    port: synapse.port,
                    shared_secret: &synapse.shared_secret,
                    appservice_file: synapse.appservice_file.as_deref(),
                },
            );
            write_file(synapse.dir.path(), "homeserver.yaml", &yaml)?;
            let url = format!("http://127.0.0.1:{}", synapse.port);
            synapse.http = Http::new(&url, Duration::from_secs(30));
            match synapse.spawn() {
                Err(Error::PortTaken(_)) => continue,
                r => return r.map(|()| synapse),
            }
        }
        Err(Error::PortTaken(synapse.port))
    }

    /// Starts the process and waits until it answers (the timeout counts from its turn: at
    /// most two Synapses of one process start at once).
    fn spawn(&mut self) -> Result<(), Error> {
        let _turn = StartTurn::take();
        let dir = self.dir.path();
        let log = self.log_path();
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        };
        let io = |what, source| Error::Io {
            what,
            path: log.clone(),
            source,
        };
        let out: File = open().map_err(|e| io("open the log", e))?;
        let err: File = open().map_err(|e| io("open the log", e))?;
        let mut command = Command::new(&self.python);
        if !self.config.python_path.is_empty() {
            let inherited = std::env::var_os("PYTHONPATH");
            let paths = self.config.python_path.iter().cloned();
            let joined = std::env::join_paths(paths.chain(inherited.iter().map(PathBuf::from)))
                .map_err(|e| Error::Usage(format!("a PYTHONPATH entry holds a `:`: {e}")))?;
            command.env("PYTHONPATH", joined);
        }
        let child = command
            .arg(dir.join("launcher.py"))
            .arg("--config-path")
            .arg(dir.join("homeserver.yaml"))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Io {
                what: "start Synapse with",
                path: self.python.clone(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + self.config.start_timeout;
        let probe = Http::new(self.http.base_url(), Duration::from_secs(2));
        let own_key = format!("\"ed25519:{}\"", self.key_id);
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                if self.log_tail(40).contains("Address already in use") {
                    return Err(Error::PortTaken(self.port));
                }
                return Err(self.process_error("did not start", format!("it exited ({status})")));
            }
            if let Ok((200, body)) = probe.send(Method::Get, "/_matrix/key/v2/server", None, None) {
                if body.contains(&own_key) {
                    return Ok(());
                }
                // Another server answers on the port: this one cannot bind it.
                self.kill();
                return Err(Error::PortTaken(self.port));
            }
            if Instant::now() >= deadline {
                self.kill();
                let secs = self.config.start_timeout.as_secs();
                return Err(self.process_error("did not start", format!("no answer in {secs} s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn process_error(&self, phase: &'static str, reason: String) -> Error {
        Error::Process {
            phase,
            reason,
            log: self.log_path(),
            log_tail: self.log_tail(40),
        }
    }

    /// Stops Synapse: closes its standard input, upon which it sends itself SIGTERM and shuts
    /// down cleanly (well under a second); killed if still running after 15 s. Does nothing
    /// when it is not running.
    pub fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        drop(child.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.process_error(
                        "did not stop",
                        format!(
                            "still running {} s after SIGTERM; killed",
                            STOP_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
    }

    /// Stops Synapse if it runs, then starts it again with the same directory, database and
    /// port, and waits until it answers. Access tokens and rooms survive.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the Synapse process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The port Synapse listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The homeserver's server name.
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// `@localpart:<server_name>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.config.server_name)
    }

    /// Synapse's directory: `homeserver.yaml`, `homeserver.db`, `homeserver.log`, ...
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Synapse's log file (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("homeserver.log")
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The appservice registration Synapse loaded, if any.
    pub fn appservice(&self) -> Option<&AppserviceRegistration> {
        self.config.appservice.as_ref()
    }

    /// The registration file Synapse loaded (the one to hand to `prr serve --registration`).
    pub fn appservice_file(&self) -> Option<&Path> {
        self.appservice_file.as_deref()
    }

    /// Registers a user with the shared-secret admin API (`/_synapse/admin/v1/register`, works
    /// with `enable_registration: false`), optionally a server admin, and returns a client
    /// logged in as that user.
    pub fn register(&self, localpart: &str, password: &str, admin: bool) -> Result<Client, Error> {
        let path = "/_synapse/admin/v1/register";
        let nonce = self.http.json(Method::Get, path, None, None)?;
        let nonce = field(&nonce, "nonce", Method::Get, path)?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.shared_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(localpart.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        mac.update(b"\0");
        mac.update(if admin { b"admin" } else { b"notadmin" });
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        });
        let v = self.http.json(Method::Post, path, None, Some(&body))?;
        self.client_from(&v, Method::Post, path)
    }

    /// Logs in with a password (`POST /login`); returns a client with a new access token.
    pub fn login(&self, localpart: &str, password: &str) -> Result<Client, Error> {
        let path = "/_matrix/client/v3/login";
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        });
        let v = self.http.json(Method::Post, path, None, Some(&body))?;
        self.client_from(&v, Method::Post, path)
    }

    fn client_from(&self, v: &Value, method: Method, path: &str) -> Result<Client, Error> {
        let token = field(v, "access_token", method, path)?;
        let user_id = field(v, "user_id", method, path)?;
        Ok(Client::new(self.http.clone(), token, user_id, false))
    }

    fn registration(&self) -> Result<&AppserviceRegistration, Error> {
        self.appservice().ok_or_else(|| {
            Error::Usage("this Synapse was started without an appservice registration".into())
        })
    }

    /// Registers a user in the appservice's namespace (`POST /register` with type
    /// `m.login.application_service` and the `as_token`; a user that exists already is fine)
    /// and returns a client acting as it (the `as_token` with `?user_id=`).
    pub fn register_appservice_user(&self, localpart: &str) -> Result<Client, Error> {
        let reg = self.registration()?;
        let path = "/_matrix/client/v3/register";
        let body = json!({"type": "m.login.application_service", "username": localpart});
        match self
            .http
            .json(Method::Post, path, Some(reg.as_token()), Some(&body))
        {
            Ok(_) => {}
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {}
            Err(e) => return Err(e),
        }
        self.appservice_client(&self.user_id(localpart))
    }

    /// A client acting as `user_id` through the appservice (no registration: use it for the
    /// sender `@<sender_localpart>:<server>` or users registered before).
    pub fn appservice_client(&self, user_id: &str) -> Result<Client, Error> {
        let reg = self.registration()?;
        Ok(Client::new(
            self.http.clone(),
            reg.as_token().to_string(),
            user_id.to_string(),
            true,
        ))
    }

    /// Any unauthenticated request, e.g. `GET /_matrix/client/versions`.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.http.json(method, path, None, body)
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // A clean stop keeps the SQLite files consistent; a stuck process is killed.
        let _ = self.stop();
    }
}
