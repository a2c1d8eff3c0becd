//! [`Homeserver`]: one Client-Server API endpoint and the token prr uses with it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::Error;
use crate::retry::Retry;
use crate::sync::SyncBatch;

/// An access token (a bot's, or an appservice's `as_token`). Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// A token as given.
    pub fn new(token: impl Into<String>) -> AccessToken {
        AccessToken(token.into())
    }

    /// The token in a file (surrounding whitespace trimmed). An empty file is an error naming
    /// the file; the token itself is never in an error.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<AccessToken> {
        let text = std::fs::read_to_string(path)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: the file is empty, expected a token", path.display()),
            ));
        }
        Ok(AccessToken(token.to_string()))
    }

    /// The token, to send it (and for nothing else).
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<hidden>)")
    }
}

/// A homeserver's Client-Server API, the token prr uses with it and, for an appservice, the
/// user it acts as. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Homeserver {
    base: Url,
    token: AccessToken,
    /// The user an appservice masquerades as (`?user_id=`), if any.
    user_id: Option<String>,
    http: reqwest::Client,
    retry: Retry,
}

impl std::fmt::Debug for Homeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homeserver")
            .field("base", &self.base.as_str())
            .field("user_id", &self.user_id)
            .field("token", &self.token)
            .finish()
    }
}

/// The longest a call other than `/sync` may take before it counts as a network error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Homeserver {
    /// The homeserver at `base` (e.g. `https://matrix.example.org`), used with `token`, with
    /// the default [`Retry`].
    pub fn new(base: &str, token: AccessToken) -> Result<Homeserver, Error> {
        let bad = |reason: &str| Error::BadUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let mut url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(bad("the URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("prr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Homeserver {
            base: url,
            token,
            user_id: None,
            http,
            retry: Retry::default(),
        })
    }

    /// The same homeserver with another retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Homeserver {
        self.retry = retry;
        self
    }

    /// The same homeserver and token, acting as `user_id`: an appservice masquerading as one
    /// of its users (`?user_id=` on every call).
    pub fn acting_as(&self, user_id: &str) -> Homeserver {
        Homeserver {
            user_id: Some(user_id.to_string()),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /_matrix/client/v3/account/whoami`: the user the token (and masquerade) acts as.
    pub async fn whoami(&self) -> Result<String, Error> {
        let v = self
            .call(Method::GET, &["account", "whoami"], &[], None, None)
            .await?;
        string_field(&v, "user_id", "GET /_matrix/client/v3/account/whoami")
    }

    /// `GET /_matrix/client/v3/sync`: waits up to `timeout` for something new after `since`
    /// (the initial sync without it).
    pub async fn sync(&self, since: Option<&str>, timeout: Duration) -> Result<SyncBatch, Error> {
        let ms = timeout.as_millis().to_string();
        let mut query = vec![("timeout", ms.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        let wait = timeout + CALL_TIMEOUT;
        let v = self
            .call(Method::GET, &["sync"], &query, None, Some(wait))
            .await?;
        SyncBatch::from_response(&v).map_err(|reason| Error::BadResponse {
            what: "GET /_matrix/client/v3/sync".into(),
            reason,
        })
    }

    /// `GET /_matrix/client/v3/rooms/{room}/state`: the room's current state events, each with
    /// its `room_id`.
    pub async fn room_state(&self, room_id: &str) -> Result<Vec<Value>, Error> {
        let what = format!("GET /_matrix/client/v3/rooms/{room_id}/state");
        let v = self
            .call(Method::GET, &["rooms", room_id, "state"], &[], None, None)
            .await?;
        let Value::Array(events) = v else {
            return Err(Error::BadResponse {
                what,
                reason: "expected a JSON array of events".into(),
            });
        };
        Ok(events
            .into_iter()
            .map(|mut e| {
                if let Value::Object(o) = &mut e {
                    o.entry("room_id")
                        .or_insert_with(|| Value::String(room_id.to_string()));
                }
                e
            })
            .collect())
    }

    /// `POST /_matrix/client/v3/join/{room}` (a room id or alias, through the servers `via`):
    /// the id of the room joined.
    pub async fn join(&self, room: &str, via: &[String]) -> Result<String, Error> {
        let query: Vec<(&str, &str)> = via.iter().map(|s| ("server_name", s.as_str())).collect();
        let body = serde_json::json!({});
        let v = self
            .call(Method::POST, &["join", room], &query, Some(&body), None)
            .await?;
        string_field(
            &v,
            "room_id",
            &format!("POST /_matrix/client/v3/join/{room}"),
        )
    }

    /// `GET /_matrix/client/v3/user/{user}/account_data/{type}`: the content, or `None` when
    /// the account has none of that type.
    pub async fn account_data(&self, user_id: &str, kind: &str) -> Result<Option<Value>, Error> {
        let path = ["user", user_id, "account_data", kind];
        match self.call(Method::GET, &path, &[], None, None).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::Refused {
                status: 404,
                errcode,
                ..
            }) if errcode == "M_NOT_FOUND" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /_matrix/client/v3/rooms/{room}/ban`: bans `user_id` from the room with `reason`.
    pub async fn ban(&self, room_id: &str, user_id: &str, reason: &str) -> Result<(), Error> {
        let body = serde_json::json!({"user_id": user_id, "reason": reason});
        self.call(
            Method::POST,
            &["rooms", room_id, "ban"],
            &[],
            Some(&body),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/state/{type}/{state_key}`: the event id of the
    /// state event set.
    pub async fn set_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<String, Error> {
        let path = ["rooms", room_id, "state", event_type, state_key];
        let v = self
            .call(Method::PUT, &path, &[], Some(content), None)
            .await?;
        let what = format!("PUT /_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}");
        string_field(&v, "event_id", &what)
    }

    /// The `membership` of `user_id`'s current member event in the room (`GET
    /// .../state/m.room.member/{user}`), or `None` when it has none.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>, Error> {
        let path = ["rooms", room_id, "state", "m.room.member", user_id];
        match self.call(Method::GET, &path, &[], None, None).await {
            Ok(v) => Ok(v
                .get("membership")
                .and_then(Value::as_str)
                .map(str::to_string)),
            Err(Error::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /_matrix/client/v3/joined_rooms`: the rooms the account is joined to.
    pub async fn joined_rooms(&self) -> Result<Vec<String>, Error> {
        let what = "GET /_matrix/client/v3/joined_rooms";
        let v = self
            .call(Method::GET, &["joined_rooms"], &[], None, None)
            .await?;
        let rooms = (v.get("joined_rooms").and_then(Value::as_array)).ok_or_else(|| {
            Error::BadResponse {
                what: what.into(),
                reason: "no array `joined_rooms`".into(),
            }
        })?;
        (rooms.iter())
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::BadResponse {
                        what: what.into(),
                        reason: format!("`joined_rooms` holds {r}, not a room id"),
                    })
            })
            .collect()
    }

    /// `POST /_matrix/client/v3/register` as an appservice (`m.login.application_service`):
    /// registers the user `localpart` of the appservice's namespace, which a homeserver
    /// requires before the appservice acts as it. A user that exists already is fine.
    pub async fn register_appservice_user(&self, localpart: &str) -> Result<(), Error> {
        let body = serde_json::json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        match self
            .call(Method::POST, &["register"], &[], Some(&body), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Refused { errcode, .. }) if errcode == "M_USER_IN_USE" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /_matrix/client/v3/directory/room/{alias}`: the room id an alias names and servers
    /// to join it through.
    pub async fn resolve_alias(&self, alias: &str) -> Result<(String, Vec<String>), Error> {
        let what = format!("GET /_matrix/client/v3/directory/room/{alias}");
        let v = self
            .call(Method::GET, &["directory", "room", alias], &[], None, None)
            .await?;
        let room_id = string_field(&v, "room_id", &what)?;
        let servers = (v.get("servers").and_then(Value::as_array))
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok((room_id, servers))
    }

    /// One call under `/_matrix/client/v3/`, retried as [`Retry`] says. `segments` are
    /// percent-encoded here; the token goes in the `Authorization` header.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| Error::BadUrl {
                url: self.base.to_string(),
                reason: "the URL cannot be a base".into(),
            })?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if let Some(user) = &self.user_id {
                pairs.append_pair("user_id", user);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let what = format!("{method} /_matrix/client/v3/{}", segments.join("/"));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(self.token.secret())
                .timeout(timeout.unwrap_or(CALL_TIMEOUT));
            if let Some(body) = body {
                request = request.json(body);
            }
            let (failure, wait) = match request.send().await {
                Err(e) => {
                    let e = e.without_url();
                    (format!("network error: {e}"), self.retry.backoff(attempt))
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after_header(&response);
                    let bytes = response.bytes().await.unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse {
                            what,
                            reason: format!("not JSON: {e}"),
                        });
                    }
                    let (errcode, message, retry_after_ms) = matrix_error(&bytes);
                    match status {
                        StatusCode::UNAUTHORIZED => {
                            return Err(Error::Unauthorized {
                                what,
                                errcode,
                                message,
                            });
                        }
                        StatusCode::TOO_MANY_REQUESTS => (
                            format!("429 {errcode}: {message}"),
                            self.retry
                                .after_rate_limit(attempt, retry_after_ms.or(retry_after)),
                        ),
                        s if s.is_server_error() => (
                            format!("{} {errcode}: {message}", s.as_u16()),
                            self.retry.backoff(attempt),
                        ),
                        s => {
                            return Err(Error::Refused {
                                what,
                                status: s.as_u16(),
                                errcode,
                                message,
                            });
                        }
                    }
                }
            };
            if !self.retry.allows(attempt) {
                return Err(Error::GaveUp {
                    what,
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(call = %what, attempt, wait_ms = wait.as_millis() as u64, "homeserver call failed, retrying: {failure}");
            tokio::time::sleep(wait).await;
        }
    }
}

/// A `Retry-After: SECONDS` header.
fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let v = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// A Matrix error body's `errcode`, `error` and `retry_after_ms` (a body that is not one
/// gives `""` and its first 200 characters).
fn matrix_error(bytes: &[u8]) -> (String, String, Option<Duration>) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => (
            v.get("errcode")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.get("retry_after_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis),
        ),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(bytes).chars().take(200).collect(),
            None,
        ),
    }
}

fn string_field(v: &Value, field: &str, what: &str) -> Result<String, Error> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::BadResponse {
            what: what.to_string(),
            reason: format!("no string `{field}`"),
        })
}
