//! The `junction` binary itself: configuration errors, migrate, healthcheck, signals.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Kind, TestDatabase, spawn_app};

fn junction() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_junction"));
    // The developer's environment must not leak into what these tests check.
    for (name, _) in std::env::vars() {
        if name.starts_with("JUNCTION_") || name == "DATABASE_URL" || name == "REDIS_URL" || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

/// `junction` serving on a free port from `dir`, with `env` on top, its log piped back.
fn serve_in(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, std::process::ChildStderr) {
    let mut command = junction();
    command.current_dir(dir).env("JUNCTION_SERVER__LISTEN", "127.0.0.1:0").stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    (child, stderr)
}

#[test]
fn a_bad_value_stops_junction_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = junction().current_dir(dir.path()).env("JUNCTION_LIMITS__MAX_CONNECTIONS", "lots").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("configuration key `limits.max_connections`"), "{stderr}");

    std::fs::write(dir.path().join("config.toml"), "[server]\nlisten = \"127.0.0.1:0\"\nport = 1\n").unwrap();
    let output = junction().current_dir(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("configuration key `server.port`: unknown field"), "{stderr}");
    let file = std::fs::canonicalize(dir.path()).unwrap().join("config.toml");
    assert!(stderr.contains(&format!("(from TOML file {})", file.display())), "the file is named: {stderr}");

    let output = junction().args(["--config", "missing.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let output = junction().arg("migrate").current_dir(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("data/junction.db").exists(), "the default store.url is data/junction.db");
    // Applying again is a no-op, not an error.
    let again = junction().arg("migrate").current_dir(dir.path()).output().unwrap();
    assert!(again.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_ready_and_unreachable() {
    let app = spawn_app(Kind::Sqlite).await;
    let ok = junction().args(["healthcheck", &app.url("")]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let (_, _) = app.stop().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = junction().args(["healthcheck", &format!("http://127.0.0.1:{port}")]).output().unwrap();
    assert!(!down.status.success());
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr) =
        serve_in(dir.path(), &[("JUNCTION_STORE__URL", &db.url), ("JUNCTION_LOG__FORMAT", "json")]);
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    // Wait until it listens, then ask it to stop the way a container runtime would.
    let started = std::time::Instant::now();
    while !std::path::Path::new(db.url.trim_start_matches("sqlite://")).exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "junction did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let lines = lines.join().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", lines.join("\n"));
    let log = lines.join("\n");
    assert!(log.contains("junction is listening"), "{log}");
    let database = db.url.trim_start_matches("sqlite://");
    assert!(log.contains(&format!(r#""location":"{database}""#)), "the store's path is logged: {log}");
    assert!(log.contains("ANONYMOUS ACCESS IS ON"), "the default config warns loudly: {log}");
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(lines.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "log.format = json: {log}");
}

#[tokio::test]
async fn token_mints_a_jwt_that_junction_accepts() {
    use junction::auth::TokenVerifier;
    use junction::config::AuthConfig;
    use junction::metrics::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let output = junction()
        .current_dir(dir.path())
        .env("JUNCTION_AUTH__JWT_SECRET", "cli-secret")
        .args(["token", "--user", "u7", "--read", "doc-*", "--write", "doc-1", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let verifier = TokenVerifier::from_config(
        &AuthConfig { jwt_secret: "cli-secret".into(), ..AuthConfig::default() },
        Metrics::new(),
    )
    .unwrap();
    let claims = verifier.verify(token.trim()).await.unwrap();
    assert_eq!(claims.user_id.as_deref(), Some("u7"));
    assert!(claims.can_read("doc-9") && !claims.can_read("other"));
    assert!(claims.can_write("doc-1") && !claims.can_write("doc-2"));
    assert!(!claims.permissions.is_admin);
    let lifetime = claims.exp.unwrap() - claims.iat.unwrap();
    assert_eq!(lifetime, 7200);
    let other = TokenVerifier::from_config(
        &AuthConfig { jwt_secret: "another".into(), ..AuthConfig::default() },
        Metrics::new(),
    )
    .unwrap();
    assert!(other.verify(token.trim()).await.is_err(), "signed with the configured secret only");

    let output = junction().current_dir(dir.path()).args(["token", "--user", "u7"]).output().unwrap();
    assert!(!output.status.success(), "no secret, no token");
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.jwt_secret"));
    let output = junction()
        .current_dir(dir.path())
        .env("JUNCTION_AUTH__JWT_SECRET", "cli-secret")
        .args(["token", "--user", "u7", "--ttl", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a bad --ttl is refused");

    // Where the configuration wants an issuer, an audience and the permissions elsewhere, the
    // minted token is what that configuration accepts.
    let provider_like = AuthConfig {
        jwt_secret: "cli-secret".into(),
        issuer: "https://id.example/".into(),
        audience: vec!["api".into()],
        permissions_claim: "https://app.example/junction".into(),
        ..AuthConfig::default()
    };
    let output = junction()
        .current_dir(dir.path())
        .env("JUNCTION_AUTH__JWT_SECRET", "cli-secret")
        .env("JUNCTION_AUTH__ISSUER", "https://id.example/")
        .env("JUNCTION_AUTH__AUDIENCE", "api")
        .env("JUNCTION_AUTH__PERMISSIONS_CLAIM", "https://app.example/junction")
        .args(["token", "--user", "u7", "--read", "doc-*"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let claims =
        TokenVerifier::from_config(&provider_like, Metrics::new()).unwrap().verify(token.trim()).await.unwrap();
    assert!(claims.can_read("doc-1"), "{claims:?}");
}

/// The default store is a path relative to the working directory: the log says which file that
/// made, as an absolute path. The reader of the log stops there and closes the pipe, as
/// `junction 2>&1 | head -1` would: SIGTERM must still stop Junction (a log line it could not
/// write used to panic the task waiting for the signal).
#[tokio::test]
async fn a_relative_sqlite_path_is_logged_absolute_and_sigterm_works_with_a_closed_log_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr) =
        serve_in(dir.path(), &[("JUNCTION_STORE__URL", "sqlite://data/relative.db"), ("JUNCTION_LOG__FORMAT", "json")]);
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).find(|l| l.contains("junction is listening"))
    });
    let listening = lines.join().unwrap().expect("junction logs that it listens");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("junction ignored SIGTERM with its log pipe closed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let expected = std::fs::canonicalize(dir.path()).unwrap().join("data/relative.db");
    let logged: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(logged["fields"]["location"].as_str(), Some(expected.to_str().unwrap()), "{listening}");
}

/// Text logs written to a pipe (a file, journald, a log shipper) carry no colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr) = serve_in(dir.path(), &[]);
    let listening = {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).find(|l| l.contains("junction is listening"))
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let listening = listening.expect("junction logs that it listens");
    assert!(!listening.contains('\u{1b}'), "no ANSI escapes: {listening:?}");
}

/// A start that fails names each cause once (sqlx's errors repeat their source in their message).
#[tokio::test]
async fn a_missing_postgres_database_is_named_once() {
    let server = std::env::var(crate::helpers::POSTGRES_ENV).expect("scripts/test.sh sets TEST_POSTGRES_URL");
    let (base, _) = server.rsplit_once('/').unwrap();
    let output = junction()
        .env("JUNCTION_STORE__URL", format!("{base}/no_such_database"))
        .env("JUNCTION_SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(last.matches(r#"database "no_such_database" does not exist"#).count(), 1, "{stderr}");
}
