//! Resumable streams (stateful revisions): every message a request's SSE answer carries gets an
//! event id (`<session nonce>-<stream>-<n>`) and is kept in the session, so a client whose
//! connection dropped before the answer ended resumes it with a GET carrying `Last-Event-ID`,
//! and gets what followed that event on that stream only, up to the response.
//!
//! The session's standalone GET stream is one more log ([`Replay::standalone`]), written from
//! the first GET until the session ends here, whether or not a GET is open: a client that
//! reconnects with the `Last-Event-ID` of its last message gets what was sent meanwhile (its
//! newest [`STANDALONE_BYTES`]), then the stream goes on. A GET without it starts from now.
//! With no GET reading it for [`UNREAD_FOR`], the log is let go and its writer stops.
//!
//! What a request sends after its client's connection dropped is not kept: the request sees
//! its client gone, as without resumption (a held call stops waiting and never runs later);
//! its response is kept. A reader holds the answer it reads, so dropping answers from the
//! session (it keeps the newest [`STREAMS`] answers and [`BYTES`] per session; ended answers
//! stay [`KEPT_FOR`] and only while every session together keeps under [`ALL_BYTES`]) never
//! cuts a reader short: an answer no longer kept can no longer be resumed, that is all. An
//! answer that outgrows the session's bytes loses its oldest interim messages, never its
//! response; a reader behind them skips to what is left.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use tokio::sync::Notify;

/// Answers kept per session.
const STREAMS: usize = 16;
/// Bytes kept per session, over all its answers.
const BYTES: usize = 4 << 20;
/// Bytes of ended answers kept over every session of the process.
const ALL_BYTES: usize = 64 << 20;
/// How long an ended answer stays resumable.
const KEPT_FOR: Duration = Duration::from_secs(60);
/// Bytes of the standalone GET stream kept for a client that reconnects.
const STANDALONE_BYTES: usize = 64 << 10;
/// How long the standalone stream is still written with no GET reading it.
pub(crate) const UNREAD_FOR: Duration = Duration::from_secs(60);

/// Bytes of ended answers kept by every session of the process.
static ENDED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// One answer's messages.
struct Log {
    stream: u64,
    /// Bytes kept before the oldest interim messages go.
    cap: usize,
    state: Mutex<LogState>,
    changed: Notify,
}

#[derive(Default)]
struct LogState {
    /// Sequence number of `events[0]`.
    first: u64,
    /// Each message, with the upstream server it concerns where its readers filter by that.
    events: VecDeque<(Arc<str>, Option<Arc<str>>)>,
    bytes: usize,
    /// When the response went in.
    ended: Option<Instant>,
}

impl Log {
    /// What follows message `seen` (`None`: from the start; messages dropped meanwhile are
    /// skipped), the next sequence number, and whether the answer has ended.
    fn after(&self, nonce: u64, seen: Option<u64>) -> Option<(Vec<Tagged>, u64, bool)> {
        let st = self.state.lock().ok()?;
        let from = seen.map_or(0, |s| s.saturating_add(1)).max(st.first);
        let skip = usize::try_from(from - st.first).ok()?;
        let out: Vec<Tagged> = st
            .events
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, (data, tag))| {
                let n = st.first.saturating_add(i as u64);
                let id = format!("{nonce:x}-{}-{n}", self.stream);
                ((id, data.clone()), tag.clone())
            })
            .collect();
        let next = from.saturating_add(out.len() as u64);
        Some((out, next, st.ended.is_some()))
    }
}

/// A session's resumable answers.
pub(crate) struct Replay {
    /// Tells this session's ids from those of an earlier holder of the same session.
    nonce: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    logs: VecDeque<Arc<Log>>,
    /// The standalone GET stream's log, once a GET opened it.
    standalone: Option<u64>,
    /// GETs reading it now, and since when none has.
    readers: usize,
    unread_since: Option<Instant>,
}

/// A GET reading the standalone stream; it stops counting when dropped.
pub(crate) struct Reader(Arc<Replay>);

/// What [`Replay::standalone`] gives a GET.
pub(crate) struct Standalone {
    pub(crate) stream: u64,
    /// Opened by this GET: its writer is the GET's to start.
    pub(crate) opened: bool,
    pub(crate) reader: Reader,
    /// The last message the GET has seen; it reads from the one after.
    pub(crate) seen: Option<u64>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.0.inner.lock() {
            inner.readers = inner.readers.saturating_sub(1);
            if inner.readers == 0 {
                inner.unread_since = Some(Instant::now());
            }
        }
    }
}

impl Default for Replay {
    fn default() -> Replay {
        Replay {
            nonce: rand::random::<u64>() >> 16,
            inner: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            for log in inner.logs.drain(..) {
                forget(&log);
            }
        }
    }
}

/// An event as sent: its id and its data.
pub(crate) type Sent = (String, Arc<str>);

/// An event and the upstream server it concerns, if its readers filter by that.
pub(crate) type Tagged = (Sent, Option<Arc<str>>);

/// The bytes of an ended answer no longer count against the process's.
fn forget(log: &Log) {
    if let Ok(st) = log.state.lock()
        && st.ended.is_some()
    {
        let _ = ENDED_BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(st.bytes))
        });
    }
}

impl Replay {
    /// A new answer's stream.
    pub(crate) fn open(&self) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return u64::MAX;
        };
        let stream = new_log(&mut inner, BYTES);
        tidy(&mut inner);
        stream
    }

    /// The standalone GET stream's log for a GET, whether it was opened now (its writer is then
    /// the caller's to start), the GET's hold on it, and the last message the GET saw: the one
    /// `last_event_id` names if it is of this log, else the newest kept (from now).
    pub(crate) fn standalone(self: &Arc<Self>, last_event_id: Option<&str>) -> Option<Standalone> {
        let mut inner = self.inner.lock().ok()?;
        inner.readers = inner.readers.saturating_add(1);
        let reader = Reader(self.clone());
        let (stream, opened) = match inner.standalone {
            Some(stream) => (stream, false),
            None => {
                let stream = new_log(&mut inner, STANDALONE_BYTES);
                inner.standalone = Some(stream);
                (stream, true)
            }
        };
        drop(inner);
        let newest = self.last(stream);
        let named = last_event_id
            .and_then(parse)
            .filter(|(nonce, s, _)| *nonce == self.nonce && *s == stream && !opened)
            .map(|(_, _, n)| n);
        // A number past the newest names nothing sent yet: from now.
        let seen = match (named, newest) {
            (Some(n), Some(top)) if n <= top => Some(n),
            _ => newest,
        };
        Some(Standalone {
            stream,
            opened,
            reader,
            seen,
        })
    }

    /// Let the standalone stream go if no GET has read it for `after`. True if it is gone (its
    /// writer then stops); a later GET opens a new one.
    pub(crate) fn let_go_if_unread(&self, after: Duration) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return true;
        };
        let unread = inner.readers == 0 && inner.unread_since.is_some_and(|t| t.elapsed() >= after);
        if unread && let Some(stream) = inner.standalone.take() {
            inner.logs.retain(|l| l.stream != stream);
        }
        inner.standalone.is_none()
    }

    /// Whether `last_event_id` names a message of this holder's standalone GET stream; the
    /// message's number if so.
    pub(crate) fn on_standalone(&self, last_event_id: &str) -> Option<u64> {
        let (nonce, stream, n) = parse(last_event_id)?;
        let inner = self.inner.lock().ok()?;
        (nonce == self.nonce && inner.standalone == Some(stream)).then_some(n)
    }

    /// The number of the last message kept on `stream`, if any.
    pub(crate) fn last(&self, stream: u64) -> Option<u64> {
        let log = self.log(stream)?;
        let st = log.state.lock().ok()?;
        let kept = st.events.len() as u64;
        (kept > 0).then(|| st.first.saturating_add(kept - 1))
    }

    fn log(&self, stream: u64) -> Option<Arc<Log>> {
        let inner = self.inner.lock().ok()?;
        inner.logs.iter().find(|l| l.stream == stream).cloned()
    }

    /// Keep one message of `stream`; `last`: it is the response, and the answer has ended.
    pub(crate) fn push(&self, stream: u64, data: String, last: bool) {
        self.keep(stream, data, None, last);
    }

    /// Keep one message of the standalone stream, with the server it concerns (`None`: every
    /// reader gets it).
    pub(crate) fn push_tagged(&self, stream: u64, data: String, tag: Option<Arc<str>>) {
        self.keep(stream, data, tag, false);
    }

    fn keep(&self, stream: u64, data: String, tag: Option<Arc<str>>, last: bool) {
        let Some(log) = self.log(stream) else {
            return;
        };
        if let Ok(mut st) = log.state.lock() {
            st.bytes = st.bytes.saturating_add(data.len());
            st.events.push_back((Arc::from(data), tag));
            if last {
                st.ended = Some(Instant::now());
                ENDED_BYTES.fetch_add(st.bytes, Ordering::Relaxed);
            }
            // An answer alone over the session's bytes loses its oldest interim messages.
            while !last && st.bytes > log.cap && st.events.len() > 1 {
                if let Some((e, _)) = st.events.pop_front() {
                    st.first = st.first.saturating_add(1);
                    st.bytes = st.bytes.saturating_sub(e.len());
                }
            }
        }
        log.changed.notify_waiters();
        if last && let Ok(mut inner) = self.inner.lock() {
            tidy(&mut inner);
        }
    }

    /// Let go of what is past its time (the session may be idle: this runs on a timer too).
    pub(crate) fn tidy(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            tidy(&mut inner);
        }
    }

    /// What follows the message a `Last-Event-ID` names, then the rest of that answer, if this
    /// session still keeps it.
    pub(crate) fn resume(
        &self,
        last_event_id: &str,
    ) -> Option<impl Stream<Item = Sent> + Send + 'static> {
        let (nonce, stream, n) = parse(last_event_id)?;
        let log = self.log(stream).filter(|_| nonce == self.nonce)?;
        Some(read(Some(log), self.nonce, Some(n)).map(|(sent, _)| sent))
    }

    /// The messages of `stream` after `seen`, then each one as it comes, until the response.
    pub(crate) fn follow(
        &self,
        stream: u64,
        seen: Option<u64>,
    ) -> impl Stream<Item = Sent> + Send + 'static {
        self.follow_tagged(stream, seen).map(|(sent, _)| sent)
    }

    /// [`Replay::follow`] with the server each message concerns, for a reader that filters.
    pub(crate) fn follow_tagged(
        &self,
        stream: u64,
        seen: Option<u64>,
    ) -> impl Stream<Item = Tagged> + Send + 'static {
        read(self.log(stream), self.nonce, seen)
    }
}

fn new_log(inner: &mut Inner, cap: usize) -> u64 {
    let stream = inner.next;
    inner.next = inner.next.wrapping_add(1);
    inner.logs.push_back(Arc::new(Log {
        stream,
        cap,
        state: Mutex::default(),
        changed: Notify::new(),
    }));
    stream
}

/// `log`'s messages after `seen`, then each one as it comes, until the response.
fn read(
    log: Option<Arc<Log>>,
    nonce: u64,
    seen: Option<u64>,
) -> impl Stream<Item = Tagged> + Send + 'static {
    {
        let next = seen.map_or(0, |s| s.saturating_add(1));
        futures::stream::unfold((log, next, false), move |(log, next, ended)| async move {
            let log = log.filter(|_| !ended)?;
            loop {
                // Registered before looking, so a message written in between still wakes it.
                let changed = log.changed.notified();
                let (events, upto, done) = log.after(nonce, next.checked_sub(1))?;
                if !events.is_empty() || done {
                    drop(changed);
                    if events.is_empty() {
                        return None;
                    }
                    return Some((futures::stream::iter(events), (Some(log), upto, done)));
                }
                changed.await;
            }
        })
        .flatten()
    }
}

/// Drop what the session keeps beyond its bounds: ended answers past [`KEPT_FOR`], then the
/// oldest ended answers while over [`STREAMS`] or [`BYTES`], or while ended answers over every
/// session exceed [`ALL_BYTES`]. Answers still running are never dropped here (they are as
/// many as the requests in flight).
fn tidy(inner: &mut Inner) {
    let stale = |log: &Arc<Log>| {
        log.state
            .lock()
            .map(|st| st.ended.is_some_and(|t| t.elapsed() > KEPT_FOR))
            .unwrap_or(true)
    };
    let (gone, kept): (Vec<_>, Vec<_>) = inner.logs.drain(..).partition(stale);
    gone.iter().for_each(|l| forget(l));
    inner.logs = kept.into();
    let size = |logs: &VecDeque<Arc<Log>>| -> usize {
        logs.iter()
            .map(|l| l.state.lock().map(|s| s.bytes).unwrap_or(0))
            .sum()
    };
    let over_all = || ENDED_BYTES.load(Ordering::Relaxed) > ALL_BYTES;
    while inner.logs.len() > STREAMS || size(&inner.logs) > BYTES || over_all() {
        let ended = inner
            .logs
            .iter()
            .position(|l| l.state.lock().map(|s| s.ended.is_some()).unwrap_or(true));
        let Some(log) = ended.and_then(|i| inner.logs.remove(i)) else {
            return;
        };
        forget(&log);
    }
}

/// `<nonce>-<stream>-<n>`.
fn parse(id: &str) -> Option<(u64, u64, u64)> {
    let mut parts = id.splitn(3, '-');
    let nonce = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((
        nonce,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests;
