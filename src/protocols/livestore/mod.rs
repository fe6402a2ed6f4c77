//! LiveStore `@livestore/sync-cf`: a drop-in backend for unmodified 0.3.x and 0.4.x clients.
//!
//! Each `storeId` is one store of the shared event log (protocol `livestore`); `seqNum` and
//! `parentSeqNum` are stored exactly as pushed. A push is a check-and-append on
//! `batch[0].parentSeqNum`, so it is accepted only on the current head, and it is acknowledged
//! after the commit. Pulls page through storage and then follow the store live through an
//! event-log subscription, which is what guarantees every event once, in order, with no gap
//! (the real client fails hard on anything else).
//!
//! - codec (pure, golden-tested): [`wire_event`], [`decode`], [`v03`], [`v04`];
//! - [`session`]: the event-log side both versions share (auth, pushes, pull pages);
//! - `ws03`, `ws04`, `http04`: the thin transport loops.
//!
//! Routing (`protocols/livestore/WIRE.md`, "Connecting"): 0.3 clients connect to `<path>` (their
//! base URL plus `/websocket`); 0.4 clients to `<rpc_path>` with `transport=ws|http` in the query.

pub mod decode;
pub mod session;
pub mod v03;
pub mod v04;
pub mod wire_event;

mod http04;
mod ws03;
mod ws04;

use std::collections::HashMap;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::config::LiveStoreConfig;
use crate::eventlog::Protocol;
use crate::protocols::socket;
use crate::server::AppState;
use session::{Grant, SyncParams, Transport};

pub fn router(config: &LiveStoreConfig) -> Router<AppState> {
    let router = Router::new().route(&config.path, get(connect_v03));
    if config.rpc_path == "/" {
        // `/` is also Junction's index; `crate::http` sends LiveStore's requests here.
        router
    } else {
        router.route(&config.rpc_path, any(rpc_entry))
    }
}

/// Whether a request to `/` is a LiveStore 0.4 request (it names a store and a transport).
pub fn is_rpc_request(state: &AppState, query: Option<&str>) -> bool {
    let config = &state.config.protocols.livestore;
    config.enabled
        && config.rpc_path == "/"
        && query.is_some_and(|q| {
            let params: HashMap<String, String> = serde_urlencoded::from_str(q).unwrap_or_default();
            params.contains_key("storeId") && params.contains_key("transport")
        })
}

async fn connect_v03(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (params, grant) = match admit(&state, &query).await {
        Ok(admitted) => admitted,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let ticket = match state.admit(Protocol::LiveStore) {
        Ok(ticket) => ticket,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    };
    socket::configure(upgrade, &state.config.limits).on_upgrade(move |socket| async move {
        ws03::serve(socket, state, params, grant).await;
        drop(ticket);
    })
}

/// The 0.4 endpoint, WebSocket or HTTP; a 0.4 request is told apart by its query, not its path.
pub async fn rpc_entry(State(state): State<AppState>, request: Request) -> Response {
    let query: HashMap<String, String> =
        request.uri().query().map(|q| serde_urlencoded::from_str(q).unwrap_or_default()).unwrap_or_default();
    if request.method() == Method::OPTIONS {
        return preflight(request.headers());
    }
    let (params, grant) = match admit(&state, &query).await {
        Ok(admitted) => admitted,
        Err(reason) => return with_cors((StatusCode::BAD_REQUEST, reason).into_response()),
    };
    match params.transport {
        Some(Transport::Ws) => {
            let (mut parts, _body) = request.into_parts();
            let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
                Ok(upgrade) => upgrade,
                Err(rejection) => {
                    let text = "Durable Object expected Upgrade: websocket";
                    tracing::debug!(%rejection, "livestore: transport=ws without a WebSocket upgrade");
                    return (StatusCode::UPGRADE_REQUIRED, text).into_response();
                }
            };
            let ticket = match state.admit(Protocol::LiveStore) {
                Ok(ticket) => ticket,
                Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
            };
            socket::configure(upgrade, &state.config.limits).on_upgrade(move |socket| async move {
                ws04::serve(socket, state, params, grant).await;
                drop(ticket);
            })
        }
        Some(Transport::Http) if request.method() == Method::POST => {
            with_cors(http04::handle(state, params, grant, request.into_body()).await)
        }
        _ => with_cors((StatusCode::BAD_REQUEST, "Invalid path").into_response()),
    }
}

/// Parses the query and checks the payload. A refusal is answered with HTTP 400 and the reason,
/// as Cloudflare does, and logged (the clients themselves retry silently).
async fn admit(state: &AppState, query: &HashMap<String, String>) -> Result<(SyncParams, Grant), String> {
    let params = SyncParams::parse(query).map_err(|reason| {
        tracing::info!(%reason, "livestore: refused a connection with invalid search params");
        format!("Invalid search params: {reason}")
    })?;
    let grant = session::authorize(state, &params).await.inspect_err(|reason| {
        tracing::info!(store = %params.store_id, %reason, "livestore: refused a connection");
    })?;
    Ok((params, grant))
}

fn preflight(headers: &HeaderMap) -> Response {
    let allow_headers =
        headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned().unwrap_or(HeaderValue::from_static("*"));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

fn with_cors(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
