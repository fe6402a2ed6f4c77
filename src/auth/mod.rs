//! Client tokens, shared by every protocol: one JWT format grants access across all of them.
//!
//! Claims Junction reads (others are ignored):
//!
//! ```json
//! {"userId": "u1", "exp": 1767225600,
//!  "permissions": {"canRead": ["doc-*"], "canWrite": ["doc-1"], "isAdmin": false}}
//! ```
//!
//! A pattern is a store name, or a prefix ending in `*`; `"*"` matches every store. `isAdmin`
//! grants everything. A token without `permissions` is valid but grants nothing (it does not
//! fail to parse) beyond `auth.default_grants`.
//!
//! Keys: HS256/384/512 tokens are checked with `auth.jwt_secret`; RS*, PS*, ES256/384 and EdDSA
//! tokens with `auth.jwt_public_key` or the identity provider's key set (`auth.jwks_url`, see
//! [`jwks`]). `exp` (and `nbf`) are enforced when present, without leeway, and a socket
//! authenticated by a token closes when it expires; `auth.issuer` and `auth.audience`, when set,
//! must match `iss` and `aud`.
//!
//! Tokens from an identity provider carry its own claims, so where the user id and the
//! permissions sit is configurable (`auth.user_id_claim`, `auth.permissions_claim`), and
//! `auth.default_grants` gives every signed-in user patterns with `{userId}` filled in: a plain
//! provider token, with no custom claim at all, can then reach the user's own stores.

mod jwks;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{AuthConfig, DefaultGrants};
use crate::metrics::Metrics;
use jwks::{KeyFamily, KeySet};

/// What a verified token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Junction's `userId`, or else the standard `sub` (filled in by [`TokenVerifier::verify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A field of its own rather than an alias of `userId`: with an alias, a token carrying both
    /// (as identity providers' tokens with custom claims do) failed as a duplicate field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default)]
    pub can_read: Vec<String>,
    #[serde(default)]
    pub can_write: Vec<String>,
    #[serde(default)]
    pub is_admin: bool,
}

impl Claims {
    pub fn can_read(&self, store: &str) -> bool {
        self.permissions.is_admin || matches_any(&self.permissions.can_read, store)
    }

    pub fn can_write(&self, store: &str) -> bool {
        self.permissions.is_admin || matches_any(&self.permissions.can_write, store)
    }
}

fn matches_any(patterns: &[String], store: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => store.starts_with(prefix),
        None => pattern == store,
    })
}

/// Whether `given` is the secret `expected` (the admin secret, a static token), compared in a
/// time that does not depend on where the two differ: with `==`, a client that can time the
/// answers learns the secret one byte at a time. Only the lengths show, which the guesser
/// chose or will learn anyway.
pub fn secret_matches(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut difference = u8::from(given.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        // `black_box` keeps the optimizer from turning the loop into an early exit.
        difference = std::hint::black_box(difference | (byte ^ given.get(i).copied().unwrap_or(0)));
    }
    difference == 0
}

/// Signs `claims` as an HS256 token with `auth.jwt_secret` (what `junction token` prints), the
/// way this configuration reads tokens: the permissions under `auth.permissions_claim`, and
/// `iss` / `aud` when `auth.issuer` / `auth.audience` require them.
pub fn mint_hs256(claims: &Claims, auth: &AuthConfig) -> Result<String, jsonwebtoken::errors::Error> {
    let mut body = serde_json::to_value(claims)?;
    let fields = body.as_object_mut().expect("claims serialize as an object");
    if auth.permissions_claim != "permissions"
        && let Some(permissions) = fields.remove("permissions")
    {
        // A top-level claim of exactly that name is found first, dotted or not.
        fields.insert(auth.permissions_claim.clone(), permissions);
    }
    if !auth.issuer.is_empty() {
        fields.insert("iss".into(), Value::from(auth.issuer.clone()));
    }
    if let Some(audience) = auth.audience.first() {
        fields.insert("aud".into(), Value::from(audience.clone()));
    }
    let key = EncodingKey::from_secret(auth.jwt_secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token verification key is configured (auth.jwt_secret, auth.jwt_public_key or auth.jwks_url)")]
    NotConfigured,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies client JWTs with the configured keys and turns their claims into [`Claims`].
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Option<DecodingKey>,
    /// From `auth.jwt_public_key`.
    public_key: Option<(KeyFamily, DecodingKey)>,
    jwks: Option<Arc<KeySet>>,
    issuer: Option<String>,
    audience: Vec<String>,
    user_id_claim: String,
    permissions_claim: String,
    default_grants: DefaultGrants,
}

impl TokenVerifier {
    /// Fails (naming the key) when `auth.jwt_public_key` is set but is not a PEM RSA, EC or
    /// Ed25519 public key.
    pub fn from_config(config: &AuthConfig, metrics: Metrics) -> Result<TokenVerifier, crate::config::ConfigError> {
        let secret = (!config.jwt_secret.is_empty()).then(|| DecodingKey::from_secret(config.jwt_secret.as_bytes()));
        let public_key = if config.jwt_public_key.is_empty() {
            None
        } else {
            let pem = config.jwt_public_key.as_bytes();
            let parsed = DecodingKey::from_rsa_pem(pem)
                .map(|key| (KeyFamily::Rsa, key))
                .or_else(|_| DecodingKey::from_ec_pem(pem).map(|key| (KeyFamily::Ec, key)))
                .or_else(|_| DecodingKey::from_ed_pem(pem).map(|key| (KeyFamily::Ed, key)));
            Some(parsed.map_err(|_| crate::config::ConfigError::Invalid {
                key: "auth.jwt_public_key",
                reason: "is not a PEM-encoded RSA, EC or Ed25519 public key".into(),
            })?)
        };
        let jwks = (!config.jwks_url.is_empty()).then(|| Arc::new(KeySet::new(config, metrics)));
        Ok(TokenVerifier {
            secret,
            public_key,
            jwks,
            issuer: (!config.issuer.is_empty()).then(|| config.issuer.clone()),
            audience: config.audience.clone(),
            user_id_claim: config.user_id_claim.clone(),
            permissions_claim: config.permissions_claim.clone(),
            default_grants: config.default_grants.clone(),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.jwks.is_some()
    }

    /// Fetches the identity provider's key set once at start and logs the outcome; a failure
    /// is not fatal (tokens are refused, and the set is fetched again on the next token).
    pub async fn prefetch_keys(&self) {
        let Some(jwks) = &self.jwks else { return };
        match jwks.prefetch().await {
            Ok(0) => tracing::warn!(url = jwks.url(), "auth: the JWKS holds no signing key Junction can use"),
            Ok(keys) => tracing::info!(url = jwks.url(), keys, "auth: fetched the JWKS"),
            Err(reason) => tracing::warn!(
                url = jwks.url(),
                %reason,
                "auth: could not fetch the JWKS; tokens signed by the identity provider are refused until it can"
            ),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let keys: Vec<DecodingKey> = match KeyFamily::of(header.alg) {
            None => self.secret.iter().cloned().collect(),
            Some(family) => {
                let pinned = self.public_key.iter().filter(|(f, _)| *f == family).map(|(_, key)| key.clone());
                let mut keys: Vec<DecodingKey> = pinned.collect();
                // A token that names a key id is the provider's; one that does not is tried
                // with the configured public key first.
                if let Some(jwks) = &self.jwks
                    && (keys.is_empty() || header.kid.is_some())
                {
                    match jwks.keys_for(header.kid.as_deref(), header.alg).await {
                        Ok(found) => keys = found.into_iter().map(|k| k.key).chain(keys).collect(),
                        Err(error) if keys.is_empty() => return Err(error),
                        Err(_) => {}
                    }
                }
                keys
            }
        };
        if keys.is_empty() {
            return Err(match self.is_configured() {
                false => AuthError::NotConfigured,
                true => AuthError::Invalid(format!("no configured key verifies {:?} tokens", header.alg)),
            });
        }
        let validation = self.validation(header.alg);
        let mut last_error = None;
        for key in &keys {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation) {
                Ok(data) => return self.claims(data.claims),
                Err(error) => last_error = Some(error),
            }
        }
        Err(AuthError::Invalid(last_error.map_or_else(String::new, |e| e.to_string())))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // No grace after `exp`: a socket admitted with the token closes at `exp` exactly, so a
        // token past it must not open one either.
        validation.leeway = 0;
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        if self.audience.is_empty() {
            // Every identity provider sets `aud`; jsonwebtoken refuses any `aud` unless told
            // which to expect, and without `auth.audience` there is nothing to require.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            validation.required_spec_claims.insert("aud".into());
        }
        validation
    }

    /// Junction's claims from a verified token, through the configured claim mapping.
    fn claims(&self, mut raw: serde_json::Map<String, Value>) -> Result<Claims, AuthError> {
        let number = |value: Option<&Value>| value.and_then(Value::as_u64);
        let exp = number(raw.get("exp"));
        // jsonwebtoken still accepts a token during the second of its `exp`; RFC 7519 (and the
        // socket deadline) end it at `exp`.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        if exp.is_some_and(|exp| exp <= now) {
            return Err(AuthError::Invalid("ExpiredSignature".into()));
        }
        let text = |value: Option<&Value>| match value {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let sub = text(raw.get("sub"));
        let user_id = text(raw.get("userId")).or_else(|| text(claim_at(&raw, &self.user_id_claim)));
        let mut permissions = match claim_at(&raw, &self.permissions_claim) {
            Some(value @ Value::Object(_)) => Permissions::deserialize(value).map_err(|e| {
                AuthError::Invalid(format!(
                    "the {:?} claim is not Junction's permissions object: {e}",
                    self.permissions_claim
                ))
            })?,
            // Not Junction's shape (Auth0's RBAC puts a list of strings in `permissions`):
            // it grants nothing, rather than making the token unusable.
            _ => Permissions::default(),
        };
        let grant = |patterns: &[String], into: &mut Vec<String>| {
            for pattern in patterns {
                match (pattern.contains(USER_ID_PLACEHOLDER), &user_id) {
                    (false, _) => into.push(pattern.clone()),
                    (true, Some(user)) => into.push(pattern.replace(USER_ID_PLACEHOLDER, user)),
                    // A pattern for "this user" grants nothing to a token that names no user.
                    (true, None) => {}
                }
            }
        };
        grant(&self.default_grants.can_read, &mut permissions.can_read);
        grant(&self.default_grants.can_write, &mut permissions.can_write);
        Ok(Claims {
            user_id,
            sub,
            email: text(raw.remove("email").as_ref()),
            permissions,
            exp,
            iat: number(raw.get("iat")),
        })
    }
}

/// Stands for the user's id in `auth.default_grants`.
const USER_ID_PLACEHOLDER: &str = "{userId}";

/// The claim named `path`: a top-level claim of that exact name (providers namespace custom
/// claims as URLs, which hold dots), else the dotted path through nested objects.
fn claim_at<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn verifier_with(config: AuthConfig) -> TokenVerifier {
        TokenVerifier::from_config(&AuthConfig { jwt_secret: "s3cret".into(), ..config }, Metrics::new()).unwrap()
    }

    fn verifier() -> TokenVerifier {
        verifier_with(AuthConfig::default())
    }

    fn token(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[tokio::test]
    async fn permissions_match_names_and_prefixes() {
        let claims = verifier()
            .verify(&token(
                json!({"userId": "u1", "permissions": {"canRead": ["doc-*"], "canWrite": ["doc-1"]}}),
                "s3cret",
            ))
            .await
            .unwrap();
        assert_eq!(claims.user_id.as_deref(), Some("u1"));
        assert!(claims.can_read("doc-7") && !claims.can_read("other"));
        assert!(claims.can_write("doc-1") && !claims.can_write("doc-2"));
    }

    /// Ordinary identity-provider tokens: an `aud` claim, and `sub` beside Junction's `userId`.
    #[tokio::test]
    async fn provider_tokens_with_aud_and_sub_are_accepted() {
        let with_aud = verifier().verify(&token(json!({"sub": "u3", "aud": "my-app"}), "s3cret")).await.unwrap();
        assert_eq!(with_aud.user_id.as_deref(), Some("u3"));
        let with_audiences = token(json!({"sub": "u3", "aud": ["a", "b"]}), "s3cret");
        assert!(verifier().verify(&with_audiences).await.is_ok());
        let both = verifier().verify(&token(json!({"sub": "auth0|7", "userId": "u7"}), "s3cret")).await.unwrap();
        assert_eq!(both.user_id.as_deref(), Some("u7"), "Junction's own claim wins");
    }

    #[tokio::test]
    async fn a_token_without_permissions_grants_nothing() {
        let claims = verifier().verify(&token(json!({"sub": "u2"}), "s3cret")).await.unwrap();
        assert!(!claims.can_read("anything") && !claims.can_write("anything"));
        let admin = verifier().verify(&token(json!({"permissions": {"isAdmin": true}}), "s3cret")).await.unwrap();
        assert!(admin.can_write("anything"));
        // Auth0's RBAC list in `permissions` is not Junction's object: it grants nothing.
        let rbac = verifier().verify(&token(json!({"sub": "u", "permissions": ["read:all"]}), "s3cret")).await;
        assert!(!rbac.unwrap().can_read("anything"));
        // Junction's object with the wrong types is a mistake worth naming.
        let wrong = verifier().verify(&token(json!({"permissions": {"canRead": "doc-1"}}), "s3cret")).await;
        assert!(wrong.unwrap_err().to_string().contains("not Junction's permissions object"));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let config = AuthConfig {
            issuer: "https://id.example/".into(),
            audience: vec!["junction".into(), "api".into()],
            ..AuthConfig::default()
        };
        let verifier = verifier_with(config);
        let good = json!({"sub": "u", "iss": "https://id.example/", "aud": ["other", "api"]});
        assert!(verifier.verify(&token(good, "s3cret")).await.is_ok());
        for bad in [
            json!({"sub": "u", "iss": "https://evil.example/", "aud": "junction"}),
            json!({"sub": "u", "aud": "junction"}),
            json!({"sub": "u", "iss": "https://id.example/", "aud": "other"}),
            json!({"sub": "u", "iss": "https://id.example/"}),
        ] {
            assert!(verifier.verify(&token(bad.clone(), "s3cret")).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn claims_are_mapped_and_default_grants_name_the_user() {
        let config = AuthConfig {
            user_id_claim: "app_metadata.uid".into(),
            permissions_claim: "https://junction.example/permissions".into(),
            default_grants: DefaultGrants {
                can_read: vec!["user-{userId}-*".into(), "public-*".into()],
                can_write: vec!["user-{userId}-*".into()],
            },
            ..AuthConfig::default()
        };
        let verifier = verifier_with(config);
        let claims = verifier
            .verify(&token(
                json!({"sub": "auth0|1", "app_metadata": {"uid": "ann"},
                       "https://junction.example/permissions": {"canRead": ["team-*"]}}),
                "s3cret",
            ))
            .await
            .unwrap();
        assert_eq!(claims.user_id.as_deref(), Some("ann"));
        assert_eq!(claims.sub.as_deref(), Some("auth0|1"));
        assert!(claims.can_read("user-ann-notes") && claims.can_write("user-ann-notes"));
        assert!(claims.can_read("public-board") && !claims.can_write("public-board"));
        assert!(claims.can_read("team-x") && !claims.can_read("user-bob-notes"));
        // No user id: the per-user patterns grant nothing (not "user--*"), the others still do.
        let anonymous = verifier.verify(&token(json!({"sub": "auth0|2"}), "s3cret")).await.unwrap();
        assert_eq!(anonymous.user_id, None);
        assert!(anonymous.can_read("public-board") && !anonymous.can_read("user--x"));
        assert_eq!(anonymous.permissions.can_read, ["public-*"]);
    }

    /// Behaviour only: that the time does not depend on the first difference cannot be shown
    /// reliably by a unit test on a shared machine.
    #[test]
    fn secrets_match_only_exactly() {
        assert!(secret_matches("s3cret-admin", "s3cret-admin"));
        for wrong in ["", "s", "s3cret-admi", "s3cret-admin!", "S3cret-admin", "x3cret-admin", "s3cret-admiN"] {
            assert!(!secret_matches(wrong, "s3cret-admin"), "{wrong:?}");
        }
        // A guess that is the secret followed by NULs is not the secret.
        assert!(!secret_matches("ab\0", "ab"));
        assert!(!secret_matches("ab", "ab\0"));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        assert!(verifier().verify(&token(json!({}), "wrong")).await.is_err());
        assert!(verifier().verify("not a token").await.is_err());
        let expired = token(json!({"exp": 1_000_000_000}), "s3cret");
        assert!(verifier().verify(&expired).await.is_err());
        // No leeway: a token is over at its `exp`, as the socket it opened is.
        for exp in [now() - 30, now()] {
            assert!(verifier().verify(&token(json!({"exp": exp}), "s3cret")).await.is_err(), "exp {exp}");
        }
        assert!(verifier().verify(&token(json!({"exp": now() + 30}), "s3cret")).await.is_ok());
        assert!(verifier().verify(&token(json!({"nbf": now() + 60}), "s3cret")).await.is_err(), "not yet valid");
        let unconfigured = TokenVerifier::from_config(&AuthConfig::default(), Metrics::new()).unwrap();
        assert_eq!(unconfigured.verify(&token(json!({}), "x")).await, Err(AuthError::NotConfigured));
    }
}
