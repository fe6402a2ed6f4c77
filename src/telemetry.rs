//! Logging, set up once per process: text for people, JSON for log pipelines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. A second call
/// (tests start many servers in one process) leaves the first subscriber in place.
pub fn init(config: &LogConfig) {
    // Postgres's NOTICEs (e.g. "relation already exists, skipping" on every start's migrations)
    // are not Junction's news: only their warnings get through, unless RUST_LOG says otherwise.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx::postgres::notice=warn", config.level)));
    // Colours only for a person at a terminal, not in files and log pipelines.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr is a closed pipe) is dropped. By default
        // tracing-subscriber reports it with `eprintln!`, which panics on that same closed pipe:
        // the task that logged dies, and when that was the one waiting for SIGTERM, Junction
        // never stopped.
        .log_internal_errors(false);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
