//! The client side of a stateful session, as its per-session upstream connections see it:
//! where the client's messages go, what the client declared, the session's links and the
//! requests waiting for the client's answer. The session (`session.rs`) holds one; links hold
//! it weakly, so a link never keeps an ended session alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Connection;
use super::relay::Relay;

/// How many server-to-client requests of one session may wait for the client at once.
pub(super) const MAX_PENDING: usize = 64;

/// After a link failed to open, requests fail at once for this long instead of each waiting out
/// another handshake.
const OPEN_BACKOFF: Duration = Duration::from_secs(1);

/// One stateful session's client side.
#[derive(Debug)]
pub(crate) struct ClientSide {
    /// The session's id, for records and logs.
    pub(crate) id: String,
    /// Messages for the session's standalone GET stream.
    pub(crate) events: broadcast::Sender<Value>,
    /// The capabilities the client declared at `initialize` (what a per-session upstream
    /// connection may ask it for).
    pub(crate) client_capabilities: Value,
    /// Its own connections to `connection: per_session` upstreams.
    pub(crate) links: Links,
    /// Requests sent to the client on an upstream's behalf, waiting for its answer.
    pub(crate) pending: Pending,
    /// The level of the client's last `logging/setLevel`, applied to per-session upstream
    /// connections opened after it.
    pub(crate) log_level: Mutex<Option<String>>,
}

impl ClientSide {
    pub(crate) fn new(id: &str, client_capabilities: Value) -> ClientSide {
        let (events, _) = broadcast::channel(64);
        ClientSide {
            id: id.to_string(),
            events,
            client_capabilities,
            links: Links::default(),
            pending: Pending::default(),
            log_level: Mutex::new(None),
        }
    }
}

/// One session's upstream links, by server name.
#[derive(Default)]
pub(crate) struct Links {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Cancelled when the session ends: no link opens after that, and requests waiting for the
    /// client stop waiting.
    pub(super) closed: CancellationToken,
}

/// A server's link in one session, or when it last failed to open.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) link: Option<Link>,
    pub(super) failed: Option<std::time::Instant>,
}

impl Slot {
    /// True if the last attempt failed too recently to try again.
    pub(super) fn backing_off(&self) -> bool {
        self.failed.is_some_and(|at| at.elapsed() < OPEN_BACKOFF)
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Links").field("servers", &names).finish()
    }
}

impl Links {
    /// The slot for `server`, created empty if need be; `None` once the session has ended.
    /// Opening a link holds only its own slot, so a slow upstream does not hold up the session's
    /// other servers.
    pub(super) fn slot(&self, server: &str) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        let mut slots = self.slots.lock().ok()?;
        if self.closed.is_cancelled() {
            return None;
        }
        Some(slots.entry(server.to_string()).or_default().clone())
    }

    /// True if the session has a live link to the upstream with this serial (not waiting for
    /// one being opened).
    pub(super) fn has(&self, server: &str, serial: u64) -> bool {
        let slot = self.slots.lock().ok().and_then(|s| s.get(server).cloned());
        slot.is_some_and(|slot| {
            slot.try_lock().is_ok_and(|s| {
                s.link
                    .as_ref()
                    .is_some_and(|l| l.serial == serial && !l.conn.peer.is_transport_closed())
            })
        })
    }

    /// Close every link (the session ended). Dropping a link cancels its connection.
    /// Resolved once the session ended here (closed, reaped or ended elsewhere).
    pub(crate) async fn ended(&self) {
        self.closed.cancelled().await;
    }

    pub(crate) fn close(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            self.closed.cancel();
            slots.clear();
        }
    }
}

/// A live per-session connection to one upstream.
pub(super) struct Link {
    /// The [`super::Upstream::serial`] it was opened for: an upstream replaced by a reload
    /// (new source or credentials) gets new links.
    pub(super) serial: u64,
    pub(super) conn: Connection,
    pub(super) relay: Arc<Relay>,
    /// Cancels the connection when the link is dropped (session ended, link replaced).
    pub(super) _close: DropGuard,
}

/// Server-to-client requests waiting for the client's answer, by the id the gateway gave them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    next: AtomicU64,
    pub(super) waiting: Mutex<HashMap<String, oneshot::Sender<Result<Value, Value>>>>,
}

/// One request waiting for the client: its id and the receiver of the answer. Dropping it,
/// answered or not, removes the request.
pub(super) struct Waiting<'a> {
    pending: &'a Pending,
    key: String,
    pub(super) id: Value,
    pub(super) answer: oneshot::Receiver<Result<Value, Value>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.pending.waiting.lock() {
            w.remove(&self.key);
        }
    }
}

impl Pending {
    /// A fresh id (unique in the session) and the receiver of the client's answer to it.
    pub(super) fn register(&self) -> Option<Waiting<'_>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("portcullis-{n}"));
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().ok()?;
        if w.len() >= MAX_PENDING {
            return None;
        }
        w.insert(id.to_string(), tx);
        Some(Waiting {
            pending: self,
            key: id.to_string(),
            id,
            answer: rx,
        })
    }

    /// Deliver the client's answer to `id`. False if nothing waits for it.
    pub(crate) fn answer(&self, id: &Value, outcome: Result<Value, Value>) -> bool {
        let waiter = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&id.to_string()));
        match waiter {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }
}
