//! The client against a fake homeserver on loopback: retries, refusals, masquerading, path
//! encoding, and a Draupnir manifest read from account data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prr_homeserver::{AccessToken, Error, Homeserver, Retry, draupnir};
use serde_json::{Value, json};

const TOKEN: &str = "tok-3f9a";

/// The requests seen, by raw path and query.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers by raw path; counts attempts per path for the flaky routes.
async fn fake(
    axum::extract::State(seen): axum::extract::State<Seen>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let raw = uri.to_string();
    let path = uri.path().to_string();
    let attempts = {
        let mut seen = seen.lock().unwrap();
        seen.push(raw.clone());
        seen.iter()
            .filter(|s| s.split('?').next() == Some(&path))
            .count()
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
            ),
        )
            .into_response();
    }
    let json = |status: StatusCode, v: Value| (status, axum::Json(v)).into_response();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    match path.as_str() {
        "/_matrix/client/v3/account/whoami" => json(
            StatusCode::OK,
            json!({"user_id": query.get("user_id").cloned().unwrap_or("@bot:x".into())}),
        ),
        "/_matrix/client/v3/rooms/!rate:x/state" if attempts <= 2 => json(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 30}),
        ),
        "/_matrix/client/v3/rooms/!flaky:x/state" if attempts <= 2 => {
            (StatusCode::BAD_GATEWAY, "upstream gone").into_response()
        }
        "/_matrix/client/v3/rooms/!rate:x/state" | "/_matrix/client/v3/rooms/!flaky:x/state" => {
            json(
                StatusCode::OK,
                json!([{"type": "m.room.create", "state_key": "", "event_id": "$c", "sender": "@a:x", "content": {}}]),
            )
        }
        "/_matrix/client/v3/rooms/!down:x/state" => {
            (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response()
        }
        "/_matrix/client/v3/rooms/!secret:x/state" => json(
            StatusCode::FORBIDDEN,
            json!({"errcode": "M_FORBIDDEN", "error": "You are not in the room"}),
        ),
        "/_matrix/client/v3/user/@bot:x/account_data/org.matrix.mjolnir.protected_rooms" => json(
            StatusCode::OK,
            json!({"rooms": ["https://matrix.to/#/!p2:x?via=x", "!p1:x", "!p1:x"]}),
        ),
        "/_matrix/client/v3/user/@bot:x/account_data/org.matrix.mjolnir.watched_lists" => json(
            StatusCode::OK,
            json!({"references": ["https://matrix.to/#/%23bans%3Ax", "!l2:x"]}),
        ),
        "/_matrix/client/v3/directory/room/%23bans:x" => json(
            StatusCode::OK,
            json!({"room_id": "!l1:x", "servers": ["x"]}),
        ),
        "/_matrix/client/v3/sync" => json(
            StatusCode::OK,
            json!({
                "next_batch": format!("after-{}", query.get("since").cloned().unwrap_or_default()),
                "rooms": {"join": {"!r:x": {"timeline": {"events": [
                    {"type": "m.room.member", "state_key": "@u:x", "event_id": "$m", "sender": "@u:x", "content": {"membership": "join"}}
                ]}}}}
            }),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            json!({"errcode": "M_NOT_FOUND", "error": "Not found"}),
        ),
    }
}

/// A fake homeserver on a free loopback port; the requests it saw.
async fn start() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new().fallback(fake).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn quick() -> Retry {
    Retry {
        first: Duration::from_millis(10),
        max: Duration::from_millis(100),
        attempts: Some(4),
    }
}

fn client(base: &str) -> Homeserver {
    Homeserver::new(base, AccessToken::new(TOKEN))
        .unwrap()
        .with_retry(quick())
}

fn count(seen: &Seen, path: &str) -> usize {
    (seen.lock().unwrap().iter())
        .filter(|s| s.split('?').next() == Some(path))
        .count()
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_they_pass() {
    let (base, seen) = start().await;
    let hs = client(&base);
    for room in ["!rate:x", "!flaky:x"] {
        let state = hs.room_state(room).await.unwrap();
        assert_eq!(state.len(), 1);
        assert_eq!(state[0]["room_id"], room, "the room id is filled in");
        let path = format!("/_matrix/client/v3/rooms/{room}/state");
        assert_eq!(
            count(&seen, &path),
            3,
            "{room}: two failures, then the answer"
        );
    }
    let e = hs.room_state("!down:x").await.unwrap_err();
    assert!(matches!(e, Error::GaveUp { attempts: 4, .. }), "{e:?}");
    assert!(e.to_string().contains("503"), "{e}");
}

#[tokio::test]
async fn a_refused_token_and_other_refusals_are_not_retried() {
    let (base, seen) = start().await;
    let wrong = Homeserver::new(&base, AccessToken::new("wrong-token"))
        .unwrap()
        .with_retry(quick());
    let e = wrong.whoami().await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(e.to_string().contains("M_UNKNOWN_TOKEN"), "{e}");
    assert!(!e.to_string().contains("wrong-token") && !format!("{e:?}").contains("wrong-token"));
    assert_eq!(count(&seen, "/_matrix/client/v3/account/whoami"), 1);
    let e = client(&base).room_state("!secret:x").await.unwrap_err();
    assert!(
        matches!(&e, Error::Refused { status: 403, errcode, .. } if errcode == "M_FORBIDDEN"),
        "{e:?}"
    );
    assert_eq!(count(&seen, "/_matrix/client/v3/rooms/!secret:x/state"), 1);
    assert!(!format!("{:?}", client(&base)).contains(TOKEN));
}

#[tokio::test]
async fn a_homeserver_that_is_not_there_is_retried_then_given_up() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = client(&format!("http://127.0.0.1:{port}"))
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GaveUp { attempts: 4, .. }), "{e:?}");
    assert!(e.to_string().contains("network error"), "{e}");
}

#[tokio::test]
async fn an_appservice_masquerades_with_user_id() {
    let (base, seen) = start().await;
    let hs = client(&base);
    assert_eq!(hs.whoami().await.unwrap(), "@bot:x");
    let bot = hs.acting_as("@d4a_1:x");
    assert_eq!(bot.whoami().await.unwrap(), "@d4a_1:x");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.ends_with("?user_id=%40d4a_1%3Ax"))
    );
}

#[tokio::test]
async fn sync_passes_since_and_reads_the_batch() {
    let (base, seen) = start().await;
    let hs = client(&base);
    let first = hs.sync(None, Duration::from_millis(0)).await.unwrap();
    assert_eq!(first.next_batch, "after-");
    let next = hs
        .sync(Some(&first.next_batch), Duration::from_millis(0))
        .await
        .unwrap();
    assert_eq!(next.next_batch, "after-after-");
    assert_eq!(next.events().count(), 1);
    assert_eq!(next.events().next().unwrap()["room_id"], "!r:x");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.contains("since=after-"))
    );
}

#[tokio::test]
async fn a_draupnir_manifest_comes_from_account_data_with_aliases_resolved() {
    let (base, seen) = start().await;
    let hs = client(&base);
    let manifest = draupnir::instance_manifest(&hs, "@bot:x").await.unwrap();
    assert_eq!(
        manifest,
        json!({"instances": [{"id": "@bot:x", "watch": ["!l1:x", "!l2:x"], "protect": ["!p1:x", "!p2:x"]}]})
    );
    // The alias went out percent-encoded (`#` would end the path).
    assert_eq!(
        count(&seen, "/_matrix/client/v3/directory/room/%23bans:x"),
        1
    );
    // An account without the account data has empty lists.
    let other = draupnir::instance_manifest(&hs, "@other:x").await.unwrap();
    assert_eq!(
        other,
        json!({"instances": [{"id": "@other:x", "watch": [], "protect": []}]})
    );
}

#[test]
fn a_base_url_that_is_not_http_is_refused() {
    for bad in ["ftp://x", "not a url", "http://x/?a=b", "unix:/run/x"] {
        let e = Homeserver::new(bad, AccessToken::new(TOKEN)).unwrap_err();
        assert!(matches!(e, Error::BadUrl { .. }), "{bad}: {e:?}");
    }
    let hs = Homeserver::new("https://m.example.org/prefix", AccessToken::new(TOKEN)).unwrap();
    assert_eq!(hs.base_url().as_str(), "https://m.example.org/prefix/");
}

#[test]
fn a_token_file_is_trimmed_and_an_empty_one_refused() {
    let dir = std::env::temp_dir().join(format!("prr-hs-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "  syt_abc\n").unwrap();
    assert_eq!(AccessToken::from_file(&path).unwrap().secret(), "syt_abc");
    std::fs::write(&path, "\n").unwrap();
    let e = AccessToken::from_file(&path).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
