//! The writer thread: it chains events into batches and hands each batch to every sink.

use super::*;

pub(crate) struct Writer {
    pub(crate) head: Arc<std::sync::Mutex<Head>>,
    /// Each sink's queue and whether it is required, in config order; its thread writes what it
    /// is sent, in order.
    pub(crate) sinks: Vec<Queue>,
    /// The file sink callers write to themselves ([`crate::inline`]): its index, and what they
    /// share with its thread.
    pub(crate) inline: Option<(usize, Arc<Shared>)>,
    /// Hold events nobody waits for up to [`LINGER`] for one somebody does: only when no
    /// callers write themselves (they would link their events ahead of the held ones).
    pub(crate) linger: bool,
    /// Whether a sink took batch `n` (see [`SinkWorker::run`]).
    pub(crate) staged: std::sync::mpsc::Receiver<(u64, bool)>,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    /// Batches handed to the sinks so far.
    pub(crate) batches: Arc<AtomicU64>,
}

/// The chain's head: what the next event links to. Shared by the writer thread and the callers
/// that write their events themselves; each holds the lock only while it links and writes.
pub(crate) struct Head {
    pub(crate) chain: Arc<str>,
    pub(crate) seq: i64,
    pub(crate) prev: String,
    /// The writer thread has linked a batch whose fate it does not know yet (it takes the batch
    /// back if no sink took it): nobody else links an event until it knows.
    pub(crate) busy: bool,
}

/// Work for a sink's thread.
pub(crate) enum Work {
    /// Events to write.
    Batch(Arc<Batch>),
    /// A caller wrote events to this file sink itself (counted in [`Shared::unflushed`]), the
    /// first of them at `at`: make them durable.
    Flush { at: Instant },
}

/// What the callers that write a file sink themselves share with its thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Batches the writer thread queued to the sink that it has not written or failed yet.
    pub(crate) behind: AtomicU64,
    /// Whether every flush of the sink has succeeded: only then are callers answered before it.
    pub(crate) flushing: std::sync::atomic::AtomicBool,
    /// Events callers wrote since the sink's thread last claimed them for a flush.
    pub(crate) unflushed: AtomicU64,
    /// A request event is among them: its flush is not put off for long.
    pub(crate) soon: std::sync::atomic::AtomicBool,
    /// [`Work::Flush`] messages callers sent.
    #[cfg(test)]
    pub(crate) asked: AtomicU64,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            behind: AtomicU64::new(0),
            flushing: std::sync::atomic::AtomicBool::new(true),
            unflushed: AtomicU64::new(0),
            soon: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            asked: AtomicU64::new(0),
        }
    }
}

/// One event, chained and serialised.
pub(crate) struct Line {
    pub(crate) seq: i64,
    pub(crate) at_ms: i64,
    pub(crate) session: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) text: String,
}

/// Events written together, and the callers waiting for them.
///
/// A waiting caller is answered as soon as one required sink has the whole batch, or with a
/// refusal once every required sink has failed it. Dropping a batch unanswered (a sink thread
/// that died) answers its callers with [`AuditError::Stopped`], which is a refusal too.
pub(crate) struct Batch {
    pub(crate) number: u64,
    pub(crate) chain: Arc<str>,
    pub(crate) lines: Vec<Line>,
    pub(crate) acks: std::sync::Mutex<Vec<oneshot::Sender<bool>>>,
    /// Required sinks that have neither taken nor failed the batch yet.
    pub(crate) required_left: AtomicU64,
    /// Answer only when every sink is done with the batch (see [`Audit::close`]).
    pub(crate) all: bool,
    /// Sinks, required or not, not yet done with the batch.
    pub(crate) sinks_left: AtomicU64,
    /// Whether a required sink has the batch.
    pub(crate) accepted: std::sync::atomic::AtomicBool,
    /// The writer thread waits to learn whether a sink took the batch (see [`Writer::hand_out`]);
    /// events a caller wrote itself are only passed on.
    pub(crate) report: bool,
}

impl Batch {
    /// A sink has (`true`) or has failed (`false`) the batch.
    pub(crate) fn settle(&self, required: bool, written: bool) {
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

    pub(crate) fn answer(&self, accepted: bool) {
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
pub(crate) const STAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches a sink may have waiting. A sink that falls this far behind (a stalled disk or pipe)
/// misses the next ones, counted as failed, instead of holding up the others or growing memory.
pub(crate) const SINK_QUEUE: usize = 256;

impl Writer {
    /// Start one thread per sink and return the writer that feeds them. `inline`: the file
    /// sink callers write to themselves, and what they share with its thread.
    pub(crate) fn start(
        head: Arc<std::sync::Mutex<Head>>,
        sinks: Vec<(Sink, bool)>,
        stats: Arc<Vec<SinkStats>>,
        batches: Arc<AtomicU64>,
        inline: Option<&(usize, Arc<Shared>)>,
    ) -> Result<Writer, String> {
        let (staged_tx, staged) = std::sync::mpsc::channel();
        let mut queues = Vec::new();
        for (index, (sink, required)) in sinks.into_iter().enumerate() {
            // The store naps while it holds events for company (see [`crate::queue`]).
            let (nap, capacity) = match &sink {
                Sink::Store(_) => (Some(Arc::new(Nap::default())), STORE_QUEUE),
                _ => (None, SINK_QUEUE),
            };
            let (queue, rx) = Queue::new(capacity, required, nap.clone());
            let shared = match inline {
                Some((i, shared)) if *i == index => Some(shared.clone()),
                _ => None,
            };
            let worker = SinkWorker {
                sink,
                required,
                index,
                stats: stats.clone(),
                staged: staged_tx.clone(),
                flushing: true,
                shared,
                nap,
            };
            std::thread::Builder::new()
                .name(format!("audit-sink-{index}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| format!("cannot start the audit writer: {e}"))?;
            queues.push(queue);
        }
        Ok(Writer {
            head,
            sinks: queues,
            inline: inline.cloned(),
            linger: inline.is_none(),
            staged,
            stats,
            batches,
        })
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
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
            if let Some(clock) = clock.as_ref().filter(|_| self.linger)
                && jobs.iter().all(|j| j.ack.is_none())
            {
                linger(clock, &mut rx, &mut jobs);
            }
            let linked = {
                let mut head = lock(&self.head);
                // A caller that stopped waiting meanwhile (the head was held by a write to a
                // frozen disk, and the caller was refused at the recording cap, its refusal
                // recorded) is not recorded as going on.
                jobs.retain(|j| j.all || j.ack.as_ref().is_none_or(|a| !a.is_closed()));
                (!jobs.is_empty()).then(|| {
                    head.busy = true;
                    let (seq, prev) = (head.seq, head.prev.clone());
                    let lines: Vec<Line> = jobs.iter().map(|j| head.link(&j.event)).collect();
                    (head.chain.clone(), seq, prev, lines)
                })
            };
            let Some((chain, seq, prev, lines)) = linked else {
                continue;
            };
            let written = self.hand_out(&chain, lines, jobs);
            let mut head = lock(&self.head);
            if !written {
                // Written nowhere: the chain goes on from the last event that exists, so a sink
                // that recovers does not show a gap that is not there.
                (head.seq, head.prev) = (seq, prev);
            }
            head.busy = false;
        }
    }

    /// Give the batch to every sink; return whether any sink took it. Callers are not answered
    /// here: each is answered by the first required sink that has its event.
    pub(crate) fn hand_out(&mut self, chain: &Arc<str>, lines: Vec<Line>, jobs: Vec<Job>) -> bool {
        let number = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let count = lines.len() as u64;
        let required = self.sinks.iter().filter(|q| q.required).count();
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
            report: true,
        });
        if required == 0 || self.sinks.is_empty() {
            batch.answer(false);
        }
        let mut pending = 0;
        for (index, queue) in self.sinks.iter().enumerate() {
            let required = &queue.required;
            // Counted before it is sent: callers write to this file only when nothing is queued.
            let behind = match &self.inline {
                Some((i, shared)) if *i == index => Some(&shared.behind),
                _ => None,
            };
            if let Some(b) = behind {
                b.fetch_add(1, Ordering::AcqRel);
            }
            // The chain's last event waits for room: closing must leave nothing queued behind it.
            let work = Work::Batch(batch.clone());
            // The writer waits to learn whether each sink took it: a napping store is woken.
            let sent = match batch.all {
                true => queue.send(work),
                false => queue.try_send(work, true),
            };
            match sent {
                Ok(()) => pending += 1,
                Err(e) => {
                    if let Some(b) = behind {
                        b.fetch_sub(1, Ordering::AcqRel);
                    }
                    if let Some(s) = self.stats.get(index) {
                        s.failed.fetch_add(count, Ordering::Relaxed);
                        s.last_ok.store(false, Ordering::Relaxed);
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
}

/// The head, whatever a thread that panicked holding it left (it changes `seq` and `prev` only
/// together, at the end of [`Head::link`]).
pub(crate) fn lock(head: &std::sync::Mutex<Head>) -> std::sync::MutexGuard<'_, Head> {
    head.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Head {
    pub(crate) fn new(chain: String, prev: String) -> Head {
        Head {
            chain: Arc::from(chain),
            seq: 0,
            prev,
            busy: false,
        }
    }

    /// Link `event` to the head: the line to write, with the head moved on to it.
    pub(crate) fn link(&mut self, event: &Event) -> Line {
        let seq = self.seq + 1;
        let session = event.session.as_deref().map(session_ref);
        // One serialisation: the hash covers the event without `hash`, and the line is the same
        // bytes with `hash` spliced in.
        let unhashed = crate::line::unhashed(
            event,
            &crate::line::Link {
                chain: &self.chain,
                seq,
                prev: &self.prev,
                session: session.as_deref(),
            },
        );
        let hash = registry::hex_lower(&Sha256::digest(unhashed.bytes()));
        let mut line = unhashed.with(&Value::String(hash.clone()));
        line.push(b'\n');
        self.seq = seq;
        self.prev = hash;
        // Canonical JSON is UTF-8 by construction; the lossy fallback never runs.
        let text = String::from_utf8(line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Line {
            seq,
            at_ms: event.at_ms,
            session,
            trace_id: event.trace_id.clone(),
            text,
        }
    }
}

/// Nobody waits for `jobs`: add what arrives within [`LINGER`], and stop early at the first
/// event somebody waits for (with whatever queued behind it) or a full batch.
pub(crate) fn linger(
    clock: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut Vec<Job>,
) {
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
pub(crate) fn take_waiting(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}
