//! The HTTP transport (the client's `useWebSocket: false`): one JSON message per POST,
//! answered with one JSON message. `GET /health` (Junction's liveness) is the client's connect
//! check. No broadcasts: HTTP clients learn of others' changes by pulling.
//!
//! Statuses: 200 with a `push-response` / `pull-response`; 401 for a missing or refused token;
//! 400, 403, 413 and 500 with a Pocket `error` body (the client only sees "HTTP error: <status>"
//! and retries, keeping its changes queued).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client::{HttpRoute, decode_http_body};
use super::server::{ErrorCode, ErrorMessage, ServerMessage};
use super::session;
use super::writer::now_ms;
use crate::server::AppState;

/// Stands in for a connection id in the events HTTP pushes append: every WebSocket client gets
/// their broadcasts.
const HTTP_SESSION: &str = "http";

pub async fn push(State(state): State<AppState>, request: Request) -> Response {
    handle(state, HttpRoute::Push, request).await
}

pub async fn pull(State(state): State<AppState>, request: Request) -> Response {
    handle(state, HttpRoute::Pull, request).await
}

pub async fn any(State(state): State<AppState>, request: Request) -> Response {
    handle(state, HttpRoute::Any, request).await
}

async fn handle(state: AppState, route: HttpRoute, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let identity = match session::authenticate(&state, bearer(&parts.headers)).await {
        Ok(identity) => identity,
        Err(reason) => {
            tracing::info!(%reason, "pocket: refused an HTTP request");
            let error = ErrorMessage {
                id: format!("{}{}", super::server::ERROR_ID_PREFIX, now_ms()),
                timestamp: now_ms(),
                code: ErrorCode::Other("AUTH_FAILED".into()),
                message: "Authentication failed".into(),
                retryable: false,
            };
            return reply(StatusCode::UNAUTHORIZED, error.into());
        }
    };
    let limit = state.config.limits.max_frame_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, session::too_large(None, limit + 1, limit).into()),
    };
    let message = match decode_http_body(route, &bytes) {
        Ok(message) => message,
        Err(error) => {
            tracing::debug!(%error, "pocket: undecodable HTTP body");
            return reply(StatusCode::BAD_REQUEST, ErrorMessage::from_decode_error(&error, now_ms()).into());
        }
    };
    let answer = match message {
        super::client::ClientMessage::Push(push) => session::push(&state, &identity, HTTP_SESSION, push).await,
        super::client::ClientMessage::Pull(pull) => session::pull(&state, &identity, &pull).await,
    };
    match answer {
        Ok(message) => reply(StatusCode::OK, message),
        Err(error) => {
            let status = match error.code.as_str() {
                "FORBIDDEN" => StatusCode::FORBIDDEN,
                "INTERNAL_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            reply(status, error.into())
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn reply(status: StatusCode, message: ServerMessage) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], message.to_json()).into_response();
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// CORS preflight: browsers send one before a JSON POST with `Authorization`.
pub async fn preflight(headers: HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("authorization, content-type"));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}
