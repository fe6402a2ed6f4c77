//! One driver per protocol: how a subscriber follows a store and how a writer publishes to it,
//! on the wire, the way that protocol's real clients do.
//!
//! A "store" is the protocol's own unit: a LiveStore `storeId`, a SyncKit document, a Pocket
//! collection.

mod livestore;
mod pocket;
mod synckit;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mark::{Mark, Tally};
use crate::net::Dialer;
use crate::{ProtocolName, TargetArgs};

/// A server and the protocol to speak to it.
pub struct Target {
    pub protocol: ProtocolName,
    pub path: Option<String>,
    pub token: Option<String>,
    pub dialer: Dialer,
}

impl Target {
    pub async fn new(args: &TargetArgs) -> anyhow::Result<Target> {
        let dialer = Dialer::new(&args.url, args.source_addresses, args.connect_concurrency).await?;
        Ok(Target { protocol: args.protocol, path: args.path.clone(), token: args.token.clone(), dialer })
    }

    /// Connects a subscriber of `store`; returns once it is live (its initial sync is done).
    /// `node` numbers the subscriber (used in client ids).
    pub async fn subscribe(&self, store: &str, node: u32) -> anyhow::Result<Subscriber> {
        let _opening = self.dialer.permit().await;
        Ok(match self.protocol {
            ProtocolName::Livestore => Subscriber::LiveStore(livestore::Subscriber::open(self, store).await?),
            ProtocolName::Synckit => Subscriber::SyncKit(synckit::Subscriber::open(self, store).await?),
            ProtocolName::Pocket => Subscriber::Pocket(pocket::Subscriber::open(self, store, node).await?),
        })
    }

    /// Connects writer number `writer` to `store`.
    pub async fn writer(&self, store: &str, writer: u32) -> anyhow::Result<Writer> {
        let _opening = self.dialer.permit().await;
        Ok(match self.protocol {
            ProtocolName::Livestore => Writer::LiveStore(livestore::Writer::open(self, store, writer).await?),
            ProtocolName::Synckit => Writer::SyncKit(synckit::Writer::open(self, store, writer).await?),
            ProtocolName::Pocket => Writer::Pocket(pocket::Writer::open(self, store, writer).await?),
        })
    }
}

pub enum Subscriber {
    LiveStore(livestore::Subscriber),
    SyncKit(synckit::Subscriber),
    Pocket(pocket::Subscriber),
}

impl Subscriber {
    /// Reads one frame, handing the marks it carries to `tally`; `false` once the socket closed.
    pub async fn next(&mut self, tally: &mut Tally) -> anyhow::Result<bool> {
        match self {
            Subscriber::LiveStore(s) => s.next(tally).await,
            Subscriber::SyncKit(s) => s.next(tally).await,
            Subscriber::Pocket(s) => s.next(tally).await,
        }
    }
}

pub enum Writer {
    LiveStore(livestore::Writer),
    SyncKit(synckit::Writer),
    Pocket(pocket::Writer),
}

impl Writer {
    /// Publishes `marks` as one write and waits for its acknowledgement; returns how many
    /// attempts the server refused (and the writer retried) on the way.
    pub async fn publish(&mut self, marks: &[Mark]) -> anyhow::Result<u32> {
        match self {
            Writer::LiveStore(w) => w.publish(marks).await,
            Writer::SyncKit(w) => w.publish(marks).await,
            Writer::Pocket(w) => w.publish(marks).await,
        }
    }
}

/// What a subscriber saw until it was stopped, and why it ended early if it did.
pub struct Followed {
    pub tally: Tally,
    pub ended_early: Option<String>,
}

/// Reads `subscriber` until `stop`, tallying what it receives; adds every delivery to `received`
/// so that the caller can tell when everything has arrived.
pub fn follow(mut subscriber: Subscriber, stop: CancellationToken, received: Arc<AtomicU64>) -> JoinHandle<Followed> {
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let ended_early = loop {
            let before = tally.deliveries;
            tokio::select! {
                _ = stop.cancelled() => break None,
                next = subscriber.next(&mut tally) => {
                    received.fetch_add(tally.deliveries - before, Ordering::Relaxed);
                    match next {
                        Ok(true) => {}
                        Ok(false) => break Some("closed by the server".to_owned()),
                        Err(error) => break Some(format!("{error:#}")),
                    }
                }
            }
        };
        Followed { tally, ended_early }
    })
}
