//! The 0.4.x WebSocket loop: Effect-RPC frames.
//!
//! Each `SyncWsRpc.Pull` runs as its own task: pages up to the head (`MoreKnown` … `NoMore`,
//! always at least one `NoMore`), then, when live, one `NoMore` chunk per committed batch from an
//! event-log subscription, and never an Exit. Pushes are answered in the loop itself.

use std::collections::{HashMap, HashSet, VecDeque};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::session::{self, Grant, InitialPull, PushRefused, SyncParams};
use super::v04::{self, ClientMessage, Exit, PageInfo, PullArgs, PullResponse, RpcCall, ServerMessage, SyncError};
use crate::eventlog::{Protocol, SubscriptionEnded};
use crate::limits::{RateLimiter, Verdict};
use crate::protocols::socket::{self, Outbox, close_code};
use crate::server::AppState;

/// How many finished stream ids a connection remembers for Acks that arrive late.
const REMEMBERED_STREAMS: usize = 1024;

pub async fn serve(socket: WebSocket, state: AppState, params: SyncParams, grant: Grant) {
    let (outbox, mut incoming, writer) = socket::split(socket, 256, state.config.limits.ws_send_queue_bytes);
    let limiter = RateLimiter::from_limits(&state.config.limits);
    let mut connection = Connection {
        state,
        params,
        grant,
        outbox,
        limiter,
        live_pulls: HashMap::new(),
        streams: KnownStreams::default(),
    };
    // A live pull too slow to go on queues the close frame, then cancels this token to end the
    // loop (a token rather than a channel: see ws03).
    let pull_ended = CancellationToken::new();
    let token_expires = socket::token_deadline(connection.grant.expires());
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    // Boxed, like every storage call in the socket's long-lived futures: an idle
                    // connection then holds only what it needs while it waits.
                    if let Err(reason) = Box::pin(connection.handle(&text, &pull_ended)).await {
                        connection.outbox.close(close_code::PROTOCOL_ERROR, reason).await;
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    tracing::debug!(store = %connection.params.store_id, "livestore 0.4: binary frame ignored");
                    if connection.limiter.check() == Verdict::Flooding {
                        socket::close_flooder(&connection.outbox, &connection.state.metrics, Protocol::LiveStore).await;
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = pull_ended.cancelled() => break,
            _ = socket::expired(token_expires) => {
                // LiveStore has no auth error on an open socket: the client reconnects, and its
                // expired token is then refused at the upgrade.
                connection.state.metrics.auth_expired(Protocol::LiveStore.as_str());
                connection.outbox.close(close_code::POLICY_VIOLATION, "authentication token expired").await;
                break;
            }
            _ = connection.state.shutdown.cancelled() => {
                connection.outbox.close(close_code::GOING_AWAY, "server shutting down").await;
                break;
            }
        }
    }
    for (_, pull) in connection.live_pulls.drain() {
        pull.abort();
    }
    drop(connection);
    let _ = writer.await;
}

struct Connection {
    state: AppState,
    params: SyncParams,
    grant: Grant,
    outbox: Outbox,
    limiter: RateLimiter,
    live_pulls: HashMap<String, JoinHandle<()>>,
    streams: KnownStreams,
}

impl Connection {
    /// Handles one frame. `Err` closes the socket: the client is out of step with this
    /// connection (a stale `Ack` after a reconnect, livestorejs/livestore#1365) and only a fresh one
    /// gets it going again.
    async fn handle(&mut self, text: &str, pull_ended: &CancellationToken) -> Result<(), &'static str> {
        // Over the rate, requests are refused and the rest (pings, acks, interrupts: no work
        // worth sparing, and no id to refuse them with) handled: nothing goes unanswered.
        let verdict = self.limiter.check();
        if verdict == Verdict::Flooding {
            socket::close_flooder(&self.outbox, &self.state.metrics, Protocol::LiveStore).await;
            // Ends the loop, as a live pull that cannot go on does.
            pull_ended.cancel();
            return Ok(());
        }
        let limit = self.state.config.limits.max_frame_bytes;
        if text.len() > limit {
            let message = format!("message too large: {} bytes, the limit is {limit}", text.len());
            self.fail(&request_id_of(text), SyncError::unknown(message)).await;
            return Ok(());
        }
        let message = match v04::decode_ws_message(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(store = %self.params.store_id, %error, "livestore 0.4: undecodable frame");
                if let Some(reply) = ServerMessage::reply_to_bad_frame(&error) {
                    self.outbox.text(reply.to_json()).await;
                }
                return Ok(());
            }
        };
        match message {
            ClientMessage::Ping => {
                self.outbox.text(ServerMessage::Pong.to_json()).await;
            }
            ClientMessage::Eof => {}
            ClientMessage::Ack { request_id } => {
                if !self.streams.contains(&request_id) {
                    return Err("Ack for a stream this connection does not have");
                }
            }
            // Only a pull has anything to stop. Real apps interrupt their push on every rebase,
            // often after its Exit went out, and a client may interrupt a request it never got to
            // send or sent on an earlier socket: it has forgotten the id either way, so, as
            // Effect's RpcServer does, the rest is ignored (its Exit for those the client drops).
            ClientMessage::Interrupt { request_id } => {
                if let Some(pull) = self.live_pulls.remove(&request_id) {
                    pull.abort();
                }
            }
            ClientMessage::Request(request) if verdict == Verdict::OverLimit => {
                self.fail(&request.id, SyncError::unknown("too many messages, please slow down")).await;
            }
            ClientMessage::Request(request) => match request.call {
                RpcCall::Pull(args) => {
                    // Finished pulls leave; running ones are bounded, each holds a task and a feed.
                    self.live_pulls.retain(|_, pull| !pull.is_finished());
                    if self.live_pulls.len() >= self.state.config.limits.max_pulls_per_connection
                        && !self.live_pulls.contains_key(&request.id)
                    {
                        let message = "too many pulls on this connection; interrupt one first";
                        self.fail(&request.id, SyncError::unknown(message)).await;
                    } else {
                        self.pull(request.id, args, pull_ended);
                    }
                }
                RpcCall::Push(args) => {
                    let exit = if args.store_id != self.params.store_id {
                        Exit::Failure(SyncError::unknown("storeId differs from the one the connection was opened for"))
                    } else {
                        push(&self.state, &self.params, &self.grant, args.batch, args.backend_id).await
                    };
                    self.exit(&request.id, exit).await;
                }
                RpcCall::Ping(_) => {
                    // The decoder only yields Ping for the HTTP transport.
                    self.fail(&request.id, SyncError::unknown("SyncHttpRpc.Ping is not a WebSocket RPC")).await;
                }
            },
        }
        Ok(())
    }

    fn pull(&mut self, id: String, args: PullArgs, pull_ended: &CancellationToken) {
        self.streams.remember(id.clone());
        let task = run_pull(
            self.state.clone(),
            self.params.clone(),
            self.outbox.clone(),
            id.clone(),
            args,
            pull_ended.clone(),
        );
        if let Some(previous) = self.live_pulls.insert(id, tokio::spawn(task)) {
            previous.abort();
        }
    }

    async fn exit(&self, request_id: &str, exit: Exit) {
        self.outbox.text(ServerMessage::Exit { request_id: request_id.to_owned(), exit }.to_json()).await;
    }

    async fn fail(&self, request_id: &str, error: SyncError) {
        self.exit(request_id, Exit::Failure(error)).await;
    }
}

/// A push over either 0.4 transport, as its Exit.
pub(super) async fn push(
    state: &AppState,
    params: &SyncParams,
    grant: &Grant,
    batch: Vec<super::wire_event::WireEvent>,
    backend_id: Option<String>,
) -> Exit {
    if let Some(received) = backend_id {
        match state.log.info(&params.key()).await {
            Ok(info) if info.backend_id != received => {
                return Exit::Failure(SyncError::BackendIdMismatch { expected: info.backend_id, received });
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(store = %params.store_id, %error, "livestore: reading the backend id failed");
                return Exit::Failure(SyncError::unknown("internal error"));
            }
        }
    }
    match session::push(&state.log, params, grant, &batch).await {
        Ok(()) => Exit::PushOk,
        Err(PushRefused::NotOnHead { head, provided }) => {
            Exit::Failure(SyncError::ServerAhead { minimum_expected_num: head.0, provided_num: provided })
        }
        Err(PushRefused::Forbidden) => Exit::Failure(SyncError::unknown("not allowed to push to this store")),
        Err(PushRefused::Invalid(reason)) => Exit::Failure(SyncError::unknown(format!("invalid batch: {reason}"))),
        Err(PushRefused::Internal) => Exit::Failure(SyncError::unknown("internal error")),
    }
}

/// Starts a pull over either 0.4 transport; `Err` is the Exit that refuses it.
pub(super) async fn start_pull(state: &AppState, params: &SyncParams, args: &PullArgs) -> Result<InitialPull, Exit> {
    if args.store_id != params.store_id {
        return Err(Exit::Failure(SyncError::unknown("storeId differs from the one the connection was opened for")));
    }
    let cursor = args.cursor.as_ref().map(|c| c.event_sequence_number);
    let initial = InitialPull::start(&state.log, params.key(), cursor).await.map_err(|e| internal(params, e))?;
    if let Some(cursor) = &args.cursor
        && cursor.backend_id != initial.backend_id
    {
        return Err(Exit::Failure(SyncError::BackendIdMismatch {
            expected: initial.backend_id.clone(),
            received: cursor.backend_id.clone(),
        }));
    }
    Ok(initial)
}

/// The next page of a pull's initial part as a `PullResponse`, `None` when it is done.
pub(super) async fn next_response(
    state: &AppState,
    params: &SyncParams,
    initial: &mut InitialPull,
) -> Result<Option<PullResponse>, Exit> {
    let Some(page) = initial.next_page(&state.log).await.map_err(|e| internal(params, e))? else {
        return Ok(None);
    };
    let page_info =
        if page.remaining > 0 { PageInfo::MoreKnown { remaining: page.remaining } } else { PageInfo::NoMore };
    Ok(Some(PullResponse { batch: page.events, page_info, backend_id: initial.backend_id.clone() }))
}

fn internal(params: &SyncParams, error: crate::eventlog::EventLogError) -> Exit {
    tracing::error!(store = %params.store_id, %error, "livestore 0.4: pull failed");
    Exit::Failure(SyncError::unknown("internal error"))
}

async fn run_pull(
    state: AppState,
    params: SyncParams,
    outbox: Outbox,
    id: String,
    args: PullArgs,
    ended: CancellationToken,
) {
    let exit = |exit: Exit| ServerMessage::Exit { request_id: id.clone(), exit }.to_json();
    let mut initial = match Box::pin(start_pull(&state, &params, &args)).await {
        Ok(initial) => initial,
        Err(failure) => {
            outbox.text(exit(failure)).await;
            return;
        }
    };
    loop {
        match Box::pin(next_response(&state, &params, &mut initial)).await {
            Ok(Some(page)) => {
                if !outbox.text(page.encode().chunk_frame(&id)).await {
                    return;
                }
            }
            Ok(None) => break,
            Err(failure) => {
                outbox.text(exit(failure)).await;
                return;
            }
        }
    }
    if !args.live {
        outbox.text(exit(Exit::PullComplete)).await;
        return;
    }
    let mut subscription = match Box::pin(state.log.subscribe(&params.key(), initial.last_seq())).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(store = %params.store_id, %error, "livestore 0.4: live pull failed");
            outbox.text(exit(Exit::Failure(SyncError::unknown("internal error")))).await;
            return;
        }
    };
    // Every subscriber of the store gets the same batches and, with the same request id, the
    // same frames: encoded by the first, shared by the rest.
    let variant = format!("livestore-0.4\n{id}\n{}", initial.backend_id);
    loop {
        match subscription.next().await {
            Ok(events) => {
                let frames = state.frames.get_or_encode(&events, &variant, |events| {
                    session::paginate(events)
                        .into_iter()
                        .map(|batch| {
                            let backend_id = initial.backend_id.clone();
                            PullResponse { batch, page_info: PageInfo::NoMore, backend_id }.encode().chunk_frame(&id)
                        })
                        .collect()
                });
                for frame in frames.iter() {
                    if !outbox.text(frame.clone()).await {
                        return;
                    }
                }
            }
            Err(SubscriptionEnded::Reset) => {
                // The client's history is gone from the server; its default is to reset too.
                let expected =
                    Box::pin(state.log.info(&params.key())).await.map(|info| info.backend_id).unwrap_or_default();
                let received = initial.backend_id.clone();
                outbox.text(exit(Exit::Failure(SyncError::BackendIdMismatch { expected, received }))).await;
                return;
            }
            Err(end) => {
                tracing::info!(store = %params.store_id, reason = %end, "livestore 0.4: closing a socket whose live pull ended");
                outbox.close(close_code::TRY_AGAIN_LATER, "too slow: reconnect and pull again").await;
                ended.cancel();
                return;
            }
        }
    }
}

/// Stream ids this connection has seen, the newest few hundred.
#[derive(Default)]
struct KnownStreams {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl KnownStreams {
    fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED_STREAMS
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// The `id` of a request frame we will not decode fully.
fn request_id_of(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Id>(text).ok().and_then(|id| id.id).unwrap_or_default()
}
