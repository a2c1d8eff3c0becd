//! What a test Synapse looks like: [`SynapseConfig`] and the `homeserver.yaml` made from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::AppserviceRegistration;

/// How to start a [`Synapse`](crate::Synapse).
///
/// Every Synapse gets: one plain-HTTP client listener on 127.0.0.1 (a free port), SQLite in its
/// own temporary directory, a random `registration_shared_secret`, `enable_registration: false`,
/// every rate limit lifted, no federation listener, no trusted key servers, presence off.
#[derive(Clone, Debug)]
pub struct SynapseConfig {
    pub(crate) server_name: String,
    pub(crate) appservice: Option<AppserviceRegistration>,
    pub(crate) venv: Option<PathBuf>,
    pub(crate) start_timeout: Duration,
    pub(crate) extra: Map<String, Value>,
    pub(crate) python_path: Vec<PathBuf>,
}

impl Default for SynapseConfig {
    fn default() -> Self {
        SynapseConfig {
            server_name: "localhost".into(),
            appservice: None,
            venv: None,
            start_timeout: Duration::from_secs(120),
            extra: Map::new(),
            python_path: Vec::new(),
        }
    }
}

impl SynapseConfig {
    /// The defaults: server name `localhost`, no appservice, the venv of
    /// [`venv_dir`](crate::venv_dir), 120 s to start (a start takes 1 to 3 s on an idle machine).
    pub fn new() -> Self {
        Self::default()
    }

    /// The homeserver's `server_name` (user ids are `@user:<server_name>`).
    pub fn with_server_name(mut self, server_name: &str) -> Self {
        self.server_name = server_name.into();
        self
    }

    /// Registers an appservice (written to a file Synapse loads through
    /// `app_service_config_files`). Make it with the same server name.
    pub fn with_appservice(mut self, registration: AppserviceRegistration) -> Self {
        self.appservice = Some(registration);
        self
    }

    /// Uses the venv at `dir` instead of [`venv_dir`](crate::venv_dir).
    pub fn with_venv(mut self, dir: &Path) -> Self {
        self.venv = Some(dir.to_path_buf());
        self
    }

    /// How long a start or restart may take until `/_matrix/client/versions` answers.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets a top-level `homeserver.yaml` option, replacing the harness's value if it has one
    /// (e.g. `default_room_version`, `modules`).
    pub fn with_option(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Adds a directory to Synapse's `PYTHONPATH`: where the Python modules named by a
    /// `modules` option (spam checkers, ...) are found.
    pub fn with_python_path(mut self, dir: &Path) -> Self {
        self.python_path.push(dir.to_path_buf());
        self
    }

    /// The configured server name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }
}

/// The files and secrets of one Synapse's directory.
pub(crate) struct Layout<'a> {
    pub dir: &'a Path,
    pub port: u16,
    pub shared_secret: &'a str,
    pub appservice_file: Option<&'a Path>,
}

/// A rate limit nobody in a test reaches.
fn unlimited() -> Value {
    json!({"per_second": 100000, "burst_count": 1000000})
}

/// `homeserver.yaml` for `config` in `layout`.
pub(crate) fn homeserver_yaml(config: &SynapseConfig, layout: &Layout<'_>) -> String {
    let dir = layout.dir;
    let path = |name: &str| dir.join(name).display().to_string();
    let mut v = json!({
        "server_name": config.server_name,
        "report_stats": false,
        "signing_key_path": path("signing.key"),
        "media_store_path": path("media"),
        "database": {"name": "sqlite3", "args": {"database": path("homeserver.db")}},
        "listeners": [{
            "port": layout.port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            // `keys`: `/_matrix/key/v2/server`, by which the harness knows its own Synapse.
            "resources": [{"names": ["client", "keys"], "compress": false}],
        }],
        "registration_shared_secret": layout.shared_secret,
        "enable_registration": false,
        "macaroon_secret_key": crate::appservice::random_token(),
        "form_secret": crate::appservice::random_token(),
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "enable_metrics": false,
        "url_preview_enabled": false,
        "presence": {"enabled": false},
        "app_service_config_files": layout
            .appservice_file
            .map(|p| vec![p.display().to_string()])
            .unwrap_or_default(),
        "rc_message": unlimited(),
        "rc_registration": unlimited(),
        "rc_registration_token_validity": unlimited(),
        "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
        "rc_admin_redaction": unlimited(),
        "rc_joins": {"local": unlimited(), "remote": unlimited()},
        "rc_joins_per_room": unlimited(),
        "rc_key_requests": unlimited(),
        "rc_3pid_validation": unlimited(),
        "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
        "rc_third_party_invite": unlimited(),
        "rc_media_create": unlimited(),
        "rc_presence": {"per_user": unlimited()},
        "rc_delayed_event_mgmt": unlimited(),
        "rc_room_creation": unlimited(),
        "rc_reports": unlimited(),
        "rc_user_directory": unlimited(),
        "rc_profile": unlimited(),
    });
    let map = v.as_object_mut().expect("an object");
    for (k, x) in &config.extra {
        map.insert(k.clone(), x.clone());
    }
    crate::yaml::to_yaml(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_replace_the_harness_values() {
        let c = SynapseConfig::new()
            .with_server_name("test.local")
            .with_option("enable_registration", json!(true))
            .with_option("default_room_version", json!("11"));
        let dir = Path::new("/tmp/x");
        let y = homeserver_yaml(
            &c,
            &Layout {
                dir,
                port: 8008,
                shared_secret: "s",
                appservice_file: Some(Path::new("/tmp/x/as.yaml")),
            },
        );
        assert!(y.contains("\"server_name\": \"test.local\"\n"), "{y}");
        assert!(y.contains("\"enable_registration\": true\n"), "{y}");
        assert!(!y.contains("\"enable_registration\": false"), "{y}");
        assert!(y.contains("\"default_room_version\": \"11\"\n"), "{y}");
        assert!(
            y.contains("\"app_service_config_files\":\n  - \"/tmp/x/as.yaml\"\n"),
            "{y}"
        );
        assert!(y.contains("\"port\": 8008\n"), "{y}");
    }
}
