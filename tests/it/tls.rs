//! TLS to Postgres and Redis, as managed services require: a Postgres of the test's own that
//! accepts only TLS connections, and a Redis that listens only on its TLS port, both with
//! certificates from a throwaway certificate authority that the test makes with openssl.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use junction::eventlog::{AppendBatch, Protocol, SeqNum, StoreKey};

use crate::helpers::{TestDatabase, body, free_port, spawn_app_with, test_config};

/// A certificate authority and a server certificate it signed for localhost and 127.0.0.1.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let output = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("running openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Junction test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(dir.path().join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A Postgres server binary: from Debian's versioned folder when there is one, else from PATH.
fn postgres_binary(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a Postgres tool, as the `postgres` system user when we are root (initdb refuses root).
fn postgres_tool(name: &str, args: &[&str]) -> std::process::Output {
    let binary = postgres_binary(name);
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    };
    command.args(args).output().unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// A Postgres cluster that accepts TCP connections only over TLS (`hostnossl … reject`).
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsPostgres {
    fn start(certificates: &Certificates) -> TlsPostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let (data, cert, key) = (dir.path().join("data"), dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::copy(certificates.path("server.pem"), &cert).unwrap();
        std::fs::copy(certificates.path("server.key"), &key).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        // Postgres refuses a key file that others can read.
        Command::new("chmod").arg("600").arg(&key).status().unwrap();
        let initdb =
            postgres_tool("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = free_port();
        let options = format!(
            "-h 127.0.0.1 -p {port} -k {} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
            dir.path().display(),
            cert.display(),
            key.display()
        );
        let log = dir.path().join("server.log");
        let started = postgres_tool(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &options, "start"],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        TlsPostgres { dir, port }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        postgres_tool("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

/// A redis-server that listens only on a TLS port.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(certificates: &Certificates) -> TlsRedis {
        let port = free_port();
        let path = |name: &str| certificates.path(name).display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &path("server.pem"), "--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres_url(port: u16, query: &str) -> String {
    format!("postgres://postgres@localhost:{port}/postgres?{query}")
}

/// The readiness body once the instance is ready with Redis connected (a Redis that is still
/// starting shows as degraded at first: the instance is ready without it).
async fn ready_body(app: &crate::helpers::TestApp) -> serde_json::Value {
    for _ in 0..100 {
        let response = reqwest::get(app.url("/health/ready")).await.unwrap();
        if response.status() == 200 {
            let body: serde_json::Value = response.json().await.unwrap();
            if body["checks"]["redis"] == "ok" {
                return body;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not ready: {}", reqwest::get(app.url("/health/ready")).await.unwrap().text().await.unwrap());
}

/// Junction runs on a Postgres and a Redis that speak only TLS, verifying both servers'
/// certificates against the test's CA (`sslmode=verify-full&sslrootcert=…`, `redis.ca_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_redis_over_tls_with_a_private_ca() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates);
    let redis = TlsRedis::start(&certificates);
    let ca = certificates.path("ca.pem").display().to_string();
    let url = postgres_url(postgres.port, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let db = Arc::new(TestDatabase::at(url));
    let mut config = test_config(&db);
    config.redis.url = format!("rediss://localhost:{}", redis.port);
    config.redis.ca_file = ca;
    let app = spawn_app_with(config, db).await;
    let store = StoreKey::new(Protocol::LiveStore, "over-tls").unwrap();
    app.log.append(&store, AppendBatch::AtHead { events: vec![body("x", "{}")] }).await.unwrap();
    assert_eq!(app.log.read(&store, SeqNum::ROOT, 10).await.unwrap().len(), 1);
    let ready = ready_body(&app).await;
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
    assert_eq!(ready["checks"]["store"], "ok", "{ready}");
    app.stop().await;
}

/// The TLS really is there: the server refuses plain connections, and a certificate that the
/// client cannot trust is refused by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_is_required_and_verified() {
    let certificates = Certificates::make();
    let postgres = TlsPostgres::start(&certificates);
    for (query, expected) in [("sslmode=disable", "no encryption"), ("sslmode=verify-full", "certificate")] {
        let db = Arc::new(TestDatabase::at(postgres_url(postgres.port, query)));
        let error = match junction::server::Server::build(test_config(&db)).await {
            Ok(_) => panic!("started with {query}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.to_lowercase().contains(expected), "{query}: {error}");
    }
}
