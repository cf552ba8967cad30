//! What operators see of the upstreams: each server's endpoints (connection, circuit breaker,
//! calls running, restarts, last error), its retries, and the deadlines, bounds and routing its
//! calls run under. The same readings feed the metrics and the web page.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

use super::{Admin, require};
use crate::gateway::Gateway;
use crate::metrics::Gauge;
use crate::operate::OpError;

/// `GET /admin/upstreams`: every configured server, as it stands now.
pub(super) async fn get(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading upstreams")?;
    Ok(axum::Json(json!({ "upstreams": state(&a.gw) })).into_response())
}

/// Each server's state.
pub(crate) fn state(gw: &Gateway) -> Vec<Value> {
    let live = gw.live();
    live.registry
        .servers
        .iter()
        .map(|server| {
            let up = live.upstreams.get(&server.name);
            let circuit = up.map(|u| u.circuit());
            let r = &server.resilience;
            let tool_timeouts: serde_json::Map<String, Value> = server
                .tools
                .iter()
                .filter_map(|(t, e)| e.timeout.map(|d| (t.clone(), json!(d.as_secs_f64()))))
                .collect();
            let weights: Vec<u32> = match &server.source {
                registry::ServerSource::Http { endpoints, .. } => {
                    endpoints.iter().map(|e| e.weight).collect()
                }
                _ => Vec::new(),
            };
            let endpoints: Vec<Value> = up
                .map(|u| {
                    u.endpoints()
                        .iter()
                        .map(|e| {
                            let weight = weights.get(e.index()).copied().unwrap_or(1);
                            endpoint(e, weight, r.breaker.is_some())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (retried, refused) = up.map_or((0, 0), |u| u.retries());
            json!({
                "server": server.name,
                "endpoints": endpoints,
                "balance": r.balance.as_str(),
                "health_interval_s": r.health.map(|d| d.as_secs_f64()),
                "retry_budget_percent": r.retry_budget,
                "retries": { "made": retried, "refused_by_budget": refused },
                "connected": up.is_some_and(|u| u.is_connected()),
                "protocol": up.and_then(|u| u.protocol()),
                "tools_served": up.map_or(0, |u| u.tools().len()),
                "restarts": up.map_or(0, |u| u.restarts()),
                "last_error": up.and_then(|u| u.last_error()),
                "circuit": circuit.filter(|_| r.breaker.is_some()).map(|c| reading(&c)),
                "breaker": r.breaker.map(|b| json!({
                    "failures": b.failures,
                    "cooldown_s": b.cooldown.as_secs_f64(),
                })),
                "timeout_s": server.timeout.as_secs_f64(),
                "max_timeout_s": server.max_timeout.as_secs_f64(),
                "tool_timeouts_s": tool_timeouts,
                "max_response_bytes": r.max_response,
                "max_response_depth": r.max_depth,
            })
        })
        .collect()
}

fn reading(c: &crate::upstream::Reading) -> Value {
    json!({
        "state": c.phase.as_str(),
        "failures_in_a_row": c.failures,
        "opened": c.opened,
        "retry_in_s": c.retry_in.map(|d| d.as_secs_f64()),
    })
}

/// One endpoint; its circuit only where a breaker is on (`null` with `breaker: off`).
fn endpoint(e: &crate::upstream::Endpoint, weight: u32, breaker: bool) -> Value {
    json!({
        "index": e.index(),
        "endpoint": e.label(),
        "weight": weight,
        "connected": e.is_connected(),
        "running": e.running(),
        "circuit": breaker.then(|| reading(&e.circuit())),
        "restarts": e.restarts(),
        "last_error": e.last_error(),
    })
}

/// The upstreams' gauges for `/metrics`: connection, circuit state, times opened, restarts.
pub(super) fn gauges(gw: &Gateway, out: &mut Vec<Gauge>) {
    let live = gw.live();
    let mut extra = Vec::new();
    for server in &live.registry.servers {
        let Some(up) = live.upstreams.get(&server.name) else {
            continue;
        };
        let label = || vec![("server", server.name.clone())];
        let c = up.circuit();
        extra.push(Gauge {
            name: "portcullis_upstream_connected",
            kind: "gauge",
            help: "1 while the gateway holds a connection to the server.",
            labels: label(),
            value: f64::from(u8::from(up.is_connected())),
        });
        for phase in [
            crate::upstream::Phase::Closed,
            crate::upstream::Phase::Open,
            crate::upstream::Phase::HalfOpen,
        ] {
            let mut labels = label();
            labels.push(("state", phase.as_str().to_string()));
            extra.push(Gauge {
                name: "portcullis_upstream_circuit_state",
                kind: "gauge",
                help: "1 for the state of the server's circuit breaker.",
                labels,
                value: f64::from(u8::from(c.phase == phase)),
            });
        }
        extra.push(Gauge {
            name: "portcullis_upstream_circuit_opened_total",
            kind: "counter",
            help: "Times the server's circuit breaker opened.",
            labels: label(),
            value: c.opened as f64,
        });
        let (retried, refused) = up.retries();
        for (outcome, n) in [("retried", retried), ("refused_by_budget", refused)] {
            let mut labels = label();
            labels.push(("outcome", outcome.to_string()));
            extra.push(Gauge {
                name: "portcullis_upstream_retries_total",
                kind: "counter",
                help: "Reads tried again on another endpoint, and retries the budget refused.",
                labels,
                value: n as f64,
            });
        }
        for e in up.endpoints() {
            // Its index keeps two URLs that differ only in what records leave out apart.
            let mut labels = label();
            labels.push(("endpoint", e.label()));
            labels.push(("index", e.index().to_string()));
            let open = server.resilience.breaker.is_some()
                && e.circuit().phase == crate::upstream::Phase::Open;
            let usable = e.is_connected() && !open;
            extra.push(Gauge {
                name: "portcullis_upstream_endpoint_up",
                kind: "gauge",
                help: "1 while the endpoint is connected and its circuit is not open.",
                labels: labels.clone(),
                value: f64::from(u8::from(usable)),
            });
            extra.push(Gauge {
                name: "portcullis_upstream_endpoint_running",
                kind: "gauge",
                help: "Calls running on the endpoint now.",
                labels,
                value: e.running() as f64,
            });
        }
        extra.push(Gauge {
            name: "portcullis_upstream_restarts_total",
            kind: "counter",
            help: "Connections re-established after one was lost (for a stdio server: restarts).",
            labels: label(),
            value: up.restarts() as f64,
        });
    }
    // Each metric's samples together, under one HELP and TYPE.
    extra.sort_by_key(|g| g.name);
    out.extend(extra);
}
