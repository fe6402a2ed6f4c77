//! Tokens from an identity provider: a JWKS endpoint this test serves itself (as Auth0, Clerk
//! or Keycloak publish theirs), RS256 / ES256 / EdDSA keys, issuer and audience checks, claim
//! mapping with default grants, key rotation, made-up key ids, and a provider that goes down.
//! The keys in `tests/fixtures/identity-provider-keys.json` were made for these tests only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{Kind, TestApp, TestDatabase, WsClient, metric, spawn_app_with, test_config};

const ISSUER: &str = "https://id.example/";
const AUDIENCE: &str = "junction-tests";

fn keys() -> Value {
    let text = include_str!("../fixtures/identity-provider-keys.json");
    serde_json::from_str(text).unwrap()
}

/// A token signed by the fixture key `kid`, naming `header_kid` in its header (normally the same).
fn sign(kid: &str, header_kid: Option<&str>, claims: Value) -> String {
    let keys = keys();
    let key = &keys[kid];
    let pem = key["private_key"].as_str().unwrap().as_bytes();
    let (algorithm, encoding) = match key["alg"].as_str().unwrap() {
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem).unwrap()),
        "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem).unwrap()),
        "EdDSA" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem).unwrap()),
        other => panic!("fixture algorithm {other}"),
    };
    let mut header = Header::new(algorithm);
    header.kid = header_kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

/// An `exp` ten minutes from now.
fn in_ten_minutes() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600
}

/// A plain provider token: no Junction claim at all.
fn provider_token(kid: &str, user: &str) -> String {
    let exp = in_ten_minutes();
    sign(kid, Some(kid), json!({"sub": user, "iss": ISSUER, "aud": [AUDIENCE, "other-api"], "exp": exp}))
}

/// The identity provider's key-set endpoint: which keys it publishes, whether it is up, and
/// how often it was asked.
#[derive(Clone)]
struct Provider {
    published: Arc<Mutex<Vec<&'static str>>>,
    up: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

impl Provider {
    async fn start(published: &[&'static str]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let provider = Provider {
            published: Arc::new(Mutex::new(published.to_vec())),
            up: Arc::new(AtomicBool::new(true)),
            fetches: Arc::new(AtomicUsize::new(0)),
            url,
        };
        let state = provider.clone();
        let router = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if !state.up.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let keys = keys();
                    let mut published: Vec<Value> =
                        state.published.lock().await.iter().map(|kid| keys[*kid]["jwk"].clone()).collect();
                    // What providers publish beside their signing keys must not spoil the set.
                    published.push(json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc-1", "n": "AQAB", "e": "AQAB"}));
                    published.push(json!({"kty": "oct", "kid": "sym-1", "k": "c2VjcmV0"}));
                    published.push(json!({"kty": "XYZ", "kid": "future-1"}));
                    axum::Json(json!({ "keys": published })).into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        provider
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    async fn publish(&self, kids: &[&'static str]) {
        *self.published.lock().await = kids.to_vec();
    }
}

/// A Junction that knows only the provider: no secret, no static token, no anonymous access.
async fn junction_for(provider: &Provider, min_refresh_secs: u64, cache_secs: u64) -> TestApp {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.jwks_url = provider.url.clone();
    config.auth.jwks_min_refresh_secs = min_refresh_secs;
    config.auth.jwks_cache_secs = cache_secs;
    config.auth.issuer = ISSUER.into();
    config.auth.audience = vec![AUDIENCE.into()];
    config.auth.default_grants.can_read = vec!["user-{userId}-*".into(), "public-*".into()];
    config.auth.default_grants.can_write = vec!["user-{userId}-*".into()];
    config.protocols.livestore.allow_anonymous = false;
    config.protocols.pocket.allow_anonymous = false;
    config.protocols.synckit.allow_anonymous = false;
    spawn_app_with(config, db).await
}

fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The LiveStore 0.3 URL with the token in `payload`, encoded twice as the client does.
fn livestore_url(app: &TestApp, store: &str, token: &str) -> String {
    let payload = percent_encode(&percent_encode(&json!({ "authToken": token }).to_string()));
    format!("ws://{}/websocket?storeId={store}&payload={payload}", app.addr)
}

async fn api_status(app: &TestApp, path: &str, token: &str) -> u16 {
    let response = reqwest::Client::new().get(app.url(path)).bearer_auth(token).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_provider_tokens_reach_the_users_own_stores_with_every_algorithm() {
    let provider = Provider::start(&["rsa-1", "ec-1", "ed-1"]).await;
    let app = junction_for(&provider, 3600, 3600).await;
    assert_eq!(provider.fetches(), 1, "fetched once at start");
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let ann = provider_token(kid, "ann");
        // Read and write her own stores, read the public ones, nothing of Bob's.
        let mut socket = WsClient::connect(&livestore_url(&app, "user-ann-notes", &ann)).await;
        let event = r#"{"name":"noteAdded","args":{},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        if kid == "rsa-1" {
            socket.send(&format!(r#"{{"_tag":"WSMessage.PushReq","requestId":"p1","batch":[{event}]}}"#)).await;
            assert_eq!(socket.recv_json().await["_tag"], "WSMessage.PushAck", "{kid}");
        }
        assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "public-board", &ann)).await, 101, "{kid}");
        assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-bob-notes", &ann)).await, 400, "{kid}");
        assert_eq!(api_status(&app, "/v1/stores/livestore:user-ann-notes/events", &ann).await, 200, "{kid}");
        assert_eq!(api_status(&app, "/v1/stores/livestore:user-bob-notes/events", &ann).await, 403, "{kid}");
    }
    // Read-only on public stores: a push there is refused.
    let ann = provider_token("ec-1", "ann");
    let mut socket = WsClient::connect(&livestore_url(&app, "public-board", &ann)).await;
    let event = r#"{"name":"x","args":{},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
    socket.send(&format!(r#"{{"_tag":"WSMessage.PushReq","requestId":"p1","batch":[{event}]}}"#)).await;
    assert_eq!(socket.recv_json().await["_tag"], "WSMessage.Error");

    // Signed by a published key but for another issuer or audience, or by nobody's key.
    let exp = in_ten_minutes();
    let foreign_issuer = sign(
        "rsa-1",
        Some("rsa-1"),
        json!({"sub": "ann", "iss": "https://evil.example/", "aud": AUDIENCE, "exp": exp}),
    );
    let foreign_audience =
        sign("rsa-1", Some("rsa-1"), json!({"sub": "ann", "iss": ISSUER, "aud": "another-app", "exp": exp}));
    let unpublished = provider_token("rsa-2", "ann");
    let wrong_key_for_kid =
        sign("rsa-2", Some("rsa-1"), json!({"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": exp}));
    for (what, token) in [
        ("issuer", &foreign_issuer),
        ("audience", &foreign_audience),
        ("unpublished key", &unpublished),
        ("signature", &wrong_key_for_kid),
    ] {
        assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", token)).await, 400, "{what}");
        assert_eq!(api_status(&app, "/v1/stores/livestore:user-ann-notes/events", token).await, 401, "{what}");
    }
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "junction_jwks_fetches_total{result=\"ok\"}") >= 1, "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_and_withdrawn_keys_stop_verifying() {
    let provider = Provider::start(&["rsa-1"]).await;
    let app = junction_for(&provider, 0, 3600).await;
    let old = provider_token("rsa-1", "ann");
    assert_eq!(api_status(&app, "/v1/stores/livestore:user-ann-notes/events", &old).await, 404, "no such store yet");
    assert_eq!(provider.fetches(), 1, "the cached set served the token");

    // The provider rotates: rsa-2 in, rsa-1 out. A token with the new key id makes Junction
    // fetch the set again; the old key, gone from the set, no longer verifies.
    provider.publish(&["rsa-2"]).await;
    let new = provider_token("rsa-2", "ann");
    assert_eq!(api_status(&app, "/v1/stores/livestore:user-ann-notes/events", &new).await, 404);
    assert_eq!(provider.fetches(), 2);
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &new)).await, 101);
    assert_eq!(api_status(&app, "/v1/stores/livestore:user-ann-notes/events", &old).await, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_key_ids_do_not_hammer_the_provider() {
    let provider = Provider::start(&["rsa-1"]).await;
    let app = junction_for(&provider, 3600, 3600).await;
    let exp = in_ten_minutes();
    let mut attempts = Vec::new();
    for n in 0..100 {
        let kid = format!("made-up-{n}");
        let token = sign("rsa-1", Some(&kid), json!({"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": exp}));
        let url = livestore_url(&app, "user-ann-notes", &token);
        attempts.push(tokio::spawn(async move { WsClient::upgrade_status(&url).await }));
    }
    for attempt in attempts {
        assert_eq!(attempt.await.unwrap(), 400);
    }
    assert_eq!(provider.fetches(), 1, "only the fetch at start: refetches are at least an hour apart here");
    // The known key still works meanwhile.
    let good = provider_token("rsa-1", "ann");
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &good)).await, 101);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_fetched_before_keep_working_while_the_provider_is_down() {
    let provider = Provider::start(&["ed-1"]).await;
    // A set is used for one second, then fetched again when a token comes.
    let app = junction_for(&provider, 0, 1).await;
    let token = provider_token("ed-1", "ann");
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &token)).await, 101);
    provider.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let before = provider.fetches();
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &token)).await, 101);
    assert_eq!(provider.fetches(), before + 1, "the stale set was fetched again, and that failed");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "junction_jwks_fetches_total{result=\"error\"}"), 1, "{metrics}");
    app.stop().await;
}

/// Down at start: Junction starts anyway, says so, refuses provider tokens, and takes them as
/// soon as the provider answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_fetched_again_when_tokens_come() {
    let provider = Provider::start(&["rsa-1"]).await;
    provider.up.store(false, Ordering::SeqCst);
    let app = junction_for(&provider, 0, 3600).await;
    let token = provider_token("rsa-1", "ann");
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &token)).await, 400);
    provider.up.store(true, Ordering::SeqCst);
    assert_eq!(WsClient::upgrade_status(&livestore_url(&app, "user-ann-notes", &token)).await, 101);
    app.stop().await;
}
