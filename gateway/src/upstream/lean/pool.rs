//! The lean leg's connections to one upstream: HTTP/1.1 keep-alive connections made with
//! hyper's connection API and kept on a stack, the most recently used on top.
//!
//! A connection goes back on the stack when its response's body has ended ([`Body`]: read until
//! hyper says it ended, or dropped when hyper knows nothing more comes: an empty body, or one of a
//! known length read to its last byte). One whose body was dropped before that, or failed, is
//! closed: the gateway cannot tell when the rest of it has been read, and a closed connection is
//! how a caller that gave up (a cancelled 2026-07-28 call) is seen upstream. So the stack holds only connections whose
//! exchange is over, and idle time counts from the end of the last answer. A caller takes the
//! topmost one that hyper says is free (`is_ready`), passing over one that is not yet (its
//! connection task has not seen the end of the exchange) and dropping closed ones; none free, it
//! makes one. Each connection is one task for its whole life, and a call on a kept connection
//! spawns none.
//! hyper-util's pooled client, used before, spawned a task on every call to wait until the
//! connection was free again (on a runtime of several workers, scheduling it woke another worker
//! on most calls), and checked connections out by a key cloned from each request.
//!
//! A connection free for longer than [`IDLE`] is closed by a task that looks every half of it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use tower_service::Service as _;

use super::{Connector, SendError, chain};

/// How long a free connection is kept (as the connection's reqwest client keeps its).
pub(super) const IDLE: Duration = Duration::from_secs(60);

pub(super) type Sender = SendRequest<Full<Bytes>>;

/// The connections to one upstream. Cloned cheaply (the stack is shared).
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    kept: Mutex<Vec<Kept>>,
    /// Whether the task that closes idle connections runs.
    reaping: AtomicBool,
}

struct Kept {
    sender: Sender,
    /// When it was last seen in use (given back, or found not yet free by the reaper).
    since: Instant,
}

/// A response's body from a connection of the stack: the connection goes back on the stack when
/// the body ends, and is closed if the body is dropped before hyper knows its end, or fails.
pub(in crate::upstream) struct Body {
    inner: Incoming,
    back: Option<(Pool, Sender)>,
}

impl Body {
    pub(super) fn new(inner: Incoming, pool: Pool, sender: Sender) -> Body {
        Body {
            inner,
            back: Some((pool, sender)),
        }
    }

    fn ended(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            pool.give_back(sender);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            // The exchange broke: the connection is not sent on again.
            Poll::Ready(Some(Err(_))) => self.back = None,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Body {
    /// A body dropped with nothing more to come (an empty one nobody read, or one of a known
    /// length read to its last byte) gives its connection back; any other takes it away (a
    /// chunked body ends only when a poll has seen its last chunk).
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl Pool {
    pub(super) fn new(connector: Connector) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                connector,
                kept: Mutex::new(Vec::new()),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// The topmost free connection, taken off the stack; closed ones found on the way are
    /// dropped.
    pub(super) fn take(&self) -> Option<Sender> {
        let mut kept = self.inner.lock();
        let mut i = kept.len();
        while i > 0 {
            i -= 1;
            let (closed, ready) = match kept.get(i) {
                Some(k) => (k.sender.is_closed(), k.sender.is_ready()),
                None => break,
            };
            if closed {
                kept.remove(i);
            } else if ready {
                return Some(kept.remove(i).sender);
            }
        }
        None
    }

    /// Put `sender` back on top, unless its connection has closed.
    fn give_back(&self, sender: Sender) {
        if !sender.is_closed() {
            self.inner.lock().push(Kept {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `target` (an absolute URL: its scheme says whether TLS is made). The
    /// request has not left the gateway when this fails.
    pub(super) async fn connect(&self, target: &Uri) -> Result<Sender, SendError> {
        let unreached = |why: String| SendError {
            unreached: true,
            why,
        };
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| unreached(chain(e.as_ref())))?;
        let io = connector
            .call(target.clone())
            .await
            .map_err(|e| unreached(chain(e.as_ref())))?;
        let (sender, connection) = Builder::new()
            .handshake(io)
            .await
            .map_err(|e| unreached(chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %chain(&e), "an upstream connection ended with an error");
            }
        });
        self.reap_idle();
        Ok(sender)
    }

    /// Start the task that closes idle connections, once; it ends with the pool.
    fn reap_idle(&self) {
        if self.inner.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 2).await;
                let Some(inner) = pool.upgrade() else {
                    return;
                };
                inner.reap(Instant::now());
            }
        });
    }

    /// How many connections are kept.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.inner.lock().len()
    }

    /// Close the connections free since before `now - IDLE`.
    #[cfg(test)]
    pub(super) fn reap(&self, now: Instant) {
        self.inner.reap(now);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drop the closed connections and those free for [`IDLE`]; one not yet free counts as used
    /// now.
    fn reap(&self, now: Instant) {
        self.lock().retain_mut(|k| {
            if k.sender.is_closed() {
                return false;
            }
            if !k.sender.is_ready() {
                k.since = now;
                return true;
            }
            now.saturating_duration_since(k.since) < IDLE
        });
    }
}

#[cfg(test)]
mod tests;
