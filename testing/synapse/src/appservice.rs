//! Appservice registrations: the YAML file Synapse loads, and that `prr serve --registration`
//! can read too.

use std::path::Path;

use serde_json::{Value, json};

use crate::Error;

/// An appservice registration (the Matrix application service API's registration file).
///
/// Made before Synapse starts, so that the service it points at (`prr serve`) can be started
/// first with the same file: [`AppserviceRegistration::write`] writes it, and
/// [`SynapseConfig::with_appservice`](crate::SynapseConfig::with_appservice) hands it to
/// Synapse. Tokens are random; `Debug` does not show them.
#[derive(Clone)]
pub struct AppserviceRegistration {
    id: String,
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    users: Vec<Namespace>,
    aliases: Vec<Namespace>,
    rooms: Vec<Namespace>,
}

/// One namespace entry: a regular expression (Python's `re`, matched at the start) and whether
/// the appservice claims it exclusively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The regular expression over full ids (`@user:server`, `#alias:server`, `!room`).
    pub regex: String,
    /// Whether only the appservice may use matching ids.
    pub exclusive: bool,
}

impl AppserviceRegistration {
    /// A registration with id `prr`, sender `@prr:<server_name>`, an exclusive user namespace
    /// `@prr_.*:<server_name>` (the bots), no alias or room namespace, random tokens, and `url`
    /// where Synapse sends transactions (`None`: Synapse sends none). The url may point at a
    /// port nobody listens on: Synapse then marks the appservice down and retries later.
    pub fn new(server_name: &str, url: Option<&str>) -> Self {
        AppserviceRegistration {
            id: "prr".into(),
            url: url.map(str::to_string),
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: "prr".into(),
            users: vec![Namespace {
                regex: format!("@prr_.*:{}", regex_escape(server_name)),
                exclusive: true,
            }],
            aliases: Vec::new(),
            rooms: Vec::new(),
        }
    }

    /// Sets the registration's `id`.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// Sets `sender_localpart`, the appservice's own user.
    pub fn with_sender_localpart(mut self, localpart: &str) -> Self {
        self.sender_localpart = localpart.into();
        self
    }

    /// Replaces the user namespaces.
    pub fn with_users(mut self, namespaces: Vec<Namespace>) -> Self {
        self.users = namespaces;
        self
    }

    /// Replaces the alias namespaces.
    pub fn with_aliases(mut self, namespaces: Vec<Namespace>) -> Self {
        self.aliases = namespaces;
        self
    }

    /// Replaces the room namespaces. A room regex `.*` makes Synapse send the appservice every
    /// event of every room; without one it gets events of rooms where a namespaced user is.
    pub fn with_rooms(mut self, namespaces: Vec<Namespace>) -> Self {
        self.rooms = namespaces;
        self
    }

    /// Sets both tokens (for a test that needs fixed ones).
    pub fn with_tokens(mut self, as_token: &str, hs_token: &str) -> Self {
        self.as_token = as_token.into();
        self.hs_token = hs_token.into();
        self
    }

    /// The registration's `id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where Synapse sends transactions.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The token the appservice uses towards Synapse. Never log it.
    pub fn as_token(&self) -> &str {
        &self.as_token
    }

    /// The token Synapse sends to the appservice (`Authorization: Bearer`). Never log it.
    pub fn hs_token(&self) -> &str {
        &self.hs_token
    }

    /// The appservice's own user's localpart.
    pub fn sender_localpart(&self) -> &str {
        &self.sender_localpart
    }

    /// The user namespaces.
    pub fn users(&self) -> &[Namespace] {
        &self.users
    }

    /// The registration as a JSON value with the file's fields.
    pub fn to_json(&self) -> Value {
        let ns = |list: &[Namespace]| -> Value {
            list.iter()
                .map(|n| json!({"exclusive": n.exclusive, "regex": n.regex}))
                .collect()
        };
        json!({
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            "namespaces": {
                "users": ns(&self.users),
                "aliases": ns(&self.aliases),
                "rooms": ns(&self.rooms),
            },
            "rate_limited": false,
        })
    }

    /// The registration file's text (YAML).
    pub fn to_yaml(&self) -> String {
        crate::yaml::to_yaml(&self.to_json())
    }

    /// Writes the registration file (YAML) to `path`.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.to_yaml()).map_err(|source| Error::Io {
            what: "write the appservice registration",
            path: path.to_path_buf(),
            source,
        })
    }
}

impl std::fmt::Debug for AppserviceRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppserviceRegistration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("sender_localpart", &self.sender_localpart)
            .field("users", &self.users)
            .field("aliases", &self.aliases)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

/// 32 random alphanumeric characters.
pub(crate) fn random_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// `s` with Python regular-expression metacharacters escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_alphanumeric() && c != '_' && c != ':' && c != '@' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_file_has_the_fields_synapse_reads() {
        let r = AppserviceRegistration::new("test.local", Some("http://127.0.0.1:9/"))
            .with_tokens("secret-as-token", "secret-hs-token");
        let yaml = r.to_yaml();
        for line in [
            "\"id\": \"prr\"",
            "\"url\": \"http://127.0.0.1:9/\"",
            "\"as_token\": \"secret-as-token\"",
            "\"hs_token\": \"secret-hs-token\"",
            "\"sender_localpart\": \"prr\"",
            "\"regex\": \"@prr_.*:test\\\\.local\"",
            "\"rate_limited\": false",
        ] {
            assert!(yaml.contains(line), "{line} missing in\n{yaml}");
        }
        assert!(
            !format!("{r:?}").contains("secret"),
            "Debug shows a token: {r:?}"
        );
    }

    #[test]
    fn escape_keeps_user_id_characters() {
        assert_eq!(regex_escape("a.b-c:8448"), "a\\.b\\-c:8448");
        assert_eq!(regex_escape("@prr_1"), "@prr_1");
    }
}
