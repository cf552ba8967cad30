//! What the operator page shows: the mode, the kill switch, upstreams and their tools, pending
//! approvals (a framed list that refreshes itself, so new requests appear without a reload and
//! nothing typed into the page's forms is lost), limits and budgets, keys, recent decisions and
//! the operator record.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use store::ApprovalStatus;

use super::{csrf_field, esc, page, signed_in, signed_in_as, when};
use crate::admin::{Admin, kill_state, mode_state};
use crate::operate::OpError;

/// How often the framed pending list reloads itself.
const PENDING_REFRESH_SECS: u32 = 5;

pub(super) async fn dashboard(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let (op, id, session) = match signed_in(&a, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let gw = &a.gw;
    let csrf = csrf_field(&session.csrf);
    let loaded = async {
        let kill = kill_state(gw).await?;
        let pending = gw
            .store
            .approvals(Some(ApprovalStatus::Pending), 200)
            .await
            .map_err(crate::admin::down)?;
        let recent = gw
            .store
            .approvals(None, 20)
            .await
            .map_err(crate::admin::down)?;
        let events = gw.store.events_tail(50).await.map_err(crate::admin::down)?;
        // Keys are listed to those the API lists them to: admins and auditors.
        let keys = match op.roles.admin || op.roles.auditor {
            true => Some(gw.store.list_keys().await.map_err(crate::admin::down)?),
            false => None,
        };
        let limits = crate::admin::limits::state(gw).await?;
        Ok::<_, OpError>((kill, pending, recent, events, keys, limits))
    }
    .await;
    let (kill, pending, recent, events, keys, limits) = match loaded {
        Ok(x) => x,
        Err(e) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!(
                    "<main><h1>Unavailable</h1><p>{}</p></main>",
                    esc(&e.to_string())
                ),
            );
        }
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<header><h1>Portcullis</h1><p>Signed in as <strong>{}</strong> ({})</p>{}<form method=\"post\" action=\"/ui/logout\">{csrf}<button type=\"submit\" class=\"link\">Sign out</button></form></header><main>",
        esc(&op.name),
        esc(&op.roles.names().join(", ")),
        match op.roles.admin || op.roles.auditor {
            true =>
                "<p><a id=\"self-audit-link\" href=\"/ui/self-audit\">Self-audit report</a></p>",
            false => "",
        }
    );
    if let Some((ok, msg)) = a.ui.take_flash(&id) {
        let _ = write!(
            b,
            "<p class=\"flash {}\" role=\"status\" id=\"flash\">{}</p>",
            if ok { "good" } else { "bad" },
            esc(&msg)
        );
    }

    // Mode.
    let m = mode_state(gw);
    let mode = m.get("mode").and_then(|v| v.as_str()).unwrap_or("unknown");
    let source = match m.get("source").and_then(|v| v.as_str()) {
        Some("operator") => format!(
            "set by {} ({})",
            m.get("set_by").and_then(|v| v.as_str()).unwrap_or("?"),
            m.get("reason").and_then(|v| v.as_str()).unwrap_or("")
        ),
        _ => "from the config".to_owned(),
    };
    let _ = write!(
        b,
        "<section id=\"mode\"><h2>Mode</h2><p>The gateway is in <strong class=\"mode-{m}\" id=\"current-mode\">{m}</strong> mode, {src}.</p>",
        m = esc(mode),
        src = esc(&source)
    );
    if op.roles.admin {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/ui/mode\" class=\"row\">{csrf}<label>Mode <select name=\"mode\"><option value=\"enforce\">enforce</option><option value=\"read_only\">read_only</option><option value=\"shadow\">shadow</option></select></label><label>Reason <input name=\"reason\" required maxlength=\"500\"></label><button type=\"submit\">Set mode</button></form>"
        );
    }
    b.push_str("</section>");

    // Kill switch.
    b.push_str("<section id=\"kill-switch\"><h2>Kill switch</h2>");
    let engaged = kill
        .get("engaged")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if engaged.is_empty() {
        b.push_str("<p id=\"kill-none\">No kill switch is engaged.</p>");
    } else {
        b.push_str("<div class=\"scroll\"><table id=\"kill-engaged\"><thead><tr><th>Scope</th><th>Target</th><th>Reason</th><th>By</th><th>Since</th><th></th></tr></thead><tbody>");
        for s in &engaged {
            let g = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            let at = s
                .get("changed_at_ms")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
            let release = if op.roles.admin {
                format!(
                    "<form method=\"post\" action=\"/ui/kill\" class=\"row\">{csrf}<input type=\"hidden\" name=\"scope\" value=\"{}\"><input type=\"hidden\" name=\"target\" value=\"{}\"><input type=\"hidden\" name=\"action\" value=\"release\"><input name=\"reason\" placeholder=\"reason\" required maxlength=\"500\" aria-label=\"reason for release\"><button type=\"submit\">Release</button></form>",
                    esc(&g("scope")),
                    esc(&g("target"))
                )
            } else {
                String::new()
            };
            let _ = write!(
                b,
                "<tr class=\"engaged\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{release}</td></tr>",
                esc(&g("scope")),
                esc(&g("target")),
                esc(&g("reason")),
                esc(&g("actor")),
                when(at)
            );
        }
        b.push_str("</tbody></table></div>");
    }
    if op.roles.admin {
        let mut options = String::new();
        for s in crate::levers::KillScope::ALL {
            let _ = write!(options, "<option value=\"{0}\">{0}</option>", s.as_str());
        }
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/ui/kill\" class=\"row\" id=\"kill-engage\">{csrf}<input type=\"hidden\" name=\"action\" value=\"engage\"><label>Scope <select name=\"scope\">{options}</select></label><label>Target <input name=\"target\" placeholder=\"server, server/tool, key id, team, org\"></label><label>Reason <input name=\"reason\" required maxlength=\"500\"></label><button type=\"submit\" class=\"danger\">Engage</button></form>"
        );
    }
    b.push_str("</section>");

    // Approvals.
    let _ = write!(
        b,
        "<section id=\"approvals\"><h2>Pending approvals ({})</h2>",
        pending.len()
    );
    let _ = write!(
        b,
        "<iframe id=\"pending-live\" src=\"/ui/pending\" title=\"Pending approvals, refreshed every {PENDING_REFRESH_SECS} seconds\"></iframe>"
    );
    if pending.is_empty() {
        b.push_str(
            "<p id=\"approvals-none\">Nothing was waiting for approval when this page loaded.</p>",
        );
    }
    for r in &pending {
        let _ = write!(
            b,
            "<article class=\"approval\" id=\"{id}\"><h3><code>{server}/{tool}</code> <span class=\"class-{class}\">{class}</span></h3><dl><dt>Request</dt><dd><code>{id}</code></dd><dt>Requested by</dt><dd>{who}</dd><dt>Identity</dt><dd>{principals}</dd><dt>Target</dt><dd>{target}</dd><dt>Arguments digest</dt><dd><code>{digest}</code></dd><dt>Filed</dt><dd>{created}</dd><dt>Expires</dt><dd>{expires}</dd></dl><pre class=\"preview\">{preview}</pre><p class=\"muted\">These are the complete arguments. Values shown as [redacted] are secrets hidden here, and characters that render invisibly or reorder text are written as \\uXXXX escapes; approving binds to the exact full arguments (the digest above).</p>",
            id = esc(&r.id),
            server = esc(&r.server),
            tool = esc(&r.tool),
            class = esc(&r.class),
            who = esc(&r.requester),
            principals = esc(&r.principals.join(", ")),
            target = esc(r.target.as_deref().unwrap_or("—")),
            digest = esc(r.arguments_digest.get(..16).unwrap_or(&r.arguments_digest)),
            created = when(r.created_at),
            expires = when(r.expires_at),
            preview = esc(&r.preview),
        );
        if op.roles.may_approve() {
            let _ = write!(
                b,
                "<div class=\"row\"><form method=\"post\" action=\"/ui/approvals/{id}/approve\" class=\"row\">{csrf}<input name=\"reason\" required maxlength=\"500\" placeholder=\"why\" aria-label=\"reason to approve\"><button type=\"submit\" class=\"approve\">Approve</button></form><form method=\"post\" action=\"/ui/approvals/{id}/deny\" class=\"row\">{csrf}<input name=\"reason\" required maxlength=\"500\" placeholder=\"why\" aria-label=\"reason to deny\"><button type=\"submit\" class=\"danger\">Deny</button></form></div>",
                id = esc(&r.id)
            );
        }
        b.push_str("</article>");
    }
    b.push_str("</section>");

    upstreams_section(&mut b, gw);
    super::limits::section(&mut b, &limits, op.roles.admin, &session.csrf);
    if let Some(keys) = &keys {
        keys_section(&mut b, keys);
    }

    // Recent decisions.
    b.push_str("<section id=\"recent\"><h2>Recent requests</h2><div class=\"scroll\"><table><thead><tr><th>Request</th><th>Tool</th><th>Status</th><th>Decided by</th><th>Why</th></tr></thead><tbody>");
    for r in &recent {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td><code>{}/{}</code></td><td class=\"status-{s}\">{s}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.id),
            esc(&r.server),
            esc(&r.tool),
            esc(r.decided_by.as_deref().unwrap_or("—")),
            esc(r.reason.as_deref().unwrap_or("")),
            s = esc(r.status),
        );
    }
    b.push_str("</tbody></table></div></section>");

    // Operator record.
    b.push_str("<section id=\"audit\"><h2>Operator record (latest 50)</h2><div class=\"scroll\"><table><thead><tr><th>#</th><th>When</th><th>Event</th><th>Who</th><th>Detail</th></tr></thead><tbody>");
    for e in &events {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e.seq,
            when(e.at),
            esc(&e.kind),
            esc(&e.actor),
            esc(&e.detail.to_string())
        );
    }
    b.push_str("</tbody></table></div><p class=\"muted\">Export: <code>GET /admin/events?format=ndjson</code></p></section></main>");
    page(StatusCode::OK, "Operator", &b)
}

/// Each configured upstream with its state, and each allowlisted tool with what clients get.
fn upstreams_section(b: &mut String, gw: &crate::gateway::Gateway) {
    let live = gw.live();
    b.push_str("<section id=\"upstreams\"><h2>Upstreams</h2><div class=\"scroll\"><table id=\"upstream-table\"><thead><tr><th>Server</th><th>Source</th><th>State</th><th>Protocol</th><th>Tools served</th><th>Circuit</th><th>Restarts</th></tr></thead><tbody>");
    for server in &live.registry.servers {
        let up = live.upstreams.get(&server.name);
        let connected = up.is_some_and(|u| u.is_connected());
        let served = up.map(|u| u.tools().len()).unwrap_or(0);
        let source = match &server.source {
            // As records show URLs: no credentials in userinfo or the query.
            registry::ServerSource::Http { endpoints, .. } => endpoints
                .iter()
                .map(|e| crate::redact::uri_for_record(&e.url))
                .collect::<Vec<_>>()
                .join(", "),
            registry::ServerSource::Command(c) => c.artifact.describe(),
            registry::ServerSource::Builtin(_) => "built into the gateway".to_owned(),
        };
        let circuit = match (up.map(|u| u.circuit()), server.resilience.breaker) {
            (_, None) => "off".to_owned(),
            (None, _) => "—".to_owned(),
            (Some(c), Some(_)) => match c.retry_in {
                Some(wait) => format!("open (next try in {}s)", wait.as_secs().max(1)),
                None => c.phase.as_str().replace('_', "-"),
            },
        };
        let state = match (connected, up.and_then(|u| u.last_error())) {
            (true, _) => "connected".to_owned(),
            (false, Some(why)) => format!("not connected: {why}"),
            (false, None) => "not connected".to_owned(),
        };
        let _ = write!(
            b,
            "<tr data-server=\"{name}\" class=\"{state_class}\"><td><code>{name}</code></td><td><code>{source}</code></td><td>{state}</td><td>{protocol}</td><td>{served} of {listed}</td><td class=\"circuit\">{circuit}</td><td>{restarts}</td></tr>",
            name = esc(&server.name),
            source = esc(&source),
            state_class = if connected { "up" } else { "down" },
            state = esc(&state),
            circuit = esc(&circuit),
            restarts = up.map_or(0, |u| u.restarts()),
            protocol = esc(&up
                .and_then(|u| u.protocol())
                .unwrap_or_else(|| "—".to_owned())),
            listed = server.tools.len(),
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str("<h3>Allowlisted tools</h3><div class=\"scroll\"><table id=\"tool-table\"><thead><tr><th>Tool</th><th>Class</th><th>State</th></tr></thead><tbody>");
    let mut quarantined = 0;
    for server in &live.registry.servers {
        let up = live.upstreams.get(&server.name);
        let offered = up.map(|u| u.tools()).unwrap_or_default();
        let connected = up.is_some_and(|u| u.is_connected());
        for (tool, entry) in &server.tools {
            let served = offered.named(tool);
            let held = up.and_then(|u| u.quarantined(tool));
            let class = match served {
                Some(o) if o.class != entry.class => format!(
                    "{} (configured {}; raised by the upstream's annotations)",
                    o.class, entry.class
                ),
                _ => entry.class.to_string(),
            };
            let (state_class, state) = match (&held, served, connected) {
                (Some(q), _, _) => {
                    quarantined += 1;
                    ("quarantined", format!("quarantined: {}", q.why))
                }
                (None, Some(_), _) => ("served", "served".to_owned()),
                (None, None, true) => ("missing", "not offered by the upstream".to_owned()),
                (None, None, false) => (
                    "missing",
                    "unavailable: the upstream is not connected".to_owned(),
                ),
            };
            let _ = write!(
                b,
                "<tr class=\"tool-{state_class}\"><td><code>{}/{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&server.name),
                esc(tool),
                esc(&class),
                esc(&state)
            );
        }
    }
    b.push_str("</tbody></table></div>");
    if quarantined > 0 {
        let config = gw
            .reloads
            .file()
            .map_or_else(|| "FILE".to_owned(), |p| p.display().to_string());
        let _ = write!(
            b,
            "<p id=\"repin\">A quarantined tool is held back for the reason its State says. Where its definition is not the pinned one, review the change and re-pin on the gateway's host: <code>portcullis pin --config {}</code> (it shows what changed, field by field, and asks for <code>--confirm SERVER/TOOL</code> where text addresses the model); the running gateway reloads the re-pinned file by itself. A tool that endpoints list differently, or that one lists twice, is served again only once the upstream is fixed.</p>",
            esc(&config)
        );
    }
    b.push_str("</section>");
}

/// Active keys by name, with where each sits in the identity model.
fn keys_section(b: &mut String, keys: &[store::KeyRecord]) {
    let active: Vec<_> = keys.iter().filter(|k| k.revoked_at.is_none()).collect();
    let _ = write!(
        b,
        "<section id=\"keys\"><h2>Keys ({} active)</h2><div class=\"scroll\"><table id=\"key-table\"><thead><tr><th>Name</th><th>Id</th><th>Role</th><th>Scope</th><th>Issued</th></tr></thead><tbody>",
        active.len()
    );
    for k in &active {
        let mut scope = k.scope.labels();
        if let Some(parent) = &k.scope.parent {
            scope.push(format!("minted by:{parent}"));
        }
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&k.name),
            esc(&k.id),
            k.role.as_str(),
            esc(&scope.join(" ")),
            when(k.created_at.saturating_mul(1000))
        );
    }
    let _ = write!(
        b,
        "</tbody></table></div><p class=\"muted\">{} revoked key(s) not shown. Issue and revoke with <code>portcullis keys</code> or <code>/admin/keys</code>.</p></section>",
        keys.len() - active.len()
    );
}

/// The pending list the dashboard frames: it reloads itself, so a new request appears without
/// the operator reloading the page (and losing what they typed into its forms).
pub(super) async fn pending(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    // Not the operator's activity: the frame polls by itself.
    match signed_in_as(&a, &headers, false).await {
        Ok(_) => {}
        Err(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
            return framed(
                "<p class=\"flash bad\">The operator state cannot be read now; this list comes back when it can.</p>",
            );
        }
        // The sign-in page may not be framed: say so in the frame, and leave from it.
        Err(_) => {
            return framed(
                "<p>The session ended. <a href=\"/ui/login\" target=\"_top\">Sign in again</a>.</p>",
            );
        }
    }
    let pending = match a
        .gw
        .store
        .approvals(Some(ApprovalStatus::Pending), 200)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            return framed(&format!(
                "<p class=\"flash bad\">The store cannot be read: {}</p>",
                esc(&e.to_string())
            ));
        }
    };
    let mut b = format!(
        "<p id=\"pending-count\"><strong>{}</strong> pending now <span class=\"muted\">(updated every {PENDING_REFRESH_SECS} s)</span></p>",
        pending.len()
    );
    if !pending.is_empty() {
        b.push_str("<ul id=\"pending-list\">");
        for r in &pending {
            let _ = write!(
                b,
                "<li data-id=\"{id}\"><a href=\"/ui/#{id}\" target=\"_top\"><code>{server}/{tool}</code></a> <span class=\"class-{class}\">{class}</span> by {who}, filed {filed}</li>",
                id = esc(&r.id),
                server = esc(&r.server),
                tool = esc(&r.tool),
                class = esc(&r.class),
                who = esc(&r.requester),
                filed = when(r.created_at),
            );
        }
        b.push_str("</ul><p class=\"muted\">Open one to review its arguments and decide.</p>");
    }
    framed(&b)
}

/// A page made to sit in the dashboard's frame: same-origin framing only, and a refresh.
fn framed(body: &str) -> Response {
    let mut res = page(StatusCode::OK, "Pending approvals", body);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{PENDING_REFRESH_SECS}\"><title>Pending approvals · Portcullis</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body class=\"framed\">{body}</body></html>"
    );
    *res.body_mut() = axum::body::Body::from(html);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'none'; frame-ancestors 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
