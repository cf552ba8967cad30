//! Serving a router on a listener, with the bounds an exposed server needs before any request
//! is authenticated.
//!
//! - **Connections are capped**, in all and per peer address. A connection over a cap is closed
//!   at once, before anything is read. The MCP listener's cap leaves room under the process's
//!   open-file limit, and the admin listener has caps of its own, so a flood on the MCP port can
//!   neither exhaust the process's file descriptors nor lock operators out (the kill switch
//!   stays reachable).
//! - **A request head must arrive whole within `http.header_timeout`**, counted from the start
//!   of the connection or from the end of the previous answer (so an idle keep-alive connection
//!   is closed after as long); a head trickled a line at a time is cut off at the deadline.
//! - **A request body must arrive within `http.body_timeout`** ([`read_body`], on both
//!   listeners, and on the MCP listener only once the caller is authenticated).
//! - **An answer's write must make progress within `http.write_timeout`**: a caller that stops
//!   reading (its receive window full) loses the connection then, rather than holding it, and
//!   its place under the caps, for ever. A stream that has nothing to send is not timed.
//!
//! Written on hyper's connection builder rather than `axum::serve`, which offers none of these.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Descriptors kept free for everything but the MCP listener's connections: the admin
/// listener, upstream connections and child processes, the store and the audit files.
const RESERVED_FDS: u64 = 256;
/// The MCP listener's connection cap when the open-file limit cannot be read.
const FALLBACK_CONNECTIONS: usize = 512;
/// How long shutdown waits for open connections to finish their answers.
const DRAIN: Duration = Duration::from_secs(10);

/// Bounds for one listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) max_connections: usize,
    pub(crate) per_peer: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl Bounds {
    /// The MCP listener's bounds from the config; a cap the config leaves open is derived from
    /// the process's open-file limit.
    pub(crate) fn mcp(settings: &registry::Settings) -> Bounds {
        let max_connections = settings.max_connections.unwrap_or_else(default_connections);
        Bounds {
            max_connections,
            per_peer: settings
                .max_connections_per_peer
                .unwrap_or((max_connections / 4).max(1)),
            header_timeout: settings.header_timeout,
            write_timeout: settings.write_timeout,
        }
    }

    /// The admin listener's own, small bounds: operators are few.
    pub(crate) fn admin(settings: &registry::Settings) -> Bounds {
        Bounds {
            max_connections: 64,
            per_peer: 32,
            header_timeout: settings.header_timeout,
            write_timeout: settings.write_timeout,
        }
    }
}

/// The open-file soft limit less [`RESERVED_FDS`], read from `/proc/self/limits`.
fn default_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| open_files_limit(&text))
        .map_or(FALLBACK_CONNECTIONS, |soft| {
            let free = soft.saturating_sub(RESERVED_FDS).max(RESERVED_FDS / 4);
            usize::try_from(free).unwrap_or(FALLBACK_CONNECTIONS)
        })
}

/// The soft limit of `Max open files`, if it is a number.
fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open connections per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// Holds one peer's place while its connection is open.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.peers.0.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serve `app` on `listener` until `shutdown` completes, within `bounds`; then stop accepting
/// and give open connections up to [`DRAIN`] to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    bounds: Bounds,
    name: &'static str,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let total = Arc::new(Semaphore::new(bounds.max_connections));
    let peers = Arc::new(Peers::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(bounds.header_timeout))
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin, and keep serving.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::debug!(listener = name, peer = %peer, "connection refused: the listener is at its connection cap");
            crate::metrics::get().connection_refused(name, "total");
            continue;
        };
        let Some(slot) = peers.admit(peer.ip(), bounds.per_peer) else {
            tracing::debug!(listener = name, peer = %peer, "connection refused: the peer is at its connection cap");
            crate::metrics::get().connection_refused(name, "peer");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
        // Timed only while a write is pending: a write that completes at once costs a flag.
        let mut io = tokio_io_timeout::TimeoutWriter::new(stream);
        io.set_timeout(Some(bounds.write_timeout));
        let conn = builder.serve_connection(
            TokioIo::new(Box::pin(io)),
            TowerToHyperService::new(app.clone()),
        );
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open at shutdown were closed"
        );
    }
}

/// Why a request body was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the limit (413).
    TooLarge,
    /// Not all there within the deadline (408).
    Slow,
    /// The connection failed while it was read (400).
    Broken,
}

/// Read a request body whole, within `limit` bytes and `deadline`. Past the limit the rest is
/// read and discarded (up to as much again, within the deadline), so that a client still
/// sending it reads the 413 rather than a reset connection.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    deadline: Duration,
) -> Result<axum::body::Bytes, BodyError> {
    use futures::StreamExt as _;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut over = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if over > 0 || buf.len() + chunk.len() > limit {
                over += chunk.len();
                if over > limit {
                    return Err(BodyError::TooLarge);
                }
                continue;
            }
            buf.extend_from_slice(&chunk);
        }
        match over {
            0 => Ok(axum::body::Bytes::from(buf)),
            _ => Err(BodyError::TooLarge),
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(BodyError::Slow))
}

#[cfg(test)]
mod tests;
