//! A POST's SSE stream that is let go after its answer but before its end is read to its end in
//! the background, so the HTTP/1.1 connection under it goes back to the pool instead of being
//! closed. One let go before its answer (a cancelled call, a deadline) is dropped at once: the
//! closed connection is part of telling the upstream the call is over.
//!
//! rmcp reads a request's stream until the answer, gives the rest 50 ms, then drops it. On busy
//! cores an upstream's last chunk often comes later than that; the dropped body then closes the
//! connection, and the next call opens a new one (a TCP handshake, and for https a TLS one, on
//! both sides: the upstream pays for it too). Here what is left is read for up to [`DRAIN_FOR`]
//! and at most [`DRAIN_EVENTS`] more events, and thrown away: the call it belonged to is over.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};

/// How long the rest of a dropped stream is read before its connection is given up.
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// How many more events are read at most: an upstream that keeps sending loses the connection.
const DRAIN_EVENTS: usize = 64;

/// `inner`, read to its end in the background if dropped before it once `answered` is set.
pub(crate) struct Drained<T: Send + 'static> {
    inner: Option<BoxStream<'static, T>>,
    ended: bool,
    answered: Arc<AtomicBool>,
}

impl<T: Send + 'static> Drained<T> {
    pub(crate) fn new(inner: BoxStream<'static, T>, answered: Arc<AtomicBool>) -> Drained<T> {
        Drained {
            inner: Some(inner),
            ended: false,
            answered,
        }
    }
}

impl<T: Send + 'static> Stream for Drained<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            this.ended = true;
        }
        next
    }
}

impl<T: Send + 'static> Drop for Drained<T> {
    fn drop(&mut self) {
        if self.ended || !self.answered.load(Ordering::Relaxed) {
            return;
        }
        let (Some(mut inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_FOR, async {
                let mut more = 0;
                while inner.next().await.is_some() {
                    more += 1;
                    if more >= DRAIN_EVENTS {
                        return;
                    }
                }
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn yes() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(true))
    }

    /// Events 1, 2, 3 with `gap` before each after the first; `ended` is set when the last
    /// was read to the end, `read` counts what was read.
    fn slow(
        gap: Duration,
        forever: bool,
        read: Arc<AtomicUsize>,
        ended: Arc<AtomicBool>,
    ) -> BoxStream<'static, u32> {
        futures::stream::unfold(0u32, move |n| {
            let (read, ended) = (read.clone(), ended.clone());
            async move {
                if n > 0 {
                    tokio::time::sleep(gap).await;
                }
                if n == 3 && !forever {
                    ended.store(true, Ordering::SeqCst);
                    return None;
                }
                read.fetch_add(1, Ordering::SeqCst);
                Some((n + 1, n + 1))
            }
        })
        .boxed()
    }

    #[tokio::test]
    async fn a_stream_dropped_after_its_answer_is_read_to_its_end() {
        let (read, ended) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut s = Drained::new(
            slow(
                Duration::from_millis(100),
                false,
                read.clone(),
                ended.clone(),
            ),
            yes(),
        );
        assert_eq!(s.next().await, Some(1));
        drop(s);
        assert!(!ended.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ended.load(Ordering::SeqCst), "the rest was not read");
        assert_eq!(read.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stream_that_never_ends_is_given_up_after_its_allowance() {
        let (read, ended) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        // Slow: the time allowance ends it.
        let mut s = Drained::new(
            slow(
                Duration::from_millis(1500),
                true,
                read.clone(),
                ended.clone(),
            ),
            yes(),
        );
        assert_eq!(s.next().await, Some(1));
        drop(s);
        tokio::time::sleep(DRAIN_FOR + Duration::from_millis(1500)).await;
        assert_eq!(read.load(Ordering::SeqCst), 2, "read past {DRAIN_FOR:?}");
        // Fast: the event allowance ends it.
        let read = Arc::new(AtomicUsize::new(0));
        let mut s = Drained::new(
            slow(Duration::from_millis(1), true, read.clone(), ended),
            yes(),
        );
        assert_eq!(s.next().await, Some(1));
        drop(s);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(read.load(Ordering::SeqCst), 1 + DRAIN_EVENTS);
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_answer_is_let_go_at_once() {
        let (read, ended) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let answered = Arc::new(AtomicBool::new(false));
        let mut s = Drained::new(
            slow(
                Duration::from_millis(50),
                false,
                read.clone(),
                ended.clone(),
            ),
            answered,
        );
        assert_eq!(s.next().await, Some(1));
        drop(s);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(read.load(Ordering::SeqCst), 1);
        assert!(!ended.load(Ordering::SeqCst));
    }
}
