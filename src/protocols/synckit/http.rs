//! `POST /auth/verify` and `GET /auth/me`, as the SyncKit server answers them. There is
//! no `/auth/login`: tokens come from the deployment's identity provider, or from
//! `junction token`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::AppState;

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "error": text }))).into_response()
}

/// `{token}` → `{valid:false}` or `{valid:true, userId, expiresAt}`.
pub async fn verify(State(state): State<AppState>, body: Option<Json<Value>>) -> Response {
    let token = body.as_ref().and_then(|Json(b)| b.get("token")).and_then(Value::as_str).filter(|t| !t.is_empty());
    let Some(token) = token else { return error(StatusCode::BAD_REQUEST, "Token required") };
    match state.tokens.verify(token).await {
        Ok(claims) => {
            let mut answer = json!({"valid": true, "userId": claims.user_id});
            if let Some(exp) = claims.exp {
                answer["expiresAt"] = json!(exp);
            }
            Json(answer).into_response()
        }
        Err(_) => Json(json!({"valid": false})).into_response(),
    }
}

/// `Authorization: Bearer <token>` → `{userId, email, permissions}`.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return error(StatusCode::UNAUTHORIZED, "Missing Authorization header");
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).filter(|t| !t.is_empty()) else {
        return error(StatusCode::UNAUTHORIZED, "Invalid Authorization header format");
    };
    match state.tokens.verify(token).await {
        Ok(claims) => Json(json!({"userId": claims.user_id, "email": claims.email, "permissions": claims.permissions}))
            .into_response(),
        Err(_) => error(StatusCode::UNAUTHORIZED, "Invalid or expired token"),
    }
}
