//! [`Client`]: one user's view of the client-server API.

use serde_json::{Map, Value, json};

use crate::http::{Http, Method, encode, field, txn_id};
use crate::{Error, PolicyRule};

const V3: &str = "/_matrix/client/v3";

/// A user acting on the homeserver: a logged-in user, or an appservice user (the appservice's
/// `as_token` with `?user_id=` masquerading).
///
/// Cheap to clone. It holds only the homeserver's address and a token, so it stays valid
/// across a [`Synapse::restart`](crate::Synapse::restart) (tokens live in the database).
/// `Debug` does not show the token.
#[derive(Clone)]
pub struct Client {
    http: Http,
    token: String,
    user_id: String,
    /// Appservice masquerading: `?user_id=` is added to every request.
    masquerade: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.http.base_url())
            .field("user_id", &self.user_id)
            .field("masquerade", &self.masquerade)
            .finish_non_exhaustive()
    }
}

/// Options of `POST /createRoom`; [`RoomOptions::new`] makes a room version 12 room.
#[derive(Clone, Debug)]
pub struct RoomOptions {
    body: Map<String, Value>,
}

impl Default for RoomOptions {
    fn default() -> Self {
        let mut body = Map::new();
        body.insert("room_version".into(), json!("12"));
        RoomOptions { body }
    }
}

impl RoomOptions {
    /// A private (invite-only) room of room version 12.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `room_version` (`"12"` by default; `"11"` for rooms whose ids have a server part).
    pub fn with_version(self, version: &str) -> Self {
        self.with_field("room_version", json!(version))
    }

    /// Sets the room's name.
    pub fn with_name(self, name: &str) -> Self {
        self.with_field("name", json!(name))
    }

    /// Makes it a public room (`preset: public_chat`): anyone may join without an invite.
    pub fn public(self) -> Self {
        self.with_field("preset", json!("public_chat"))
    }

    /// Invites these users at creation.
    pub fn with_invites(self, user_ids: &[&str]) -> Self {
        self.with_field("invite", json!(user_ids))
    }

    /// Adds a state event to `initial_state`.
    pub fn with_initial_state(mut self, event_type: &str, state_key: &str, content: Value) -> Self {
        let list = self
            .body
            .entry("initial_state")
            .or_insert_with(|| json!([]));
        if let Value::Array(a) = list {
            a.push(json!({"type": event_type, "state_key": state_key, "content": content}));
        }
        self
    }

    /// Room version 12: makes these users creators too (`creation_content.additional_creators`),
    /// with the same implicit, unlimited power as the creator.
    pub fn with_additional_creators(self, user_ids: &[&str]) -> Self {
        self.with_field("creation_content", json!({"additional_creators": user_ids}))
    }

    /// Sets `power_level_content_override`. In room version 12 the creator must not appear in
    /// its `users` (Synapse answers 400): creators have unlimited power implicitly.
    pub fn with_power_levels(self, content: Value) -> Self {
        self.with_field("power_level_content_override", content)
    }

    /// Sets any other field of the request body.
    pub fn with_field(mut self, key: &str, value: Value) -> Self {
        self.body.insert(key.into(), value);
        self
    }
}

impl Client {
    pub(crate) fn new(http: Http, token: String, user_id: String, masquerade: bool) -> Self {
        Client {
            http,
            token,
            user_id,
            masquerade,
        }
    }

    /// The user this client acts as (`@localpart:server`).
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The homeserver's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The access token (or the appservice's `as_token`), for handing to code under test.
    /// Never log it.
    pub fn access_token(&self) -> &str {
        &self.token
    }

    /// `path` with the masquerading `user_id` query parameter when this is an appservice user.
    fn with_query(&self, path: &str) -> String {
        if self.masquerade {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}user_id={}", encode(&self.user_id))
        } else {
            path.to_string()
        }
    }

    /// Any request as this user: `path` starts with `/_matrix/` or `/_synapse/`; a 2xx answer
    /// is returned as JSON, anything else is an [`Error::Status`].
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.http
            .json(method, &self.with_query(path), Some(&self.token), body)
    }

    /// Like [`Client::request`], returning the answer's body exactly as served (for exports).
    pub fn request_text(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, Error> {
        self.http
            .text(method, &self.with_query(path), Some(&self.token), body)
    }

    /// `GET /account/whoami`: the user id the homeserver sees for this client.
    pub fn whoami(&self) -> Result<String, Error> {
        let path = format!("{V3}/account/whoami");
        let v = self.request(Method::Get, &path, None)?;
        field(&v, "user_id", Method::Get, &path)
    }

    /// `POST /createRoom`; returns the room id (in room version 12: `!` and 43 characters, no
    /// server part).
    pub fn create_room(&self, options: &RoomOptions) -> Result<String, Error> {
        let path = format!("{V3}/createRoom");
        let v = self.request(
            Method::Post,
            &path,
            Some(&Value::Object(options.body.clone())),
        )?;
        field(&v, "room_id", Method::Post, &path)
    }

    /// `PUT /rooms/{room}/state/{type}/{state_key}`; returns the event id.
    pub fn send_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<String, Error> {
        let path = format!(
            "{V3}/rooms/{}/state/{}/{}",
            encode(room_id),
            encode(event_type),
            encode(state_key)
        );
        let v = self.request(Method::Put, &path, Some(content))?;
        field(&v, "event_id", Method::Put, &path)
    }

    /// Sends a policy rule (a state event of type `m.policy.rule.*`); returns the event id.
    pub fn send_rule(&self, room_id: &str, rule: &PolicyRule) -> Result<String, Error> {
        self.send_state(
            room_id,
            &rule.event_type(),
            rule.state_key(),
            rule.content(),
        )
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}`: a message event; returns the event id.
    pub fn send_event(
        &self,
        room_id: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<String, Error> {
        let path = format!(
            "{V3}/rooms/{}/send/{}/{}",
            encode(room_id),
            encode(event_type),
            encode(&txn_id())
        );
        let v = self.request(Method::Put, &path, Some(content))?;
        field(&v, "event_id", Method::Put, &path)
    }

    /// Sends an `m.room.message` with `m.text` body; returns the event id.
    pub fn send_text(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_event(
            room_id,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": body}),
        )
    }

    /// `PUT /rooms/{room}/redact/{event}/{txn}`; returns the redaction's event id.
    pub fn redact(
        &self,
        room_id: &str,
        event_id: &str,
        reason: Option<&str>,
    ) -> Result<String, Error> {
        let path = format!(
            "{V3}/rooms/{}/redact/{}/{}",
            encode(room_id),
            encode(event_id),
            encode(&txn_id())
        );
        let body = match reason {
            Some(r) => json!({"reason": r}),
            None => json!({}),
        };
        let v = self.request(Method::Put, &path, Some(&body))?;
        field(&v, "event_id", Method::Put, &path)
    }

    /// `POST /rooms/{room}/invite`.
    pub fn invite(&self, room_id: &str, user_id: &str) -> Result<(), Error> {
        self.membership(room_id, "invite", json!({"user_id": user_id}))
    }

    /// `POST /join/{room}` (a room id or alias); returns the joined room's id.
    pub fn join(&self, room: &str) -> Result<String, Error> {
        let path = format!("{V3}/join/{}", encode(room));
        let v = self.request(Method::Post, &path, Some(&json!({})))?;
        field(&v, "room_id", Method::Post, &path)
    }

    /// `POST /rooms/{room}/leave`.
    pub fn leave(&self, room_id: &str) -> Result<(), Error> {
        self.membership(room_id, "leave", json!({}))
    }

    /// `POST /rooms/{room}/ban`.
    pub fn ban(&self, room_id: &str, user_id: &str, reason: Option<&str>) -> Result<(), Error> {
        self.membership(
            room_id,
            "ban",
            with_reason(json!({"user_id": user_id}), reason),
        )
    }

    /// `POST /rooms/{room}/unban`.
    pub fn unban(&self, room_id: &str, user_id: &str) -> Result<(), Error> {
        self.membership(room_id, "unban", json!({"user_id": user_id}))
    }

    /// `POST /rooms/{room}/kick`.
    pub fn kick(&self, room_id: &str, user_id: &str, reason: Option<&str>) -> Result<(), Error> {
        self.membership(
            room_id,
            "kick",
            with_reason(json!({"user_id": user_id}), reason),
        )
    }

    fn membership(&self, room_id: &str, action: &str, body: Value) -> Result<(), Error> {
        let path = format!("{V3}/rooms/{}/{action}", encode(room_id));
        self.request(Method::Post, &path, Some(&body)).map(drop)
    }

    /// `GET /rooms/{room}/state`: the room's current state events (client format).
    pub fn state(&self, room_id: &str) -> Result<Vec<Value>, Error> {
        let path = format!("{V3}/rooms/{}/state", encode(room_id));
        match self.request(Method::Get, &path, None)? {
            Value::Array(events) => Ok(events),
            other => Err(Error::Response {
                method: "GET",
                path,
                reason: format!("not an array: {other}"),
            }),
        }
    }

    /// `GET /rooms/{room}/state` exactly as served: the file shape `prr ingest` reads.
    pub fn state_export(&self, room_id: &str) -> Result<String, Error> {
        let path = format!("{V3}/rooms/{}/state", encode(room_id));
        self.request_text(Method::Get, &path, None)
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`: the content of one state event, `None`
    /// when there is none (404).
    pub fn state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, Error> {
        let path = format!(
            "{V3}/rooms/{}/state/{}/{}",
            encode(room_id),
            encode(event_type),
            encode(state_key)
        );
        match self.request(Method::Get, &path, None) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The membership of `user_id` in `room_id` (`join`, `ban`, ...) as the room's current
    /// state says it; `None` when the user has no member event there.
    pub fn membership_of(&self, room_id: &str, user_id: &str) -> Result<Option<String>, Error> {
        let content = self.state_event(room_id, "m.room.member", user_id)?;
        Ok(content.and_then(|c| c["membership"].as_str().map(str::to_string)))
    }

    /// The content of the room's `m.room.server_acl` (state key `""`), `None` when it has none.
    pub fn server_acl(&self, room_id: &str) -> Result<Option<Value>, Error> {
        self.state_event(room_id, "m.room.server_acl", "")
    }

    /// Sets `user_id`'s power level in `room_id`: the room's `m.room.power_levels` with
    /// `users[user_id] = level`, the rest kept; returns the event id. (Room version 12: the
    /// creator must not be listed, and this never lists it.)
    pub fn set_power_level(
        &self,
        room_id: &str,
        user_id: &str,
        level: i64,
    ) -> Result<String, Error> {
        let mut content =
            (self.state_event(room_id, "m.room.power_levels", "")?).unwrap_or_else(|| json!({}));
        if let Value::Object(m) = &mut content {
            let users = m.entry("users").or_insert_with(|| json!({}));
            if let Value::Object(u) = users {
                u.insert(user_id.into(), json!(level));
            }
        }
        self.send_state(room_id, "m.room.power_levels", "", &content)
    }

    /// `GET /rooms/{room}/messages` backwards from the newest event, page after page: the
    /// room's whole timeline as this user may see it, newest first, only the events that
    /// `filter` (a `RoomEventFilter`, e.g. `{"types": ["m.room.member"]}`) lets through.
    pub fn messages(&self, room_id: &str, filter: Option<&Value>) -> Result<Vec<Value>, Error> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!("{V3}/rooms/{}/messages?dir=b&limit=500", encode(room_id));
            if let Some(f) = filter {
                path.push_str(&format!("&filter={}", encode(&f.to_string())));
            }
            if let Some(token) = &from {
                path.push_str(&format!("&from={}", encode(token)));
            }
            let page = self.request(Method::Get, &path, None)?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            let end = page["end"].as_str().map(str::to_string);
            let done = chunk.is_empty() || end.is_none();
            events.extend(chunk);
            if done {
                return Ok(events);
            }
            from = end;
        }
    }

    /// `PUT /user/{userId}/account_data/{type}`: sets this user's global account data of
    /// `event_type` to `content` (a Draupnir bot's configuration lives there).
    pub fn set_account_data(&self, event_type: &str, content: &Value) -> Result<(), Error> {
        let path = format!(
            "{V3}/user/{}/account_data/{}",
            encode(&self.user_id),
            encode(event_type)
        );
        self.request(Method::Put, &path, Some(content)).map(drop)
    }

    /// `GET /user/{userId}/account_data/{type}`: this user's global account data of
    /// `event_type`, `None` when there is none (404).
    pub fn account_data(&self, event_type: &str) -> Result<Option<Value>, Error> {
        let path = format!(
            "{V3}/user/{}/account_data/{}",
            encode(&self.user_id),
            encode(event_type)
        );
        match self.request(Method::Get, &path, None) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /rooms/{room}/event/{event}`: one event of the room (client format).
    pub fn event(&self, room_id: &str, event_id: &str) -> Result<Value, Error> {
        let path = format!("{V3}/rooms/{}/event/{}", encode(room_id), encode(event_id));
        self.request(Method::Get, &path, None)
    }

    /// `GET /joined_rooms`.
    pub fn joined_rooms(&self) -> Result<Vec<String>, Error> {
        let path = format!("{V3}/joined_rooms");
        let v = self.request(Method::Get, &path, None)?;
        let rooms = v.get("joined_rooms").and_then(Value::as_array);
        Ok(rooms
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect())
    }

    /// Synapse's admin API `GET /_synapse/admin/v1/rooms/{room}/state` (`{"state": [...]}`,
    /// another shape `prr ingest` reads), exactly as served. Needs a server admin.
    pub fn admin_state_export(&self, room_id: &str) -> Result<String, Error> {
        let path = format!("/_synapse/admin/v1/rooms/{}/state", encode(room_id));
        self.request_text(Method::Get, &path, None)
    }

    /// `GET /capabilities`: `m.room_versions` says the default and the available versions.
    pub fn capabilities(&self) -> Result<Value, Error> {
        self.request(Method::Get, &format!("{V3}/capabilities"), None)
    }
}

fn with_reason(mut body: Value, reason: Option<&str>) -> Value {
    if let (Some(r), Value::Object(m)) = (reason, &mut body) {
        m.insert("reason".into(), json!(r));
    }
    body
}
