//! The appservice source: the homeserver's transactions (`PUT
//! /_matrix/app/v1/transactions/{txnId}`, and the legacy `PUT /transactions/{txnId}`), its
//! ping, and the user and room queries (prr claims none).
//!
//! A transaction's state events and redactions become one source delta, durable before the
//! 200, exactly once by event ID ([`prr_replicas::Matrix::ingest_received`]): transaction IDs
//! are not unique over time (Synapse on SQLite reuses them after a restart), event IDs are.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use prr_engine::Error;
use serde_json::{Value, json};

use crate::core::{Command, ask};
use crate::http::{AppState, bearer, same_secret};
use crate::received::received;

/// The appservice routes (mounted only with a registration).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .route("/transactions/{txn_id}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user_id}", get(not_found))
        .route("/_matrix/app/v1/rooms/{alias}", get(not_found))
        .route("/users/{user_id}", get(not_found))
        .route("/rooms/{alias}", get(not_found))
}

/// A Matrix error answer.
fn matrix_error(status: StatusCode, errcode: &str, error: impl Into<String>) -> Response {
    let body = json!({"errcode": errcode, "error": error.into()});
    (status, axum::Json(body)).into_response()
}

/// The homeserver's token, from `Authorization: Bearer` or the legacy `access_token` query
/// parameter; `None` when it is right, else the 403.
fn check_hs_token(
    s: &AppState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Option<Response> {
    let reg = s.registration.as_ref()?;
    let given = bearer(headers).or_else(|| {
        (query.iter())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.as_str())
    });
    match given {
        Some(t) if same_secret(t.as_bytes(), reg.hs_token.as_bytes()) => None,
        _ => {
            s.metrics.transaction("forbidden");
            Some(matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "missing or wrong homeserver token (hs_token)",
            ))
        }
    }
}

async fn ping(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(denied) = check_hs_token(&s, &headers, &query) {
        return denied;
    }
    axum::Json(json!({})).into_response()
}

async fn not_found(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(denied) = check_hs_token(&s, &headers, &query) {
        return denied;
    }
    matrix_error(
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
        "prr provides no users and no rooms",
    )
}

async fn transaction(
    State(s): State<AppState>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    if let Some(denied) = check_hs_token(&s, &headers, &query) {
        return denied;
    }
    let events = match transaction_events(&body) {
        Ok(events) => events,
        Err(r) => {
            s.metrics.transaction("bad_json");
            return r;
        }
    };
    let received = received(&txn_id, events);
    let got = ask(&s.core, |reply| Command::Transaction {
        txn_id: txn_id.clone(),
        events: received,
        reply,
    })
    .await;
    match got {
        None => {
            s.metrics.transaction("unavailable");
            matrix_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "prr serve is stopping",
            )
        }
        Some(Ok(seq)) => {
            let outcome = if seq.is_some() {
                "applied"
            } else {
                "duplicate"
            };
            s.metrics.transaction(outcome);
            tracing::info!(txn_id, outcome, seq = seq.map(|s| s.0), "transaction");
            axum::Json(json!({})).into_response()
        }
        Some(Err(e)) => transaction_error(&s, &txn_id, &e),
    }
}

/// A failed transaction: 503 for a storage failure (the homeserver retries it later), 500
/// otherwise; nothing of it is stored unless the store could not tell (then the retry is
/// deduplicated by event ID).
fn transaction_error(s: &AppState, txn_id: &str, e: &Error) -> Response {
    tracing::warn!(txn_id, error = %e, "transaction failed");
    if e.is_storage_failure() || e.is_in_doubt() {
        s.metrics.transaction("unavailable");
        matrix_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            format!("storage unavailable, retry later: {e}"),
        )
    } else {
        s.metrics.transaction("failed");
        matrix_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            e.to_string(),
        )
    }
}

/// The `events` of a transaction body; a body that is not JSON is `M_NOT_JSON`, one that is
/// not an object with an `events` array `M_BAD_JSON` (both 400).
#[allow(clippy::result_large_err)]
fn transaction_events(body: &[u8]) -> Result<Vec<Value>, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        matrix_error(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            format!("the body is not JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(mut o) => match o.remove("events") {
            Some(Value::Array(events)) => Ok(events),
            _ => Err(matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "not a transaction: `events` must be an array",
            )),
        },
        _ => Err(matrix_error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "not a transaction: the body must be an object with an `events` array",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prr_replicas::Received;

    #[test]
    fn state_events_and_redactions_are_kept_and_invalid_ones_rejected() {
        let events = vec![
            json!({"event_id": "$m", "room_id": "!r", "type": "m.room.message", "sender": "@a:x",
                   "content": {"body": "hi"}}),
            json!({"event_id": "$s", "room_id": "!r", "type": "m.room.member", "state_key": "@a:x",
                   "sender": "@a:x", "content": {"membership": "join"}}),
            json!({"event_id": "$bad", "room_id": "!r", "type": "m.room.member", "state_key": "@b:x",
                   "sender": 5, "content": {}}),
            json!({"event_id": "$red", "room_id": "!r", "type": "m.room.redaction", "sender": "@a:x",
                   "redacts": "$s", "content": {}}),
            json!("not an event"),
        ];
        let got = received("7", events);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], Received::Valid(e) if e.event_id == "$s"));
        match &got[1] {
            Received::Invalid {
                event_id,
                state_key,
                reason,
                ..
            } => {
                assert_eq!(event_id, "$bad");
                assert_eq!(state_key, "@b:x");
                assert!(reason.contains("sender"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[2], Received::Valid(e) if e.event_id == "$red"));
        assert!(
            matches!(&got[3], Received::Invalid { event_id, .. } if event_id.starts_with("~sha256:"))
        );
    }

    #[test]
    fn bodies_that_are_not_transactions_are_refused() {
        assert!(transaction_events(br#"{"events": []}"#).unwrap().is_empty());
        for (body, code) in [
            (&b"nope"[..], "M_NOT_JSON"),
            (b"[]", "M_BAD_JSON"),
            (br#"{"events": {}}"#, "M_BAD_JSON"),
            (br#"{"other": []}"#, "M_BAD_JSON"),
        ] {
            let r = transaction_events(body).unwrap_err();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{code}");
        }
    }
}
