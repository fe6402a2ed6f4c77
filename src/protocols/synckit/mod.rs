//! SyncKit (`@synckit-js/sdk`): the binary WebSocket protocol at `/ws`.
//!
//! So far the pure codec (sans-I/O, golden-tested): the socket loop, documents as event-log
//! stores with snapshots, Fugue text merges, awareness and RBAC arrive with the rest of the
//! SyncKit work.
//!
//! - [`frame`]: the 13-byte-header binary frame, the type-code table, JSON text framing.
//! - [`message`]: typed client→server and server→client messages, exact ERROR texts.
//! - [`raw`]: raw-JSON building blocks (ordered objects, vector clocks, JS truthiness).
//! - [`policy`]: pure validation rules, limits, close codes, the rate limiter.
//! - [`chunk`]: `delta_batch_chunk` reassembly.
//!
//! Section numbers (§) refer to `shared/protocols/synckit.md`.

pub mod chunk;
pub mod frame;
pub mod message;
pub mod policy;
pub mod raw;

#[cfg(test)]
mod golden_tests;
