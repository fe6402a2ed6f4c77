//! Junction's own HTTP surface: what it is, whether it is alive and ready, and its metrics. The
//! protocol modules add their routes beside these.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

use crate::protocols::livestore;

use crate::server::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", any(root))
        .route("/health", get(liveness))
        .route("/health/ready", get(readiness))
        .route("/metrics", get(metrics))
        .merge(crate::protocols::router(&state))
        .merge(crate::api::router())
        .with_state(state)
}

/// `/` is Junction's index, and also where LiveStore 0.4 clients connect by default (they say
/// so in the query).
async fn root(State(state): State<AppState>, request: Request) -> Response {
    if livestore::is_rpc_request(&state, request.uri().query()) {
        return livestore::rpc_entry(State(state), request).await;
    }
    if crate::protocols::pocket::is_root_upgrade(&state, &request) {
        return crate::protocols::pocket::socket_entry(State(state), request).await;
    }
    if request.method() != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    index(&state)
}

fn index(state: &AppState) -> Response {
    let protocols = &state.config.protocols;
    let livestore = &protocols.livestore;
    axum::Json(json!({
        "name": "junction",
        "version": env!("CARGO_PKG_VERSION"),
        "store": state.log.backend_kind(),
        "protocols": {
            "synckit": {"enabled": protocols.synckit.enabled, "path": protocols.synckit.path},
            "livestore": {"enabled": livestore.enabled, "path": livestore.path, "rpc_path": livestore.rpc_path},
            "pocket": {"enabled": protocols.pocket.enabled, "path": protocols.pocket.path,
                "also_at_root": protocols.pocket.also_at_root},
        },
    }))
    .into_response()
}

/// The process runs and answers; says nothing about its dependencies (that is readiness). Also
/// the connect check of Pocket's HTTP transport, which browsers make cross-origin.
async fn liveness() -> Response {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], axum::Json(json!({"status": "ok"}))).into_response()
}

/// Ready when the store answers. Redis is reported but does not decide: without it an instance
/// still serves every client correctly (the change log carries what other instances commit), and
/// answering 503 would make a load balancer drain every instance at once. The body names what
/// fails or is degraded; the details go to the log, not to whoever asks.
async fn readiness(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    let mut degraded: Vec<&str> = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), state.log.ping()).await {
        Ok(Ok(())) => {
            checks.insert("store".into(), json!("ok"));
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store does not answer");
            failing.push("store");
            checks.insert("store".into(), json!("failing"));
        }
        Err(_) => {
            tracing::warn!("readiness: the store did not answer within 2 s");
            failing.push("store");
            checks.insert("store".into(), json!("failing"));
        }
    }
    match state.redis_problem().await {
        None if state.config.redis.url.is_empty() => {
            checks.insert("redis".into(), json!("not configured"));
        }
        None => {
            checks.insert("redis".into(), json!("ok"));
        }
        Some(problem) => {
            tracing::warn!(%problem, "readiness: redis is unreachable; serving through the change log");
            degraded.push("redis");
            checks.insert("redis".into(), json!("degraded"));
        }
    }
    if failing.is_empty() {
        let body = json!({"status": "ready", "degraded": degraded, "checks": checks});
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = json!({"status": "not ready", "failing": failing, "degraded": degraded, "checks": checks});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if !state.config.redis.url.is_empty() {
        state.metrics.set_redis_up(state.redis_problem().await.is_none());
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}
