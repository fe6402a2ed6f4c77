//! Export and import of stores in a lossless, line-oriented format (NDJSON).
//!
//! ```text
//! {"format":"junction-export","version":1}
//! {"store":{"protocol":"livestore","name":"todos","backend_id":"…","head":4,"event_count":4}}
//! {"event":{"seq":1,"parent_seq":0,"name":"…","args":…,"client_id":"…","session_id":"…","created_at":"…"}}
//! …more events of that store, then the next store line…
//! ```
//!
//! Everything a store is made of travels: its name, backend id (so LiveStore 0.4 clients keep
//! their data after a move), seqs and parents exactly, args byte for byte, and each event's
//! original `created_at`. Change-log positions do not: an imported store gets one new change-log
//! entry, since positions only mean something within one database.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::eventlog::{Event, EventBody, EventLog, EventLogError, RestoreOutcome, SeqNum, StoreId, StoreKey};

pub const FORMAT: &str = "junction-export";
pub const VERSION: u32 = 1;

/// Events read per storage round trip while exporting.
const EXPORT_PAGE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Log(#[from] EventLogError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Format { line: usize, reason: String },
    #[error("store {0} does not exist")]
    NoSuchStore(StoreKey),
    #[error("store {0} already holds other events; import with --replace to overwrite it")]
    Conflict(StoreKey),
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct StoreLine {
    protocol: crate::eventlog::Protocol,
    name: String,
    backend_id: String,
    head: SeqNum,
    event_count: u64,
}

#[derive(Serialize, Deserialize)]
struct EventLine {
    seq: SeqNum,
    parent_seq: SeqNum,
    name: String,
    args: Box<RawValue>,
    client_id: String,
    session_id: String,
    created_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Store(StoreLine),
    Event(EventLine),
}

/// What an export or import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub stores: u64,
    pub events: u64,
    /// Import only: stores that were already there with the same content.
    pub unchanged: u64,
}

/// Writes the given stores (every store when `stores` is empty).
pub async fn export(log: &EventLog, stores: &[StoreKey], mut out: impl Write) -> Result<Summary, BackupError> {
    writeln!(out, "{}", header_line())?;
    let mut summary = Summary::default();
    let mut selected = Vec::new();
    if stores.is_empty() {
        let mut after = StoreId(0);
        loop {
            let page = log.list_stores(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            selected.extend(page);
        }
    } else {
        for key in stores {
            selected.push(log.find_info(key).await?.ok_or_else(|| BackupError::NoSuchStore(key.clone()))?);
        }
    }
    for info in selected {
        writeln!(out, "{}", store_line(&info.key, &info.backend_id, info.head, info.event_count))?;
        let mut after = SeqNum::ROOT;
        loop {
            let events = log.read(&info.key, after, EXPORT_PAGE).await?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            for event in &events {
                writeln!(out, "{}", event_line(event))?;
            }
            summary.events += events.len() as u64;
        }
        summary.stores += 1;
    }
    out.flush()?;
    Ok(summary)
}

/// Reads an export and restores every store in it. A store that already holds exactly this
/// history is left alone (importing twice changes nothing); one that holds something else is
/// refused unless `replace`. Each store is restored in one transaction: all of it or none.
pub async fn import(log: &EventLog, input: impl BufRead, replace: bool) -> Result<Summary, BackupError> {
    let mut summary = Summary::default();
    for store in ExportReader::new(input)? {
        restore(log, store?, replace, &mut summary).await?;
    }
    Ok(summary)
}

/// One store of an export, read whole and checked against its store line.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreDump {
    pub key: StoreKey,
    pub backend_id: String,
    /// Events in increasing seq order; the last one's seq is the store line's head.
    pub events: Vec<Event>,
}

/// Reads an export store by store, touching no storage: the file's format is checked here,
/// the histories by [`EventLog::restore`].
pub struct ExportReader<R> {
    lines: std::iter::Enumerate<std::io::Lines<R>>,
    /// The store line that ended the previous store, with its index.
    next_store: Option<(StoreLine, usize)>,
    done: bool,
}

impl<R: BufRead> ExportReader<R> {
    /// Checks the header line.
    pub fn new(input: R) -> Result<Self, BackupError> {
        let mut lines = input.lines().enumerate();
        let (_, header) = lines.next().ok_or_else(|| format_error(0, "the file is empty".into()))?;
        let header: Header =
            serde_json::from_str(&header?).map_err(|e| format_error(0, format!("not an export header: {e}")))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(format_error(0, format!("unsupported format {} version {}", header.format, header.version)));
        }
        Ok(ExportReader { lines, next_store: None, done: false })
    }

    /// The next non-blank line, parsed, with its index.
    fn next_line(&mut self) -> Result<Option<(Line, usize)>, BackupError> {
        for (number, line) in self.lines.by_ref() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Line>(&line).map_err(|e| format_error(number, e.to_string()))?;
            return Ok(Some((parsed, number)));
        }
        Ok(None)
    }

    fn read_store(&mut self) -> Result<Option<StoreDump>, BackupError> {
        let (store, at) = match self.next_store.take() {
            Some(store) => store,
            None => match self.next_line()? {
                None => return Ok(None),
                Some((Line::Store(store), number)) => (store, number),
                Some((Line::Event(_), number)) => {
                    return Err(format_error(number, "an event before any store line".into()));
                }
            },
        };
        let mut events: Vec<Event> = Vec::new();
        while let Some((line, number)) = self.next_line()? {
            let event = match line {
                Line::Store(next) => {
                    self.next_store = Some((next, number));
                    break;
                }
                Line::Event(event) => event,
            };
            if events.last().is_some_and(|last| last.seq >= event.seq) {
                return Err(format_error(number, format!("seq {} does not follow the previous event", event.seq)));
            }
            events.push(Event {
                seq: event.seq,
                parent_seq: event.parent_seq,
                body: EventBody {
                    name: event.name,
                    args: event.args,
                    client_id: event.client_id,
                    session_id: event.session_id,
                },
                created_at: event.created_at,
                change_pos: crate::eventlog::ChangePos(0),
            });
        }
        let key = StoreKey::new(store.protocol, store.name)
            .map_err(|invalid| format_error(at, format!("store name: {invalid}")))?;
        let count = events.len() as u64;
        let last = events.last().map_or(SeqNum::ROOT, |e| e.seq);
        if count != store.event_count || last != store.head {
            let reason = format!(
                "store {key}: the file has {count} events up to seq {last}, its store line says {} up to {}",
                store.event_count, store.head
            );
            return Err(format_error(at, reason));
        }
        Ok(Some(StoreDump { key, backend_id: store.backend_id, events }))
    }
}

impl<R: BufRead> Iterator for ExportReader<R> {
    type Item = Result<StoreDump, BackupError>;

    /// Stops after the first error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let store = self.read_store().transpose();
        self.done = !matches!(store, Some(Ok(_)));
        store
    }
}

/// `index` is the 0-based line index.
fn format_error(index: usize, reason: String) -> BackupError {
    BackupError::Format { line: index + 1, reason }
}

pub(crate) fn header_line() -> String {
    serde_json::to_string(&Header { format: FORMAT.into(), version: VERSION }).expect("json")
}

pub(crate) fn store_line(key: &StoreKey, backend_id: &str, head: SeqNum, event_count: u64) -> String {
    let line = Line::Store(StoreLine {
        protocol: key.protocol,
        name: key.name.clone(),
        backend_id: backend_id.to_owned(),
        head,
        event_count,
    });
    serde_json::to_string(&line).expect("json")
}

pub(crate) fn event_line(event: &Event) -> String {
    let line = Line::Event(EventLine {
        seq: event.seq,
        parent_seq: event.parent_seq,
        name: event.body.name.clone(),
        args: event.body.args.clone(),
        client_id: event.body.client_id.clone(),
        session_id: event.body.session_id.clone(),
        created_at: event.created_at.clone(),
    });
    serde_json::to_string(&line).expect("json")
}

async fn restore(log: &EventLog, store: StoreDump, replace: bool, summary: &mut Summary) -> Result<(), BackupError> {
    let count = store.events.len() as u64;
    match log.restore(&store.key, Some(&store.backend_id), store.events, replace).await? {
        RestoreOutcome::Restored => {
            summary.stores += 1;
            summary.events += count;
        }
        RestoreOutcome::Unchanged => summary.unchanged += 1,
        RestoreOutcome::Conflict => return Err(BackupError::Conflict(store.key)),
    }
    Ok(())
}
