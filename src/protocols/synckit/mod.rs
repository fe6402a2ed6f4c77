//! SyncKit (`@synckit-js/sdk`): the binary WebSocket protocol at `/ws`, and the SDK server's
//! `/auth/verify` and `/auth/me`.
//!
//! A message travels: [`frame`] → [`message`] (pure, golden-tested) → [`connection`] (limits,
//! auth, permissions) → the document's [`room`] (one task per open document: appends to the
//! event log, acks once committed, folds the log into a [`document`], broadcasts by the
//! adaptive [`batch`] policy, keeps presence).
//!
//! - [`frame`]: the 13-byte-header binary frame, the type-code table, JSON text framing.
//! - [`message`]: typed client→server and server→client messages, exact ERROR texts.
//! - [`raw`]: raw-JSON building blocks (ordered objects, vector clocks, JS truthiness).
//! - [`policy`]: pure validation rules, limits, close codes.
//! - [`chunk`]: `delta_batch_chunk` reassembly.
//! - [`document`]: a document as a fold of its events (LWW fields, Fugue text), and snapshots.
//! - [`batch`]: when a document's broadcast goes out.
//!
//! The wire format is described in `protocols/synckit/WIRE.md`; decisions, and where Junction
//! departs from the reference server, in `protocols/synckit/NOTES.md`.

pub mod batch;
pub mod chunk;
pub mod connection;
pub mod document;
pub mod frame;
pub mod message;
pub mod policy;
pub mod raw;
pub mod room;

mod http;

#[cfg(test)]
pub(crate) mod golden_tests;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::eventlog::Protocol;
use crate::server::AppState;
use connection::{Identity, Start};
use room::{RoomSettings, Rooms};

pub fn router(state: &AppState) -> Router<AppState> {
    let config = &state.config.protocols.synckit;
    let rooms = Rooms::new(
        state.log.clone(),
        RoomSettings {
            batch_window: Duration::from_millis(config.batch_window_ms),
            awareness_timeout: Duration::from_secs(config.awareness_timeout_secs),
            snapshot_every: config.snapshot_every,
        },
    );
    Router::new()
        .route(
            &config.path,
            get(move |state: State<AppState>, query: Query<HashMap<String, String>>, upgrade: WebSocketUpgrade| {
                connect(state, query, upgrade, rooms.clone())
            }),
        )
        .merge(auth_routes())
}

/// `/auth/verify` and `/auth/me`, callable from a browser page on another origin, as the
/// reference server's are (its `CORS_ORIGIN` defaults to `*`). The token travels in the body or
/// the `Authorization` header, never in a cookie, so any origin may ask.
fn auth_routes() -> Router<AppState> {
    use axum::http::{Method, header};
    use tower_http::cors::{Any, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(86_400));
    Router::new().route("/auth/verify", post(http::verify)).route("/auth/me", get(http::me)).layer(cors)
}

async fn connect(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
    rooms: Rooms,
) -> Response {
    let config = &state.config.protocols.synckit;
    let start = match query.get("token").filter(|t| !t.is_empty()) {
        Some(token) => match state.tokens.verify(token).await {
            Ok(claims) => Start::Authenticated(Identity::from_claims(claims)),
            Err(error) => {
                tracing::info!(%error, "synckit: refused a token in the URL");
                Start::BadToken
            }
        },
        None if config.allow_anonymous => Start::Authenticated(Identity::anonymous()),
        None => Start::Unauthenticated,
    };
    let ticket = match state.admit(Protocol::SyncKit) {
        Ok(ticket) => ticket,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    };
    let limit = state.config.limits.max_frame_bytes.max(config.max_message_bytes);
    // Messages up to twice the protocol's limit reach the loop, which answers them with the
    // protocol's own `Message too large`; only beyond that does the WebSocket layer close.
    let upgrade = crate::protocols::socket::configure(upgrade, &state.config.limits)
        .max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2));
    upgrade.on_upgrade(move |socket| async move {
        connection::serve(socket, state, rooms, start).await;
        drop(ticket);
    })
}
