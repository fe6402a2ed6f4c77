//! The 0.3.x WebSocket loop: `WSMessage.*` frames.
//!
//! A `PullReq` starts the socket's pull: pages up to the head with `context:"pull"` and the
//! `remaining` count, then every later batch as a `context:"push"` PullRes (the echo the pusher
//! needs to confirm its own events, and what every other socket needs to stay current).
//! Cloudflare also broadcasts to sockets that never pulled; the client stashes those and keeps
//! only what its pull page does not already hold, so not sending them changes nothing.

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::session::{self, Grant, InitialPull, PushRefused, SyncParams};
use super::v03::{self, PullContext, Request, Response};
use crate::eventlog::{Protocol, SubscriptionEnded};
use crate::limits::{RateLimiter, Verdict};
use crate::protocols::socket::{self, Outbox, close_code};
use crate::server::AppState;

pub async fn serve(socket: WebSocket, state: AppState, params: SyncParams, grant: Grant) {
    let (outbox, mut incoming, writer) = socket::split(socket, 256, state.config.limits.ws_send_queue_bytes);
    // A pull that cannot go on (slow consumer, reset) queues the close frame with its reason,
    // then cancels this token to end the loop (a token, not a channel: an idle connection should
    // not hold a channel's first block of slots for a signal sent at most once).
    let pull_ended = CancellationToken::new();
    let limiter = RateLimiter::from_limits(&state.config.limits);
    let mut connection =
        Connection { state, params, grant, outbox, limiter, pull: None, pull_ended: pull_ended.clone() };
    let token_expires = socket::token_deadline(connection.grant.expires());
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    // Boxed so that an idle connection's future stays small (see ws04).
                    if let Some(reply) = Box::pin(connection.handle(&text)).await
                        && !connection.outbox.text(reply.to_json()).await
                    {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let reply = Response::Error { request_id: String::new(), message: "Binary frames are not supported".into() };
                    if connection.limiter.check() == Verdict::Flooding {
                        socket::close_flooder(&connection.outbox, &connection.state.metrics, Protocol::LiveStore).await;
                        break;
                    }
                    connection.outbox.text(reply.to_json()).await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = pull_ended.cancelled() => break,
            _ = socket::expired(token_expires) => {
                // LiveStore has no auth error on an open socket: the client reconnects, and its
                // expired token is then refused at the upgrade.
                connection.state.metrics.auth_expired(Protocol::LiveStore.as_str());
                connection.outbox.close(close_code::POLICY_VIOLATION, "authentication token expired").await;
                break;
            }
            _ = connection.state.shutdown.cancelled() => {
                connection.outbox.close(close_code::GOING_AWAY, "server shutting down").await;
                break;
            }
        }
    }
    if let Some(pull) = connection.pull.take() {
        pull.abort();
    }
    drop(connection);
    let _ = writer.await;
}

struct Connection {
    state: AppState,
    params: SyncParams,
    grant: Grant,
    outbox: Outbox,
    limiter: RateLimiter,
    /// The socket's pull (0.3 clients pull once per connection; a new PullReq replaces it).
    pull: Option<JoinHandle<()>>,
    pull_ended: CancellationToken,
}

impl Connection {
    /// Handles one text frame; the reply (if any) goes to the sender only.
    async fn handle(&mut self, text: &str) -> Option<Response> {
        let Connection { state, params, grant, outbox, limiter, pull, pull_ended } = self;
        match limiter.check() {
            Verdict::Allowed => {}
            Verdict::OverLimit => return Some(slow_down(text)),
            Verdict::Flooding => {
                outbox.text(slow_down(text).to_json()).await;
                socket::close_flooder(outbox, &state.metrics, Protocol::LiveStore).await;
                // Ends the loop, as a pull that cannot go on does.
                pull_ended.cancel();
                return None;
            }
        }
        if text.len() > state.config.limits.max_frame_bytes {
            let message = format!(
                "Message too large: {} bytes, the limit is {}",
                text.len(),
                state.config.limits.max_frame_bytes
            );
            return Some(Response::Error { request_id: request_id_of(text), message });
        }
        let request = match v03::decode_request(text) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(store = %params.store_id, %error, "livestore 0.3: undecodable frame");
                return Some(Response::bad_frame(&error));
            }
        };
        match request {
            Request::Ping => Some(Response::Pong),
            Request::PullReq { request_id, cursor } => {
                if let Some(previous) = pull.take() {
                    previous.abort();
                }
                let task =
                    run_pull(state.clone(), params.clone(), outbox.clone(), request_id, cursor, pull_ended.clone());
                *pull = Some(tokio::spawn(task));
                None
            }
            Request::PushReq { request_id, batch } => match session::push(&state.log, params, grant, &batch).await {
                Ok(()) => Some(Response::PushAck { request_id }),
                Err(PushRefused::NotOnHead { head, provided }) => {
                    Some(Response::invalid_parent(request_id, provided, head.0))
                }
                Err(PushRefused::Forbidden) => {
                    Some(Response::Error { request_id, message: "Not allowed to push to this store".into() })
                }
                Err(PushRefused::Invalid(reason)) => {
                    Some(Response::Error { request_id, message: format!("Invalid batch: {reason}") })
                }
                Err(PushRefused::Internal) => Some(Response::Error { request_id, message: "Internal error".into() }),
            },
            Request::AdminResetRoomReq { request_id, admin_secret } => {
                if !admin_secret_ok(state, &admin_secret) {
                    return Some(Response::invalid_admin_secret(request_id));
                }
                match state.log.reset(&params.key()).await {
                    Ok(_) => Some(Response::AdminResetRoomRes { request_id }),
                    Err(error) => {
                        tracing::error!(store = %params.store_id, %error, "livestore: reset failed");
                        Some(Response::Error { request_id, message: "Internal error".into() })
                    }
                }
            }
            Request::AdminInfoReq { request_id, admin_secret } => {
                if !admin_secret_ok(state, &admin_secret) {
                    return Some(Response::invalid_admin_secret(request_id));
                }
                match state.log.info(&params.key()).await {
                    Ok(info) => Some(Response::AdminInfoRes { request_id, durable_object_id: info.backend_id }),
                    Err(error) => {
                        tracing::error!(store = %params.store_id, %error, "livestore: info failed");
                        Some(Response::Error { request_id, message: "Internal error".into() })
                    }
                }
            }
        }
    }
}

/// The initial pages, then the live part, until the socket goes or the subscription ends.
async fn run_pull(
    state: AppState,
    params: SyncParams,
    outbox: Outbox,
    request_id: String,
    cursor: Option<u64>,
    ended: CancellationToken,
) {
    let key = params.key();
    let fail = |error: &dyn std::fmt::Display| {
        tracing::error!(store = %params.store_id, %error, "livestore 0.3: pull failed");
        Response::Error { request_id: request_id.clone(), message: "Internal error".into() }
    };
    let mut initial = match Box::pin(InitialPull::start(&state.log, key.clone(), cursor)).await {
        Ok(initial) => initial,
        Err(error) => {
            outbox.text(fail(&error).to_json()).await;
            return;
        }
    };
    loop {
        match Box::pin(initial.next_page(&state.log)).await {
            Ok(Some(page)) => {
                let frame = Response::PullRes {
                    request_id: request_id.clone(),
                    context: PullContext::Pull,
                    batch: page.events,
                    remaining: page.remaining,
                };
                if !outbox.text(frame.to_json()).await {
                    return;
                }
            }
            Ok(None) => break,
            Err(error) => {
                outbox.text(fail(&error).to_json()).await;
                return;
            }
        }
    }
    let mut subscription = match Box::pin(state.log.subscribe(&key, initial.last_seq())).await {
        Ok(subscription) => subscription,
        Err(error) => {
            outbox.text(fail(&error).to_json()).await;
            return;
        }
    };
    // Encoded once per batch and request id, shared by every subscriber (see SharedFrames).
    let variant = format!("livestore-0.3\n{request_id}");
    loop {
        match subscription.next().await {
            Ok(events) => {
                let frames = state.frames.get_or_encode(&events, &variant, |events| {
                    session::paginate(events)
                        .into_iter()
                        .map(|batch| {
                            let request_id = request_id.clone();
                            Response::PullRes { request_id, context: PullContext::Push, batch, remaining: 0 }.to_json()
                        })
                        .collect()
                });
                for frame in frames.iter() {
                    if !outbox.text(frame.clone()).await {
                        return;
                    }
                }
            }
            Err(end) => {
                tracing::info!(store = %params.store_id, reason = %end, "livestore 0.3: closing a socket whose pull ended");
                let reason = match end {
                    SubscriptionEnded::SlowConsumer => "too slow: reconnect and pull again",
                    SubscriptionEnded::Reset => "the store was reset",
                    SubscriptionEnded::Log(_) => "internal error",
                };
                outbox.close(close_code::TRY_AGAIN_LATER, reason).await;
                ended.cancel();
                return;
            }
        }
    }
}

fn admin_secret_ok(state: &AppState, given: &str) -> bool {
    let secret = &state.config.auth.admin_secret;
    !secret.is_empty() && crate::auth::secret_matches(given, secret)
}

/// The answer to a frame over the rate limit.
fn slow_down(text: &str) -> Response {
    Response::Error { request_id: request_id_of(text), message: "Too many messages. Please slow down.".into() }
}

/// The `requestId` of a frame we will not decode fully (too large, or over the rate limit).
fn request_id_of(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
    }
    serde_json::from_str::<Id>(text).ok().and_then(|id| id.request_id).unwrap_or_default()
}
