//! The 0.4.x HTTP transport: one `Request` per POST, answered with a JSON array of every
//! message of that request. Pulls are never live here; the client polls.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::session::{Grant, SyncParams};
use super::v04::{self, Exit, RpcCall, ServerMessage, SyncError};
use super::ws04::{next_response, push, start_pull};
use crate::server::AppState;

pub async fn handle(state: AppState, params: SyncParams, grant: Grant, body: Body) -> Response {
    let limit = state.config.limits.max_frame_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {limit} bytes")).into_response(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let request = match v04::decode_http_request(&text) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(store = %params.store_id, %error, "livestore http: undecodable request");
            let messages: Vec<ServerMessage> = ServerMessage::reply_to_bad_frame(&error).into_iter().collect();
            return json(&messages);
        }
    };
    let id = request.id;
    let exit = |exit| ServerMessage::Exit { request_id: id.clone(), exit };
    let messages = match request.call {
        RpcCall::Ping(args) if args.store_id != params.store_id => {
            vec![exit(Exit::Failure(SyncError::unknown("storeId differs from the one in the URL")))]
        }
        RpcCall::Ping(_) => vec![exit(Exit::PingOk)],
        RpcCall::Push(args) if args.store_id != params.store_id => {
            vec![exit(Exit::Failure(SyncError::unknown("storeId differs from the one in the URL")))]
        }
        RpcCall::Push(args) => vec![exit(push(&state, &params, &grant, args.batch, args.backend_id).await)],
        RpcCall::Pull(args) => {
            let mut messages = Vec::new();
            match start_pull(&state, &params, &args).await {
                Ok(mut initial) => loop {
                    match next_response(&state, &params, &mut initial).await {
                        Ok(Some(page)) => messages.push(ServerMessage::Chunk { request_id: id.clone(), page }),
                        Ok(None) => break messages.push(exit(Exit::PullComplete)),
                        Err(failure) => break messages.push(exit(failure)),
                    }
                },
                Err(failure) => messages.push(exit(failure)),
            }
            messages
        }
    };
    json(&messages)
}

fn json(messages: &[ServerMessage]) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v04::encode_http_response(messages)).into_response()
}
