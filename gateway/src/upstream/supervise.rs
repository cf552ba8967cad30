//! Keeping each endpoint of an upstream connected: connect, list the tools, probe its health,
//! and reconnect with backoff when it is lost. A stdio server is started again from its pinned
//! artifact, its digest checked before each start; one that keeps exiting soon after it starts
//! opens its breaker.

use std::sync::Arc;
use std::time::Duration;

use registry::ServerSource;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Upstream;
use super::connect::{connect, refresh_tools};
use super::endpoint::Endpoint;
use super::handler::{ProgressRoutes, UpstreamEvent, UpstreamHandler};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection lost sooner than this after it was made counts as a crash: the backoff goes on
/// growing, and the circuit breaker counts a failure.
const STABLE: Duration = Duration::from_secs(10);
const AFTER_FAILURE: &str =
    "an upstream endpoint did not answer after a failed request; reconnecting";
/// How often a failed request may have its endpoint checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Keep endpoint `index` of `up` connected until shutdown.
pub(super) async fn supervise(up: Arc<Upstream>, index: usize, shutdown: CancellationToken) {
    let Some(ep) = up.endpoints.get(index) else {
        return;
    };
    let mut backoff = BACKOFF_START;
    let mut lost_before = false;
    loop {
        let (refresh_tx, mut refresh_rx) = mpsc::unbounded_channel();
        let handler = UpstreamHandler {
            server: up.name().to_string(),
            progress: Arc::new(ProgressRoutes::default()),
            events: up.events.clone(),
            refresh: refresh_tx,
            relay: None,
            secrets: up.sent_secrets.clone(),
            pinning: false,
        };
        let attempt = tokio::select! {
            r = connect(&up, index, handler) => r,
            () = shutdown.cancelled() => return,
        };
        let conn = match attempt {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(server = %up.name(), endpoint = %ep.label(), error = %e, retry_in = ?backoff, "upstream connect failed");
                // Its cause, without the transport's layers around it.
                ep.set_last_error(Some(e.root_cause().to_string()));
                // A process that cannot be started (or answer its handshake) is a crash; an HTTP
                // endpoint that cannot be reached is simply not chosen for calls.
                let config = up.config();
                if matches!(config.source, ServerSource::Command(_)) {
                    ep.circuit.failed(config.resilience.breaker, up.name());
                }
                if !pause(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let connected = Instant::now();
        ep.set_last_error(None);
        if lost_before {
            ep.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(server = %up.name(), endpoint = %ep.label(), protocol = %conn.protocol.as_str(), "upstream connected");
        let _ = listed(
            &up,
            ep,
            &conn.peer,
            "listing upstream tools failed; its tools are withheld",
        )
        .await;
        // What this connection offers is now what was checked.
        up.listed_again(ep);
        let peer = conn.peer.clone();
        let service = conn._service.clone();
        ep.set_connection(Some(conn));
        let _ = up.events.send(UpstreamEvent::Tools(up.name().to_string()));
        let mut probe_at = next_probe(&up);
        // When a failed request last had the endpoint checked, and whether one waits for that.
        let mut checked: Option<Instant> = None;
        let mut check_due = false;
        // A failed probe is counted once, not again as a short-lived connection.
        let mut probe_failed = false;
        loop {
            let probe = async {
                match probe_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = refresh_rx.recv() => {
                    let _ = listed(&up, ep, &peer, "refreshing upstream tools failed; its tools are withheld").await;
                    let _ = up.events.send(UpstreamEvent::Tools(up.name().to_string()));
                }
                () = probe => {
                    // The active health probe: a listing, checked against the pins like any.
                    // Clients hear of it only when what is offered changed.
                    if !answers(&up, ep, &peer, "the health probe's tool listing failed; connecting the endpoint again").await {
                        ep.circuit.failed(up.config().resilience.breaker, up.name());
                        probe_failed = true;
                        break;
                    }
                    probe_at = next_probe(&up);
                }
                () = ep.reconnect.notified() => {
                    if service.is_closed() || peer.is_transport_closed() { break; }
                    // A request failed on a connection that looks open (HTTP holds none between
                    // requests): the endpoint itself is asked, at most once a second, and one
                    // that does not answer is connected again.
                    check_due = true;
                    if checked.is_none_or(|at| at.elapsed() >= CHECK_EVERY) {
                        check_due = false;
                        checked = Some(Instant::now());
                        if !answers(&up, ep, &peer, AFTER_FAILURE).await { break; }
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if service.is_closed() || peer.is_transport_closed() { break; }
                    // A reload may have turned the probe on.
                    if probe_at.is_none() {
                        probe_at = next_probe(&up);
                    }
                    if std::mem::take(&mut check_due) {
                        checked = Some(Instant::now());
                        if !answers(&up, ep, &peer, AFTER_FAILURE).await { break; }
                    }
                }
                () = shutdown.cancelled() => {
                    ep.set_connection(None);
                    return;
                }
            }
        }
        ep.set_connection(None);
        lost_before = true;
        // Of several endpoints, one that is gone neither sets nor checks what the others offer.
        if up.endpoints.len() > 1 && up.set_listing(index, None) {
            let _ = up.events.send(UpstreamEvent::Tools(up.name().to_string()));
        }
        if connected.elapsed() >= STABLE {
            backoff = BACKOFF_START;
            tracing::warn!(server = %up.name(), endpoint = %ep.label(), "upstream connection lost; reconnecting");
            continue;
        }
        // Lost soon after it was made: a crash loop is slowed down and opens the breaker.
        if !probe_failed {
            ep.circuit.failed(up.config().resilience.breaker, up.name());
        }
        tracing::warn!(server = %up.name(), endpoint = %ep.label(), up_for = ?connected.elapsed(), retry_in = ?backoff, "upstream connection lost soon after it was made; reconnecting after a pause");
        if !pause(backoff, &shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// When the next health probe is due: for an HTTP server whose `health` is on.
fn next_probe(up: &Upstream) -> Option<Instant> {
    let config = up.config();
    match config.source {
        ServerSource::Http { .. } => config.resilience.health.map(|every| Instant::now() + every),
        _ => None,
    }
}

/// List the endpoint's tools; on failure, what it offers is unknown: it offers nothing (and,
/// of several, takes no calls) until a listing succeeds. Whether the listing succeeded, and
/// whether what is offered or held back changed.
async fn listed(
    up: &Upstream,
    ep: &Endpoint,
    peer: &rmcp::Peer<rmcp::RoleClient>,
    failed: &'static str,
) -> (bool, bool) {
    match refresh_tools(up, ep.index, peer).await {
        Ok(changed) => (true, changed),
        Err(e) => {
            let changed = up.set_listing(ep.index, None);
            ep.set_last_error(Some(e.root_cause().to_string()));
            tracing::warn!(server = %up.name(), endpoint = %ep.label(), error = %e, "{failed}");
            (false, changed)
        }
    }
}

/// After a failed request, or at a health probe: true when the endpoint still answers (a
/// listing, checked against the pins like any). Clients hear of it only when what is offered
/// changed.
async fn answers(
    up: &Upstream,
    ep: &Endpoint,
    peer: &rmcp::Peer<rmcp::RoleClient>,
    failed: &'static str,
) -> bool {
    let (ok, changed) = listed(up, ep, peer, failed).await;
    if changed {
        let _ = up.events.send(UpstreamEvent::Tools(up.name().to_string()));
    }
    ok
}

/// Sleep `d`; false if shutdown came first.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}
