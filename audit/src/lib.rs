//! The audit log: every decision as one structured event, redacted, hash-chained, and written
//! before the action it describes. A crate below the gateway: it knows events and sinks, not
//! callers, policy or protocols (the gateway says who a caller is, in a [`Who`]).
//!
//! Events go through one writer thread. It takes every event waiting, links each to the one
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
//! has one, so removing a whole run also shows as a broken link.

pub mod clock;
pub mod export;
pub mod redact;
pub mod verify;

use std::io::{Read, Seek, SeekFrom, Write};
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
    pub principals: Vec<String>,
}

impl Who {
    /// An operator or a process acting without a caller.
    pub fn named(subject: impl Into<String>) -> Who {
        Who {
            subject: subject.into(),
            principals: Vec::new(),
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
}

/// The handle every part of the gateway writes events through.
pub struct Audit {
    tx: mpsc::Sender<Job>,
    redactor: Redactor,
    /// One entry per configured sink, in config order.
    pub sinks: Arc<Vec<SinkStats>>,
    /// Events that could not be queued.
    pub dropped: AtomicU64,
    /// Request events refused because no required sink took them.
    pub refused: AtomicU64,
    /// Batches handed to the sinks: events per batch is how much one write and flush serve.
    pub batches: Arc<AtomicU64>,
    /// Unauthenticated traffic is recorded at a bounded rate: (second, events in it, skipped).
    limited: std::sync::Mutex<(i64, u32, u64)>,
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
        let mut prev: Option<String> = None;
        for s in &settings.sinks {
            let (sink, last) = match &s.kind {
                SinkKind::File { path, fsync } => {
                    let (sink, last) = FileSink::open(path, *fsync)?;
                    (Sink::File(sink), last)
                }
                SinkKind::Store => {
                    let last = store
                        .last_audit_line()
                        .await
                        .map_err(|e| format!("audit store sink: {e}"))?
                        .and_then(|l| hash_of_line(&l));
                    let writer = store
                        .audit_writer()
                        .map_err(|e| format!("audit store sink: {e}"))?;
                    (Sink::Store(writer), last)
                }
                SinkKind::Stdout => (Sink::Stdout, None),
            };
            if prev.is_none() {
                prev = last;
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
                failed: AtomicU64::new(0),
            });
            sinks.push((sink, s.required));
        }
        let stats = Arc::new(stats);
        let batches = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer::start(
            hex::encode(rand::random::<[u8; 8]>()),
            prev.unwrap_or_else(|| GENESIS.to_string()),
            sinks,
            stats.clone(),
            batches.clone(),
        )?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        let audit = Audit {
            tx,
            redactor: Redactor::new(&key, settings.redact.clone()),
            sinks: stats,
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            batches,
            limited: std::sync::Mutex::new((0, 0, 0)),
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

    /// Write `event` and wait until a required sink has it. The caller must not act on an error.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        self.record_in(event, false).await
    }

    async fn record_in(&self, event: Event, all: bool) -> Result<(), AuditError> {
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

enum Sink {
    File(FileSink),
    Store(store::AuditWriter),
    Stdout,
}

struct FileSink {
    path: String,
    file: std::fs::File,
    fsync: bool,
    /// The last write may have stopped mid-line: start the next one on a new line.
    torn: bool,
    /// What each flush returns instead of syncing, for tests (see [`flush_faults`]).
    #[cfg(test)]
    script: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
}

/// Fault injection for tests: a file sink opened at a registered path waits, at each flush, for
/// the result the test sends, and returns it instead of syncing.
#[cfg(test)]
pub mod flush_faults {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    type Script = Receiver<Result<(), String>>;
    static REGISTERED: Mutex<Vec<(String, Script)>> = Mutex::new(Vec::new());

    /// Script the flushes of the file sink that opens `path` next.
    pub fn script(path: &str) -> Sender<Result<(), String>> {
        let (tx, rx) = channel();
        REGISTERED.lock().unwrap().push((path.to_string(), rx));
        tx
    }

    pub(super) fn take(path: &str) -> Option<Script> {
        let mut r = REGISTERED.lock().ok()?;
        let i = r.iter().position(|(p, _)| p == path)?;
        Some(r.swap_remove(i).1)
    }
}

impl FileSink {
    /// Open for appending (created `0600`) and find the last event's hash.
    fn open(path: &str, fsync: bool) -> Result<(FileSink, Option<String>), String> {
        // Append only: opened for reading too, a FIFO would count this process as its reader.
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let file = opts
            .open(path)
            .map_err(|e| format!("cannot open audit file `{path}`: {e}"))?;
        let (last, torn) = match std::fs::File::open(path) {
            Ok(mut f) => last_line(&mut f).unwrap_or((None, false)),
            Err(_) => (None, false),
        };
        // Pipes and devices cannot be synced (EINVAL); only a regular file has a disk to reach.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        Ok((
            FileSink {
                path: path.to_string(),
                file,
                fsync: fsync && regular,
                torn,
                #[cfg(test)]
                script: flush_faults::take(path),
            },
            last.and_then(|l| hash_of_line(&l)),
        ))
    }

    /// Append `text` whole. A regular file that takes only part of it is cut back to where it
    /// was, so a batch the writer takes back leaves no lines behind whose `seq` it will reuse.
    fn write(&mut self, text: &[u8]) -> Result<(), String> {
        let before = match self.file.metadata() {
            Ok(m) if m.is_file() => Some(m.len()),
            _ => None,
        };
        let was_torn = self.torn;
        let mut attempt = || -> std::io::Result<()> {
            if self.torn {
                self.file.write_all(b"\n")?;
                self.torn = false;
            }
            self.file.write_all(text)
        };
        attempt().map_err(|e| {
            let cut = before.is_some_and(|len| self.file.set_len(len).is_ok());
            // Cut back: as it was. Not cut back: the next write starts on a new line.
            self.torn = !cut || was_torn;
            format!("audit file `{}`: {e}", self.path)
        })
    }

    /// `fsync` what was written, when configured to.
    fn sync(&mut self) -> Result<(), String> {
        #[cfg(test)]
        if let Some(script) = &self.script {
            return script.recv().unwrap_or(Ok(()));
        }
        match self.fsync {
            true => self
                .file
                .sync_data()
                .map_err(|e| format!("audit file `{}`: fsync: {e}", self.path)),
            false => Ok(()),
        }
    }
}

/// The last complete line of `file` (within its final 1 MiB), and whether it ends mid-line.
/// Only regular files are read back (a device such as `/dev/full` has no end).
fn last_line(file: &mut std::fs::File) -> std::io::Result<(Option<String>, bool)> {
    if !file.metadata()?.is_file() {
        return Ok((None, false));
    }
    let len = file.seek(SeekFrom::End(0))?;
    let from = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.take(1 << 20).read_to_end(&mut tail)?;
    let torn = !tail.is_empty() && !tail.ends_with(b"\n");
    let text = String::from_utf8_lossy(&tail);
    let complete = if torn {
        text.rsplit_once('\n').map_or("", |(head, _)| head)
    } else {
        &text
    };
    let last = complete
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string);
    Ok((last, torn))
}

struct Writer {
    chain: String,
    seq: i64,
    prev: String,
    /// Each sink's queue and whether it is required, in config order; its thread writes what it
    /// is sent, in order.
    sinks: Vec<(std::sync::mpsc::SyncSender<Arc<Batch>>, bool)>,
    /// Whether a sink took batch `n` (see [`SinkWorker::run`]).
    staged: std::sync::mpsc::Receiver<(u64, bool)>,
    stats: Arc<Vec<SinkStats>>,
    /// Batches handed to the sinks so far.
    batches: Arc<AtomicU64>,
}

/// One event, chained and serialised.
struct Line {
    seq: i64,
    at_ms: i64,
    session: Option<String>,
    trace_id: Option<String>,
    text: String,
}

/// Events written together, and the callers waiting for them.
///
/// A waiting caller is answered as soon as one required sink has the whole batch, or with a
/// refusal once every required sink has failed it. Dropping a batch unanswered (a sink thread
/// that died) answers its callers with [`AuditError::Stopped`], which is a refusal too.
struct Batch {
    number: u64,
    chain: Arc<str>,
    lines: Vec<Line>,
    acks: std::sync::Mutex<Vec<oneshot::Sender<bool>>>,
    /// Required sinks that have neither taken nor failed the batch yet.
    required_left: AtomicU64,
    /// Answer only when every sink is done with the batch (see [`Audit::close`]).
    all: bool,
    /// Sinks, required or not, not yet done with the batch.
    sinks_left: AtomicU64,
    /// Whether a required sink has the batch.
    accepted: std::sync::atomic::AtomicBool,
}

impl Batch {
    /// A sink has (`true`) or has failed (`false`) the batch.
    fn settle(&self, required: bool, written: bool) {
        if required && written {
            self.accepted.store(true, Ordering::Release);
        }
        if self.all {
            if self.sinks_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.answer(self.accepted.load(Ordering::Acquire));
            }
            return;
        }
        if !required {
            return;
        }
        let last_failure = !written && self.required_left.fetch_sub(1, Ordering::AcqRel) == 1;
        if written || last_failure {
            self.answer(written);
        }
    }

    fn answer(&self, accepted: bool) {
        // A poisoned lock leaves the senders to be dropped with the batch: a refusal.
        if let Ok(mut acks) = self.acks.lock() {
            for ack in acks.drain(..) {
                let _ = ack.send(accepted);
            }
        }
    }
}

/// How long the writer waits to learn whether a batch was written anywhere. After this it goes
/// on as if it was (taking a batch back that a slow sink then writes would repeat `seq`).
const STAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches a sink may have waiting. A sink that falls this far behind (a stalled disk or pipe)
/// misses the next ones, counted as failed, instead of holding up the others or growing memory.
const SINK_QUEUE: usize = 256;

impl Writer {
    /// Start one thread per sink and return the writer that feeds them.
    fn start(
        chain: String,
        prev: String,
        sinks: Vec<(Sink, bool)>,
        stats: Arc<Vec<SinkStats>>,
        batches: Arc<AtomicU64>,
    ) -> Result<Writer, String> {
        let (staged_tx, staged) = std::sync::mpsc::channel();
        let mut queues = Vec::new();
        for (index, (sink, required)) in sinks.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel(SINK_QUEUE);
            let worker = SinkWorker {
                sink,
                required,
                index,
                stats: stats.clone(),
                staged: staged_tx.clone(),
                flushing: true,
            };
            std::thread::Builder::new()
                .name(format!("audit-sink-{index}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| format!("cannot start the audit writer: {e}"))?;
            queues.push((tx, required));
        }
        Ok(Writer {
            chain,
            seq: 0,
            prev,
            sinks: queues,
            staged,
            stats,
            batches,
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let chain: Arc<str> = Arc::from(self.chain.as_str());
        // The writer's own clock for [`LINGER`]: it lives as long as this thread, so a gateway
        // runtime shutting down never stops a timer under it. Without one, nothing lingers.
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .inspect_err(|e| tracing::warn!(error = %e, "audit writer runs without lingering"))
            .ok();
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            take_waiting(&mut rx, &mut jobs);
            if let Some(clock) = &clock
                && jobs.iter().all(|j| j.ack.is_none())
            {
                linger(clock, &mut rx, &mut jobs);
            }
            let (seq, prev) = (self.seq, self.prev.clone());
            let lines: Vec<Line> = jobs.iter().map(|j| self.chain(&j.event)).collect();
            if !self.hand_out(&chain, lines, jobs) {
                // Written nowhere: the chain goes on from the last event that exists, so a sink
                // that recovers does not show a gap that is not there.
                (self.seq, self.prev) = (seq, prev);
            }
        }
    }

    /// Give the batch to every sink; return whether any sink took it. Callers are not answered
    /// here: each is answered by the first required sink that has its event.
    fn hand_out(&mut self, chain: &Arc<str>, lines: Vec<Line>, jobs: Vec<Job>) -> bool {
        let number = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let count = lines.len() as u64;
        let required = self.sinks.iter().filter(|(_, r)| *r).count();
        let all = jobs.iter().any(|j| j.all);
        let batch = Arc::new(Batch {
            number,
            chain: chain.clone(),
            lines,
            acks: std::sync::Mutex::new(jobs.into_iter().filter_map(|j| j.ack).collect()),
            required_left: AtomicU64::new(required as u64),
            all,
            sinks_left: AtomicU64::new(self.sinks.len() as u64),
            accepted: std::sync::atomic::AtomicBool::new(false),
        });
        if required == 0 || self.sinks.is_empty() {
            batch.answer(false);
        }
        let mut pending = 0;
        for (index, (queue, required)) in self.sinks.iter().enumerate() {
            // The chain's last event waits for room: closing must leave nothing queued behind it.
            let sent = match batch.all {
                true => queue
                    .send(batch.clone())
                    .map_err(|e| std::sync::mpsc::TrySendError::Disconnected(e.0)),
                false => queue.try_send(batch.clone()),
            };
            match sent {
                Ok(()) => pending += 1,
                Err(e) => {
                    if let Some(s) = self.stats.get(index) {
                        s.failed.fetch_add(count, Ordering::Relaxed);
                    }
                    let why = match e {
                        std::sync::mpsc::TrySendError::Full(_) => "it is too far behind",
                        std::sync::mpsc::TrySendError::Disconnected(_) => "its thread has stopped",
                    };
                    tracing::error!(
                        sink = index,
                        required = *required,
                        events = count,
                        "audit sink skipped a batch: {why}"
                    );
                    batch.settle(*required, false);
                }
            }
        }
        drop(batch);
        // The next batch is chained once this one is known to be somewhere: one sink took it, or
        // every sink failed it (then it is taken back). Answers about earlier batches are stale.
        // One deadline for the whole wait: a sink working through a backlog sends stale answers.
        let deadline = Instant::now() + STAGE_TIMEOUT;
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.staged.recv_timeout(left) {
                Ok((n, _)) if n != number => {}
                Ok((_, true)) => return true,
                Ok((_, false)) => pending -= 1,
                Err(_) => return true,
            }
        }
        false
    }

    fn chain(&mut self, event: &Event) -> Line {
        self.seq += 1;
        let mut map = match serde_json::to_value(event) {
            Ok(Value::Object(m)) => m,
            _ => {
                let mut m = Map::new();
                m.insert("kind".into(), json!(event.kind));
                m.insert("reason".into(), json!("event could not be serialised"));
                m
            }
        };
        map.insert("v".into(), json!(SCHEMA));
        map.insert("id".into(), json!(format!("{}-{}", self.chain, self.seq)));
        map.insert("time".into(), json!(crate::clock::rfc3339_ms(event.at_ms)));
        map.insert("chain".into(), json!(self.chain));
        map.insert("seq".into(), json!(self.seq));
        map.insert("prev".into(), json!(self.prev));
        // One serialisation: the hash covers the event without `hash`, and the line is the same
        // bytes with `hash` spliced in.
        let unhashed = registry::canonical_object(&map, "hash");
        let hash = hex::encode(Sha256::digest(unhashed.bytes()));
        let mut line = unhashed.with(&Value::String(hash.clone()));
        line.push(b'\n');
        self.prev = hash;
        // Canonical JSON is UTF-8 by construction; the lossy fallback never runs.
        let text = String::from_utf8(line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Line {
            seq: self.seq,
            at_ms: event.at_ms,
            session: event.session.clone(),
            trace_id: event.trace_id.clone(),
            text,
        }
    }
}

/// Nobody waits for `jobs`: add what arrives within [`LINGER`], and stop early at the first
/// event somebody waits for (with whatever queued behind it) or a full batch.
fn linger(clock: &tokio::runtime::Runtime, rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    clock.block_on(async {
        let until = tokio::time::Instant::now() + LINGER;
        while jobs.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(job)) => {
                    let waited_for = job.ack.is_some();
                    jobs.push(job);
                    if waited_for {
                        take_waiting(rx, jobs);
                        return;
                    }
                }
                // Closed (the gateway is stopping) or the time is up.
                Ok(None) | Err(_) => return,
            }
        }
    });
}

/// Move what is already queued into `jobs`, up to a full batch.
fn take_waiting(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// One sink's thread: it writes each batch in order, tells the writer whether it took it,
/// answers the batch's callers, then makes it durable (a file sink's `fsync`). Once a flush has
/// failed it answers only after each flush, for good; the chain's last batch (see
/// [`Audit::close`]) is always answered after its flush.
///
/// A sink that fell behind (its queue holds more than one batch) writes what is queued (up to 64
/// batches or about [`MAX_BATCH`] events) with one write or transaction and one `fsync`: catching
/// up costs one flush, not one per batch. Such a group is written or failed as a whole.
struct SinkWorker {
    sink: Sink,
    required: bool,
    index: usize,
    stats: Arc<Vec<SinkStats>>,
    staged: std::sync::mpsc::Sender<(u64, bool)>,
    /// Whether every flush this sink made succeeded: only then are callers answered before it.
    flushing: bool,
}

/// Batches a sink that fell behind writes together; it stops adding at [`MAX_BATCH`] events.
const CATCH_UP: usize = 64;

impl SinkWorker {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Arc<Batch>>) {
        while let Ok(first) = rx.recv() {
            let started = Instant::now();
            let mut lines = first.lines.len();
            let mut batches = vec![first];
            while batches.len() < CATCH_UP && lines < MAX_BATCH {
                match rx.try_recv() {
                    Ok(b) => {
                        lines += b.lines.len();
                        batches.push(b);
                    }
                    Err(_) => break,
                }
            }
            // A panic in a sink (or a crate under it) fails these batches, not the sink for good.
            let staged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.sink.stage(&batches)
            }))
            .unwrap_or_else(|_| Err("the audit sink failed unexpectedly".to_string()));
            for b in &batches {
                let _ = self.staged.send((b.number, staged.is_ok()));
            }
            let count: u64 = batches.iter().map(|b| b.lines.len() as u64).sum();
            let stat = self.stats.get(self.index);
            if let Err(e) = staged {
                if let Some(s) = stat {
                    s.failed.fetch_add(count, Ordering::Relaxed);
                }
                tracing::error!(error = %e, required = self.required, events = count, "audit sink write failed");
                for b in &batches {
                    b.settle(self.required, false);
                }
                continue;
            }
            // Written: the events survive the process, so while this sink's flushes succeed their
            // callers go on now and the flush follows. After one failed, callers wait for their
            // own flush for as long as the process runs: a later `fsync` that succeeds does not
            // prove the pages of the failed one reached the disk.
            let early = self.flushing;
            let late = |b: &&Arc<Batch>| !early || b.all;
            let late_count: u64 = batches
                .iter()
                .filter(late)
                .map(|b| b.lines.len() as u64)
                .sum();
            // Counted before their callers hear: a caller that goes on sees its event counted.
            if let Some(s) = stat {
                s.written.fetch_add(count - late_count, Ordering::Relaxed);
            }
            batches
                .iter()
                .filter(|b| !late(b))
                .for_each(|b| b.settle(self.required, true));
            let flushed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sink.sync()))
                    .unwrap_or_else(|_| Err("the audit sink failed unexpectedly".to_string()));
            match &flushed {
                Ok(()) => {
                    if let Some(s) = stat {
                        s.written.fetch_add(late_count, Ordering::Relaxed);
                        s.flushes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.flushing = false;
                    if let Some(s) = stat {
                        // Events answered before the flush stay written; those it would answer
                        // now are refused, so failed.
                        s.failed.fetch_add(late_count, Ordering::Relaxed);
                        s.flush_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::error!(error = %e, required = self.required, events = count, "audit sink flush failed: from now on this sink answers a call only after its event's flush");
                }
            }
            batches
                .iter()
                .filter(late)
                .for_each(|b| b.settle(self.required, flushed.is_ok()));
            tracing::trace!(
                sink = self.index,
                batches = batches.len(),
                events = count,
                elapsed_us = started.elapsed().as_micros() as u64,
                "audit batches written"
            );
        }
    }
}

impl Sink {
    /// Write the batches' lines, all or none: after this the events survive the process (a file
    /// sink's are in the kernel, the store's are committed).
    fn stage(&mut self, batches: &[Arc<Batch>]) -> Result<(), String> {
        let mut lines = batches.iter().flat_map(|b| b.lines.iter());
        match self {
            Sink::File(f) => {
                let joined: String = lines.map(|l| l.text.as_str()).collect();
                f.write(joined.as_bytes())
            }
            Sink::Store(store) => {
                let rows: Vec<AuditRow<'_>> = batches
                    .iter()
                    .flat_map(|b| {
                        b.lines.iter().map(|l| AuditRow {
                            chain: &b.chain,
                            seq: l.seq,
                            at_ms: l.at_ms,
                            session: l.session.as_deref(),
                            trace_id: l.trace_id.as_deref(),
                            line: l.text.trim_end(),
                        })
                    })
                    .collect();
                store
                    .append(&rows)
                    .map_err(|e| format!("audit store sink: {e}"))
            }
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                lines
                    .try_for_each(|l| out.write_all(l.text.as_bytes()))
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("audit stdout sink: {e}"))
            }
        }
    }

    /// Make what [`Sink::stage`] wrote durable, where the sink is configured to.
    fn sync(&mut self) -> Result<(), String> {
        match self {
            Sink::File(f) => f.sync(),
            Sink::Store(..) | Sink::Stdout => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
