//! Pocket (`@pocket/sync` SyncEngine): push/pull JSON sync over WebSocket (`/sync`) and HTTP
//! (`POST /sync/push`, `/sync/pull`, `/sync`).
//!
//! Each collection is one store of the shared event log (protocol `pocket`); every accepted
//! change is one event, and its seq in that store is the change's server `sequence`. That one
//! number is what makes checkpoints exact: a pull returns the events after the client's
//! `sequences[c]` and moves it to the last one returned, a push-response moves it only past the
//! push's own changes, and only when the client had seen everything before them.
//!
//! - codec (pure, golden-tested): [`client`], [`server`], [`change`], [`checkpoint`],
//!   [`document`], [`conflict`], [`decode`];
//! - [`projection`] (pure): the server's document state as a fold of the log, and the decision
//!   about each pushed change (duplicates, stale re-pushes, tombstones, conflicts);
//! - `writer`: one task per collection in use that decides and appends its pushes;
//! - `session`: identity, authorization, and the answers to `push` and `pull`;
//! - `ws`, `http`: the thin transport loops. Broadcasts come from event-log subscriptions, so
//!   they carry exactly what was committed (never a rejected change) and cross instances
//!   through the fan-out.
//!
//! The wire format is described in `protocols/pocket/WIRE.md`; decisions, and the reference
//! server's behaviours Junction does not copy, in `protocols/pocket/NOTES.md`.

pub mod change;
pub mod checkpoint;
pub mod client;
pub mod conflict;
pub mod decode;
pub mod document;
pub mod projection;
pub mod server;

mod http;
mod session;
mod writer;
mod ws;

#[cfg(test)]
pub(crate) mod golden;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

pub use projection::ConflictStrategy;

use crate::config::PocketConfig;
use crate::eventlog::Protocol;
use crate::server::AppState;

/// Pocket's share of the server state: the per-collection writers, the per-user connection
/// counts and the conflict strategies.
#[derive(Clone)]
pub struct Pocket {
    inner: Arc<Inner>,
}

struct Inner {
    writers: writer::Writers,
    users: Mutex<HashMap<String, usize>>,
    max_per_user: usize,
    default_strategy: ConflictStrategy,
    /// (pattern, strategy): exact names first, then prefixes from the longest.
    strategies: Vec<(String, ConflictStrategy)>,
}

impl Pocket {
    /// Expects a validated configuration (unknown strategy names fall back to the default).
    pub fn new(config: &PocketConfig) -> Pocket {
        let default_strategy = ConflictStrategy::from_name(&config.conflict_strategy).unwrap_or_default();
        let mut strategies: Vec<(String, ConflictStrategy)> = config
            .conflict_strategies
            .iter()
            .map(|(pattern, name)| (pattern.clone(), ConflictStrategy::from_name(name).unwrap_or(default_strategy)))
            .collect();
        strategies.sort_by_key(|(pattern, _)| (pattern.ends_with('*'), std::cmp::Reverse(pattern.len())));
        Pocket {
            inner: Arc::new(Inner {
                writers: writer::Writers::default(),
                users: Mutex::new(HashMap::new()),
                max_per_user: config.max_connections_per_user,
                default_strategy,
                strategies,
            }),
        }
    }

    /// The configured strategy of a collection.
    pub fn strategy_for(&self, collection: &str) -> ConflictStrategy {
        let matches = |pattern: &str| match pattern.strip_suffix('*') {
            Some(prefix) => collection.starts_with(prefix),
            None => pattern == collection,
        };
        self.inner
            .strategies
            .iter()
            .find(|(pattern, _)| matches(pattern))
            .map_or(self.inner.default_strategy, |(_, strategy)| *strategy)
    }

    fn writers(&self) -> &writer::Writers {
        &self.inner.writers
    }

    /// Takes one of `user`'s connection places; `None` when all are taken.
    fn enter(&self, user: &str) -> Option<UserSlot> {
        let mut users = self.inner.users.lock().expect("users lock");
        let count = users.entry(user.to_owned()).or_insert(0);
        if *count >= self.inner.max_per_user {
            return None;
        }
        *count += 1;
        Some(UserSlot { pocket: self.clone(), user: user.to_owned() })
    }
}

/// One connection's place under `max_connections_per_user`, given back on drop.
struct UserSlot {
    pocket: Pocket,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.pocket.inner.users.lock().expect("users lock");
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// The WebSocket endpoint at `path`, and the HTTP routes at the root (the client resolves them
/// with `new URL('/sync/…', serverUrl)`, dropping any base path).
pub fn router(config: &PocketConfig) -> Router<AppState> {
    let http_any: MethodRouter<AppState> = post(http::any).options(http::preflight);
    let router = Router::new()
        .route("/sync/push", post(http::push).options(http::preflight))
        .route("/sync/pull", post(http::pull).options(http::preflight));
    if config.path == "/sync" {
        router.route("/sync", http_any.get(socket_entry))
    } else {
        router.route("/sync", http_any).route(&config.path, get(socket_entry))
    }
}

/// Whether a request to `/` is a Pocket WebSocket upgrade (when `also_at_root` is on). LiveStore
/// 0.4 requests there are told apart first, by their query.
pub fn is_root_upgrade(state: &AppState, request: &Request) -> bool {
    let config = &state.config.protocols.pocket;
    config.enabled && config.also_at_root && request.method() == Method::GET && is_websocket_upgrade(request.headers())
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A WebSocket connection: the upgrade always completes; a refused token then gets close code
/// 4001 and a user over its connection limit 4002 (configurable), as from the reference server,
/// whose tests expect them. Only the server-wide connection limit refuses the upgrade itself (503).
pub async fn socket_entry(State(state): State<AppState>, request: Request) -> Response {
    let token = request.uri().query().and_then(|query| {
        let params: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
        params.get("token").cloned()
    });
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let ticket = match state.admit(Protocol::Pocket) {
        Ok(ticket) => ticket,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    };
    let admitted = admit(&state, token.as_deref()).await;
    crate::protocols::socket::configure(upgrade, &state.config.limits).on_upgrade(move |socket| async move {
        ws::serve(socket, state, admitted).await;
        drop(ticket);
    })
}

/// Why a WebSocket client is sent away right after the upgrade.
enum Refused {
    Auth(String),
    TooManyConnections,
}

async fn admit(state: &AppState, token: Option<&str>) -> Result<(session::Identity, Option<UserSlot>), Refused> {
    let identity = session::authenticate(state, token).await.map_err(Refused::Auth)?;
    // Anonymous clients and tokens without a user id are not counted per user (there is no
    // user to count them by); `limits.max_connections` still bounds them.
    let slot = match &identity.user {
        Some(user) => Some(state.pocket.enter(user).ok_or(Refused::TooManyConnections)?),
        None => None,
    };
    Ok((identity, slot))
}

/// `length` random base-36 characters.
fn random_base36(length: usize) -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..length).map(|_| DIGITS[rng.random_range(0..DIGITS.len())] as char).collect()
}

/// A connection id like the reference's (`<ms base36>_<8 random base36>`); it is stored as the
/// session id of the connection's events, so that broadcasts skip their own sender.
fn connection_id() -> String {
    let mut ms = writer::now_ms();
    let mut digits = Vec::new();
    while ms > 0 {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(ms % 36) as usize] as char);
        ms /= 36;
    }
    let time: String = digits.into_iter().rev().collect();
    format!("{time}_{}", random_base36(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_the_exact_name_then_the_longest_prefix() {
        let mut config = crate::config::Config::default().protocols.pocket;
        config.conflict_strategies = [
            ("notes-*".to_owned(), "merge".to_owned()),
            ("notes-pinned*".to_owned(), "client-wins".to_owned()),
            ("notes-pinned".to_owned(), "server-wins".to_owned()),
        ]
        .into();
        let pocket = Pocket::new(&config);
        assert_eq!(pocket.strategy_for("todos"), ConflictStrategy::LastWriteWins);
        assert_eq!(pocket.strategy_for("notes-a"), ConflictStrategy::Merge);
        assert_eq!(pocket.strategy_for("notes-pinned-2"), ConflictStrategy::ClientWins);
        assert_eq!(pocket.strategy_for("notes-pinned"), ConflictStrategy::ServerWins);
    }

    #[test]
    fn users_get_at_most_their_share_of_connections() {
        let mut config = crate::config::Config::default().protocols.pocket;
        config.max_connections_per_user = 2;
        let pocket = Pocket::new(&config);
        let first = pocket.enter("u").unwrap();
        let _second = pocket.enter("u").unwrap();
        assert!(pocket.enter("u").is_none());
        assert!(pocket.enter("v").is_some());
        drop(first);
        assert!(pocket.enter("u").is_some());
    }

    #[test]
    fn connection_ids_look_like_the_reference() {
        let id = connection_id();
        let (time, random) = id.split_once('_').unwrap();
        assert!(time.len() >= 8 && random.len() == 8, "{id}");
        assert!(id.bytes().all(|b| b == b'_' || b.is_ascii_digit() || b.is_ascii_lowercase()));
    }
}
