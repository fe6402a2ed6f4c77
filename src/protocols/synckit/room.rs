//! One task per open document on this instance: the document's state, its subscribers, its
//! presence, and the adaptive broadcast.
//!
//! A room folds the document's event log ([`Document`]) and follows it live through an event-log
//! subscription, so writes committed by any instance reach its subscribers the same way. Its
//! own writes are appended at the head (events carry inputs, see [`super::document`]), acked
//! once committed, applied in seq order, and broadcast. Everything a room does happens on its one
//! task, in the order the commands arrived, so there are no locks around the document.
//!
//! A room with no subscribers, no presence and nothing pending closes after [`IDLE_CLOSE`]. The
//! registry ([`Rooms`]) hands commands that race with a closing room to a fresh one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::batch::FlushPolicy;
use super::document::{Applied, DocEvent, Document, FieldWrites, TextWrite};
use super::frame::{Encoded, Framing};
use super::message::{
    Ack, AwarenessEntry, AwarenessState, AwarenessUpdate, DeltaBroadcast, ErrorMessage, ServerMessage, SyncResponse,
    TextOpsRelay, server_message_id,
};
use super::raw::{Json, RawObject, VectorClock};
use crate::eventlog::{AppendBatch, Event, EventBody, EventLog, Protocol, SeqNum, Snapshot, StoreKey, Subscription};
use crate::fanout::EphemeralFeed;
use crate::metrics::{Metrics, SlowConsumer};
use crate::protocols::socket::{Offered, Outbox};
use serde::{Deserialize, Serialize};

/// How long an unused room stays open (a reconnecting client finds it warm).
pub const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Commands queued for one room before senders wait.
const MAILBOX: usize = 1024;
/// Most commands taken from the mailbox into one append.
const MAX_GROUP: usize = 256;
/// Events per read while loading or catching up.
const READ_PAGE: u32 = 1000;

/// Ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh server message id (`"<ms>-<9 base36>"`).
pub fn fresh_id() -> String {
    server_message_id(now_ms(), rand::random())
}

/// Encodes a server message for a framing, as a WebSocket message.
pub fn encode(message: &ServerMessage, framing: Framing, id: &str) -> Message {
    match message.encode(framing, id, now_ms()) {
        Encoded::Binary(bytes) => Message::Binary(bytes.into()),
        Encoded::Text(text) => Message::Text(text.into()),
    }
}

/// One message encoded at most once per framing, shared by every recipient.
struct Shared {
    message: ServerMessage,
    id: String,
    binary: Option<Message>,
    text: Option<Message>,
}

impl Shared {
    fn new(message: ServerMessage) -> Self {
        Shared { message, id: fresh_id(), binary: None, text: None }
    }

    fn frame(&mut self, framing: Framing) -> Message {
        let slot = match framing {
            Framing::Binary => &mut self.binary,
            Framing::Text => &mut self.text,
        };
        slot.get_or_insert_with(|| encode(&self.message, framing, &self.id)).clone()
    }
}

/// A connection as a room sees it.
#[derive(Clone)]
pub struct Peer {
    /// Unique on this instance.
    pub conn: u64,
    /// Unique across instances; stored with the connection's events so a text relay can skip
    /// the writer.
    pub session: Arc<str>,
    pub outbox: Outbox,
    pub framing: Framing,
    /// Cancelled when the connection must reconnect (its queue overflowed, or its room closed):
    /// its loop then closes the socket with 1013.
    pub kick: CancellationToken,
    pub metrics: Metrics,
}

impl Peer {
    /// Queues a frame without waiting; a full queue (in frames or bytes) marks the connection
    /// as too slow.
    pub fn offer(&self, frame: Message) {
        if self.outbox.offer(frame) == Offered::Full && !self.kick.is_cancelled() {
            self.metrics.slow_consumer_disconnected(SlowConsumer::Lagged);
            self.kick.cancel();
        }
    }

    pub fn reply(&self, message: &ServerMessage) {
        self.offer(encode(message, self.framing, &fresh_id()));
    }
}

/// A write from one client message.
pub struct Write {
    pub peer: Peer,
    /// The ack's `messageId`.
    pub ack: Json,
    /// Subscribe the writer to the document (it may read it).
    pub subscribe: bool,
    /// `delta_batch` rather than `delta` (for the error text).
    pub batch: bool,
    pub client_id: String,
    pub fields: Option<FieldWrites>,
    pub text: Option<TextWrite>,
    /// Legacy `text` ops: relayed as they are to the other subscribers, not stored.
    pub relays: Vec<RawObject>,
}

pub enum Command {
    /// subscribe / sync_request / sync_step1: answer with a `sync_response` and follow.
    Subscribe {
        peer: Peer,
        request_id: Json,
        client_clock: Option<VectorClock>,
    },
    Unsubscribe {
        conn: u64,
    },
    Write(Box<Write>),
    AwarenessSubscribe {
        peer: Peer,
    },
    AwarenessUpdate {
        peer: Peer,
        update: AwarenessUpdate,
    },
    /// The connection closed.
    Leave {
        conn: u64,
        session: Arc<str>,
    },
}

/// Room settings from `[protocols.synckit]`.
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    pub batch_window: Duration,
    pub awareness_timeout: Duration,
    pub snapshot_every: u64,
}

/// The open rooms of this instance.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<RoomsInner>,
}

struct RoomsInner {
    /// Identifies this server in session ids and presence news (random per start), so that the
    /// sessions of two instances never collide.
    instance: Arc<str>,
    log: EventLog,
    settings: RoomSettings,
    open: Mutex<HashMap<String, mpsc::Sender<Command>>>,
}

impl Rooms {
    pub fn new(log: EventLog, settings: RoomSettings) -> Rooms {
        let instance = format!("{:08x}", rand::random::<u32>()).into();
        Rooms { inner: Arc::new(RoomsInner { instance, log, settings, open: Mutex::new(HashMap::new()) }) }
    }

    /// Hands a command to the document's room, opening it if needed.
    pub async fn send(&self, document_id: &str, mut command: Command) {
        loop {
            let mailbox = {
                let mut open = self.inner.open.lock().expect("rooms lock");
                open.entry(document_id.to_owned()).or_insert_with(|| self.spawn(document_id)).clone()
            };
            match mailbox.send(command).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    // The room closed between the lookup and the send: forget it, open anew.
                    command = returned;
                    let mut open = self.inner.open.lock().expect("rooms lock");
                    if open.get(document_id).is_some_and(|m| m.same_channel(&mailbox)) {
                        open.remove(document_id);
                    }
                }
            }
        }
    }

    /// Hands a command to the room only if it is open (a leave needs no room opened for it).
    pub async fn send_if_open(&self, document_id: &str, command: Command) {
        let mailbox = self.inner.open.lock().expect("rooms lock").get(document_id).cloned();
        if let Some(mailbox) = mailbox {
            let _ = mailbox.send(command).await;
        }
    }

    /// This server's tag in session ids.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Rooms open on this instance.
    pub fn open_count(&self) -> usize {
        self.inner.open.lock().expect("rooms lock").len()
    }

    fn spawn(&self, document_id: &str) -> mpsc::Sender<Command> {
        let (mailbox, commands) = mpsc::channel(MAILBOX);
        let rooms = self.clone();
        let document_id = document_id.to_owned();
        tokio::spawn(async move { run(rooms, document_id, commands).await });
        mailbox
    }

    /// Removes the room's entry if it is still this mailbox's; commands that raced in are
    /// handed on to a fresh room.
    async fn close(&self, document_id: &str, mut commands: mpsc::Receiver<Command>, mailbox: &mpsc::Sender<Command>) {
        {
            let mut open = self.inner.open.lock().expect("rooms lock");
            if open.get(document_id).is_some_and(|m| m.same_channel(mailbox)) {
                open.remove(document_id);
            }
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            Box::pin(self.send(document_id, command)).await;
        }
    }
}

async fn run(rooms: Rooms, document_id: String, mut commands: mpsc::Receiver<Command>) {
    let log = rooms.inner.log.clone();
    // The connection refuses ids that break the document-id rules, which are stricter than the
    // store-name rule; a name that still fails here is answered like a document that cannot load.
    let loaded = match StoreKey::new(Protocol::SyncKit, document_id.clone()) {
        Ok(key) => {
            Room::load(log, key, rooms.inner.settings, rooms.inner.instance.clone()).await.map_err(|e| e.to_string())
        }
        Err(invalid) => Err(invalid.to_string()),
    };
    let mut room = match loaded {
        Ok(room) => room,
        Err(error) => {
            tracing::error!(document = %document_id, %error, "synckit: cannot load the document");
            let mailbox = rooms.inner.open.lock().expect("rooms lock").get(&document_id).cloned();
            {
                let mut open = rooms.inner.open.lock().expect("rooms lock");
                if mailbox.as_ref().is_some_and(|m| open.get(&document_id).is_some_and(|o| o.same_channel(m))) {
                    open.remove(&document_id);
                }
            }
            commands.close();
            while let Ok(command) = commands.try_recv() {
                fail(&document_id, command);
            }
            return;
        }
    };
    let mailbox = rooms.inner.open.lock().expect("rooms lock").get(&document_id).cloned();
    room.serve(&mut commands).await;
    if let Some(mailbox) = mailbox {
        rooms.close(&document_id, commands, &mailbox).await;
    }
}

/// Answers a command that cannot be carried out (the document could not be loaded).
fn fail(document_id: &str, command: Command) {
    match command {
        Command::Subscribe { peer, .. } => peer.reply(&ErrorMessage::subscribe_failed(document_id).into()),
        Command::Write(write) => {
            let error = if write.batch {
                ErrorMessage::delta_batch_application_failed(document_id)
            } else {
                ErrorMessage::delta_application_failed(document_id)
            };
            write.peer.reply(&error.into());
        }
        Command::AwarenessSubscribe { peer } => peer.reply(&ErrorMessage::awareness_subscribe_failed().into()),
        Command::AwarenessUpdate { peer, .. } => peer.reply(&ErrorMessage::awareness_update_failed().into()),
        Command::Unsubscribe { .. } | Command::Leave { .. } => {}
    }
}

struct Presence {
    state: Json,
    clock: u64,
    updated: Instant,
    /// The session of the connection that published it (on whichever instance).
    owner: Arc<str>,
}

/// What rooms of one document say to each other, on every instance, through the fan-out's
/// ephemeral topic `synckit:awareness:<documentId>` (presence is never stored).
// Externally tagged: an internally tagged enum buffers its content, and the raw JSON of a
// presence state cannot be read back from such a buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PresenceNews {
    /// A client's presence changed (`state: null`: it left), published by `session`.
    Update { session: String, update: AwarenessUpdate },
    /// A room opened on `origin` and knows nobody yet: owners, announce yourselves again.
    Hello { origin: String },
}

async fn next_news(feed: &mut Option<EphemeralFeed>) -> Result<bytes::Bytes, crate::fanout::Missed> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

fn awareness_topic(document_id: &str) -> String {
    format!("synckit:awareness:{document_id}")
}

struct Room {
    instance: Arc<str>,
    log: EventLog,
    key: StoreKey,
    settings: RoomSettings,
    document: Document,
    head: SeqNum,
    backend_id: String,
    snapshot_seq: SeqNum,
    live: Subscription,
    subscribers: HashMap<u64, Peer>,
    awareness_peers: HashMap<u64, Peer>,
    presence: HashMap<String, Presence>,
    /// Presence news from every instance, this one included; followed from the first awareness
    /// message on (a document nobody shows presence on costs no topic).
    news: Option<EphemeralFeed>,
    /// Whether this room has asked the other instances for their presence yet.
    greeted: bool,
    /// Fields written since the last flush, with the value to broadcast (last wins).
    pending: RawObject,
    flush_at: Option<Instant>,
    policy: FlushPolicy,
    idle_since: Option<Instant>,
}

impl Room {
    async fn load(
        log: EventLog,
        key: StoreKey,
        settings: RoomSettings,
        instance: Arc<str>,
    ) -> Result<Room, crate::eventlog::EventLogError> {
        let info = log.info(&key).await?;
        let (mut document, mut head) = (Document::default(), SeqNum(0));
        if let Some(snapshot) = log.load_snapshot(&key).await?
            && let Ok(restored) = serde_json::from_str::<Document>(&snapshot.body)
        {
            document = restored;
            head = snapshot.seq;
        }
        let snapshot_seq = head;
        loop {
            let events = log.read(&key, head, READ_PAGE).await?;
            let Some(last) = events.last() else { break };
            head = last.seq;
            for event in &events {
                document.apply_event(event);
            }
        }
        let live = log.subscribe(&key, head).await?;
        Ok(Room {
            instance,
            log,
            key,
            settings,
            document,
            head,
            backend_id: info.backend_id,
            snapshot_seq,
            live,
            subscribers: HashMap::new(),
            awareness_peers: HashMap::new(),
            presence: HashMap::new(),
            news: None,
            greeted: false,
            pending: RawObject::new(),
            flush_at: None,
            policy: FlushPolicy::new(settings.batch_window),
            idle_since: Some(Instant::now()),
        })
    }

    fn document_id(&self) -> &str {
        &self.key.name
    }

    async fn serve(&mut self, commands: &mut mpsc::Receiver<Command>) {
        let sweep_every = (self.settings.awareness_timeout / 4).max(Duration::from_millis(50));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let flush_at = self.flush_at.map_or(far, tokio::time::Instant::from_std);
            let idle_at = self.idle_since.map_or(far, |since| tokio::time::Instant::from_std(since + IDLE_CLOSE));
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let mut group = vec![command];
                    while group.len() < MAX_GROUP {
                        match commands.try_recv() {
                            Ok(command) => group.push(command),
                            Err(_) => break,
                        }
                    }
                    self.handle(group).await;
                }
                batch = self.live.next() => match batch {
                    Ok(events) => self.follow(&events, true),
                    Err(ended) => {
                        if !self.resubscribe(ended).await {
                            // The log is gone (shutdown, or storage down for good): the
                            // connections reconnect and find a fresh room.
                            self.kick_everyone();
                            return;
                        }
                    }
                },
                _ = sleep_until(flush_at), if self.flush_at.is_some() => self.flush(),
                _ = sweep.tick(), if !self.presence.is_empty() => self.expire_presence(),
                news = next_news(&mut self.news) => match news {
                    Ok(payload) => self.presence_news(&payload),
                    Err(missed) => tracing::debug!(document = %self.document_id(), %missed, "synckit: presence news lost"),
                },
                _ = sleep_until(idle_at), if self.idle_since.is_some() => {
                    if self.is_idle() {
                        return;
                    }
                    self.idle_since = None;
                }
            }
            self.idle_since = match (self.is_idle(), self.idle_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        }
    }

    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.awareness_peers.is_empty()
            && self.presence.is_empty()
            && self.pending.is_empty()
    }

    /// Commands in arrival order; consecutive writes share one append.
    async fn handle(&mut self, group: Vec<Command>) {
        let mut writes = Vec::new();
        for command in group {
            match command {
                Command::Write(write) => writes.push(*write),
                other => {
                    if !writes.is_empty() {
                        self.write(std::mem::take(&mut writes)).await;
                    }
                    if let Command::Subscribe { client_clock: Some(clock), .. } = &other {
                        self.merge_clock(clock).await;
                    }
                    self.command(other);
                }
            }
        }
        if !writes.is_empty() {
            self.write(writes).await;
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe { peer, request_id, client_clock } => {
                let mut clock = self.document.wire_clock();
                if let Some(client_clock) = &client_clock {
                    clock.merge(client_clock);
                }
                let mut response =
                    SyncResponse::new(request_id, self.document_id(), self.document.fields.clone(), Some(clock));
                if let Some(text) = &self.document.text {
                    response.text_state = Some(text.state.clone());
                    response.text_clock = Some(text.clock);
                }
                peer.reply(&ServerMessage::SyncResponse(response));
                self.subscribers.insert(peer.conn, peer);
            }
            Command::Unsubscribe { conn } => {
                self.subscribers.remove(&conn);
            }
            Command::AwarenessSubscribe { peer } => {
                self.follow_presence();
                let states = self
                    .presence
                    .iter()
                    .map(|(client_id, p)| AwarenessEntry {
                        client_id: client_id.clone(),
                        state: p.state.clone(),
                        clock: p.clock,
                    })
                    .collect();
                let state = AwarenessState { document_id: self.document_id().to_owned(), states };
                peer.reply(&ServerMessage::AwarenessState(state));
                self.awareness_peers.insert(peer.conn, peer);
                if !self.greeted {
                    // Presence published on other instances before this room opened arrives as
                    // updates once their owners announce it again.
                    self.greeted = true;
                    self.publish(&PresenceNews::Hello { origin: self.instance.to_string() });
                }
            }
            Command::AwarenessUpdate { peer, update } => {
                if self.presence.get(&update.client_id).is_some_and(|p| p.owner != peer.session) {
                    tracing::info!(document = %self.document_id(), client = %update.client_id,
                        "synckit: refused a presence update for a clientId another connection holds");
                    peer.reply(&ErrorMessage::awareness_update_failed().into());
                    return;
                }
                // Applied when it comes back through the fan-out, like everybody else's.
                self.follow_presence();
                self.publish(&PresenceNews::Update { session: peer.session.to_string(), update });
            }
            Command::Leave { conn, session } => {
                self.subscribers.remove(&conn);
                self.awareness_peers.remove(&conn);
                let gone: Vec<String> =
                    self.presence.iter().filter(|(_, p)| p.owner == session).map(|(id, _)| id.clone()).collect();
                for client_id in gone {
                    let leave = AwarenessUpdate {
                        document_id: self.document_id().to_owned(),
                        client_id,
                        state: None,
                        clock: u64::try_from(now_ms()).unwrap_or(0),
                    };
                    self.publish(&PresenceNews::Update { session: session.to_string(), update: leave });
                }
            }
            Command::Write(_) => unreachable!("writes are grouped by handle"),
        }
    }

    /// Appends the writes' events in one batch, then acks, applies and broadcasts them.
    async fn write(&mut self, writes: Vec<Write>) {
        let mut bodies = Vec::new();
        let mut accepted = Vec::with_capacity(writes.len());
        for write in writes {
            let mut own = Vec::new();
            if let Some(fields) = write.fields.as_ref().filter(|f| !f.fields.is_empty()) {
                own.push(DocEvent::Fields(fields.clone()).to_body(&write.client_id, &write.peer.session));
            }
            if let Some(text) = &write.text {
                own.push(DocEvent::Text(text.clone()).to_body(&write.client_id, &write.peer.session));
            }
            // Checked one write at a time: a write the log would refuse must not take the
            // other writes of its batch down with it.
            if let Err(reason) = own.iter().try_for_each(EventBody::check_text) {
                tracing::debug!(document = %self.document_id(), %reason, "synckit: write refused");
                fail(self.document_id(), Command::Write(Box::new(write)));
                continue;
            }
            bodies.extend(own);
            accepted.push(write);
        }
        let writes = accepted;
        if !bodies.is_empty() {
            if let Err(error) = self.append_and_apply(bodies).await {
                tracing::error!(document = %self.document_id(), %error, "synckit: append failed");
                let document_id = self.document_id().to_owned();
                for write in writes {
                    fail(&document_id, Command::Write(Box::new(write)));
                }
                return;
            }
        }
        for write in writes {
            write.peer.reply(&ServerMessage::Ack(Ack { message_id: write.ack.clone() }));
            if !write.relays.is_empty() {
                let relay = TextOpsRelay::new(self.document_id(), write.relays.clone());
                self.send_to_subscribers(ServerMessage::DeltaBatch(relay), Some(&write.peer.session));
            }
            if write.subscribe {
                self.subscribers.entry(write.peer.conn).or_insert_with(|| write.peer.clone());
            }
        }
        self.schedule_flush();
    }

    /// A `sync_request`'s vector clock joins the document clock — stored as a write with no
    /// fields, so every instance and every restart folds it in, and only when it raises an entry.
    async fn merge_clock(&mut self, clock: &VectorClock) {
        if clock.iter().all(|(client, counter)| self.document.clock.get(client).is_some_and(|held| held >= counter)) {
            return;
        }
        let event = DocEvent::Fields(FieldWrites { fields: RawObject::new(), clock: Some(clock.clone()) });
        if let Err(error) = self.append_and_apply(vec![event.to_body("sync_request", "server")]).await {
            tracing::error!(document = %self.document_id(), %error, "synckit: storing a clock failed");
        }
    }

    /// Appends `bodies` at the head, then applies the log in seq order: first whatever other
    /// instances committed before them, then them. The broadcast is left to the caller, so that
    /// acks go out before echoes.
    async fn append_and_apply(&mut self, bodies: Vec<EventBody>) -> Result<(), crate::eventlog::AppendError> {
        let appended = self.log.append(&self.key, AppendBatch::AtHead { events: bodies.clone() }).await?;
        if let Err(error) = self.catch_up(SeqNum(appended.first_seq.0 - 1)).await {
            tracing::error!(document = %self.document_id(), %error, "synckit: catching up failed");
        }
        let ours: Vec<Event> = bodies
            .into_iter()
            .zip(appended.first_seq.0..)
            .map(|(body, seq)| Event {
                seq: SeqNum(seq),
                parent_seq: SeqNum(seq - 1),
                body,
                created_at: appended.created_at.clone(),
                change_pos: appended.change_pos,
            })
            .collect();
        self.follow(&ours, false);
        Ok(())
    }

    /// Reads and applies the log up to `up_to` (events other instances committed).
    async fn catch_up(&mut self, up_to: SeqNum) -> Result<(), crate::eventlog::EventLogError> {
        while self.head < up_to {
            let events = self.log.read(&self.key, self.head, READ_PAGE).await?;
            if events.is_empty() {
                break;
            }
            let events: Vec<Event> = events.into_iter().filter(|e| e.seq <= up_to).collect();
            self.follow(&events, false);
        }
        Ok(())
    }

    /// Applies committed events past the head, in order, and queues their broadcast. A writer
    /// passes `flush: false` and schedules the flush after its acks (ACK first, then the echo,
    /// as the reference and SDK 0.1.1 expect).
    fn follow(&mut self, events: &[Event], flush: bool) {
        let mut changed = false;
        for event in events {
            if event.seq <= self.head {
                continue;
            }
            if event.seq != self.head.next() {
                // Cannot happen (subscriptions and reads are gap-free); never apply out of order.
                tracing::error!(document = %self.document_id(), seq = event.seq.0, head = self.head.0, "synckit: gap");
                break;
            }
            self.head = event.seq;
            match self.document.apply_event(event) {
                Applied::Fields(fields) => {
                    for (field, value) in fields {
                        self.pending.insert(field, value.0);
                    }
                    changed = true;
                }
                Applied::Text(merged) => {
                    let op = text_relay_op(self.document_id(), &merged, event);
                    let relay = TextOpsRelay::new(self.document_id(), vec![op]);
                    self.send_to_subscribers(ServerMessage::DeltaBatch(relay), Some(&event.body.session_id));
                }
                Applied::Nothing => {}
            }
        }
        if changed && flush {
            self.schedule_flush();
        }
        self.maybe_snapshot();
    }

    fn schedule_flush(&mut self) {
        if !self.pending.is_empty() && self.flush_at.is_none() {
            let due = self.policy.due(Instant::now());
            if due <= Instant::now() {
                self.flush();
            } else {
                self.flush_at = Some(due);
            }
        }
    }

    /// One `delta` per pending field to every subscriber, with the document's whole clock.
    fn flush(&mut self) {
        self.flush_at = None;
        if self.pending.is_empty() {
            return;
        }
        self.policy.flushed(Instant::now());
        let clock = self.document.wire_clock();
        let pending = std::mem::take(&mut self.pending);
        for (field, value) in pending.into_members() {
            let delta = DeltaBroadcast::new(self.document_id(), field, Json(value), clock.clone());
            self.send_to_subscribers(ServerMessage::Delta(delta), None);
        }
    }

    fn send_to_subscribers(&self, message: ServerMessage, except_session: Option<&str>) {
        let mut shared = Shared::new(message);
        for peer in self.subscribers.values() {
            if except_session.is_some_and(|s| *peer.session == *s) {
                continue;
            }
            peer.offer(shared.frame(peer.framing));
        }
    }

    fn follow_presence(&mut self) {
        if self.news.is_none() {
            self.news = Some(self.log.fanout().subscribe_ephemeral(&awareness_topic(self.document_id())));
        }
    }

    fn publish(&self, news: &PresenceNews) {
        let payload = serde_json::to_vec(news).expect("presence news serializes");
        self.log.fanout().publish_ephemeral(&awareness_topic(self.document_id()), payload.into());
    }

    /// Presence news from any instance (this one included).
    fn presence_news(&mut self, payload: &[u8]) {
        let news = match serde_json::from_slice::<PresenceNews>(payload) {
            Ok(news) => news,
            Err(error) => {
                tracing::warn!(document = %self.document_id(), %error, "synckit: unreadable presence news");
                return;
            }
        };
        match news {
            PresenceNews::Update { session, update } => {
                // A clientId belongs to the connection whose presence holds it, until that
                // presence is cleared or expires. Checked again here because two connections can
                // claim a free clientId at once; the first claim this room hears of wins. (Two
                // instances hear their own news first, so a claim race across instances within a
                // Redis round trip can leave each with its own owner until one presence ends.)
                if self.presence.get(&update.client_id).is_some_and(|p| *p.owner != *session) {
                    return;
                }
                match &update.state {
                    Some(state) if !state.is_null() => {
                        let presence = Presence {
                            state: state.clone(),
                            clock: update.clock,
                            updated: Instant::now(),
                            owner: session.into(),
                        };
                        self.presence.insert(update.client_id.clone(), presence);
                    }
                    _ => {
                        self.presence.remove(&update.client_id);
                    }
                }
                self.broadcast_awareness(update);
            }
            PresenceNews::Hello { origin } if *origin != *self.instance => {
                let mine: Vec<PresenceNews> = self
                    .presence
                    .iter()
                    .filter(|(_, p)| p.owner.starts_with(&*self.instance))
                    .map(|(client_id, p)| PresenceNews::Update {
                        session: p.owner.to_string(),
                        update: AwarenessUpdate {
                            document_id: self.document_id().to_owned(),
                            client_id: client_id.clone(),
                            state: Some(p.state.clone()),
                            clock: p.clock,
                        },
                    })
                    .collect();
                for news in &mine {
                    self.publish(news);
                }
            }
            PresenceNews::Hello { .. } => {}
        }
    }

    fn broadcast_awareness(&self, update: AwarenessUpdate) {
        let mut shared = Shared::new(ServerMessage::AwarenessUpdate(update));
        for peer in self.awareness_peers.values() {
            peer.offer(shared.frame(peer.framing));
        }
    }

    fn broadcast_leave(&self, client_id: String) {
        let clock = u64::try_from(now_ms()).unwrap_or(0);
        let leave = AwarenessUpdate { document_id: self.document_id().to_owned(), client_id, state: None, clock };
        self.broadcast_awareness(leave);
    }

    fn expire_presence(&mut self) {
        let timeout = self.settings.awareness_timeout;
        let stale: Vec<String> =
            self.presence.iter().filter(|(_, p)| p.updated.elapsed() >= timeout).map(|(id, _)| id.clone()).collect();
        for client_id in stale {
            self.presence.remove(&client_id);
            self.broadcast_leave(client_id);
        }
    }

    /// The subscription ended: follow again from the head (or reload after a reset). `false`
    /// when the log cannot be followed any more.
    async fn resubscribe(&mut self, ended: crate::eventlog::SubscriptionEnded) -> bool {
        use crate::eventlog::SubscriptionEnded;
        if matches!(ended, SubscriptionEnded::Reset) {
            tracing::info!(document = %self.document_id(), "synckit: the document was reset");
            self.document = Document::default();
            self.head = SeqNum(0);
            self.snapshot_seq = SeqNum(0);
            self.pending = RawObject::new();
            self.flush_at = None;
        }
        for attempt in 1..=5u32 {
            let subscribed = async {
                let info = self.log.info(&self.key).await?;
                let live = self.log.subscribe(&self.key, self.head).await?;
                Ok::<_, crate::eventlog::EventLogError>((info, live))
            };
            match subscribed.await {
                Ok((info, live)) => {
                    self.backend_id = info.backend_id;
                    self.live = live;
                    return true;
                }
                Err(crate::eventlog::EventLogError::ShuttingDown) => return false,
                Err(error) => {
                    tracing::warn!(document = %self.document_id(), %error, attempt, "synckit: cannot follow the log");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        false
    }

    /// Closes every connection that relies on this room (they reconnect to a fresh one).
    fn kick_everyone(&self) {
        for peer in self.subscribers.values().chain(self.awareness_peers.values()) {
            peer.kick.cancel();
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.head.0.saturating_sub(self.snapshot_seq.0) < self.settings.snapshot_every.max(1) {
            return;
        }
        self.snapshot_seq = self.head;
        let snapshot = Snapshot {
            backend_id: self.backend_id.clone(),
            seq: self.head,
            body: serde_json::to_string(&self.document).expect("documents serialize"),
        };
        let (log, key) = (self.log.clone(), self.key.clone());
        tokio::spawn(async move {
            if let Err(error) = log.save_snapshot(&key, &snapshot).await {
                tracing::warn!(store = %key, %error, "synckit: saving a snapshot failed (loading stays correct)");
            }
        });
    }
}

/// The relayed op of a text merge: `{type:"text-state", state, documentId, clientId, timestamp}`.
fn text_relay_op(document_id: &str, merged: &str, event: &Event) -> RawObject {
    let clock = DocEvent::from_body(&event.body).and_then(|e| match e {
        DocEvent::Text(t) => Some(t.clock),
        DocEvent::Fields(_) => None,
    });
    let mut op = RawObject::new();
    op.insert("type", Json::string("text-state").0);
    op.insert("state", Json::string(merged).0);
    op.insert("documentId", Json::string(document_id).0);
    op.insert("clientId", Json::string(&event.body.client_id).0);
    op.insert("timestamp", Json::i64(clock.unwrap_or(0)).0);
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_news_round_trips_with_raw_states() {
        let update = AwarenessUpdate {
            document_id: "doc-1".into(),
            client_id: "client-A".into(),
            state: Some(Json::parse(r#"{"user":{"name":"A"},"cursor":[1,2]}"#).unwrap()),
            clock: 3,
        };
        let news = PresenceNews::Update { session: "abc-conn-1".into(), update: update.clone() };
        let bytes = serde_json::to_vec(&news).unwrap();
        match serde_json::from_slice::<PresenceNews>(&bytes).unwrap() {
            PresenceNews::Update { session, update: back } => {
                assert_eq!(session, "abc-conn-1");
                assert_eq!(back, update);
            }
            other => panic!("{other:?}"),
        }
        let leave =
            PresenceNews::Update { session: "abc-conn-1".into(), update: AwarenessUpdate { state: None, ..update } };
        let back: PresenceNews = serde_json::from_slice(&serde_json::to_vec(&leave).unwrap()).unwrap();
        assert!(matches!(back, PresenceNews::Update { update: AwarenessUpdate { state: None, .. }, .. }));
    }
}
