//! The lean leg's connections to one upstream: HTTP/1.1 keep-alive connections made with
//! hyper's connection API and kept on a stack, the most recently used on top.
//!
//! A connection has no task of its own: whoever is using it drives it ([`Conn::drive`]), the
//! calling task while the request goes out and the answer's head comes back, then whoever reads
//! the answer's body ([`Body`]). A call on a kept connection is one task, with no hand-over to a
//! connection task and back (one wake-up each way, often on another worker).
//!
//! A connection goes back on the stack when its response's body has ended (read until hyper says
//! it ended, or dropped when hyper knows nothing more comes: an empty body, or one of a known
//! length read to its last byte). One whose body was dropped before that, or failed, is closed:
//! the gateway cannot tell when the rest of it has been read, and a closed connection is how a
//! caller that gave up (a cancelled 2026-07-28 call) is seen upstream. So the stack holds only
//! connections whose answer has ended, and idle time counts from that end.
//!
//! A kept connection is driven with the reaper's waker ([`Sweep`]): when anything arrives on it
//! (the upstream closing it, most of all), the reaper looks at once and drops the ones that
//! ended, as a connection task would have. A caller takes the topmost one that is free, driving
//! each once on the way: one the upstream closed meanwhile reads its end there and is dropped,
//! one hyper is not yet ready to send on (it has not finished with the last exchange) is passed
//! over and left on the stack. A request a kept connection could not take is handed back unsent
//! by hyper and goes on the next one.
//!
//! A connection free for longer than [`IDLE`] is closed by the reaper, which looks every half of
//! it too.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use tower_service::Service as _;

use super::{Connector, SendError, chain};

/// How long a free connection is kept (as the connection's reqwest client keeps its).
pub(super) const IDLE: Duration = Duration::from_secs(60);

type Io = <Connector as tower_service::Service<Uri>>::Response;

/// One connection: the handle requests are sent with, and the connection's I/O, driven by
/// whoever uses it.
pub(super) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    io: Option<Connection<Io, Full<Bytes>>>,
}

impl Conn {
    /// Let the connection read and write what it can now, waking `cx` when it can do more;
    /// false once it has ended (closed by the upstream, or broken).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(io) = self.io.as_mut() else {
            return false;
        };
        match Pin::new(io).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %chain(&e), "an upstream connection ended with an error");
                }
                self.io = None;
                false
            }
        }
    }

    /// Whether the connection is still open, as far as what has arrived says (driven once
    /// here, `waker` woken when more arrives).
    fn open(&mut self, waker: &Waker) -> bool {
        self.drive(&mut Context::from_waker(waker))
    }

    /// Send `req` and drive the connection until the response's head has come; the request is
    /// handed back if it never left (the connection had ended before it could take it).
    pub(super) async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        std::future::poll_fn(|cx| {
            // The request goes out, and the answer comes in, as the connection is driven; one
            // that ended fails what it had not answered, so the response is ready then.
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

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
    /// What wakes it, and the waker kept connections are driven with.
    sweep: Arc<Sweep>,
    waker: Waker,
}

/// Wakes the reaper: something arrived on a kept connection.
#[derive(Default)]
struct Sweep(tokio::sync::Notify);

impl std::task::Wake for Sweep {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

struct Kept {
    conn: Conn,
    /// When its last answer ended.
    since: Instant,
}

/// A response's body from a connection of the stack, which reading it drives: the connection goes
/// back on the stack when the body ends, and is closed if the body is dropped before hyper knows
/// its end, or fails.
pub(in crate::upstream) struct Body {
    inner: Incoming,
    conn: Option<(Pool, Conn)>,
}

impl Body {
    pub(super) fn new(inner: Incoming, pool: Pool, conn: Conn) -> Body {
        Body {
            inner,
            conn: Some((pool, conn)),
        }
    }

    fn ended(&mut self) {
        if let Some((pool, conn)) = self.conn.take() {
            pool.give_back(conn);
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
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending()
            && let Some((_, conn)) = this.conn.as_mut()
        {
            // Nothing read yet: the connection reads what has come, and the body is asked again.
            conn.drive(cx);
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.ended(),
            // The exchange broke: the connection is not sent on again.
            Poll::Ready(Some(Err(_))) => this.conn = None,
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
    /// length read to its last byte) gives its connection back; any other closes it (a chunked
    /// body ends only when a poll has seen its last chunk).
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl Pool {
    pub(super) fn new(connector: Connector) -> Pool {
        let sweep = Arc::new(Sweep::default());
        Pool {
            inner: Arc::new(Inner {
                connector,
                kept: Mutex::new(Vec::new()),
                reaping: AtomicBool::new(false),
                waker: Waker::from(sweep.clone()),
                sweep,
            }),
        }
    }

    /// The topmost connection that is free, taken off the stack; those the upstream closed
    /// are dropped on the way, those not yet free left.
    pub(super) fn take(&self) -> Option<Conn> {
        let mut kept = self.inner.lock();
        let mut i = kept.len();
        while i > 0 {
            i -= 1;
            let Some(k) = kept.get_mut(i) else {
                break;
            };
            if !k.conn.open(&self.inner.waker) {
                kept.remove(i);
            } else if k.conn.sender.is_ready() {
                return Some(kept.remove(i).conn);
            }
        }
        None
    }

    /// Put `conn` back on top, unless it has ended; driven once with the reaper's waker.
    fn give_back(&self, mut conn: Conn) {
        if conn.open(&self.inner.waker) {
            self.inner.lock().push(Kept {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `target` (an absolute URL: its scheme says whether TLS is made). The
    /// request has not left the gateway when this fails.
    pub(super) async fn connect(&self, target: &Uri) -> Result<Conn, SendError> {
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
        let (sender, io) = Builder::new()
            .handshake(io)
            .await
            .map_err(|e| unreached(chain(&e)))?;
        self.reap_idle();
        Ok(Conn {
            sender,
            io: Some(io),
        })
    }

    /// Start the task that closes idle connections, once; it ends with the pool.
    fn reap_idle(&self) {
        if self.inner.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Inner> = Arc::downgrade(&self.inner);
        let sweep = self.inner.sweep.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(IDLE / 2) => {}
                    () = sweep.0.notified() => {}
                }
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

    /// Close the connections free since before `now - IDLE`, and those the upstream closed.
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

    /// Drop the connections free for [`IDLE`] and those that have ended.
    fn reap(&self, now: Instant) {
        let waker = &self.waker;
        self.lock()
            .retain_mut(|k| now.saturating_duration_since(k.since) < IDLE && k.conn.open(waker));
    }
}

#[cfg(test)]
mod tests;
