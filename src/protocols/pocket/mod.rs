//! Pocket (`@pocket/sync` SyncEngine): push/pull JSON sync at `/sync`, WebSocket and HTTP.
//!
//! So far the pure codec (sans-I/O, golden-tested): the socket loop and HTTP routes, the
//! checkpoint fix of §7 on the event log, conflicts and authorization arrive with the rest of
//! the Pocket work. The faithful test client lives in `protocols/pocket/client/`.
//!
//! - [`client`]: what a client sends (`push`, `pull`, the text `ping`), and the decoders.
//! - [`server`]: what the server sends (`push-response`, `pull-response`, broadcasts, `error`,
//!   `ack`, the text `pong`).
//! - [`change`], [`checkpoint`], [`document`]: the shared data shapes (§6).
//! - [`conflict`]: the conflict rules both sides run (§9).
//! - [`decode`]: the decode error and the field-level helpers.
//!
//! Section numbers (§) refer to `shared/protocols/pocket.md`.

pub mod change;
pub mod checkpoint;
pub mod client;
pub mod conflict;
pub mod decode;
pub mod document;
pub mod server;

#[cfg(test)]
mod golden;
