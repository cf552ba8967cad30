//! The sinks: a file (one `write` and one `fsync` per batch), the store (one transaction on the
//! sink's own connection) and stdout, each written by its own thread ([`SinkWorker`]).

use super::*;

pub(crate) enum Sink {
    File(FileSink),
    Store(store::AuditWriter),
    Stdout,
}

pub(crate) struct FileSink {
    pub(crate) path: String,
    pub(crate) file: std::fs::File,
    pub(crate) fsync: bool,
    /// The last write may have stopped mid-line: start the next one on a new line.
    pub(crate) torn: bool,
    /// What each flush returns instead of syncing, for tests (see [`flush_faults`]).
    #[cfg(test)]
    pub(crate) script: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
}

impl FileSink {
    /// Open for appending (created `0600`) and find the last event's hash.
    pub(crate) fn open(path: &str, fsync: bool) -> Result<(FileSink, Option<String>), String> {
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
    pub(crate) fn write(&mut self, text: &[u8]) -> Result<(), String> {
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
    pub(crate) fn sync(&mut self) -> Result<(), String> {
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
pub(crate) fn last_line(file: &mut std::fs::File) -> std::io::Result<(Option<String>, bool)> {
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

/// One sink's thread: it writes each batch in order, tells the writer whether it took it,
/// answers the batch's callers, then makes it durable (a file sink's `fsync`). Once a flush has
/// failed it answers only after each flush, for good; the chain's last batch (see
/// [`Audit::close`]) is always answered after its flush.
///
/// A sink that fell behind (its queue holds more than one batch) writes what is queued (up to 64
/// batches or about [`MAX_BATCH`] events) with one write or transaction and one `fsync`: catching
/// up costs one flush, not one per batch. Such a group is written or failed as a whole.
pub(crate) struct SinkWorker {
    pub(crate) sink: Sink,
    pub(crate) required: bool,
    pub(crate) index: usize,
    pub(crate) stats: Arc<Vec<SinkStats>>,
    pub(crate) staged: std::sync::mpsc::Sender<(u64, bool)>,
    /// Whether every flush this sink made succeeded: only then are callers answered before it.
    pub(crate) flushing: bool,
}

/// Batches a sink that fell behind writes together; it stops adding at [`MAX_BATCH`] events.
pub(crate) const CATCH_UP: usize = 64;

impl SinkWorker {
    pub(crate) fn run(mut self, rx: std::sync::mpsc::Receiver<Arc<Batch>>) {
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
                    s.last_ok.store(false, Ordering::Relaxed);
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
                        s.last_ok.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.flushing = false;
                    if let Some(s) = stat {
                        // Events answered before the flush stay written; those it would answer
                        // now are refused, so failed.
                        s.failed.fetch_add(late_count, Ordering::Relaxed);
                        s.flush_failures.fetch_add(1, Ordering::Relaxed);
                        s.last_ok.store(false, Ordering::Relaxed);
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
    pub(crate) fn stage(&mut self, batches: &[Arc<Batch>]) -> Result<(), String> {
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
    pub(crate) fn sync(&mut self) -> Result<(), String> {
        match self {
            Sink::File(f) => f.sync(),
            Sink::Store(..) | Sink::Stdout => Ok(()),
        }
    }
}

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

    pub(super) fn take(path: &str) -> Option<Script> {
        let mut r = REGISTERED.lock().ok()?;
        let i = r.iter().position(|(p, _)| p == path)?;
        Some(r.swap_remove(i).1)
    }
}
