//! A sink's queue: the channel its thread reads, bounded by batches, and for the store sink
//! by bytes as well, with a thread that naps while it holds events for company.
//!
//! The store sink holds events nobody waits for up to [`STORE_LINGER`] so one transaction
//! serves several calls. Waiting on its channel meanwhile, it would be woken by every event a
//! caller passes on (a system call for the caller, a wake-up for the thread, per event). It
//! naps instead ([`Nap::wait`]) and is woken only for a batch somebody waits for (the writer
//! thread's) or once [`WAKE_AT`] batches are queued. Its queue takes [`STORE_QUEUE`] batches, far
//! more than a nap lets pile up, and at most [`STORE_BYTES`] of lines, so memory stays bounded by
//! what is queued rather than by how many batches.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, fence};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TryRecvError, TrySendError};

use super::*;

/// Batches the store sink may have waiting (each caller's event is a batch of its own).
pub(crate) const STORE_QUEUE: usize = 4096;
/// The most the lines queued for the store sink may weigh; past it, as past [`STORE_QUEUE`],
/// the sink is too far behind and misses what comes (counted as failed).
pub(crate) const STORE_BYTES: u64 = 64 << 20;
/// Batches queued that wake a napping store sink even though nobody waits for them.
pub(crate) const WAKE_AT: u64 = 256;

/// One sink's queue, as its senders (the writer thread, callers) hold it.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: SyncSender<Work>,
    pub(crate) required: bool,
    /// The store sink's: how to wake its thread, what is queued.
    nap: Option<Arc<Nap>>,
}

/// What the store sink's thread and its senders share.
#[derive(Default)]
pub(crate) struct Nap {
    thread: OnceLock<std::thread::Thread>,
    napping: AtomicBool,
    /// Batches sent and not taken yet, and their lines' bytes.
    queued: AtomicU64,
    bytes: AtomicU64,
}

/// The bytes of a batch's lines.
pub(crate) fn weight(b: &Batch) -> u64 {
    b.lines.iter().map(|l| l.text.len() as u64).sum()
}

impl Queue {
    /// A queue of `capacity` batches; `nap`: its thread naps (see the module).
    pub(crate) fn new(
        capacity: usize,
        required: bool,
        nap: Option<Arc<Nap>>,
    ) -> (Queue, std::sync::mpsc::Receiver<Work>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (Queue { tx, required, nap }, rx)
    }

    /// Queue `work` without waiting. `waited`: somebody waits for it, so a napping thread is
    /// woken for it. Full when the batches or the bytes queued are at their bound.
    pub(crate) fn try_send(&self, work: Work, waited: bool) -> Result<(), TrySendError<Work>> {
        let (Some(nap), Work::Batch(b)) = (&self.nap, &work) else {
            return self.tx.try_send(work);
        };
        let bytes = weight(b);
        // One batch always fits, however large: a sink with nothing queued is not behind. Added
        // only where it fits, so a batch refused here never crowds out another.
        let mut before = nap.bytes.load(Ordering::Acquire);
        loop {
            if before > 0 && before.saturating_add(bytes) > STORE_BYTES {
                return Err(TrySendError::Full(work));
            }
            match nap.bytes.compare_exchange_weak(
                before,
                before + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => before = now,
            }
        }
        // Counted before it is sent, so the thread never takes more than was counted.
        let queued = nap.queued.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if let Err(e) = self.tx.try_send(work) {
            nap.uncount(bytes);
            return Err(e);
        }
        if waited || queued >= WAKE_AT {
            nap.wake();
        }
        Ok(())
    }

    /// Queue `work`, waiting for room (the chain's last batch: nothing may be left behind it).
    pub(crate) fn send(&self, work: Work) -> Result<(), TrySendError<Work>> {
        let bytes = match (&self.nap, &work) {
            (Some(nap), Work::Batch(b)) => {
                let bytes = weight(b);
                nap.bytes.fetch_add(bytes, Ordering::AcqRel);
                nap.queued.fetch_add(1, Ordering::AcqRel);
                bytes
            }
            _ => 0,
        };
        let counted = matches!(work, Work::Batch(_));
        if let Err(e) = self.tx.send(work) {
            if let Some(nap) = self.nap.as_ref().filter(|_| counted) {
                nap.uncount(bytes);
            }
            return Err(TrySendError::Disconnected(e.0));
        }
        if let Some(nap) = &self.nap {
            nap.wake();
        }
        Ok(())
    }
}

impl Nap {
    /// The sink's thread: it is the one to wake.
    pub(crate) fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// `work` was taken from the queue.
    pub(crate) fn took(&self, work: &Work) {
        if let Work::Batch(b) = work {
            self.uncount(weight(b));
        }
    }

    /// One batch of `bytes` is no longer queued (taken, or its send failed).
    fn uncount(&self, bytes: u64) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Wake the thread if it naps. Paired with the fence in [`Nap::wait`]: either this sees it
    /// napping, or its look at the channel after it said so sees what was just sent.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.napping.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// What is queued, or after a nap of at most `timeout` (cut short by a sender that wakes
    /// this thread, see [`Queue::try_send`]) what came meanwhile; a timeout when nothing did.
    /// A wake-up that finds nothing (one left over from an earlier wake, or spurious) naps on.
    pub(crate) fn wait(
        &self,
        rx: &std::sync::mpsc::Receiver<Work>,
        timeout: Duration,
    ) -> Result<Work, RecvTimeoutError> {
        let got = match rx.try_recv() {
            Err(TryRecvError::Empty) => {
                let until = Instant::now() + timeout;
                self.napping.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let mut got = rx.try_recv();
                while matches!(got, Err(TryRecvError::Empty)) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::park_timeout(left);
                    got = rx.try_recv();
                }
                self.napping.store(false, Ordering::SeqCst);
                got
            }
            other => other,
        };
        let work = got.map_err(|e| match e {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        })?;
        self.took(&work);
        Ok(work)
    }
}

#[cfg(test)]
mod tests;
