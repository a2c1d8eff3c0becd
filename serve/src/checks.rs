//! `POST /v1/check/join`, `/v1/check/invite`, `/v1/check/sender`: whether an instance
//! protecting the room refuses the user, answered from the shared index without the core.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::http::{AppState, bad_query};

/// The body's string fields `names`, or what is wrong with it (the text of a 400).
fn fields(body: &[u8], names: &[&str]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body: not JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!(
            "request body: expected an object with {}",
            names.join(", ")
        ));
    }
    (names.iter())
        .map(|n| match &v[*n] {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::Null => Err(format!("request body: field `{n}` is missing")),
            _ => Err(format!(
                "request body: field `{n}` must be a non-empty string"
            )),
        })
        .collect()
}

fn answer(s: &AppState, users: &[&str], room: &str) -> Response {
    let index = s.door.read().unwrap_or_else(|p| p.into_inner());
    axum::Json(index.answer(users, room)).into_response()
}

/// `{"user_id", "room_id"}`: may the user join the room?
pub(crate) async fn join(State(s): State<AppState>, body: Bytes) -> Response {
    match fields(&body, &["user_id", "room_id"]) {
        Ok(f) => answer(&s, &[&f[0]], &f[1]),
        Err(m) => bad_query(m),
    }
}

/// `{"inviter", "invitee", "room_id"}`: may the inviter invite the invitee? Refused when
/// either is.
pub(crate) async fn invite(State(s): State<AppState>, body: Bytes) -> Response {
    match fields(&body, &["inviter", "invitee", "room_id"]) {
        Ok(f) => answer(&s, &[&f[1], &f[0]], &f[2]),
        Err(m) => bad_query(m),
    }
}

/// `{"user_id", "room_id"}`: may the user send into the room?
pub(crate) async fn sender(State(s): State<AppState>, body: Bytes) -> Response {
    join(State(s), body).await
}
