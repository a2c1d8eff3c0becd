//! The HTTP API under `/v1`, `/metrics`, and the middleware: the API token and the request
//! counters.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prr_engine::{Error, Seq};
use prr_replicas::{REPLICAS, parse_file, status_json};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{MAX_WAIT_SECS, Registration, Token};
use crate::core::{Command, Report, ask};
use crate::door::SharedIndex;
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub core: Sender<Command>,
    pub metrics: Arc<Metrics>,
    /// The last committed seq, sent by the core after each commit.
    pub seq: watch::Receiver<u64>,
    /// Becomes `true` when the service starts stopping: waiting requests return.
    pub stopping: watch::Receiver<bool>,
    pub api_token: Option<Arc<Token>>,
    pub registration: Option<Arc<Registration>>,
    pub homeserver: Option<Arc<str>>,
    pub store: Arc<std::path::Path>,
    /// Catch-up's progress, with a homeserver source.
    pub catch_up: Option<crate::catchup::Shared>,
    /// The index of the checks at the door, read without the core.
    pub door: SharedIndex,
    /// The nice value of the threads that parse ingest and preview bodies.
    pub bulk_priority: crate::BulkPriority,
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The answer while the core is stopping.
pub(crate) fn stopping() -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, "prr serve is stopping")
}

/// The status code of a runtime error: the caller's mistakes are 4xx, a storage failure 503
/// (retry later), anything else 500.
pub(crate) fn engine_status(e: &Error) -> StatusCode {
    match e {
        Error::UnknownReplica { .. } => StatusCode::NOT_FOUND,
        Error::FutureSeq { .. } | Error::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        Error::HistoryUnavailable(_) => StatusCode::GONE,
        e if e.is_storage_failure() || e.is_in_doubt() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn engine_error(e: &Error) -> Response {
    text(engine_status(e), e.to_string())
}

fn ndjson(rows: &[Value]) -> Response {
    let mut body = String::new();
    for r in rows {
        body.push_str(&r.to_string());
        body.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// Equal, in time that does not depend on where they differ (only on the length).
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(req: &axum::http::HeaderMap) -> Option<&str> {
    let value = req.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// With an API token, a `/v1` request without `Authorization: Bearer <token>` is 401.
pub(crate) async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.api_token {
        let ok =
            bearer(req.headers()).is_some_and(|t| same_secret(t.as_bytes(), token.0.as_bytes()));
        if !ok {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: send `Authorization: Bearer <token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Counts every request by route (its pattern) and status.
pub(crate) async fn count_requests(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = (req.extensions().get::<MatchedPath>())
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    s.metrics.http(&route, status);
    tracing::debug!(%method, route, status, "request");
    response
}

/// Query parameters by name; an unknown or repeated one is an error naming it (a 400).
fn params(
    query: Vec<(String, String)>,
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in query {
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "unknown query parameter `{k}`; known: {}",
                known.join(", ")
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("query parameter `{k}` is given twice"));
        }
    }
    Ok(out)
}

/// The 400 of a bad query.
pub(crate) fn bad_query(message: String) -> Response {
    text(StatusCode::BAD_REQUEST, message)
}

fn number(p: &std::collections::BTreeMap<String, String>, k: &str) -> Result<Option<u64>, String> {
    match p.get(k) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            format!("query parameter `{k}` must be a non-negative integer, found `{v}`")
        }),
    }
}

/// The name `prr show` takes for the quarantined source deltas (no replica has it).
const POISONED: &str = "poisoned";

/// `GET /v1/replicas/{name}?partition=KEY&as_of=SEQ`: the lines of `prr show --format ndjson`
/// (`poisoned`: the quarantined source deltas, as `prr show poisoned`).
pub(crate) async fn show(
    State(s): State<AppState>,
    Path(replica): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let p = match params(query, &["partition", "as_of"]) {
        Ok(p) => p,
        Err(m) => return bad_query(m),
    };
    let as_of = match number(&p, "as_of") {
        Ok(a) => a.map(Seq),
        Err(m) => return bad_query(m),
    };
    let partition = p.get("partition").cloned();
    if replica == POISONED {
        if partition.is_some() || as_of.is_some() {
            return bad_query(
                "`poisoned` lists the quarantined source deltas: it takes neither partition nor as_of"
                    .into(),
            );
        }
        return match ask(&s.core, |reply| Command::Poisoned { reply }).await {
            None => stopping(),
            Some(rows) => ndjson(&rows),
        };
    }
    let got = ask(&s.core, |reply| Command::Show {
        replica,
        partition,
        as_of,
        reply,
    })
    .await;
    match got {
        None => stopping(),
        Some(Ok(rows)) => ndjson(&rows),
        Some(Err(e)) => engine_error(&e),
    }
}

/// `GET /v1/replicas/{name}/deltas?since=SEQ&wait=SECONDS`: the lines of `prr deltas`; with
/// `wait`, waits (at most [`MAX_WAIT_SECS`]) until there is one.
pub(crate) async fn deltas(
    State(s): State<AppState>,
    Path(replica): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let p = match params(query, &["since", "wait"]) {
        Ok(p) => p,
        Err(m) => return bad_query(m),
    };
    let (since, wait) = match (number(&p, "since"), number(&p, "wait")) {
        (Ok(s), Ok(w)) => (Seq(s.unwrap_or(0)), w.unwrap_or(0).min(MAX_WAIT_SECS)),
        (Err(m), _) | (_, Err(m)) => return bad_query(m),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut seq = s.seq.clone();
    let mut stopping_rx = s.stopping.clone();
    loop {
        // A commit after this point wakes the wait below.
        seq.borrow_and_update();
        let got = ask(&s.core, |reply| Command::Deltas {
            replica: replica.clone(),
            since,
            reply,
        })
        .await;
        let rows = match got {
            None => return stopping(),
            Some(Err(e)) => return engine_error(&e),
            Some(Ok(rows)) => rows,
        };
        if !rows.is_empty() || wait == 0 || *stopping_rx.borrow() {
            return ndjson(&rows);
        }
        tokio::select! {
            changed = seq.changed() => if changed.is_err() { return ndjson(&[]) },
            _ = tokio::time::sleep_until(deadline) => return ndjson(&[]),
            _ = stopping_rx.changed() => return ndjson(&[]),
        }
    }
}

/// Parses a body as `prr ingest` reads files, on a blocking thread at `priority` (bulk work:
/// the checks at the door go first).
async fn parse_body(
    body: Bytes,
    priority: crate::BulkPriority,
) -> Result<Result<Vec<prr_replicas::SourceItem>, prr_replicas::ParseError>, tokio::task::JoinError>
{
    tokio::task::spawn_blocking(move || {
        crate::priority::lower_or_warn(priority, "body parser");
        parse_file("request body", &body)
    })
    .await
}

/// `POST /v1/ingest`: one source delta from a body in any shape `prr ingest` reads.
pub(crate) async fn ingest(State(s): State<AppState>, body: Bytes) -> Response {
    let parsed = parse_body(body, s.bulk_priority).await;
    let items = match parsed {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match ask(&s.core, |reply| Command::Ingest { items, reply }).await {
        None => stopping(),
        Some(Ok(seq)) => axum::Json(json!({ "seq": seq.0 })).into_response(),
        Some(Err(e)) => engine_error(&e),
    }
}

/// `POST /v1/preview?emit=REPLICA,...`: the deltas that ingesting the body (any shape `prr
/// ingest` reads; one source delta) would cause, as `prr preview --format ndjson` prints
/// them; nothing is stored.
pub(crate) async fn preview(
    State(s): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let p = match params(query, &["emit"]) {
        Ok(p) => p,
        Err(m) => return bad_query(m),
    };
    let emit: Vec<String> = (p.get("emit").into_iter())
        .flat_map(|v| v.split(','))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(r) = emit.iter().find(|r| !REPLICAS.contains(&r.as_str())) {
        return bad_query(format!(
            "unknown replica `{r}` in `emit`; the replicas are: {}",
            REPLICAS.join(", ")
        ));
    }
    let parsed = parse_body(body, s.bulk_priority).await;
    let items = match parsed {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match ask(&s.core, |reply| Command::Preview { items, emit, reply }).await {
        None => stopping(),
        Some(Ok(rows)) => ndjson(&rows),
        Some(Err(e)) => engine_error(&e),
    }
}

/// `GET /v1/explain?instance=I&user=U[&room=R]` (why `I` bans `U` or not) or
/// `GET /v1/explain?instance=I&acl=true` (its server ACL): `prr explain --format json`.
pub(crate) async fn explain(
    State(s): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let mut p = match params(query, &["instance", "user", "room", "acl"]) {
        Ok(p) => p,
        Err(m) => return bad_query(m),
    };
    let Some(instance) = p.remove("instance") else {
        return bad_query("query parameter `instance` is required".into());
    };
    let acl = match p.remove("acl").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return bad_query(format!(
                "query parameter `acl` must be true or false, found `{v}`"
            ));
        }
    };
    let (user, room) = (p.remove("user"), p.remove("room"));
    if acl == user.is_some() {
        return bad_query("give either `user` or `acl=true`".into());
    }
    if acl && room.is_some() {
        return bad_query("`room` goes with `user`, not with `acl=true`".into());
    }
    let got = ask(&s.core, |reply| Command::Explain {
        instance,
        user,
        room,
        reply,
    })
    .await;
    match got {
        None => stopping(),
        Some(Ok(v)) => axum::Json(v).into_response(),
        Some(Err(e)) => engine_error(&e),
    }
}

/// `GET /v1/status`: `prr status --format json`, plus `sources`, `instances` (each with
/// `caught_up`) and `caught_up`.
pub(crate) async fn status(State(s): State<AppState>) -> Response {
    let report = match ask(&s.core, |reply| Command::Status { reply }).await {
        None => return stopping(),
        Some(Err(e)) => return engine_error(&e),
        Some(Ok(r)) => r,
    };
    axum::Json(status_value(&s, &report)).into_response()
}

fn status_value(s: &AppState, report: &Report) -> Value {
    let mut v = status_json(&report.status, &s.store);
    let src = &report.sources;
    let state = if src.storage_fault.is_some() {
        "storage_failing"
    } else {
        "ready"
    };
    let fault = (src.storage_fault.as_ref()).map(|(m, at)| json!({"error": m, "unix_ms": at}));
    let mut sources = serde_json::Map::new();
    sources.insert(
        "api".into(),
        json!({
            "state": state,
            "last_seq": src.api_last_seq,
            "deltas": src.api_deltas,
            "storage_fault": fault,
        }),
    );
    if let Some(reg) = &s.registration {
        let last = src.appservice.as_ref().map(|t| {
            json!({"txn_id": t.txn_id, "outcome": t.outcome, "seq": t.seq, "unix_ms": t.unix_ms})
        });
        sources.insert(
            "appservice".into(),
            json!({
                "state": state,
                "id": reg.id,
                "homeserver": s.homeserver.as_deref(),
                "transactions": src.appservice_transactions,
                "last_transaction": last,
            }),
        );
    }
    // Caught up: without a homeserver source the store is all there is to catch up with;
    // with one, an instance is once every room it names has been fetched (see `catchup`).
    let catch_up = (s.catch_up.as_ref()).map(|c| {
        c.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    });
    let instance_caught_up = |i: &str| catch_up.as_ref().is_none_or(|c| c.caught_up(i));
    let instances: Vec<Value> = (report.instances.iter())
        .map(|i| json!({"id": i, "caught_up": instance_caught_up(i)}))
        .collect();
    let caught_up = report.instances.iter().all(|i| instance_caught_up(i));
    match &catch_up {
        Some(c) if c.sync.is_some() => {
            sources.insert("sync".into(), c.sync.clone().unwrap_or_default());
        }
        Some(c) => {
            sources.insert("catch_up".into(), c.to_json());
        }
        None => {}
    }
    let o = v.as_object_mut().expect("status is an object");
    o.insert("sources".into(), Value::Object(sources));
    o.insert("instances".into(), Value::Array(instances));
    o.insert("caught_up".into(), Value::Bool(caught_up));
    v
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
    let report = match ask(&s.core, |reply| Command::Status { reply }).await {
        None => return stopping(),
        Some(Err(e)) => return engine_error(&e),
        Some(Ok(r)) => r,
    };
    let body = s.metrics.render(&report.status);
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(body))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn errors_map_to_statuses() {
        let unknown = Error::UnknownReplica {
            name: "x".into(),
            known: vec![],
        };
        assert_eq!(engine_status(&unknown), StatusCode::NOT_FOUND);
        let future = Error::FutureSeq {
            seq: Seq(9),
            last: Seq(1),
        };
        assert_eq!(engine_status(&future), StatusCode::BAD_REQUEST);
        assert_eq!(
            engine_status(&Error::WorkerFailed("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
