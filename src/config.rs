//! Configuration: built-in defaults, then `config.toml`, then environment variables.
//!
//! Every key has its default in [`Config::default`]; the repository's `config.toml` documents each
//! key with that same value (a test keeps the two equal). Environment variables override both:
//! `JUNCTION_SECTION__KEY` (double underscore between levels, e.g. `JUNCTION_SERVER__LISTEN`), plus
//! the conventional `DATABASE_URL` (→ `store.url`) and `REDIS_URL` (→ `redis.url`).
//!
//! Unknown keys are errors, not silently ignored: a typo in a limit would otherwise run the
//! server with a default the operator did not choose.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub redis: RedisConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub protocols: ProtocolsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on. Port 0 picks a free port (tests use it). A host name
    /// (`localhost:8787`) is resolved when the configuration is read.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// Seconds that shutdown waits for connections and in-flight appends before giving up.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (created on first run) or `postgres://…`.
    pub url: String,
    /// Apply the embedded migrations at start (`junction migrate` applies them on demand).
    pub migrate_on_start: bool,
    /// Connections in the database pool (on Postgres, the committer holds one more of its own).
    pub max_connections: u32,
    /// Most append requests committed together in one transaction (group commit).
    pub commit_max_requests: usize,
    /// Events per page when a subscriber catches up from storage.
    pub catch_up_page: u32,
    /// How long (ms) a request waits for a database connection, and the start waits for the
    /// first one, before it fails with a retryable error. Short, so that clients hear at once
    /// that the database is gone instead of hanging.
    pub timeout_ms: u64,
    /// When an acknowledged write is safe: `fsync` (on disk, survives power loss) or `process`
    /// (survives a crash or `kill -9` of Junction, not of the machine). See [`Durability`].
    pub durability: Durability,
}

/// What "acknowledged" promises about a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The write is on disk before it is acknowledged: SQLite `synchronous = FULL`, Postgres
    /// `synchronous_commit = on`. Survives power loss and an operating-system crash.
    #[default]
    Fsync,
    /// The write is in the database's log, handed to the operating system but not yet flushed,
    /// when it is acknowledged: SQLite WAL with `synchronous = NORMAL`, Postgres
    /// `synchronous_commit = off`. Survives a crash or `kill -9` of Junction (and, on Postgres,
    /// of the database server process), not a power loss or an OS crash, which can lose the last
    /// fraction of a second of acknowledged writes. No fsync on the write path.
    Process,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Process => "process",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port`; empty runs a single instance with in-process fan-out.
    pub url: String,
    /// Prefix of every Redis key and channel Junction uses.
    pub channel_prefix: String,
    /// PEM file of the certificate authority that signed the Redis server's certificate, for a
    /// `rediss://` URL with a private CA; empty trusts the system's authorities.
    pub ca_file: String,
    /// Batches up to this many bytes travel through Redis with their events; larger ones as a
    /// notice, and the other instances read them from the database.
    pub inline_max_bytes: usize,
    /// Messages waiting to be published; beyond this they are dropped (the other instances then
    /// find the batches in the change log).
    pub publish_queue: usize,
    /// While Redis is unreachable, how often (ms) each instance polls the change log for what the
    /// others committed.
    pub poll_interval_ms: u64,
    /// While Redis works, how often (ms) each instance checks the change log for batches Redis did
    /// not bring (an instance that died between its commit and its publish).
    pub check_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `junction=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shared secret for HS256 (and HS384/HS512) tokens. Empty: those tokens are not accepted.
    pub jwt_secret: String,
    /// PEM public key (RSA, EC or Ed25519) for RS*/PS*, ES256/ES384 or EdDSA tokens. Empty:
    /// only the JWKS (if any) verifies those.
    pub jwt_public_key: String,
    /// The identity provider's JSON Web Key Set (`https://…/.well-known/jwks.json`): fetched at
    /// start, cached, and fetched again when a token names a key id it does not hold.
    pub jwks_url: String,
    /// Seconds a fetched key set is used before it is fetched again (so that a key the provider
    /// withdrew stops verifying).
    pub jwks_cache_secs: u64,
    /// Fewest seconds between two fetches: tokens with made-up key ids must not make Junction
    /// hammer the provider. A key rotated in is picked up at most this late.
    pub jwks_min_refresh_secs: u64,
    /// When set, a token's `iss` must be exactly this.
    pub issuer: String,
    /// When set, a token's `aud` must name one of these (a string or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The claim that names the user when the token has no `userId` (Junction's own claim).
    /// A top-level claim name, else a dotted path into nested objects.
    pub user_id_claim: String,
    /// Where Junction's permissions object (`{canRead, canWrite, isAdmin}`) sits in the token:
    /// a top-level claim name, else a dotted path (`app_metadata.junction`).
    pub permissions_claim: String,
    /// Granted to every user with a valid token, on top of what the token grants.
    pub default_grants: DefaultGrants,
    /// Secret that guards administrative operations (store reset, admin info, the event API).
    /// Empty disables them.
    pub admin_secret: String,
}

/// Store patterns every authenticated user may read or write; `{userId}` stands for the user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultGrants {
    pub can_read: Vec<String>,
    pub can_write: Vec<String>,
}

impl AuthConfig {
    /// Whether some token can be verified: a secret, a public key or a key set.
    pub fn verifies_tokens(&self) -> bool {
        !self.jwt_secret.is_empty() || !self.jwt_public_key.is_empty() || !self.jwks_url.is_empty()
    }
}

/// `"aud"` or `["aud1", "aud2"]`: providers document a single audience, and a list is what it is.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) if one.is_empty() => Vec::new(),
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted WebSocket message or HTTP body, in bytes.
    pub max_frame_bytes: usize,
    /// Most simultaneous client connections over all protocols; further upgrades get 503.
    pub max_connections: usize,
    /// Messages one connection may send per second before it is told to slow down.
    pub messages_per_second: u32,
    /// Seconds a connection may keep sending faster than `messages_per_second` (every message
    /// over the rate refused, with no quiet second between) before it is closed as a flooder.
    pub flood_grace_secs: u64,
    /// Seconds a WebSocket that must authenticate with a message (SyncKit without anonymous
    /// access) has to do so before it is closed with the protocol's auth error.
    pub auth_deadline_secs: u64,
    /// Most open plain-HTTP connections (not upgraded to WebSocket; those count under
    /// `max_connections`). At the limit, the connection that has waited longest for a request
    /// is closed to make room for a new one.
    pub max_http_connections: usize,
    /// Seconds a client has to send a request's head (line and headers), counted from when the
    /// server starts waiting for it: on a new connection, and between requests on a kept-alive
    /// one.
    pub http_header_timeout_secs: u64,
    /// Seconds a plain-HTTP connection may move no byte in either direction (a stalled upload,
    /// a client that stopped reading its response) before it is closed.
    pub http_idle_timeout_secs: u64,
    /// Batches queued for one live subscriber before it is closed as a slow consumer.
    pub subscriber_queue: usize,
    /// Bytes of events queued for one live subscriber before it is closed as a slow consumer
    /// (one batch larger than this still reaches a subscriber with nothing else queued).
    pub subscriber_queue_bytes: usize,
    /// Bytes of frames waiting for one WebSocket (replies and live deliveries not yet written to
    /// the network). Past it, producers wait for the socket, and a broadcast closes the
    /// connection as a slow consumer. A frame larger than this still goes, alone.
    pub ws_send_queue_bytes: usize,
    /// Pulls that one LiveStore 0.4 WebSocket may have running at once (a client runs one live
    /// pull per store); the next is refused with an error.
    pub max_pulls_per_connection: usize,
    /// A connection (WebSocket, event stream or HTTP response) whose socket accepts no bytes for
    /// this many seconds while Junction has bytes to send is closed as a slow consumer: its
    /// client stopped reading.
    pub write_stall_timeout_secs: u64,
    /// Bytes a WebSocket reads at a time. Every open socket holds a buffer this large (a larger
    /// message still arrives whole, read in several steps), so it weighs on every idle
    /// connection's memory.
    pub ws_read_buffer_bytes: usize,
    /// Outgoing bytes a WebSocket gathers before writing them to the network.
    pub ws_write_buffer_bytes: usize,
    /// Most unsent bytes one WebSocket may hold before its connection is closed; at least
    /// `ws_write_buffer_bytes` plus twice `max_frame_bytes`, so that any one frame fits.
    pub ws_max_write_buffer_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolsConfig {
    pub synckit: SyncKitConfig,
    pub livestore: LiveStoreConfig,
    pub pocket: PocketConfig,
}

/// SyncKit (`@synckit-js/sdk`): binary WebSocket frames at `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncKitConfig {
    pub enabled: bool,
    /// Path of the WebSocket endpoint (the SDK's `serverUrl` path).
    pub path: String,
    /// Authenticate a socket without a token at once, with every permission. The SDK's
    /// `SyncKit` class cannot send a token (it can put `?token=` in its `serverUrl`).
    pub allow_anonymous: bool,
    /// Largest message accepted, in bytes; bigger ones get `Message too large`.
    pub max_message_bytes: usize,
    /// Presence not updated for this long is dropped and a leave is broadcast.
    pub awareness_timeout_secs: u64,
    /// Longest a broadcast is held back to coalesce writes to a busy document, in ms.
    pub batch_window_ms: u64,
    /// Events between two snapshots of a document.
    pub snapshot_every: u64,
    /// Refuse `subscribe` outside the reference's demo ids (`playground`, `room:*`, …).
    pub document_whitelist: bool,
}

/// LiveStore serves two client generations at two places: 0.3.x always appends `/websocket` to
/// its base URL; 0.4.x connects to its base URL verbatim and says `transport=ws|http` in the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveStoreConfig {
    pub enabled: bool,
    /// Path of the 0.3.x WebSocket endpoint (the client's base URL path + `/websocket`).
    pub path: String,
    /// Path of the 0.4.x endpoint (WebSocket and HTTP; the client's base URL path).
    pub rpc_path: String,
    /// Let clients in without a token.
    pub allow_anonymous: bool,
    /// Static tokens accepted in the client's `payload.authToken`, each granting every store.
    pub tokens: Vec<String>,
}

/// Pocket (`@pocket/sync` SyncEngine): WebSocket at `path`, HTTP at `/sync/push`, `/sync/pull`
/// and `/sync` (the client always resolves those against the server root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PocketConfig {
    pub enabled: bool,
    /// Path of the WebSocket endpoint.
    pub path: String,
    /// Also accept Pocket WebSocket upgrades at `/` (the official example client connects there).
    pub also_at_root: bool,
    /// Let clients in without a token (a token that is sent is still checked).
    pub allow_anonymous: bool,
    /// Most simultaneous WebSocket connections of one user (`userId`/`sub` of the token).
    pub max_connections_per_user: usize,
    /// Close code for a WebSocket whose token is refused (the reference server's is 4001).
    pub auth_failed_close_code: u16,
    /// Close code for a WebSocket over `max_connections_per_user` (the reference's is 4002).
    pub too_many_connections_close_code: u16,
    /// How concurrent writes are settled: `last-write-wins`, `server-wins`, `client-wins`, `merge`.
    pub conflict_strategy: String,
    /// Per-collection strategies: collection name (or prefix ending in `*`) → strategy. The
    /// exact name wins over prefixes, a longer prefix over a shorter one.
    pub conflict_strategies: std::collections::BTreeMap<String, String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8787)), shutdown_grace_secs: 10 }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://data/junction.db".into(),
            migrate_on_start: true,
            max_connections: 8,
            commit_max_requests: 512,
            catch_up_page: 256,
            timeout_ms: 3000,
            durability: Durability::Fsync,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            channel_prefix: "junction".into(),
            ca_file: String::new(),
            inline_max_bytes: 64 * 1024,
            publish_queue: 65_536,
            poll_interval_ms: 200,
            check_interval_ms: 1_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            jwt_public_key: String::new(),
            jwks_url: String::new(),
            jwks_cache_secs: 600,
            jwks_min_refresh_secs: 10,
            issuer: String::new(),
            audience: Vec::new(),
            user_id_claim: "sub".into(),
            permissions_claim: "permissions".into(),
            default_grants: DefaultGrants::default(),
            admin_secret: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 16 * 1024 * 1024,
            max_connections: 100_000,
            messages_per_second: 1_000,
            flood_grace_secs: 10,
            auth_deadline_secs: 10,
            max_http_connections: 4_096,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 60,
            subscriber_queue: 1_024,
            subscriber_queue_bytes: 32 * 1024 * 1024,
            ws_send_queue_bytes: 16 * 1024 * 1024,
            max_pulls_per_connection: 64,
            write_stall_timeout_secs: 30,
            ws_read_buffer_bytes: 1024,
            ws_write_buffer_bytes: 8 * 1024,
            ws_max_write_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for ProtocolsConfig {
    fn default() -> Self {
        let livestore = LiveStoreConfig {
            enabled: true,
            path: "/websocket".into(),
            rpc_path: "/".into(),
            allow_anonymous: true,
            tokens: Vec::new(),
        };
        let synckit = SyncKitConfig {
            enabled: true,
            path: "/ws".into(),
            allow_anonymous: true,
            max_message_bytes: 2_000_000,
            awareness_timeout_secs: 30,
            batch_window_ms: 50,
            snapshot_every: 256,
            document_whitelist: false,
        };
        let pocket = PocketConfig {
            enabled: true,
            path: "/sync".into(),
            also_at_root: false,
            allow_anonymous: true,
            max_connections_per_user: 10,
            auth_failed_close_code: 4001,
            too_many_connections_close_code: 4002,
            conflict_strategy: "last-write-wins".into(),
            conflict_strategies: Default::default(),
        };
        ProtocolsConfig { synckit, livestore, pocket }
    }
}

/// Why a configuration was refused. The message always names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `#[source]`: the description already says everything the figment error would.
    #[error("{}", describe_figment_error(.0))]
    Parse(Box<figment::Error>),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Loads the layers: defaults, then the TOML file (if it exists), then the environment.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The layered sources, exposed so callers (tests, the CLI) can merge more on top.
    pub fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            // Only `JUNCTION_<SECTION>__<KEY>` is configuration (every key lives in a section);
            // other JUNCTION_* variables belong to tools around Junction (see `ignored_env_vars`).
            .merge(Env::prefixed("JUNCTION_").filter(|key| key.as_str().contains("__")).split("__"))
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "store.url".into()))
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_string() });
        let url = &self.store.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return invalid("store.url", "must start with sqlite: or postgres://");
        }
        if !self.redis.url.is_empty()
            && !self.redis.url.starts_with("redis://")
            && !self.redis.url.starts_with("rediss://")
        {
            return invalid("redis.url", "must be empty or start with redis:// or rediss://");
        }
        if self.redis.publish_queue == 0 {
            return invalid("redis.publish_queue", "must be at least 1");
        }
        if self.redis.poll_interval_ms == 0 {
            return invalid("redis.poll_interval_ms", "must be at least 1");
        }
        if self.redis.check_interval_ms == 0 {
            return invalid("redis.check_interval_ms", "must be at least 1");
        }
        if self.store.max_connections == 0 {
            return invalid("store.max_connections", "must be at least 1");
        }
        let jwks = &self.auth.jwks_url;
        if !jwks.is_empty() && !jwks.starts_with("https://") && !jwks.starts_with("http://") {
            return invalid("auth.jwks_url", "must be empty or an http:// or https:// URL");
        }
        if self.auth.jwks_cache_secs == 0 {
            return invalid("auth.jwks_cache_secs", "must be at least 1");
        }
        if self.auth.user_id_claim.is_empty() {
            return invalid("auth.user_id_claim", "must name a claim (the default is sub)");
        }
        if self.auth.permissions_claim.is_empty() {
            return invalid("auth.permissions_claim", "must name a claim (the default is permissions)");
        }
        if self.store.commit_max_requests == 0 {
            return invalid("store.commit_max_requests", "must be at least 1");
        }
        if self.store.timeout_ms == 0 {
            return invalid("store.timeout_ms", "must be at least 1");
        }
        if self.store.catch_up_page == 0 {
            return invalid("store.catch_up_page", "must be at least 1");
        }
        if self.limits.max_frame_bytes < 1024 {
            return invalid("limits.max_frame_bytes", "must be at least 1024");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.messages_per_second == 0 {
            return invalid("limits.messages_per_second", "must be at least 1");
        }
        for (key, secs) in [
            ("limits.flood_grace_secs", self.limits.flood_grace_secs),
            ("limits.auth_deadline_secs", self.limits.auth_deadline_secs),
            ("limits.http_header_timeout_secs", self.limits.http_header_timeout_secs),
            ("limits.http_idle_timeout_secs", self.limits.http_idle_timeout_secs),
        ] {
            if secs == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.limits.max_http_connections == 0 {
            return invalid("limits.max_http_connections", "must be at least 1");
        }
        if self.limits.subscriber_queue == 0 {
            return invalid("limits.subscriber_queue", "must be at least 1");
        }
        if self.limits.subscriber_queue_bytes == 0 {
            return invalid("limits.subscriber_queue_bytes", "must be at least 1");
        }
        if self.limits.max_pulls_per_connection == 0 {
            return invalid("limits.max_pulls_per_connection", "must be at least 1");
        }
        if self.limits.ws_send_queue_bytes == 0 {
            return invalid("limits.ws_send_queue_bytes", "must be at least 1");
        }
        if self.limits.write_stall_timeout_secs == 0 {
            return invalid("limits.write_stall_timeout_secs", "must be at least 1");
        }
        if self.limits.ws_read_buffer_bytes < 256 {
            return invalid("limits.ws_read_buffer_bytes", "must be at least 256");
        }
        if self.limits.ws_max_write_buffer_bytes < self.limits.ws_write_buffer_bytes + 2 * self.limits.max_frame_bytes {
            return invalid(
                "limits.ws_max_write_buffer_bytes",
                "must be at least ws_write_buffer_bytes plus twice max_frame_bytes",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "is not a valid tracing filter (e.g. `info`, `junction=debug`)");
        }
        let livestore = &self.protocols.livestore;
        let paths = [
            ("protocols.synckit.path", self.protocols.synckit.enabled, &self.protocols.synckit.path),
            ("protocols.livestore.path", livestore.enabled, &livestore.path),
            ("protocols.livestore.rpc_path", livestore.enabled, &livestore.rpc_path),
            ("protocols.pocket.path", self.protocols.pocket.enabled, &self.protocols.pocket.path),
        ];
        for (key, enabled, path) in paths {
            if !path.starts_with('/') {
                return invalid(key, "must start with /");
            }
            if enabled && (RESERVED_PATHS.contains(&path.as_str()) || path.starts_with("/v1/") || path == "/v1") {
                return invalid(key, "collides with one of Junction's own endpoints");
            }
        }
        // Pocket's HTTP routes stay at the root: another protocol's endpoint there would never
        // be reached (a LiveStore 0.4 HTTP request to /sync got Pocket's PARSE_ERROR).
        if self.protocols.pocket.enabled {
            for (key, enabled, path) in &paths[..3] {
                if *enabled && POCKET_HTTP_ROUTES.contains(&path.as_str()) {
                    return invalid(
                        key,
                        &format!(
                            "collides with Pocket's HTTP route {path}; move it or set protocols.pocket.enabled = false"
                        ),
                    );
                }
            }
        }
        for (i, (key, a_enabled, a)) in paths.iter().enumerate() {
            for (_, b_enabled, b) in &paths[i + 1..] {
                if *a_enabled && *b_enabled && a == b {
                    return invalid(key, "is also used by another enabled protocol");
                }
            }
        }
        let pocket = &self.protocols.pocket;
        if pocket.max_connections_per_user == 0 {
            return invalid("protocols.pocket.max_connections_per_user", "must be at least 1");
        }
        for (key, code) in [
            ("protocols.pocket.auth_failed_close_code", pocket.auth_failed_close_code),
            ("protocols.pocket.too_many_connections_close_code", pocket.too_many_connections_close_code),
        ] {
            if !(4000..=4999).contains(&code) {
                return invalid(key, "must be an application close code (4000 to 4999)");
            }
        }
        let strategy_names = POCKET_CONFLICT_STRATEGIES.join(", ");
        let known = |name: &String| POCKET_CONFLICT_STRATEGIES.contains(&name.as_str());
        if !known(&pocket.conflict_strategy) {
            return invalid("protocols.pocket.conflict_strategy", &format!("must be one of {strategy_names}"));
        }
        if let Some((collection, _)) = pocket.conflict_strategies.iter().find(|(_, name)| !known(name)) {
            let reason = format!("{collection:?} must map to one of {strategy_names}");
            return invalid("protocols.pocket.conflict_strategies", &reason);
        }
        if livestore.tokens.iter().any(String::is_empty) {
            return invalid("protocols.livestore.tokens", "must not contain an empty token");
        }
        Ok(())
    }

    /// `JUNCTION_*` variables that are not configuration (no `__`), so that start-up can say it
    /// ignored them: `JUNCTION_SERVER_LISTEN` is a typo, not a setting.
    pub fn ignored_env_vars() -> Vec<String> {
        std::env::vars()
            .map(|(name, _)| name)
            .filter(|n| n.starts_with("JUNCTION_") && !n[9..].contains("__"))
            .collect()
    }

    /// Names of the protocols that let clients in without a token, for the start-up warning.
    pub fn anonymous_protocols(&self) -> Vec<&'static str> {
        let protocols = &self.protocols;
        [
            ("synckit", protocols.synckit.enabled && protocols.synckit.allow_anonymous),
            ("livestore", protocols.livestore.enabled && protocols.livestore.allow_anonymous),
            ("pocket", protocols.pocket.enabled && protocols.pocket.allow_anonymous),
        ]
        .into_iter()
        .filter(|(_, anonymous)| *anonymous)
        .map(|(name, _)| name)
        .collect()
    }

    /// Names of the enabled protocols that no client can get into: anonymous access off, and no
    /// key to check a token with (nor, for LiveStore, a static token). For the start-up warning.
    pub fn locked_protocols(&self) -> Vec<&'static str> {
        let protocols = &self.protocols;
        let jwt = self.auth.verifies_tokens();
        [
            ("synckit", protocols.synckit.enabled && !protocols.synckit.allow_anonymous && !jwt),
            (
                "livestore",
                protocols.livestore.enabled
                    && !protocols.livestore.allow_anonymous
                    && !jwt
                    && protocols.livestore.tokens.is_empty(),
            ),
            ("pocket", protocols.pocket.enabled && !protocols.pocket.allow_anonymous && !jwt),
        ]
        .into_iter()
        .filter(|(_, locked)| *locked)
        .map(|(name, _)| name)
        .collect()
    }
}

/// `127.0.0.1:8787`, `[::1]:8787` or `host:port`, resolved to the first address the name has.
fn socket_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    use std::net::ToSocketAddrs;
    let text = String::deserialize(deserializer)?;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| serde::de::Error::custom(format!("{text:?} is not an address and port: {error}")))?;
    addresses.next().ok_or_else(|| serde::de::Error::custom(format!("{text:?} resolves to no address")))
}

/// One line per problem, each naming the key (as `config.toml` spells it) and the source.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            // "from TOML file /etc/junction/config.toml", "from `JUNCTION_` environment variable(s)"
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(path)) => format!(" (from {} {})", m.name, path.display()),
                    _ => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("configuration: {}{source}", e.kind)
            } else {
                format!("configuration key `{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths served by Junction itself, which no protocol may take, besides everything under `/v1`
/// (the event API). `/` may be shared with the LiveStore 0.4 endpoint, which tells its requests
/// apart by their query.
const RESERVED_PATHS: &[&str] = &["/health", "/health/ready", "/metrics"];

/// Pocket's conflict strategies by their configuration names (the protocol module parses them;
/// a test there keeps the two lists the same).
pub const POCKET_CONFLICT_STRATEGIES: &[&str] = &["server-wins", "client-wins", "last-write-wins", "merge"];

/// Pocket's HTTP routes, served at the root whatever `protocols.pocket.path` is: its client
/// resolves them against the server's origin.
pub const POCKET_HTTP_ROUTES: &[&str] = &["/sync", "/sync/push", "/sync/pull"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_nobody_can_enter_are_named() {
        let mut config = Config::default();
        assert!(config.locked_protocols().is_empty(), "anonymous access is on by default");
        config.protocols.synckit.allow_anonymous = false;
        config.protocols.livestore.allow_anonymous = false;
        config.protocols.pocket.allow_anonymous = false;
        assert_eq!(config.locked_protocols(), ["synckit", "livestore", "pocket"]);
        config.protocols.livestore.tokens = vec!["t".into()];
        config.protocols.pocket.enabled = false;
        assert_eq!(config.locked_protocols(), ["synckit"]);
        config.auth.jwt_secret = "s".into();
        assert!(config.locked_protocols().is_empty());
    }

    fn with_toml(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)))
    }

    #[test]
    fn repository_config_toml_documents_exactly_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let parsed: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn listen_takes_a_host_name() {
        let config = with_toml("[server]\nlisten = \"localhost:8787\"\n").unwrap();
        assert!(config.server.listen.ip().is_loopback(), "{}", config.server.listen);
        assert_eq!(config.server.listen.port(), 8787);
        let err = with_toml("[server]\nlisten = \"localhost\"\n").unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let err = with_toml("[limits]\nmax_frame_byte = 10\n").unwrap_err().to_string();
        assert!(err.contains("max_frame_byte"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused_by_name() {
        let err = with_toml("[limits]\nmax_connections = \"many\"\n").unwrap_err().to_string();
        assert!(err.contains("max_connections"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused_by_name() {
        let err = with_toml("[store]\nurl = \"mysql://x\"\n").unwrap_err().to_string();
        assert!(err.contains("store.url"), "{err}");
        let err = with_toml("[protocols.pocket]\nenabled = true\npath = \"/ws\"\nallow_anonymous = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protocols.synckit.path"), "{err}");
        let err = with_toml("[protocols.pocket]\nenabled = true\npath = \"/metrics\"\nallow_anonymous = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protocols.pocket.path"), "{err}");
        let err = with_toml("[protocols.pocket]\nconflict_strategy = \"newest\"\n").unwrap_err().to_string();
        assert!(err.contains("protocols.pocket.conflict_strategy"), "{err}");
        let err =
            with_toml("[protocols.pocket.conflict_strategies]\n\"notes-*\" = \"mine\"\n").unwrap_err().to_string();
        assert!(err.contains("protocols.pocket.conflict_strategies") && err.contains("notes-*"), "{err}");
        let err = with_toml("[protocols.pocket]\nauth_failed_close_code = 1000\n").unwrap_err().to_string();
        assert!(err.contains("protocols.pocket.auth_failed_close_code"), "{err}");
        let err = with_toml("[protocols.livestore]\nrpc_path = \"/sync\"\n[protocols.pocket]\npath = \"/pocket\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protocols.livestore.rpc_path") && err.contains("Pocket's HTTP route"), "{err}");
        let pocket_off = "[protocols.livestore]\nrpc_path = \"/sync\"\n[protocols.pocket]\nenabled = false\n";
        assert_eq!(with_toml(pocket_off).unwrap().protocols.livestore.rpc_path, "/sync");
        let ok = with_toml("[protocols.pocket.conflict_strategies]\nsettings = \"server-wins\"\n").unwrap();
        assert_eq!(ok.protocols.pocket.conflict_strategies["settings"], "server-wins");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("junction.toml", "[server]\nlisten = \"127.0.0.1:1\"\n")?;
            jail.set_env("JUNCTION_SERVER__LISTEN", "127.0.0.1:2");
            jail.set_env("DATABASE_URL", "postgres://db/junction");
            jail.set_env("JUNCTION_LIMITS__SUBSCRIBER_QUEUE", "7");
            jail.set_env("JUNCTION_URL", "http://not-a-setting");
            let config = Config::load(Path::new("junction.toml")).unwrap();
            assert_eq!(config.server.listen.port(), 2);
            assert_eq!(config.store.url, "postgres://db/junction");
            assert_eq!(config.limits.subscriber_queue, 7);
            assert_eq!(Config::ignored_env_vars(), ["JUNCTION_URL"]);
            Ok(())
        });
    }

    /// Providers document one audience; a list is allowed too, in the file and in the environment.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn audience_is_one_or_many() {
        assert_eq!(with_toml("[auth]\naudience = \"api\"\n").unwrap().auth.audience, ["api"]);
        assert_eq!(with_toml("[auth]\naudience = [\"a\", \"b\"]\n").unwrap().auth.audience, ["a", "b"]);
        assert!(with_toml("[auth]\naudience = \"\"\n").unwrap().auth.audience.is_empty());
        let err = with_toml("[auth]\njwks_url = \"ftp://id.example/keys\"\n").unwrap_err().to_string();
        assert!(err.contains("auth.jwks_url"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("junction.toml", "")?;
            jail.set_env("JUNCTION_AUTH__AUDIENCE", "https://api.example");
            jail.set_env("JUNCTION_AUTH__DEFAULT_GRANTS__CAN_READ", "[\"user-{userId}-*\"]");
            let config = Config::load(Path::new("junction.toml")).unwrap();
            assert_eq!(config.auth.audience, ["https://api.example"]);
            assert_eq!(config.auth.default_grants.can_read, ["user-{userId}-*"]);
            Ok(())
        });
    }
}
