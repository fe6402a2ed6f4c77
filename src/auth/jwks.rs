//! An identity provider's JSON Web Key Set (`auth.jwks_url`), fetched and cached.
//!
//! Providers rotate their signing keys: a new key appears in the set before tokens are signed
//! with it, and an old one disappears after its tokens have expired. So the set is fetched at
//! start, used for `auth.jwks_cache_secs`, and fetched again at once when a token names a key
//! id the cached set does not hold. Any client can make up key ids, so fetches are at least
//! `auth.jwks_min_refresh_secs` apart, and concurrent requests wait for one fetch instead of
//! each starting their own. When a fetch fails, the keys fetched before stay in use: a provider
//! that is briefly down must not lock every user out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::AuthError;
use crate::config::AuthConfig;
use crate::metrics::Metrics;

/// A key set larger than this is not a key set (providers publish a few kilobytes).
const MAX_KEY_SET_BYTES: usize = 1024 * 1024;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable signing key of the set.
#[derive(Clone)]
pub(super) struct SigningKey {
    /// The algorithm the set pins the key to (`alg`), if it does.
    algorithm: Option<Algorithm>,
    pub(super) key: DecodingKey,
    family: KeyFamily,
}

/// Which algorithms a key can verify at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

impl KeyFamily {
    pub(super) fn of(algorithm: Algorithm) -> Option<KeyFamily> {
        use Algorithm::*;
        match algorithm {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
            ES256 | ES384 => Some(KeyFamily::Ec),
            EdDSA => Some(KeyFamily::Ed),
            HS256 | HS384 | HS512 => None,
        }
    }
}

impl SigningKey {
    fn verifies(&self, algorithm: Algorithm) -> bool {
        KeyFamily::of(algorithm) == Some(self.family) && self.algorithm.is_none_or(|pinned| pinned == algorithm)
    }
}

#[derive(Default)]
struct Cached {
    by_id: HashMap<String, SigningKey>,
    /// Keys published without a `kid`: tried for tokens that name none.
    unnamed: Vec<SigningKey>,
    /// When the cached keys were fetched (None: never).
    fetched_at: Option<Instant>,
    /// When the last fetch was started, successful or not.
    attempted_at: Option<Instant>,
}

pub(super) struct KeySet {
    url: String,
    client: reqwest::Client,
    cache_for: Duration,
    min_refresh: Duration,
    cached: RwLock<Cached>,
    /// Held while fetching, so that one fetch serves every request waiting for it.
    fetching: Mutex<()>,
    metrics: Metrics,
}

impl KeySet {
    pub(super) fn new(config: &AuthConfig, metrics: Metrics) -> KeySet {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a default HTTP client");
        KeySet {
            url: config.jwks_url.clone(),
            client,
            cache_for: Duration::from_secs(config.jwks_cache_secs),
            min_refresh: Duration::from_secs(config.jwks_min_refresh_secs),
            cached: RwLock::default(),
            fetching: Mutex::new(()),
            metrics,
        }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Fetches the set now (at start), so that the first token does not wait for it and a wrong
    /// URL shows in the log at once. Returns how many usable keys it holds.
    pub(super) async fn prefetch(&self) -> Result<usize, String> {
        let _fetching = self.fetching.lock().await;
        self.refresh().await
    }

    /// The keys that may have signed a token with header `kid` and `algorithm`.
    pub(super) async fn keys_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<Vec<SigningKey>, AuthError> {
        if let Some(keys) = self.lookup(kid, algorithm, false).await {
            return Ok(keys);
        }
        let _fetching = self.fetching.lock().await;
        // Someone else may have fetched while this request waited for the lock.
        if let Some(keys) = self.lookup(kid, algorithm, false).await {
            return Ok(keys);
        }
        if self.may_fetch().await {
            if let Err(reason) = self.refresh().await {
                tracing::warn!(url = %self.url, %reason, "auth: could not fetch the JWKS; keeping the keys fetched before");
            }
        }
        // Stale keys are better than none while the provider cannot be reached.
        if let Some(keys) = self.lookup(kid, algorithm, true).await {
            return Ok(keys);
        }
        Err(AuthError::Invalid(match kid {
            Some(kid) => format!("the token's key id {kid:?} is not in the key set at {}", self.url),
            None => format!("no key of the key set at {} verifies {algorithm:?} tokens without a key id", self.url),
        }))
    }

    /// The matching keys, if the cache holds any and is fresh (or `stale_ok`).
    async fn lookup(&self, kid: Option<&str>, algorithm: Algorithm, stale_ok: bool) -> Option<Vec<SigningKey>> {
        let cached = self.cached.read().await;
        let fresh = cached.fetched_at.is_some_and(|at| at.elapsed() < self.cache_for);
        if !fresh && !stale_ok {
            return None;
        }
        let keys: Vec<SigningKey> = match kid {
            Some(kid) => cached.by_id.get(kid).into_iter().filter(|k| k.verifies(algorithm)).cloned().collect(),
            None => {
                cached.unnamed.iter().chain(cached.by_id.values()).filter(|k| k.verifies(algorithm)).cloned().collect()
            }
        };
        (!keys.is_empty()).then_some(keys)
    }

    async fn may_fetch(&self) -> bool {
        self.cached.read().await.attempted_at.is_none_or(|at| at.elapsed() >= self.min_refresh)
    }

    /// Fetches the set and replaces the cache with it; the caller holds `fetching`.
    async fn refresh(&self) -> Result<usize, String> {
        self.cached.write().await.attempted_at = Some(Instant::now());
        let fetched = self.fetch().await;
        self.metrics.jwks_fetched(fetched.is_ok());
        let (by_id, unnamed) = fetched?;
        let count = by_id.len() + unnamed.len();
        let mut cached = self.cached.write().await;
        cached.by_id = by_id;
        cached.unnamed = unnamed;
        cached.fetched_at = Some(Instant::now());
        tracing::debug!(url = %self.url, keys = count, "auth: fetched the JWKS");
        Ok(count)
    }

    async fn fetch(&self) -> Result<(HashMap<String, SigningKey>, Vec<SigningKey>), String> {
        let mut response = self.client.get(&self.url).send().await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_KEY_SET_BYTES {
                return Err(format!("the key set is larger than {MAX_KEY_SET_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body)
    }
}

/// reqwest's error with its causes ("error sending request" alone names none).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The signing keys of a JWKS document. Keys Junction cannot use (encryption keys, symmetric
/// keys, unknown types or algorithms) are skipped one by one: providers publish those beside
/// their signing keys, and one of them must not make the whole set unusable.
pub(super) fn parse_key_set(body: &[u8]) -> Result<(HashMap<String, SigningKey>, Vec<SigningKey>), String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON Web Key Set ({{\"keys\": [...]}}): {e}"))?;
    let (mut by_id, mut unnamed) = (HashMap::new(), Vec::new());
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(key) = signing_key(&jwk) else { continue };
        match jwk.common.key_id {
            Some(kid) => {
                by_id.insert(kid, key);
            }
            None => unnamed.push(key),
        }
    }
    Ok((by_id, unnamed))
}

fn signing_key(jwk: &Jwk) -> Option<SigningKey> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256) => return None,
        Some(pinned) => Some(pinned.to_string().parse::<Algorithm>().ok()?),
    };
    if algorithm.is_some_and(|a| KeyFamily::of(a) != Some(family)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SigningKey { algorithm, key, family })
}
