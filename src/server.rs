//! Start-up and shutdown: builds the event log, the fan-out and the HTTP server from a
//! [`Config`], serves until told to stop, then drains.
//!
//! Shutdown order: stop accepting connections; cancel [`AppState::shutdown`] so every WebSocket
//! loop closes its socket with 1001 (going away) and every HTTP connection closes after the
//! request it serves; wait (up to `server.shutdown_grace_secs`) for
//! connections to finish; then let the event log commit every append already queued and close
//! the database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::TokenVerifier;
use crate::config::{Config, Durability};
use crate::eventlog::{EventLog, LogOptions, Protocol};
use crate::fanout::{FanOut, Hub, LocalFanOut, RedisFanOut, RedisOptions};
use crate::metrics::{ConnectionGuard, Metrics};
use crate::protocols::shared_frames::SharedFrames;
use crate::store::Backend;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub log: EventLog,
    pub metrics: Metrics,
    /// Cancelled when the server begins to shut down; long-lived connections watch it.
    pub shutdown: CancellationToken,
    /// Verifies client JWTs for every protocol.
    pub tokens: TokenVerifier,
    /// Pocket's collection writers and per-user connection counts.
    pub pocket: crate::protocols::pocket::Pocket,
    /// Live frames encoded once per batch and shared among subscribers.
    pub frames: Arc<SharedFrames>,
    connections: Arc<Semaphore>,
    tracker: TaskTracker,
    /// The cross-instance fan-out, when `redis.url` is set.
    redis: Option<Arc<RedisFanOut>>,
}

/// Why a new client connection was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("connection limit of {0} reached")]
    TooManyConnections(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Held by a client connection for its whole life: its place under `limits.max_connections`,
/// its count in the metrics, and its registration with the shutdown drain.
pub struct ConnectionTicket {
    _permit: OwnedSemaphorePermit,
    _counted: ConnectionGuard,
    _tracked: TaskTrackerToken,
}

impl AppState {
    /// Admits one more long-lived client connection, or says why not.
    pub fn admit(&self, protocol: Protocol) -> Result<ConnectionTicket, AdmitError> {
        if self.shutdown.is_cancelled() {
            return Err(AdmitError::ShuttingDown);
        }
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdmitError::TooManyConnections(self.config.limits.max_connections))?;
        Ok(ConnectionTicket {
            _permit: permit,
            _counted: self.metrics.connection(protocol),
            _tracked: self.tracker.token(),
        })
    }

    /// Why cross-instance fan-out is unhealthy, if it is. `None` also when Redis is not used.
    pub async fn redis_problem(&self) -> Option<String> {
        self.log.fanout().problem()
    }
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Connects the store (migrating it if configured), starts the event log and binds the
    /// listener. Nothing is served until [`Server::run`].
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        let metrics = Metrics::new();
        let tokens = TokenVerifier::from_config(&config.auth, metrics.clone())?;
        tokens.prefetch_keys().await;
        let backend = connect_store(&config).await?;
        log_durability(&config, &backend).await?;
        let hub = Hub::new(config.limits.subscriber_queue, config.limits.subscriber_queue_bytes, metrics.clone());
        let redis = if config.redis.url.is_empty() {
            None
        } else {
            let options = RedisOptions::from_config(&config.redis).context("redis.url")?;
            Some(RedisFanOut::new(options, hub.clone(), metrics.clone()))
        };
        let fanout: Arc<dyn FanOut> = match &redis {
            Some(redis) => redis.clone(),
            None => Arc::new(LocalFanOut::new(hub.clone())),
        };
        let log = EventLog::start(backend, log_options(&config), hub, fanout, metrics.clone());
        if let Some(redis) = &redis {
            redis.start(log.clone()).await.context("starting the redis fan-out")?;
        }
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", config.server.listen))?;
        let state = AppState {
            pocket: crate::protocols::pocket::Pocket::new(&config.protocols.pocket),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            config: Arc::new(config),
            log,
            metrics,
            shutdown: CancellationToken::new(),
            tokens,
            frames: Arc::new(SharedFrames::default()),
            tracker: TaskTracker::new(),
            redis,
        };
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` is cancelled, then drains (see the module docs).
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Server { listener, state } = self;
        let anonymous = state.config.anonymous_protocols();
        if !anonymous.is_empty() {
            tracing::warn!(
                protocols = ?anonymous,
                "ANONYMOUS ACCESS IS ON: anyone who can reach this server can read and write these \
                 protocols' data. Set allow_anonymous = false in [protocols.*] for production."
            );
        }
        let locked = state.config.locked_protocols();
        if !locked.is_empty() {
            tracing::warn!(
                protocols = ?locked,
                "NOBODY CAN CONNECT to these protocols: anonymous access is off and there is no way to \
                 authenticate. Set auth.jwt_secret, auth.jwt_public_key or auth.jwks_url (or protocols.livestore.tokens), \
                 or allow_anonymous = true."
            );
        }
        if let Some(open_files) = crate::open_files::raise_to_hard_limit() {
            let limits = &state.config.limits;
            if let Some(warning) =
                crate::open_files::shortfall(limits.max_connections, limits.max_http_connections, open_files)
            {
                tracing::warn!(open_files, "{warning}");
            }
        }
        tracing::info!(
            address = %listener.local_addr()?,
            store = state.log.backend_kind(),
            location = %state.log.backend_location(),
            fanout = if state.redis.is_some() { "redis" } else { "local" },
            "junction is listening"
        );
        let app = crate::http::router(state.clone());
        crate::accept::serve(
            listener,
            app,
            &state.config.limits,
            state.metrics.clone(),
            stop,
            state.shutdown.clone(),
            state.tracker.clone(),
        )
        .await;
        tracing::info!("shutting down: waiting for connections to close");
        state.tracker.close();
        let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, state.tracker.wait()).await.is_err() {
            tracing::warn!(open = state.tracker.len(), "connections still open after the grace period");
        }
        // Stop reading the change log before the event log closes it; publish its last commits after.
        if let Some(redis) = &state.redis {
            redis.stop_receiving().await;
        }
        state.log.shutdown().await;
        if let Some(redis) = &state.redis {
            redis.shutdown().await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The event log alone, for commands that work on the store without serving (export, import).
pub async fn open_event_log(config: &Config) -> anyhow::Result<EventLog> {
    let backend = connect_store(config).await?;
    let metrics = Metrics::new();
    let hub = Hub::new(config.limits.subscriber_queue, config.limits.subscriber_queue_bytes, metrics.clone());
    let fanout: Arc<dyn FanOut> = Arc::new(LocalFanOut::new(hub.clone()));
    Ok(EventLog::start(backend, log_options(config), hub, fanout, metrics))
}

async fn connect_store(config: &Config) -> anyhow::Result<Backend> {
    let backend = Backend::connect(&config.store).await.context("connecting to the store")?;
    if config.store.migrate_on_start {
        backend.migrate().await.context("applying migrations")?;
    } else {
        // Serving on a database without its tables would fail every request while looking ready.
        let pending = backend.pending_migrations().await.context("reading the applied migrations")?;
        anyhow::ensure!(
            pending.is_empty(),
            "the database lacks {} migration(s) ({}) and store.migrate_on_start is false: run `junction migrate`",
            pending.len(),
            pending.join(", ")
        );
    }
    Ok(backend)
}

/// Says at start what an acknowledgement promises, in the database's own words.
async fn log_durability(config: &Config, backend: &Backend) -> anyhow::Result<()> {
    let setting = backend.durability_setting().await.context("reading the store's durability setting")?;
    match config.store.durability {
        Durability::Fsync => tracing::info!(durability = "fsync", %setting, "acknowledged writes are on disk"),
        Durability::Process => tracing::info!(
            durability = "process",
            %setting,
            "acknowledged writes survive a crash of junction, not a power loss (store.durability)"
        ),
    }
    Ok(())
}

fn log_options(config: &Config) -> LogOptions {
    LogOptions { commit_max_requests: config.store.commit_max_requests, catch_up_page: config.store.catch_up_page }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
