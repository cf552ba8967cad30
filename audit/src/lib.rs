//! The audit log: every decision as one structured event, redacted, hash-chained, and written
//! before the action it describes. A crate below the gateway: it knows events and sinks, not
//! callers, policy or protocols (the gateway says who a caller is, in a [`Who`]).
//!
//! Where a required sink is a regular file, a caller writes its event itself: linked to the
//! chain and appended with one `write`, on its own task, with the `fsync` following on the sink's
//! thread (see [`inline`], which also says when a caller leaves its event to the writer thread).
//! Otherwise events go through one writer thread. It takes every event waiting, links each to the one
//! before it (`prev` is the previous event's `hash`; `hash` is SHA-256 over the event's canonical
//! JSON without `hash`), and hands the batch to every sink's own thread, which writes it and
//! flushes it (one `fsync` serves the whole batch). Each waiting caller is answered by the first
//! required sink that has written the batch, so a call waits for the fastest required sink, never
//! for the slowest. Written means the events survive a crash of the process (a file sink's are in
//! the kernel, the store's are committed); the flush that makes them survive power loss follows,
//! and what queues during it is written after it, together, and shares the next flush. Once a
//! sink's flush has failed, it answers only after each batch's own flush. A call proceeds only when a required sink has its request event
//! ([`Audit::record`]); if every required sink fails it, or none has it within the timeout, the
//! call is refused.
//! Events that describe what already happened (results, lists, refusals) are queued without
//! waiting ([`Audit::note`]); if the queue is full they are counted as dropped, never block.
//! The writer holds such events for up to [`LINGER`] for one somebody waits for, so a call's
//! result goes out with the next call's request: one write and one flush for both.
//!
//! Each process writes its own chain (`chain` is random per start, `seq` counts from 1). The
//! first event of a chain (`audit.start`) links to the last event already in the first sink that
//! has one, so removing a whole run also shows as a broken link. The store lags the file (callers
//! write the file first and the store waits for company, `sink::STORE_LINGER`): a chain that links
//! to a file's recent event waits a moment for the store to hold it too ([`link`]).

pub mod clock;
pub mod export;
pub mod file;
mod inline;
mod line;
mod link;
mod queue;
pub mod redact;
mod reserve;
mod sink;
mod stall;
pub mod verify;
mod writer;

pub use reserve::{EndOnDrop, Reserve};

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use registry::{AuditSettings, SinkKind};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::redact::Redactor;
use store::{AuditRow, Store, now_ms};

use file::{FileSink, Reopen};
use inline::Inline;
use queue::*;
use sink::*;
use writer::*;

/// What an event records of a session: `s:` and 24 hex digits of the id's SHA-256. A session
/// id is a credential of sorts (with the caller's token it continues the session) and, sealed,
/// a few hundred bytes; its digest correlates a session's events at a tenth of the size and
/// reveals nothing. Given a digest already, returns it as it is.
pub fn session_ref(id: &str) -> String {
    let is_ref = id
        .strip_prefix("s:")
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_ref {
        return id.to_string();
    }
    let digest = Sha256::digest(id.as_bytes());
    format!(
        "s:{}",
        registry::hex_lower(digest.get(..12).unwrap_or_default())
    )
}

/// The `prev` of the first event ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the event schema (`v`), documented in `docs/audit.md`.
const SCHEMA: u64 = 1;
/// Events waiting for the writer before [`Audit::note`] starts dropping.
const QUEUE: usize = 65_536;
/// Most events written in one batch.
const MAX_BATCH: usize = 1024;
/// How long a call waits for its request event to be written.
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long queued events nobody waits for are held for an event somebody does, so both go out
/// in one write and one flush (a call's result with the next call's request).
const LINGER: Duration = Duration::from_millis(25);

/// One event, before the writer adds `v`, `id`, `time`, `chain`, `seq`, `prev` and `hash`.
#[derive(Debug, Default, Serialize)]
pub struct Event {
    #[serde(skip)]
    pub at_ms: i64,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Who>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Who an event is about: the credential's subject and every resolved principal.
#[derive(Clone, Debug, Serialize)]
pub struct Who {
    pub subject: String,
    /// Shared with the caller's identity, which formats them once.
    pub principals: Arc<[String]>,
}

impl Who {
    /// An operator or a process acting without a caller.
    pub fn named(subject: impl Into<String>) -> Who {
        Who {
            subject: subject.into(),
            principals: Arc::from([]),
        }
    }
}

impl Event {
    /// An event of `kind`, stamped now.
    pub fn new(kind: &'static str) -> Event {
        Event {
            at_ms: now_ms(),
            kind,
            ..Event::default()
        }
    }
}

/// Why a request event was not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("no required audit sink accepted the event")]
    NotAccepted,
    #[error("the audit writer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the audit writer has stopped")]
    Stopped,
}

/// Counters for one sink, read by `/metrics` and the self-audit.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    pub required: bool,
    /// Events the sink has: written, and either flushed or answered before a flush.
    pub written: AtomicU64,
    /// Events the sink failed: not written, or refused because their flush failed.
    pub failed: AtomicU64,
    /// Writes this sink completed (each a `write` or transaction, then its `fsync` if it has
    /// one). Fewer than the writer's batches when the sink fell behind and caught up.
    pub flushes: AtomicU64,
    /// Flushes that failed after their write succeeded.
    pub flush_failures: AtomicU64,
    /// Whether the sink's last write (and flush) succeeded; true until one fails.
    pub last_ok: std::sync::atomic::AtomicBool,
    /// The write or flush its thread has under way, if one is.
    pub(crate) busy: stall::Under,
}

/// The handle every part of the gateway writes events through.
pub struct Audit {
    tx: mpsc::Sender<Job>,
    /// The required regular file callers write their events to themselves, if there is one.
    inline: Option<Inline>,
    redactor: Redactor,
    /// One entry per configured sink, in config order.
    pub sinks: Arc<Vec<SinkStats>>,
    /// Events that could not be queued.
    pub dropped: AtomicU64,
    /// Request events refused because no required sink took them.
    pub refused: AtomicU64,
    /// Batches handed to the sinks: events per batch is how much one write and flush serve.
    pub batches: Arc<AtomicU64>,
    /// Asks the file sinks to reopen their paths (SIGHUP, after an external rotator).
    reopen: Reopen,
    /// Unauthenticated traffic is recorded at a bounded rate: (second, events in it, skipped).
    limited: std::sync::Mutex<(i64, u32, u64)>,
    /// The runtime's worker held in reserve, once the process has one (the watch reads it).
    reserve: Arc<std::sync::OnceLock<Arc<Reserve>>>,
}

/// Most events per second from [`Audit::note_limited`].
const LIMITED_PER_SECOND: u32 = 20;

struct Job {
    event: Event,
    ack: Option<oneshot::Sender<bool>>,
    /// Answer only once every sink has finished with the event (the chain's last one).
    all: bool,
}

impl Audit {
    /// Open every sink, start the writer and write the chain's first event. Fails, naming the
    /// sink, when a sink cannot be opened or no required sink accepts that first event.
    pub async fn open(
        settings: &AuditSettings,
        store: &Store,
        role: &'static str,
        config_digest: &str,
    ) -> Result<Audit, String> {
        let key = match &settings.redact_key {
            Some(r) => {
                let k = r
                    .resolve_local()
                    .map(String::into_bytes)
                    .map_err(|e| format!("audit.redact_key: {e}"))?;
                if k.len() < 32 {
                    return Err(
                        "audit.redact_key: the key is shorter than 32 bytes; use a random key of at least 32 bytes (e.g. `openssl rand -hex 32`)".into(),
                    );
                }
                k
            }
            None => store
                .audit_key()
                .await
                .map_err(|e| format!("cannot read the audit redaction key from the store: {e}"))?,
        };
        let mut sinks = Vec::new();
        let mut stats = Vec::new();
        // What the chain links to: the first sink's last event, and its line when in a file.
        let mut prev: Option<String> = None;
        let mut linked_line: Option<String> = None;
        let mut stored: Option<Option<String>> = None;
        let reopen = Reopen::default();
        for s in &settings.sinks {
            let (sink, last) = match &s.kind {
                SinkKind::File {
                    path,
                    fsync,
                    rotate,
                } => {
                    let (sink, last) = FileSink::open(path, *fsync, *rotate, reopen.clone())?;
                    (Sink::File(SharedFile::new(sink)), last)
                }
                SinkKind::Store => {
                    let last = store
                        .last_audit_line()
                        .await
                        .map_err(|e| format!("audit store sink: {e}"))?;
                    let writer = store
                        .audit_writer()
                        .map_err(|e| format!("audit store sink: {e}"))?;
                    (Sink::Store(writer), last)
                }
                SinkKind::Stdout => (Sink::Stdout, None),
            };
            let hash = last.as_deref().and_then(hash_of_line);
            if matches!(s.kind, SinkKind::Store) {
                stored = Some(hash.clone());
            }
            if prev.is_none() && hash.is_some() {
                prev = hash;
                linked_line = last.filter(|_| matches!(s.kind, SinkKind::File { .. }));
            }
            stats.push(SinkStats {
                name: match &s.kind {
                    SinkKind::File { path, .. } => format!("file:{path}"),
                    other => other.name().to_string(),
                },
                required: s.required,
                written: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                flush_failures: AtomicU64::new(0),
                last_ok: std::sync::atomic::AtomicBool::new(true),
                busy: stall::Under::new(),
                failed: AtomicU64::new(0),
            });
            sinks.push((sink, s.required));
        }
        // Linked to a file's last event that the store may not have written yet: wait for it.
        if let (Some(line), Some(hash), Some(stored)) = (&linked_line, &prev, &stored)
            && stored.as_ref() != Some(hash)
        {
            link::await_in_store(store, line, hash).await;
        }
        let stats = Arc::new(stats);
        let batches = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(QUEUE);
        let head = Arc::new(std::sync::Mutex::new(Head::new(
            hex::encode(rand::random::<[u8; 8]>()),
            prev.unwrap_or_else(|| GENESIS.to_string()),
        )));
        // The first required sink that is a regular file takes callers' own writes.
        let direct = sinks
            .iter()
            .enumerate()
            .find_map(|(i, (sink, required))| match sink {
                Sink::File(f) if *required && f.file.lock().is_ok_and(|f| f.regular()) => {
                    Some((i, f.file.clone()))
                }
                _ => None,
            });
        let shared = direct
            .as_ref()
            .map(|(i, _)| (*i, Arc::new(Shared::default())));
        let writer = Writer::start(
            head.clone(),
            sinks,
            stats.clone(),
            batches.clone(),
            shared.as_ref(),
        )?;
        let inline = match (direct, shared) {
            (Some((index, file)), Some((_, shared))) => Some(Inline {
                head,
                file,
                index,
                shared,
                queues: writer.sinks.clone(),
                stats: stats.clone(),
                batches: batches.clone(),
                slow_until: AtomicU64::new(0),
                born: Instant::now(),
                writing: Arc::new(stall::Under::new()),
                #[cfg(test)]
                stall: std::sync::Mutex::new(Duration::ZERO),
            }),
            _ => None,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        let reserve = Arc::new(std::sync::OnceLock::new());
        if let (Some(i), Ok(runtime)) = (&inline, tokio::runtime::Handle::try_current()) {
            let writing = Arc::downgrade(&i.writing);
            let reserve = reserve.clone();
            std::thread::Builder::new()
                .name("audit-watch".into())
                .spawn(move || stall::watch(writing, reserve, runtime))
                .map_err(|e| format!("cannot start the audit watch: {e}"))?;
        }
        let audit = Audit {
            tx,
            inline,
            redactor: Redactor::new(&key, settings.redact.clone()),
            sinks: stats,
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            batches,
            reopen,
            limited: std::sync::Mutex::new((0, 0, 0)),
            reserve,
        };
        let mut start = Event::new("audit.start");
        start.identity = Some(Who::named(format!("process:{}", std::process::id())));
        start.detail = Some(json!({
            "role": role,
            "version": env!("CARGO_PKG_VERSION"),
            "config_digest": config_digest,
            "sinks": audit.sinks.iter().map(|s| json!({ "sink": s.name, "required": s.required })).collect::<Vec<_>>(),
            "redact_paths": settings.redact.iter().map(|p| p.text.clone()).collect::<Vec<_>>(),
        }));
        audit
            .record(start)
            .await
            .map_err(|e| format!("cannot write the audit log: {e}"))?;
        Ok(audit)
    }

    /// Wake the runtime worker `reserve` holds when a caller's write to the file hangs (see
    /// [`Reserve`]). Set once; later calls are ignored.
    pub fn keep_reserve(&self, reserve: Arc<Reserve>) {
        let _ = self.reserve.set(reserve);
    }

    /// Have every file sink reopen its path before its next write: the file was moved away by
    /// a rotator outside the gateway (`logrotate` without `copytruncate`), which then sends SIGHUP.
    pub fn reopen_files(&self) {
        self.reopen.ask();
    }

    /// Whether a call's event would be taken now: no caller's own write to the file has been
    /// under way past [`stall::STALLED`] (it holds the chain's head, so no sink gets an event
    /// until it returns), and some required sink's last write succeeded with nothing callers
    /// wait for under way that long on its thread. A frozen disk fails no write: it holds them.
    pub fn writable(&self) -> bool {
        if self.inline.as_ref().is_some_and(|i| i.writing.stalled()) {
            return false;
        }
        self.sinks
            .iter()
            .any(|s| s.required && s.last_ok.load(Ordering::Relaxed) && !s.busy.stalled())
    }

    /// Write `event` and wait until a required sink has it. The caller must not act on an error.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        self.record_in(event, false).await
    }

    async fn record_in(&self, event: Event, all: bool) -> Result<(), AuditError> {
        // The chain's first and last events go through the writer thread: they wait for every
        // sink, or name the sink that fails.
        if !all
            && event.kind != "audit.start"
            && let Some(inline) = &self.inline
            && inline.write(&event, true)
        {
            return Ok(());
        }
        let (ack, answer) = oneshot::channel();
        let job = Job {
            event,
            ack: Some(ack),
            all,
        };
        let outcome = tokio::time::timeout(RECORD_TIMEOUT, async {
            self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
            match answer.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(AuditError::NotAccepted),
                Err(_) => Err(AuditError::Stopped),
            }
        })
        .await
        .unwrap_or(Err(AuditError::Timeout(RECORD_TIMEOUT)));
        if outcome.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Write the chain's last event, `audit.stop`, and wait until every sink has finished with
    /// it. Each sink writes in order, so on `Ok` nothing this process recorded is still in memory.
    pub async fn close(&self) -> Result<(), AuditError> {
        let mut stop = Event::new("audit.stop");
        stop.identity = Some(Who::named(format!("process:{}", std::process::id())));
        self.record_in(stop, true).await
    }

    /// Queue `event` without waiting. Used for what has already happened.
    pub fn note(&self, event: Event) {
        if let Some(inline) = &self.inline
            && inline.write(&event, false)
        {
            return;
        }
        let kind = event.kind;
        if self
            .tx
            .try_send(Job {
                event,
                ack: None,
                all: false,
            })
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kind, "audit queue full or writer stopped: event dropped");
        }
    }

    /// Like [`Audit::note`] for events anyone can cause without credentials (failed sign-ins):
    /// at most [`LIMITED_PER_SECOND`] a second, the next one written saying how many were skipped,
    /// so a flood neither fills the disk nor crowds out calls' events.
    pub fn note_limited(&self, mut event: Event) {
        let second = event.at_ms.div_euclid(1000);
        let skipped = {
            let Ok(mut l) = self.limited.lock() else {
                return;
            };
            if l.0 != second {
                l.0 = second;
                l.1 = 0;
            }
            if l.1 >= LIMITED_PER_SECOND {
                l.2 += 1;
                return;
            }
            l.1 += 1;
            std::mem::take(&mut l.2)
        };
        if skipped > 0 {
            let mut detail = event.detail.take().unwrap_or_else(|| json!({}));
            if let Some(d) = detail.as_object_mut() {
                d.insert("skipped_before".into(), json!(skipped));
            }
            event.detail = Some(detail);
        }
        self.note(event);
    }

    /// The redacted summary of tool-call arguments kept in events.
    pub fn summary(&self, arguments: &Value) -> Value {
        self.redactor.summary(arguments)
    }
}

/// The `hash` of a stored event line.
pub fn hash_of_line(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("hash")?.as_str().map(str::to_string)
}

/// SHA-256 over the canonical JSON of `event` without its `hash` member.
pub fn event_hash(event: &Map<String, Value>) -> String {
    let mut copy = event.clone();
    copy.remove("hash");
    hex::encode(Sha256::digest(registry::canonical_json(&Value::Object(
        copy,
    ))))
}

#[cfg(test)]
mod tests;

/// Fault injection for tests: a file sink opened at a registered path waits, at each flush, for
/// the result the test sends, and returns it instead of syncing.
#[cfg(test)]
pub(crate) mod flush_faults {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    type Script = Receiver<Result<(), String>>;
    static REGISTERED: Mutex<Vec<(String, Script)>> = Mutex::new(Vec::new());

    /// Script the flushes of the file sink that opens `path` next.
    pub(crate) fn script(path: &str) -> Sender<Result<(), String>> {
        let (tx, rx) = channel();
        REGISTERED.lock().unwrap().push((path.to_string(), rx));
        tx
    }

    pub(crate) fn take(path: &str) -> Option<Script> {
        let mut r = REGISTERED.lock().ok()?;
        let i = r.iter().position(|(p, _)| p == path)?;
        Some(r.swap_remove(i).1)
    }
}

/// Fault injection for tests: a file sink opened at a registered path fails every write while
/// the flag is set, whoever writes (a caller or the sink's thread).
#[cfg(test)]
pub(crate) mod write_faults {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    static REGISTERED: Mutex<Vec<(String, Arc<AtomicBool>)>> = Mutex::new(Vec::new());

    pub(crate) fn arm(path: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        REGISTERED
            .lock()
            .unwrap()
            .push((path.to_string(), flag.clone()));
        flag
    }

    pub(crate) fn take(path: &str) -> Option<Arc<AtomicBool>> {
        let mut r = REGISTERED.lock().ok()?;
        let i = r.iter().position(|(p, _)| p == path)?;
        Some(r.swap_remove(i).1)
    }
}
