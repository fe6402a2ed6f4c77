//! The event API: one HTTP view of everything every protocol wrote, for operators and apps.
//!
//! - `GET /v1/stores?after=&limit=` — registered stores, in registry order;
//! - `GET /v1/stores/{store}/events?after=&limit=` — a store's events after a seq;
//! - `GET /v1/stores/{store}/events/live?after=` — Server-Sent Events: catch-up, then live, each
//!   event once and in order (the same subscription the protocols use); `Last-Event-ID` resumes;
//!   a store that does not exist yet is waited for;
//! - `GET /v1/changes?after=&limit=` — the sequenced change log over all stores;
//! - `GET /v1/changes/live?after=` — Server-Sent Events: the change log, then each batch as it
//!   commits (read from the change log, so every instance's writes are in it);
//! - `POST /v1/stores/{store}/reset` — empty a store and give it a new backend id.
//!
//! Every event's `args` is the JSON text its client wrote, byte for byte (SSE alone turns a
//! carriage return in the whitespace between tokens into a line feed: it has no way to carry one).
//!
//! `{store}` is `<protocol>:<name>` (`livestore:todos`), URL-encoded. Every endpoint needs
//! `Authorization: Bearer <credentials>`: the admin secret (`auth.admin_secret`) or an admin JWT
//! (`isAdmin`) may do everything; an ordinary client JWT may list and read (pages and live)
//! exactly the stores its `canRead` grants, and nothing else (the change log spans every store;
//! reset is for operators). The OpenAPI document (`GET /v1/openapi.json`, no credentials needed)
//! is [`openapi::document`].

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Claims;
use crate::eventlog::{ChangePos, Event, EventLogError, Protocol, SeqNum, StoreId, StoreInfo, StoreKey};
use crate::server::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub mod openapi;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .route("/v1/stores", get(list_stores))
        .route("/v1/stores/{store}/events", get(read_events))
        .route("/v1/stores/{store}/events/live", get(live_events))
        .route("/v1/stores/{store}/reset", post(reset_store))
        .route("/v1/changes", get(read_changes))
        .route("/v1/changes/live", get(live_changes))
}

/// Errors of the event API; each becomes a JSON body `{"error": …}` with its status. Storage
/// failures are logged with their details and answered with a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error(
        "no credentials can be checked: set auth.admin_secret (and auth.jwt_secret, auth.jwt_public_key or auth.jwks_url for client tokens)"
    )]
    NotConfigured,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such store")]
    NotFound,
    #[error("the database is unavailable; retry shortly")]
    Unavailable(EventLogError),
    #[error("internal error")]
    Internal(EventLogError),
}

impl From<EventLogError> for ApiError {
    fn from(error: EventLogError) -> Self {
        if error.is_unavailable() { ApiError::Unavailable(error) } else { ApiError::Internal(error) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized | ApiError::NotConfigured => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable(error) => {
                tracing::warn!(%error, "event API: the database is unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(error) => {
                tracing::error!(%error, "event API");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, axum::Json(json!({"error": self.to_string()}))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("static header"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
        }
        response
    }
}

/// Who is asking, proven by the request's credentials: an admin, or a client token whose grants
/// say which stores it may read.
pub struct Caller {
    /// `None` for the admin secret.
    claims: Option<Claims>,
}

impl Caller {
    fn is_admin(&self) -> bool {
        self.claims.as_ref().is_none_or(|claims| claims.permissions.is_admin)
    }

    fn can_read(&self, key: &StoreKey) -> bool {
        self.claims.as_ref().is_none_or(|claims| claims.can_read(&key.name))
    }

    fn admin_only(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::Forbidden("this needs admin credentials")) }
    }

    fn may_read(&self, key: &StoreKey) -> Result<(), ApiError> {
        if self.can_read(key) { Ok(()) } else { Err(ApiError::Forbidden("this token may not read this store")) }
    }

    /// The JWT's `exp` (`None` for the admin secret): a live stream ends there.
    fn expires(&self) -> Option<u64> {
        self.claims.as_ref().and_then(|claims| claims.exp)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let secret = &state.config.auth.admin_secret;
        if secret.is_empty() && !state.tokens.is_configured() {
            // Say why nothing gets in, to the caller and the log, rather than "invalid credentials".
            tracing::warn!("event API request refused: auth.admin_secret is empty and no JWT key is configured");
            return Err(ApiError::NotConfigured);
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if !secret.is_empty() && crate::auth::secret_matches(token, secret) {
            return Ok(Caller { claims: None });
        }
        match state.tokens.verify(token).await {
            Ok(claims) => Ok(Caller { claims: Some(claims) }),
            Err(_) => Err(ApiError::Unauthorized),
        }
    }
}

/// `<protocol>:<name>`.
fn parse_store(text: &str) -> Result<StoreKey, ApiError> {
    let (protocol, name) =
        text.split_once(':').ok_or_else(|| ApiError::BadRequest("a store is named <protocol>:<name>".into()))?;
    let protocol = Protocol::parse(protocol)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown protocol {protocol:?} (synckit, livestore, pocket)")))?;
    StoreKey::new(protocol, name).map_err(|invalid| ApiError::BadRequest(invalid.to_string()))
}

fn limit(requested: Option<u32>) -> Result<u32, ApiError> {
    match requested.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::BadRequest("limit must be at least 1".into())),
        n => Ok(n.min(MAX_LIMIT)),
    }
}

fn store_json(info: &StoreInfo) -> serde_json::Value {
    json!({
        "id": info.id,
        "protocol": info.key.protocol,
        "name": info.key.name,
        "head": info.head,
        "event_count": info.event_count,
        "backend_id": info.backend_id,
    })
}

#[derive(Deserialize)]
struct Page {
    after: Option<u64>,
    limit: Option<u32>,
}

/// A client token sees only the stores it may read: a page of the registry is filtered, so it
/// may hold fewer than `limit` stores; `next_after` continues after the last one looked at.
async fn list_stores(
    caller: Caller,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let after = StoreId(page.after.unwrap_or(0).min(i64::MAX as u64) as i64);
    let limit = limit(page.limit)?;
    // One more than asked tells whether another page follows; the last page has no next_after.
    let mut stores = state.log.list_stores(after, limit.saturating_add(1)).await?;
    let more = stores.len() > limit as usize;
    stores.truncate(limit as usize);
    let next = stores.last().filter(|_| more).map(|s| s.id);
    let stores: Vec<_> = stores.iter().filter(|s| caller.can_read(&s.key)).map(store_json).collect();
    Ok(axum::Json(json!({"stores": stores, "next_after": next})).into_response())
}

async fn read_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let key = parse_store(&store)?;
    caller.may_read(&key)?;
    state.log.find_info(&key).await?.ok_or(ApiError::NotFound)?;
    let events = state.log.read(&key, SeqNum(page.after.unwrap_or(0)), limit(page.limit)?).await?;
    Ok(axum::Json(EventsPage { events: &events }).into_response())
}

/// Serialized straight from the events, never through a `serde_json::Value`: that would parse
/// each `args` and write its keys sorted, and readers must see what the client wrote.
#[derive(serde::Serialize)]
struct EventsPage<'a> {
    events: &'a [Event],
}

async fn read_changes(
    caller: Caller,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    caller.admin_only()?;
    let changes = state.log.read_changes(ChangePos(page.after.unwrap_or(0)), limit(page.limit)?).await?;
    Ok(axum::Json(json!({"changes": changes})).into_response())
}

async fn reset_store(
    caller: Caller,
    State(state): State<AppState>,
    Path(store): Path<String>,
) -> Result<Response, ApiError> {
    caller.admin_only()?;
    let key = parse_store(&store)?;
    state.log.find_info(&key).await?.ok_or(ApiError::NotFound)?;
    let info = state.log.reset(&key).await?;
    tracing::info!(store = %key, "store reset through the event API");
    Ok(axum::Json(store_json(&info)).into_response())
}

/// A live stream with `X-Accel-Buffering: no`: nginx (and proxies that follow it) then pass each
/// event on as it comes instead of holding them back in lumps, without `proxy_buffering off`.
fn unbuffered(stream: impl IntoResponse) -> impl IntoResponse {
    ([(header::HeaderName::from_static("x-accel-buffering"), "no")], stream)
}

/// The change log as it grows, for operators. It is read from storage on a short interval
/// rather than from the fan-out: the change log is the one place that orders every instance's
/// commits, and an admin feed can afford a quarter second.
async fn live_changes(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    caller.admin_only()?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let after = ChangePos(query.after.or(resume).unwrap_or(0));
    let log = state.log.clone();
    let changes = stream::unfold(Some((log, after)), |state| async move {
        let (log, mut after) = state?;
        loop {
            match log.read_changes(after, MAX_LIMIT).await {
                Ok(changes) if changes.is_empty() => tokio::time::sleep(STORE_POLL).await,
                Ok(changes) => {
                    after = changes.last().map_or(after, |c| c.position);
                    let frames: Vec<Result<SseEvent, Infallible>> = changes
                        .iter()
                        .map(|change| {
                            let data = serde_json::to_string(change).expect("changes serialize");
                            Ok(SseEvent::default().id(change.position.0.to_string()).event("change").data(data))
                        })
                        .collect();
                    return Some((stream::iter(frames), Some((log, after))));
                }
                Err(error) => {
                    // The database is away: say so, and let the client resume with Last-Event-ID.
                    let last =
                        SseEvent::default().event("end").data(json!({ "reason": error.to_string() }).to_string());
                    return Some((stream::iter(vec![Ok(last)]), None));
                }
            }
        }
    })
    .flatten()
    .take_until(state.shutdown.clone().cancelled_owned());
    let deadline = crate::protocols::socket::token_deadline(caller.expires());
    let changes = changes.take_until(Box::pin(crate::protocols::socket::expired(deadline)));
    Ok(unbuffered(Sse::new(changes).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))))
}

/// How often a live stream of a store that does not exist yet looks for it.
const STORE_POLL: Duration = Duration::from_millis(250);

/// Where a live stream stands: waiting for its store to exist, or following it.
enum Feed {
    Waiting { log: crate::eventlog::EventLog, key: StoreKey, after: SeqNum },
    Live(crate::eventlog::Subscription),
}

#[derive(Deserialize)]
struct LiveQuery {
    after: Option<u64>,
}

async fn live_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let key = parse_store(&store)?;
    caller.may_read(&key)?;
    // An EventSource that reconnects sends the id of the last event it got.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let after = SeqNum(query.after.or(resume).unwrap_or(0));
    let start = match state.log.find_info(&key).await? {
        Some(_) => Feed::Live(state.log.subscribe(&key, after).await?),
        // A store nobody wrote yet: wait for its first writer (without registering it: reading
        // creates no stores) rather than answer 404 to a reader that came first.
        None => Feed::Waiting { log: state.log.clone(), key, after },
    };
    let end = |reason: String| {
        let last = SseEvent::default().event("end").data(json!({ "reason": reason }).to_string());
        stream::iter(vec![Ok(last)])
    };
    let events = stream::unfold(Some(start), move |feed| async move {
        let mut subscription = match feed? {
            Feed::Live(subscription) => subscription,
            Feed::Waiting { log, key, after } => loop {
                match log.find_info(&key).await {
                    Ok(Some(_)) => match log.subscribe(&key, after).await {
                        Ok(subscription) => break subscription,
                        Err(error) => return Some((end(error.to_string()), None)),
                    },
                    Ok(None) => tokio::time::sleep(STORE_POLL).await,
                    Err(error) => return Some((end(error.to_string()), None)),
                }
            },
        };
        match subscription.next().await {
            Ok(events) => {
                let frames: Vec<Result<SseEvent, Infallible>> = events
                    .iter()
                    .map(|event| {
                        let data = serde_json::to_string(event).expect("events serialize");
                        Ok(SseEvent::default().id(event.seq.to_string()).event("event").data(data))
                    })
                    .collect();
                Some((stream::iter(frames), Some(Feed::Live(subscription))))
            }
            // Say why the stream ends, then end it; the client resumes with Last-Event-ID.
            Err(ended) => Some((end(ended.to_string()), None)),
        }
    })
    .flatten()
    .take_until(state.shutdown.clone().cancelled_owned());
    // The stream ends when the token does; reconnecting with it then gets 401.
    let deadline = crate::protocols::socket::token_deadline(caller.expires());
    let metrics = state.metrics.clone();
    let events = events.take_until(Box::pin(async move {
        crate::protocols::socket::expired(deadline).await;
        metrics.auth_expired("api");
    }));
    Ok(unbuffered(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))))
}
