//! Junction's load generator. Speaks each protocol on the wire as its real clients do, against
//! any URL, and prints a human table plus one JSON line per run.
//!
//! - `idle`: N connections, each subscribed (a LiveStore live pull, a SyncKit subscribed
//!   document, a Pocket client that pulled a collection), held for a while; how many connected,
//!   and the server's memory per connection.
//! - `fanout`: M subscribers of one store, P writers at a total rate R for S seconds;
//!   write→delivery latency, deliveries per second, lost and duplicated deliveries.
//! - `push`: C clients on separate stores, each writing as fast as acknowledgements return;
//!   acknowledged events per second and ack latency.
//! - `append`: the event log in-process, without the network (W writers on separate stores).
//! - `scale-out`: LiveStore 0.3 live delivery through several instances, local and cross-instance
//!   latency (see `scale_out`).
//!
//! Every published event carries a mark — its writer, its number in that writer's sequence and
//! the time it was sent — which is how subscribers count losses, duplicates and latency. Load
//! generator and server usually share the machine: the numbers include that contention.
//!
//!   junction-bench fanout --protocol livestore --url ws://127.0.0.1:8787 --subscribers 1000 --rate 200
//!   junction-bench push --protocol pocket --url ws://127.0.0.1:8787 --clients 64 --seconds 10

mod append;
mod drivers;
mod fanout;
mod idle;
mod mark;
mod net;
mod push;
mod report;
mod scale_out;
mod server_memory;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::drivers::Target;

#[derive(Parser)]
#[command(name = "junction-bench", about = "Load generator for Junction: idle, fanout and push on the wire")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N subscribed connections held open; server memory per connection.
    Idle(idle::IdleArgs),
    /// M subscribers of one store, P writers at a total rate; delivery latency and counts.
    Fanout(fanout::FanoutArgs),
    /// C writers on separate stores as fast as acknowledgements return.
    Push(push::PushArgs),
    /// The event log's append path in-process (no network).
    Append(append::AppendArgs),
    /// Live delivery latency and rate through one or several instances (LiveStore 0.3).
    ScaleOut {
        /// Base URL of an instance, e.g. ws://127.0.0.1:8787 (repeat for each instance).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        stores: usize,
        /// Events appended per second, over all stores.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

/// The wire protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    /// LiveStore sync-cf 0.4, WebSocket RPC (live pull, push).
    Livestore,
    /// SyncKit binary frames at /ws (subscribe, delta, ack).
    Synckit,
    /// Pocket JSON at /sync (pull, push, broadcasts).
    Pocket,
}

/// Where to connect and as what; shared by the wire modes.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    #[arg(long, value_enum)]
    pub protocol: ProtocolName,
    /// Base URL of a running Junction, e.g. ws://127.0.0.1:8787 (each protocol adds its path).
    #[arg(long)]
    pub url: String,
    /// Path of the protocol's endpoint, if not its default (LiveStore /, SyncKit /ws, Pocket /sync).
    #[arg(long)]
    pub path: Option<String>,
    /// Token the clients present (LiveStore payload.authToken, Pocket ?token=, SyncKit auth frame).
    #[arg(long)]
    pub token: Option<String>,
    /// Loopback source addresses to spread connections over (127.0.0.1 … 127.0.0.N), so that
    /// one machine does not run out of ephemeral ports. Ignored for non-loopback targets.
    #[arg(long, default_value_t = 8)]
    pub source_addresses: u8,
    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// The server's process id, to read its memory from /proc/<pid>/status (else /metrics).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A label for this run, copied into the JSON line (e.g. the store backend).
    #[arg(long, default_value = "")]
    pub label: String,
}

impl TargetArgs {
    pub async fn target(&self) -> anyhow::Result<Target> {
        Target::new(self).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every connection is a file.
    junction::open_files::raise_to_hard_limit();
    match cli.mode {
        Mode::Idle(args) => idle::run(args).await,
        Mode::Fanout(args) => fanout::run(args).await,
        Mode::Push(args) => push::run(args).await,
        Mode::Append(args) => append::run(args).await,
        Mode::ScaleOut { urls, subscribers, stores, rate, seconds } => {
            scale_out::run(urls, subscribers, stores, rate, seconds).await
        }
    }
}
