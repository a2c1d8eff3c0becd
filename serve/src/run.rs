//! Starting and stopping the service: the core thread, the listener, the signals.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use prr_homeserver::{AccessToken, Homeserver};
use prr_replicas::Matrix;
use tokio::sync::watch;

use crate::appservice;
use crate::bot;
use crate::catchup;
use crate::checks;
use crate::config::{MAX_BODY_BYTES, ServeConfig};
use crate::core::Core;
use crate::door::Door;
use crate::enact;
use crate::error::Error;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::priority;

/// Runs `prr serve` until SIGTERM or SIGINT: opens the store (`config`'s runtime), listens,
/// prints `listening on ADDR` on standard output, serves; then stops accepting, finishes the
/// requests in flight, captures revisions and returns.
pub fn serve(mut config: ServeConfig) -> Result<(), Error> {
    // The captures every `revision_every` deltas start in the background, from the core: the
    // runtime's own would run in the commit that reaches the count.
    config.revision_every = config.runtime.revision_every();
    let runtime = config.runtime.clone().with_revision_every(None);
    serve_with(config, move || Matrix::start(runtime))
}

/// [`serve`] on the Matrix replicas that `start` opens (on the core thread), e.g. a runtime
/// on a store with a fault-injecting backend in tests.
pub fn serve_with(
    config: ServeConfig,
    start: impl FnOnce() -> Result<Matrix, prr_engine::Error> + Send + 'static,
) -> Result<(), Error> {
    // The options are checked before the store is opened.
    let addr = config.bind_addr()?;
    if config.enact.is_some() && config.homeserver.is_none() {
        return Err(Error::Config(
            "--enact needs a homeserver: --homeserver URL with --registration FILE or \
             --access-token-file FILE"
                .into(),
        ));
    }
    let metrics = Arc::new(Metrics::new());
    let (core_tx, core_rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (seq_tx, seq_rx) = watch::channel(0u64);
    let core_metrics = metrics.clone();
    let interval = config.revision_interval;
    let every = config.revision_every;
    let dedup_retention = config.dedup_retention;
    let compact_every = config.compact_every;
    let bulk_priority = config.bulk_priority;
    let core = std::thread::Builder::new()
        .name("prr-core".into())
        .spawn(move || {
            // Before the runtime starts: its dataflow worker threads inherit the priority.
            priority::lower_or_warn(bulk_priority, "core thread");
            let mut m = match start() {
                Ok(m) => m,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return Ok(());
                }
            };
            let door = match Door::start(&mut m) {
                Ok(door) => door,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return Ok(());
                }
            };
            seq_tx.send_replace(m.runtime().last_seq().0);
            let _ = started_tx.send(Ok(door.shared()));
            Core::new(m, core_metrics, seq_tx, (interval, every), door)
                .with_dedup_retention(dedup_retention)
                .with_compact_every(compact_every)
                .run(core_rx)
        })
        .map_err(|e| Error::Config(format!("cannot start the core thread: {e}")))?;
    let door = match started_rx.recv() {
        Ok(Ok(door)) => door,
        Ok(Err(e)) => {
            let _ = core.join();
            return Err(e.into());
        }
        Err(_) => return Err(Error::CoreFailed),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the HTTP runtime: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let catch_up = match (&config.homeserver, &config.registration) {
        (Some(url), Some(reg)) => {
            let hs = Homeserver::new(url, AccessToken::new(reg.as_token.clone()))
                .map_err(|e| Error::Config(format!("--homeserver: {e}")))?;
            let shared = catchup::Shared::default();
            rt.spawn(catchup::run(
                hs,
                core_tx.clone(),
                seq_rx.clone(),
                stop_rx.clone(),
                config.resync_every,
                shared.clone(),
            ));
            Some(shared)
        }
        _ => None,
    };
    let catch_up = match (&config.homeserver, &config.access_token) {
        (Some(url), Some(token)) => {
            let hs = Homeserver::new(url, AccessToken::new(token.0.clone()))
                .map_err(|e| Error::Config(format!("--homeserver: {e}")))?;
            // A token the homeserver refuses stops the start; a homeserver that does not
            // answer yet is waited for by the source.
            let once = hs.clone().with_retry(prr_homeserver::Retry {
                attempts: Some(1),
                ..Default::default()
            });
            let user = match rt.block_on(once.whoami()) {
                Ok(user) => Some(user),
                Err(e) if e.is_unauthorized() => return Err(Error::Unauthorized(e.to_string())),
                Err(e) => {
                    tracing::warn!(error = %e, "the homeserver does not answer yet; retrying");
                    None
                }
            };
            let shared = catchup::Shared::default();
            let (core, stopping, task_shared) = (core_tx.clone(), stop_rx.clone(), shared.clone());
            rt.spawn(async move {
                let user = match user {
                    Some(u) => u,
                    None => match hs.whoami().await {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::error!(error = %e, "bot mode stopped");
                            return;
                        }
                    },
                };
                bot::run(hs, user, core, stopping, task_shared).await
            });
            Some(shared)
        }
        _ => catch_up,
    };
    if let (Some(enact), Some(shared), Some(url)) = (&config.enact, &catch_up, &config.homeserver) {
        let token = match (&config.registration, &config.access_token) {
            (Some(reg), _) => reg.as_token.clone(),
            (None, Some(token)) => token.0.clone(),
            (None, None) => unreachable!("a homeserver source has a token"),
        };
        let hs = Homeserver::new(url, AccessToken::new(token))
            .map_err(|e| Error::Config(format!("--homeserver: {e}")))?
            .with_retry(enact::RETRY);
        let appservice = config.registration.is_some();
        let (core, enact, shared) = (core_tx.clone(), enact.clone(), shared.clone());
        let (seq, stopping) = (seq_rx.clone(), stop_rx.clone());
        rt.spawn(async move {
            let Some(acting) = enact::acting(hs, appservice).await else {
                return;
            };
            let enactor = enact::Enactor::new(acting, core, enact);
            enact::run(enactor, shared, seq, stopping).await
        });
    }
    let state = AppState {
        core: core_tx,
        metrics,
        seq: seq_rx,
        stopping: stop_rx,
        api_token: config.api_token.clone().map(Arc::new),
        registration: config.registration.clone().map(Arc::new),
        homeserver: config.homeserver.as_deref().map(Arc::from),
        store: Arc::from(config.store.as_path()),
        catch_up,
        door,
        bulk_priority,
    };
    let served = rt.block_on(async move {
        let listener =
            (tokio::net::TcpListener::bind(addr).await).map_err(|source| Error::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let app = router(state);
        println!("listening on {local}");
        let _ = std::io::stdout().flush();
        tracing::info!("listening on {local}");
        let stop = async move {
            stop_signal().await;
            tracing::info!("stopping: finishing the requests in flight");
            stop_tx.send_replace(true);
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|source| Error::Listen {
                addr: local.to_string(),
                source,
            })
    });
    // Every handler's channel to the core goes with the runtime; the core then answers what
    // is queued, captures revisions and stops.
    rt.shutdown_timeout(Duration::from_secs(10));
    let stopped = core.join().map_err(|_| Error::CoreFailed)?;
    served?;
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(http::status))
        .route("/v1/replicas/{name}", get(http::show))
        .route("/v1/replicas/{name}/deltas", get(http::deltas))
        .route("/v1/ingest", post(http::ingest))
        .route("/v1/preview", post(http::preview))
        .route("/v1/explain", get(http::explain))
        .route("/v1/check/join", post(checks::join))
        .route("/v1/check/invite", post(checks::invite))
        .route("/v1/check/sender", post(checks::sender))
        .route_layer(from_fn_with_state(state.clone(), http::require_token));
    let mut app = v1.route("/metrics", get(http::metrics));
    if state.registration.is_some() {
        app = app.merge(appservice::routes());
    }
    // A route layer: the route's pattern (`MatchedPath`) is known there.
    app.route_layer(from_fn_with_state(state.clone(), http::count_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGTERM; only SIGINT stops cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
