//! The `junction` command: serve (the default), migrate, healthcheck.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use junction::config::Config;
use junction::eventlog::{Protocol, StoreKey};
use junction::server::{Server, shutdown_signal};
use junction::store::Backend;

#[derive(Parser)]
#[command(name = "junction", version, about = "Self-hosted real-time sync gateway")]
struct Cli {
    /// Configuration file (TOML). Without this flag, ./config.toml is read if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve all enabled protocols (what `junction` alone does).
    Serve,
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Write stores (events and metadata) to a lossless NDJSON export.
    Export {
        /// A store to export, as <protocol>:<name> (repeatable).
        #[arg(long = "store", value_name = "PROTOCOL:NAME", required_unless_present = "all")]
        stores: Vec<String>,
        /// Export every store.
        #[arg(long, conflicts_with = "stores")]
        all: bool,
        /// Where to write (default: standard output).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The export format; NDJSON is the one there is (see the README).
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormat,
    },
    /// Restore the stores of an export made by `junction export`.
    Import {
        file: PathBuf,
        /// Overwrite stores that already hold a different history.
        #[arg(long)]
        replace: bool,
    },
    /// Import LiveStore event logs from Cloudflare: a D1 export (`wrangler d1 export`) or a D1 /
    /// Durable-Object SQLite file.
    ImportD1 {
        file: PathBuf,
        /// JSON object mapping table names to original storeIds, e.g. {"eventlog_7_my_store": "my store"}.
        #[arg(long, value_name = "FILE")]
        store_map: Option<PathBuf>,
        /// Overwrite stores that already hold a different history.
        #[arg(long)]
        replace: bool,
        /// Report what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a client token (HS256, signed with `auth.jwt_secret`) for every protocol.
    Token {
        /// The token's userId.
        #[arg(long)]
        user: String,
        /// Stores it may read: a name, a prefix ending in `*`, or `*` (repeatable).
        #[arg(long, value_name = "PATTERN")]
        read: Vec<String>,
        /// Stores it may write (repeatable).
        #[arg(long, value_name = "PATTERN")]
        write: Vec<String>,
        /// Grant everything (and the event API).
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: u64,
        #[arg(long)]
        email: Option<String>,
    },
    /// Ask a running Junction whether it is ready; exit 0 if it is (for container healthchecks).
    Healthcheck {
        /// Base URL of the server, e.g. http://127.0.0.1:8787
        url: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Ndjson,
}

/// A progress bar of bytes moved (a bar when the total is known, else a counter), drawn on
/// stderr only when it is a terminal.
fn transfer_progress(total: Option<u64>, verb: &str) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) => {
            (indicatif::ProgressBar::new(total), format!("{{bar:30}} {{bytes}}/{{total_bytes}} {verb} ({{eta}} left)"))
        }
        None => (indicatif::ProgressBar::no_length(), format!("{{spinner}} {{bytes}} {verb} ({{bytes_per_sec}})")),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// `30s`, `15m`, `24h`, `7d`, `2w`, `1y` (or plain seconds) as seconds. A year is 365 days.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 24h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d, w or y")),
    };
    number.checked_mul(scale).filter(|s| *s > 0).ok_or_else(|| format!("{text:?} is not a positive duration"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("junction: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many errors (sqlx's among them) print
/// their source inside their own message, and `{:#}` then repeated it.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(url).await;
    }
    let config = load_config(cli.config)?;
    junction::telemetry::init(&config.log);
    for name in Config::ignored_env_vars() {
        tracing::warn!(%name, "ignored: configuration variables are named JUNCTION_<SECTION>__<KEY>");
    }
    match cli.command {
        None | Some(Command::Serve) => {
            let server = Server::build(config).await?;
            let stop = CancellationToken::new();
            tokio::spawn({
                let stop = stop.clone();
                async move {
                    shutdown_signal().await;
                    tracing::info!("signal received");
                    stop.cancel();
                }
            });
            server.run(stop).await
        }
        Some(Command::Token { user, read, write, admin, ttl, email }) => {
            anyhow::ensure!(
                !config.auth.jwt_secret.is_empty(),
                "auth.jwt_secret is empty: set it (or JUNCTION_AUTH__JWT_SECRET) to sign tokens"
            );
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let claims = junction::auth::Claims {
                user_id: Some(user),
                sub: None,
                email,
                permissions: junction::auth::Permissions { can_read: read, can_write: write, is_admin: admin },
                exp: Some(now + ttl),
                iat: Some(now),
            };
            println!("{}", junction::auth::mint_hs256(&claims, &config.auth)?);
            Ok(())
        }
        Some(Command::Migrate) => {
            let backend = Backend::connect(&config.store).await.context("connecting to the store")?;
            backend.migrate().await.context("applying migrations")?;
            backend.close().await;
            println!("migrations applied ({})", backend.kind());
            Ok(())
        }
        Some(Command::Export { stores, all: _, output, format: ExportFormat::Ndjson }) => {
            let keys = stores.iter().map(|s| parse_store(s)).collect::<anyhow::Result<Vec<_>>>()?;
            let log = junction::server::open_event_log(&config).await?;
            // Bytes written so far, on stderr and only on a terminal (indicatif hides it elsewhere).
            let progress = transfer_progress(None, "exported");
            let summary = match output {
                Some(path) => {
                    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    junction::backup::export(&log, &keys, progress.wrap_write(std::io::BufWriter::new(file))).await?
                }
                None => junction::backup::export(&log, &keys, progress.wrap_write(std::io::stdout().lock())).await?,
            };
            progress.finish_and_clear();
            log.shutdown().await;
            eprintln!("exported {} stores, {} events", summary.stores, summary.events);
            Ok(())
        }
        Some(Command::Import { file, replace }) => {
            let input = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let size = input.metadata().map(|m| m.len()).ok();
            let log = junction::server::open_event_log(&config).await?;
            let progress = transfer_progress(size, "read");
            let input = std::io::BufReader::new(progress.wrap_read(input));
            let result = junction::backup::import(&log, input, replace).await;
            progress.finish_and_clear();
            log.shutdown().await;
            let summary = result?;
            eprintln!(
                "imported {} stores, {} events; {} stores already held the same history",
                summary.stores, summary.events, summary.unchanged
            );
            Ok(())
        }
        Some(Command::ImportD1 { file, store_map, replace, dry_run }) => {
            let store_map = match store_map {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: expected a JSON object of table → storeId", path.display()))?
                }
                None => Default::default(),
            };
            let options = junction::import_d1::Options { store_map, replace, dry_run };
            let log = junction::server::open_event_log(&config).await?;
            let started = std::time::Instant::now();
            let progress = indicatif::ProgressBar::new_spinner();
            let mut imported = 0u64;
            let result = junction::import_d1::import(&log, &file, &options, |events| {
                imported += events;
                progress.set_message(format!("{imported} events"));
                progress.tick();
            })
            .await;
            progress.finish_and_clear();
            log.shutdown().await;
            let report = result?;
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            for store in &report.stores {
                let outcome = match store.outcome {
                    junction::import_d1::StoreOutcome::Imported => "imported",
                    junction::import_d1::StoreOutcome::Unchanged => "unchanged",
                    junction::import_d1::StoreOutcome::WouldImport => "would import",
                };
                eprintln!(
                    "{outcome:<12} {:?} ({} events, storeId from {}, backendId {}) from {}",
                    store.store_id,
                    store.events,
                    store.store_id_from,
                    store.backend_id.as_deref().unwrap_or("new"),
                    store.table
                );
            }
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "{} stores, {} events, {bytes} bytes read in {seconds:.2} s ({:.0} events/s){}",
                report.stores.len(),
                report.events(),
                report.events() as f64 / seconds.max(1e-9),
                if dry_run { "; dry run, nothing written" } else { "" }
            );
            Ok(())
        }
        Some(Command::Healthcheck { .. }) => unreachable!("handled above"),
    }
}

fn parse_store(text: &str) -> anyhow::Result<StoreKey> {
    let (protocol, name) = text.split_once(':').context("a store is named <protocol>:<name>")?;
    let protocol = Protocol::parse(protocol).with_context(|| format!("unknown protocol {protocol:?}"))?;
    Ok(StoreKey::new(protocol, name)?)
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let file = match path {
        Some(path) if !path.exists() => bail!("configuration file {} does not exist", path.display()),
        Some(path) => path,
        None => PathBuf::from("config.toml"),
    };
    Ok(Config::load(&file)?)
}

/// `GET <url>/health/ready` over plain HTTP/1.1, without pulling an HTTP client into the binary.
async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").context("healthcheck URL must start with http://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let head = format!("GET /health/ready HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .context("no answer within 5 s")?
        .with_context(|| format!("connecting to {authority}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        println!("ready");
        Ok(())
    } else {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        bail!("not ready: {status_line} {body}")
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn token_lifetimes_from_seconds_to_years() {
        for (text, seconds) in [("90", 90), ("30s", 30), ("15m", 900), ("24h", 86_400), ("7d", 604_800)] {
            assert_eq!(parse_ttl(text), Ok(seconds), "{text}");
        }
        assert_eq!(parse_ttl("2w"), Ok(14 * 86_400));
        assert_eq!(parse_ttl("1y"), Ok(365 * 86_400));
        for bad in ["", "soon", "0h", "5x", "-1d", "99999999999999999999y"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
