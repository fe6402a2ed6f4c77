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
//! fail to parse). HS256 tokens are checked with `auth.jwt_secret`; RS256 and ES256 tokens with
//! `auth.jwt_public_key`. `exp` is enforced when present, without leeway, and
//! a socket authenticated by a token closes when it expires.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

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

/// Signs `claims` as an HS256 token with `secret` (what `junction token` prints).
pub fn mint_hs256(claims: &Claims, secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token verification key is configured (auth.jwt_secret or auth.jwt_public_key)")]
    NotConfigured,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies client JWTs with the configured keys.
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
}

impl TokenVerifier {
    /// Fails (naming the key) when `auth.jwt_public_key` is set but is not a PEM RSA or EC key.
    pub fn from_config(config: &AuthConfig) -> Result<TokenVerifier, crate::config::ConfigError> {
        let secret = (!config.jwt_secret.is_empty()).then(|| DecodingKey::from_secret(config.jwt_secret.as_bytes()));
        let (mut rsa, mut ec) = (None, None);
        if !config.jwt_public_key.is_empty() {
            let pem = config.jwt_public_key.as_bytes();
            rsa = DecodingKey::from_rsa_pem(pem).ok();
            ec = DecodingKey::from_ec_pem(pem).ok();
            if rsa.is_none() && ec.is_none() {
                return Err(crate::config::ConfigError::Invalid {
                    key: "auth.jwt_public_key",
                    reason: "is not a PEM-encoded RSA or EC public key".into(),
                });
            }
        }
        Ok(TokenVerifier { secret, rsa, ec })
    }

    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.rsa.is_some() || self.ec.is_some()
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ec.as_ref(),
            other => return Err(AuthError::Invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let key = key.ok_or(AuthError::NotConfigured)?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        // Every identity provider sets `aud`; jsonwebtoken refuses any `aud` unless told which
        // to expect, and Junction has no audience of its own to require.
        validation.validate_aud = false;
        // No grace after `exp`: a socket admitted with the token closes at `exp` exactly, so a
        // token past it must not open one either.
        validation.leeway = 0;
        let mut claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        // jsonwebtoken still accepts a token during the second of its `exp`; RFC 7519 (and the
        // socket deadline) end it at `exp`.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        if claims.exp.is_some_and(|exp| exp <= now) {
            return Err(AuthError::Invalid("ExpiredSignature".into()));
        }
        if claims.user_id.is_none() {
            claims.user_id = claims.sub.clone();
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> TokenVerifier {
        TokenVerifier::from_config(&AuthConfig { jwt_secret: "s3cret".into(), ..AuthConfig::default() }).unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    #[test]
    fn permissions_match_names_and_prefixes() {
        let claims = verifier()
            .verify(&token(
                serde_json::json!({"userId": "u1", "permissions": {"canRead": ["doc-*"], "canWrite": ["doc-1"]}}),
                "s3cret",
            ))
            .unwrap();
        assert_eq!(claims.user_id.as_deref(), Some("u1"));
        assert!(claims.can_read("doc-7") && !claims.can_read("other"));
        assert!(claims.can_write("doc-1") && !claims.can_write("doc-2"));
    }

    /// Ordinary identity-provider tokens: an `aud` claim, and `sub` beside Junction's `userId`.
    #[test]
    fn provider_tokens_with_aud_and_sub_are_accepted() {
        let with_aud = verifier().verify(&token(serde_json::json!({"sub": "u3", "aud": "my-app"}), "s3cret")).unwrap();
        assert_eq!(with_aud.user_id.as_deref(), Some("u3"));
        let with_audiences = token(serde_json::json!({"sub": "u3", "aud": ["a", "b"]}), "s3cret");
        assert!(verifier().verify(&with_audiences).is_ok());
        let both = verifier().verify(&token(serde_json::json!({"sub": "auth0|7", "userId": "u7"}), "s3cret")).unwrap();
        assert_eq!(both.user_id.as_deref(), Some("u7"), "Junction's own claim wins");
    }

    #[test]
    fn a_token_without_permissions_grants_nothing() {
        let claims = verifier().verify(&token(serde_json::json!({"sub": "u2"}), "s3cret")).unwrap();
        assert!(!claims.can_read("anything") && !claims.can_write("anything"));
        let admin = verifier().verify(&token(serde_json::json!({"permissions": {"isAdmin": true}}), "s3cret")).unwrap();
        assert!(admin.can_write("anything"));
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

    #[test]
    fn bad_tokens_are_refused() {
        assert!(verifier().verify(&token(serde_json::json!({}), "wrong")).is_err());
        assert!(verifier().verify("not a token").is_err());
        let expired = token(serde_json::json!({"exp": 1_000_000_000}), "s3cret");
        assert!(verifier().verify(&expired).is_err());
        // No leeway: a token is over at its `exp`, as the socket it opened is.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for exp in [now - 30, now] {
            assert!(verifier().verify(&token(serde_json::json!({"exp": exp}), "s3cret")).is_err(), "exp {exp}");
        }
        assert!(verifier().verify(&token(serde_json::json!({"exp": now + 30}), "s3cret")).is_ok());
        let unconfigured = TokenVerifier::from_config(&AuthConfig::default()).unwrap();
        assert_eq!(unconfigured.verify(&token(serde_json::json!({}), "x")), Err(AuthError::NotConfigured));
    }
}
