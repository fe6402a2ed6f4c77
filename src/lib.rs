//! Junction: a self-hosted real-time sync gateway.
//!
//! One server speaks the wire protocols of several local-first sync SDKs (SyncKit, LiveStore
//! sync-cf, Pocket) and keeps everything they write in one shared event log.
//!
//! # Layout
//!
//! A write travels **frames → protocol module → event log → store → fan-out**:
//!
//! - [`protocols`] — one module per wire protocol: [`protocols::synckit`],
//!   [`protocols::livestore`] and [`protocols::pocket`]. Each decodes its frames into typed
//!   messages with pure, golden-tested functions, translates them into event-log operations
//!   (SyncKit through one room task per open document, Pocket through one writer per
//!   collection), and encodes the replies; its socket loop stays thin.
//! - [`eventlog`] — the shared model every protocol translates into: stores (independent,
//!   totally ordered logs), check-and-append and at-head appends with group commit, reads,
//!   per-store metadata, reset, and subscriptions that deliver catch-up plus live events
//!   exactly once and in order.
//! - [`store`] — where the log lives: embedded SQLite (default) or Postgres, one layout, one
//!   behaviour.
//! - [`fanout`] — how committed batches reach live subscribers: a per-process [`fanout::Hub`]
//!   with bounded per-subscriber queues, behind a [`fanout::FanOut`] transport: in-process for
//!   one instance, Redis pub/sub across instances (with the change log as the safety net), plus
//!   ephemeral broadcasts (presence) that are never stored.
//! - [`server`] — start-up, shared state, connection admission and graceful shutdown.
//! - [`accept`] — the accept loop: HTTP/1.1 on each connection, with header and idle timeouts
//!   and a bound on open plain-HTTP connections that a slowloris flood cannot starve others of;
//!   [`stall`] closes any connection whose client stopped reading.
//! - [`http`] — Junction's own endpoints: `/`, `/health`, `/health/ready`, `/metrics`.
//! - [`api`] — the event API (`/v1/…`): stores, events, live events (SSE) and the change log
//!   across every protocol, for operators.
//! - [`auth`] — client JWTs (one claims format for every protocol).
//! - [`backup`] — export and import of stores in a lossless NDJSON format.
//! - [`import_d1`] — import of LiveStore event logs from Cloudflare D1 / Durable-Object SQLite.
//! - [`config`] — layered configuration (defaults, `config.toml`, environment).
//! - [`metrics`], [`telemetry`] — Prometheus metrics and logging.
//! - [`limits`] — per-connection rate limiting shared by the protocols.
//! - `fuzz` (tests only) — every decoder fed mutants of its golden frames (`scripts/fuzz.sh`).

pub mod accept;
pub mod api;
pub mod auth;
pub mod backup;
pub mod config;
pub mod eventlog;
pub mod fanout;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod import_d1;
pub mod limits;
pub mod metrics;
pub mod open_files;
pub mod protocols;
pub mod server;
pub mod stall;
pub mod store;
pub mod telemetry;
