//! Resumable answers (stateful revisions): every message a request's SSE answer carries gets an
//! event id (`<stream>-<n>`) and is kept in the session, so a client whose connection dropped
//! before the answer ended resumes it with a GET carrying `Last-Event-ID`, and gets what it
//! missed on that stream only, then the rest as it comes, up to the response.
//!
//! The request goes on whether the client is there or not (`front/answer.rs`): its messages
//! are written here by a task of their own, and each connection reads them from here. Bounded
//! per session: the newest [`STREAMS`] answers, [`BYTES`] in all; what is over is dropped from
//! the oldest (an answer that lost its start cannot be resumed before the loss).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::Notify;

/// Answers kept per session.
const STREAMS: usize = 16;
/// Bytes kept per session, over all its answers.
const BYTES: usize = 4 << 20;

/// One answer's messages.
struct Log {
    stream: u64,
    /// Sequence number of `events[0]`.
    first: u64,
    events: VecDeque<Arc<str>>,
    done: bool,
}

#[derive(Default)]
struct Inner {
    next: u64,
    logs: VecDeque<Log>,
    bytes: usize,
}

/// A session's resumable answers.
#[derive(Default)]
pub(crate) struct Replay {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

/// An event as sent: its id and its data.
pub(crate) type Sent = (String, Arc<str>);

impl Replay {
    /// A new answer's stream.
    pub(crate) fn open(&self) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return u64::MAX;
        };
        let stream = inner.next;
        inner.next = inner.next.wrapping_add(1);
        inner.logs.push_back(Log {
            stream,
            first: 0,
            events: VecDeque::new(),
            done: false,
        });
        while inner.logs.len() > STREAMS {
            if let Some(old) = inner.logs.pop_front() {
                inner.bytes = inner
                    .bytes
                    .saturating_sub(old.events.iter().map(|e| e.len()).sum());
            }
        }
        stream
    }

    /// Keep one message of `stream`.
    pub(crate) fn push(&self, stream: u64, data: String) {
        if let Ok(mut inner) = self.inner.lock() {
            let len = data.len();
            if let Some(log) = inner.logs.iter_mut().find(|l| l.stream == stream) {
                log.events.push_back(Arc::from(data));
                inner.bytes = inner.bytes.saturating_add(len);
            }
            trim(&mut inner);
        }
        self.changed.notify_waiters();
    }

    /// `stream` has sent its last message.
    pub(crate) fn close(&self, stream: u64) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(log) = inner.logs.iter_mut().find(|l| l.stream == stream)
        {
            log.done = true;
        }
        self.changed.notify_waiters();
    }

    /// What `stream` holds after message `seen` (`None`: from its start), and whether it has
    /// ended; `None` if it is not kept (or no longer holds what follows `seen`).
    fn after(&self, stream: u64, seen: Option<u64>) -> Option<(Vec<Sent>, u64, bool)> {
        let inner = self.inner.lock().ok()?;
        let log = inner.logs.iter().find(|l| l.stream == stream)?;
        let from = seen.map_or(0, |s| s.saturating_add(1));
        if from < log.first {
            return None;
        }
        let skip = usize::try_from(from - log.first).ok()?;
        let out = log
            .events
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, e)| {
                let n = log.first.saturating_add(i as u64);
                (format!("{stream}-{n}"), e.clone())
            })
            .collect::<Vec<_>>();
        let next = from.saturating_add(out.len() as u64);
        Some((out, next, log.done))
    }

    /// Whether `last_event_id` names a message this session keeps the rest of.
    pub(crate) fn resumes(&self, last_event_id: &str) -> Option<(u64, u64)> {
        let (stream, n) = parse(last_event_id)?;
        self.after(stream, Some(n)).map(|_| (stream, n))
    }

    /// The messages of `stream` after `seen`, then each one as it comes, until the last.
    pub(crate) fn follow(
        self: Arc<Self>,
        stream: u64,
        seen: Option<u64>,
    ) -> impl Stream<Item = Sent> + Send + 'static {
        let next = seen.map_or(0, |s| s.saturating_add(1));
        futures::stream::unfold((self, next, false), move |(me, next, ended)| async move {
            if ended {
                return None;
            }
            loop {
                // Registered before looking, so a message written in between still wakes it.
                let changed = me.changed.notified();
                let seen = next.checked_sub(1);
                let (events, upto, done) = me.after(stream, seen)?;
                if !events.is_empty() || done {
                    drop(changed);
                    if events.is_empty() {
                        return None;
                    }
                    let batch = futures::stream::iter(events);
                    return Some((batch, (me, upto, done)));
                }
                changed.await;
            }
        })
        .flatten()
    }
}

use futures::StreamExt as _;

fn trim(inner: &mut Inner) {
    while inner.bytes > BYTES {
        // The oldest answer loses its oldest message (an ended one first, if any).
        let at = inner
            .logs
            .iter()
            .position(|l| l.done && !l.events.is_empty())
            .or_else(|| inner.logs.iter().position(|l| !l.events.is_empty()));
        let Some(log) = at.and_then(|i| inner.logs.get_mut(i)) else {
            return;
        };
        if let Some(e) = log.events.pop_front() {
            log.first = log.first.saturating_add(1);
            inner.bytes = inner.bytes.saturating_sub(e.len());
        }
    }
}

/// `<stream>-<n>`.
fn parse(id: &str) -> Option<(u64, u64)> {
    let (s, n) = id.split_once('-')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resumed_stream_gets_what_followed_its_last_event_then_the_rest() {
        let r = Arc::new(Replay::default());
        let s = r.open();
        r.push(s, "a".into());
        r.push(s, "b".into());
        assert_eq!(r.resumes(&format!("{s}-0")), Some((s, 0)));
        assert_eq!(r.resumes("9-0"), None);
        assert_eq!(r.resumes("junk"), None);
        let follower = tokio::spawn(
            r.clone()
                .follow(s, Some(0))
                .map(|(id, d)| format!("{id}={d}"))
                .collect::<Vec<_>>(),
        );
        tokio::task::yield_now().await;
        r.push(s, "c".into());
        r.close(s);
        let got = follower.await.unwrap();
        assert_eq!(got, vec![format!("{s}-1=b"), format!("{s}-2=c")]);
    }

    #[test]
    fn what_is_kept_is_bounded_and_a_lost_start_is_not_resumed() {
        let r = Replay::default();
        let s = r.open();
        let big = "x".repeat(BYTES / 2 + 1);
        r.push(s, big.clone());
        r.push(s, big.clone());
        r.push(s, "y".into());
        // The first message went: resuming from before it is refused, after it works.
        assert_eq!(r.resumes(&format!("{s}-0")), Some((s, 0)));
        assert!(r.after(s, None).is_none());
        for _ in 0..STREAMS {
            r.open();
        }
        assert_eq!(
            r.resumes(&format!("{s}-0")),
            None,
            "evicted by newer answers"
        );
    }
}
