//! The admin API's records and reports: keys, the operator record, the audit log's export, the
//! self-audit and the Prometheus metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ApprovalStatus, KeyRole, KeyScope};

use super::{Admin, down, parse_body, require};
use crate::operate::OpError;

pub(super) async fn list_keys(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.admin || op.roles.auditor, "listing keys")?;
    let keys = a.gw.store.list_keys().await.map_err(down)?;
    let out: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(axum::Json(json!({ "keys": out })).into_response())
}

fn key_json(k: &store::KeyRecord) -> Value {
    let s = &k.scope;
    json!({
        "id": k.id, "name": k.name, "role": k.role.as_str(),
        "created_at": k.created_at, "revoked_at": k.revoked_at,
        "org": s.org, "team": s.team, "agent": s.agent, "user": s.user,
        "grants": s.grants, "service": s.service, "parent": s.parent,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyBody {
    name: String,
    #[serde(default = "client_role")]
    role: String,
    #[serde(default)]
    grants: Vec<String>,
    org: Option<String>,
    team: Option<String>,
    agent: Option<String>,
    user: Option<String>,
    #[serde(default)]
    service: bool,
    parent: Option<String>,
}

fn client_role() -> String {
    "client".into()
}

pub(super) async fn post_key(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.admin, "issuing keys")?;
    let b: KeyBody = parse_body(&body)?;
    let role = KeyRole::parse(&b.role).ok_or_else(|| {
        OpError::BadRequest(format!(
            "unknown role `{}`; use client, admin, approver or auditor",
            b.role
        ))
    })?;
    let request = crate::keys::MintRequest {
        name: b.name,
        role,
        scope: KeyScope {
            org: b.org,
            team: b.team,
            agent: b.agent,
            user: b.user,
            grants: b.grants,
            service: b.service,
            parent: b.parent,
        },
    };
    let detail =
        json!({ "name": request.name, "role": role.as_str(), "grants": request.scope.grants });
    crate::operate::record_operator(&a.gw, &op, "key.issue", detail).await?;
    let issued = crate::keys::mint(&a.gw.store, &a.gw.registry(), request)
        .await
        .map_err(|e| match e {
            crate::keys::MintError::Refused(why) => OpError::BadRequest(why),
            crate::keys::MintError::Store(e) => down(e),
        })?;
    let mut out = key_json(&issued.record);
    if let Some(o) = out.as_object_mut() {
        o.insert("key".into(), Value::String(issued.secret));
    }
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

pub(super) async fn delete_key(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.admin, "revoking keys")?;
    crate::operate::record_operator(&a.gw, &op, "key.revoke", json!({ "id": id })).await?;
    match a.gw.store.revoke_key(&id).await.map_err(down)? {
        true => {
            a.gw.auth.forget_all();
            a.gw.upstreams().minter().forget_all();
            Ok(axum::Json(json!({ "revoked": id })).into_response())
        }
        false => Err(OpError::NotFound(format!("no active key `{id}`"))),
    }
}

// === the operator record ===

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    since: Option<i64>,
    limit: Option<u32>,
    format: Option<String>,
}

pub(super) async fn get_events(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading the operator record")?;
    let events =
        a.gw.store
            .events_since(q.since.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000))
            .await
            .map_err(down)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(axum::Json(json!({ "events": events })).into_response()),
        Some("ndjson") => {
            let mut body = String::new();
            for e in &events {
                body.push_str(&serde_json::to_string(e).unwrap_or_default());
                body.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
        Some(other) => Err(OpError::BadRequest(format!(
            "unknown format `{other}`; use json or ndjson"
        ))),
    }
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    session: Option<String>,
    trace: Option<String>,
    identity: Option<String>,
    tool: Option<String>,
    kind: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
    format: Option<String>,
}

/// The audit log for SIEM ingestion (`ndjson`, the lines exactly as written, so an unfiltered
/// export passes `portcullis audit verify`), as JSON, or a session or trace replayed as its
/// ordered calls (`replay`). Paged: `Portcullis-Next-After` names the cursor of the next page.
pub(super) async fn get_audit(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, OpError> {
    use audit::export::{Filter, Source, read, replay};
    let op = a.operator(&headers).await?;
    require(
        &op,
        op.roles.admin || op.roles.auditor,
        "reading the audit log",
    )?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, OpError> {
        v.as_deref()
            .map(|t| {
                crate::clock::parse_time(t).ok_or_else(|| {
                    OpError::BadRequest(format!(
                        "`{name}` must be unix milliseconds or an RFC 3339 UTC time such as 2026-11-21T10:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let format = q.format.as_deref().unwrap_or("ndjson");
    if !matches!(format, "ndjson" | "json" | "replay") {
        return Err(OpError::BadRequest(format!(
            "unknown format `{format}`; use ndjson, json or replay"
        )));
    }
    if format == "replay" && q.session.is_none() && q.trace.is_none() {
        return Err(OpError::BadRequest(
            "a replay is of one run: give `session` or `trace`".into(),
        ));
    }
    let filter = Filter {
        since_ms: time("since", &q.since)?.unwrap_or(0),
        until_ms: time("until", &q.until)?,
        // Events carry the session's digest: an id given here is looked up by it.
        session: q.session.as_deref().map(audit::session_ref),
        trace_id: q.trace,
        identity: q.identity,
        tool: q.tool,
        kind: q.kind,
    };
    let settings = &a.gw.registry().settings.audit;
    let Some(source) = Source::of(settings, &a.gw.store) else {
        return Err(OpError::Conflict(
            "the audit log goes to stdout only, which this gateway cannot read back; add a `store` or `file` sink".into(),
        ));
    };
    let limit = usize::try_from(q.limit.unwrap_or(1000).clamp(1, 10_000)).unwrap_or(1000);
    let page = read(&source, &filter, q.after.unwrap_or(0), limit)
        .await
        .map_err(|e| OpError::Unavailable(format!("the audit log cannot be read: {e}")))?;
    let mut res = match format {
        "ndjson" => {
            let mut body = page.lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        _ => {
            let events: Vec<serde_json::Map<String, Value>> = page
                .lines
                .iter()
                .filter_map(|l| match serde_json::from_str(l) {
                    Ok(Value::Object(m)) => Some(m),
                    _ => None,
                })
                .collect();
            let body = if format == "replay" {
                json!({ "calls": replay(&events), "next_after": page.next })
            } else {
                json!({ "events": events, "next_after": page.next })
            };
            axum::Json(body).into_response()
        }
    };
    if let Some(n) = page.next
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        res.headers_mut().insert("portcullis-next-after", v);
    }
    Ok(res)
}

#[derive(Deserialize)]
pub(super) struct SelfAuditQuery {
    format: Option<String>,
}

/// The self-audit of the running gateway: JSON (the default), Markdown or a self-contained
/// HTML page. Auditors and admins only; every probe runs now, against this process.
pub(super) async fn get_self_audit(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<SelfAuditQuery>,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(
        &op,
        op.roles.admin || op.roles.auditor,
        "reading the self-audit",
    )?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "md" | "html") {
        return Err(OpError::BadRequest(format!(
            "unknown format `{format}`; use json, md or html"
        )));
    }
    let report = crate::selfaudit::live_report(&a.gw, &op.subject).await;
    Ok(match format {
        "md" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            crate::selfaudit::markdown(&report),
        )
            .into_response(),
        "html" => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, crate::selfaudit::HTML_CSP),
            ],
            crate::selfaudit::html(&report),
        )
            .into_response(),
        _ => axum::Json(report).into_response(),
    })
}

/// Prometheus metrics. Scrapers authenticate like any operator (any role); the labels carry no
/// identity, argument or secret.
pub(super) async fn get_metrics(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, OpError> {
    use crate::metrics::Gauge;
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading metrics")?;
    let gauge = |name, kind, help, labels: Vec<(&'static str, String)>, value: f64| Gauge {
        name,
        kind,
        help,
        labels,
        value,
    };
    let mut extra = Vec::new();
    match a.gw.store.open_approvals().await {
        Ok(open) => {
            let pending = open
                .iter()
                .filter(|r| r.status() == ApprovalStatus::Pending)
                .count();
            extra.push(gauge(
                "portcullis_approvals_pending",
                "gauge",
                "Approval requests waiting for a decision.",
                vec![],
                pending as f64,
            ));
        }
        Err(e) => tracing::warn!(error = %e, "metrics: approvals not readable"),
    }
    let (fresh, switches, mode) = a.gw.levers.state();
    extra.push(gauge(
        "portcullis_kill_switch_state_fresh",
        "gauge",
        "1 when the kill-switch state was read within its lease; 0 means every call is refused.",
        vec![],
        if fresh { 1.0 } else { 0.0 },
    ));
    for scope in crate::levers::KillScope::ALL {
        extra.push(gauge(
            "portcullis_kill_switches_engaged",
            "gauge",
            "Engaged kill switches, by scope.",
            vec![("scope", scope.as_str().to_string())],
            switches.iter().filter(|s| **s == scope).count() as f64,
        ));
    }
    for m in [
        registry::Mode::Enforce,
        registry::Mode::ReadOnly,
        registry::Mode::Shadow,
    ] {
        extra.push(gauge(
            "portcullis_mode",
            "gauge",
            "1 for the mode in force.",
            vec![("mode", m.as_str().to_string())],
            if m == mode { 1.0 } else { 0.0 },
        ));
    }
    super::upstreams::gauges(&a.gw, &mut extra);
    let audit = &a.gw.audit;
    for s in audit.sinks.iter() {
        for (result, n) in [("written", &s.written), ("failed", &s.failed)] {
            extra.push(gauge(
                "portcullis_audit_sink_events_total",
                "counter",
                "Audit events each sink took or failed to take.",
                vec![
                    ("sink", s.name.clone()),
                    ("required", s.required.to_string()),
                    ("result", result.to_string()),
                ],
                n.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ));
        }
        for (result, n) in [("ok", &s.flushes), ("failed", &s.flush_failures)] {
            extra.push(gauge(
                "portcullis_audit_sink_flushes_total",
                "counter",
                "Flushes each sink made after a write (one per write; a sink that fell behind writes what queued at once). After a failed one, calls wait for the next.",
                vec![
                    ("sink", s.name.clone()),
                    ("required", s.required.to_string()),
                    ("result", result.to_string()),
                ],
                n.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ));
        }
    }
    extra.push(gauge(
        "portcullis_audit_events_dropped_total",
        "counter",
        "Audit events not queued because the writer was full or stopped.",
        vec![],
        audit.dropped.load(std::sync::atomic::Ordering::Relaxed) as f64,
    ));
    extra.push(gauge(
        "portcullis_audit_batches_total",
        "counter",
        "Batches handed to the audit sinks: by the audit writer, or one per event a caller wrote to the audit file itself. A sink writes each with one write and one flush, or several queued ones together.",
        vec![],
        audit.batches.load(std::sync::atomic::Ordering::Relaxed) as f64,
    ));
    extra.push(gauge(
        "portcullis_sessions_active",
        "gauge",
        "Stateful MCP sessions.",
        vec![],
        a.gw.sessions.len() as f64,
    ));
    extra.push(gauge(
        "portcullis_budget_units_held",
        "gauge",
        "Budget units this process reserved in the store ahead of its calls and has not spent yet (given back within about two seconds of idleness and at shutdown).",
        vec![],
        a.gw.limits.leases.held() as f64,
    ));
    if let Some(reserve) = crate::reserve::get() {
        extra.push(gauge(
            "portcullis_runtime_reserve_asleep",
            "gauge",
            "1 while the runtime worker held in reserve is asleep; 0 once it serves, from when a caller's audit write first hung for 200 ms until the process restarts.",
            vec![],
            f64::from(u8::from(reserve.asleep())),
        ));
    }
    let body = crate::metrics::get().render(&extra);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
