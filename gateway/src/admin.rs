//! The admin listener: the operator API under `/admin/` and the web UI under `/ui/`.
//!
//! It is a separate listener (default `127.0.0.1:8081`) with its own credentials: operator keys
//! (`admin`, `approver`, `auditor`) or, when an issuer maps a `roles` claim, tokens from that
//! issuer whose audience is this listener's URL. Client keys never work here. Every request's
//! Host must name this listener (DNS rebinding), and a browser's Origin must be its own.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use store::ApprovalStatus;

use crate::auth::{Issuers, unix_now};
use crate::gateway::Gateway;
use crate::operate::{OpError, Operator, Roles};

mod limits;
mod records;
mod ui;
mod upstreams;

/// Largest request body on the admin listener.
const MAX_BODY: usize = 64 * 1024;

/// The admin listener's state.
pub(crate) struct Admin {
    pub(crate) gw: Arc<Gateway>,
    hosts: Vec<String>,
    issuers: Issuers,
    pub(crate) ui: ui::Sessions,
}

impl Admin {
    pub(crate) fn new(gw: Arc<Gateway>, bound: std::net::SocketAddr) -> Admin {
        let port = bound.port();
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() || bound.ip().is_unspecified() {
            hosts.extend([
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]);
        }
        // This listener's URL is the audience of operator tokens.
        let url = Admin::url_for(bound);
        Admin {
            issuers: Issuers::for_admin(&gw.registry().access.oidc, &url),
            gw,
            hosts,
            ui: ui::Sessions::default(),
        }
    }

    /// `http://<address>` of a listener bound at `bound` (loopback for an unspecified address).
    pub(crate) fn url_for(bound: std::net::SocketAddr) -> String {
        match bound.ip().is_unspecified() {
            true => format!("http://127.0.0.1:{}", bound.port()),
            false => format!("http://{bound}"),
        }
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// A browser's `Origin`, when sent, must be this listener (the UI's `Referrer-Policy:
    /// same-origin` keeps browsers sending it rather than `null`).
    pub(crate) fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
            None => true,
            Some(Ok(o)) => self.hosts.iter().any(|h| {
                o.eq_ignore_ascii_case(&format!("http://{h}"))
                    || o.eq_ignore_ascii_case(&format!("https://{h}"))
            }),
            Some(Err(_)) => false,
        }
    }

    /// The operator a bearer credential names.
    pub(crate) async fn operator_from_secret(&self, secret: &str) -> Result<Operator, OpError> {
        if secret.starts_with("pcl_") {
            let record = self
                .gw
                .store
                .verify_key(secret)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "admin credential could not be checked");
                    OpError::Unavailable("credentials cannot be checked right now".into())
                })?
                .ok_or(OpError::Unauthorized)?;
            if !record.role.is_operator() {
                return Err(OpError::Forbidden(
                    "client keys do not work on the admin listener; use an admin, approver or auditor key".into(),
                ));
            }
            return Ok(Operator {
                subject: format!("key:{}", record.id),
                name: record.name.clone(),
                user: record.scope.user.clone(),
                roles: Roles::of(record.role),
            });
        }
        if !self.issuers.any() {
            return Err(OpError::Unauthorized);
        }
        let v = self
            .issuers
            .verify(secret, unix_now())
            .await
            .map_err(|e| match e {
                crate::auth::OidcError::Unavailable(why) => {
                    tracing::error!(%why, "operator token could not be checked");
                    OpError::Unavailable("credentials cannot be checked right now".into())
                }
                other => {
                    tracing::info!(reason = %other, "operator token refused");
                    OpError::Unauthorized
                }
            })?;
        let roles = Roles::from_names(v.roles.iter().map(String::as_str));
        if !roles.any() {
            return Err(OpError::Forbidden(
                "the token carries no operator role (admin, approver or auditor)".into(),
            ));
        }
        let user = match v.identity.binding(policy::Level::User) {
            policy::Binding::Resolved(names) => names.first().cloned(),
            _ => None,
        };
        let name = v.subject.rsplit('#').next().unwrap_or_default().to_owned();
        Ok(Operator {
            user: user.or_else(|| Some(name.clone())),
            subject: v.subject,
            name,
            roles,
        })
    }

    async fn operator(&self, headers: &HeaderMap) -> Result<Operator, OpError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let secret = crate::auth::bearer(header).ok_or(OpError::Unauthorized)?;
        self.operator_from_secret(secret).await
    }
}

/// Build the admin listener's router.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/kill-switch", get(get_kill).post(post_kill))
        .route("/admin/mode", get(get_mode).post(post_mode))
        .route("/admin/approvals", get(list_approvals))
        .route("/admin/approvals/{id}", get(get_approval))
        .route("/admin/approvals/{id}/{verdict}", post(post_verdict))
        .route(
            "/admin/keys",
            get(records::list_keys).post(records::post_key),
        )
        .route("/admin/keys/{id}", delete(records::delete_key))
        .route("/admin/limits", get(get_limits))
        .route("/admin/upstreams", get(upstreams::get))
        .route("/admin/limits/adjust", post(post_limits_adjust))
        .route("/admin/events", get(records::get_events))
        .route("/admin/audit", get(records::get_audit))
        .route("/admin/self-audit", get(records::get_self_audit))
        .route("/metrics", get(records::get_metrics))
        .route("/healthz", get(|| async { "ok" }))
        // Browsers ask for it; answering spares the console a 404.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), guard))
        .with_state(admin)
}

/// Host and Origin checks before any route.
async fn guard(
    State(admin): State<Arc<Admin>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A scrape of /metrics with a bearer credential and no cookie may name any Host: a
    // Prometheus in the cluster names the pod's address. A browser page rebound to this
    // listener has no such credential to send, and the credential is checked as ever.
    let headers = req.headers();
    let scrape = req.uri().path() == "/metrics"
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "))
        && !headers.contains_key(header::COOKIE);
    if !scrape && !admin.host_allowed(headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "Host does not name this admin listener",
        );
    }
    if !admin.origin_allowed(req.headers()) {
        return problem(StatusCode::FORBIDDEN, "cross-origin requests are refused");
    }
    // The body is read here, within the size limit and the body deadline, so that a client
    // trickling one cannot hold an admin connection (and so the kill switch) for long.
    let (parts, body) = req.into_parts();
    let deadline = admin.gw.registry().settings.body_timeout;
    let body = match crate::listen::read_body(body, MAX_BODY, deadline).await {
        Ok(b) => b,
        Err(crate::listen::BodyError::TooLarge) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
        Err(crate::listen::BodyError::Slow) => {
            return problem(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within http.body_timeout",
            );
        }
        Err(crate::listen::BodyError::Broken) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
    };
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// A JSON error body with the status it travels with.
pub(crate) fn problem(status: StatusCode, message: &str) -> Response {
    let mut res = (
        status,
        axum::Json(json!({ "error": message, "status": status.as_u16() })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
    }
    res
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = match &self {
            OpError::Unauthorized => "an operator credential is required (Authorization: Bearer <admin, approver or auditor key>)".to_owned(),
            other => other.to_string(),
        };
        problem(status, &msg)
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, OpError> {
    serde_json::from_slice(body).map_err(|e| OpError::BadRequest(format!("invalid JSON body: {e}")))
}

fn require(op: &Operator, ok: bool, what: &str) -> Result<(), OpError> {
    match ok {
        true => Ok(()),
        false => Err(OpError::Forbidden(format!(
            "{what} needs a role this credential does not hold (it has: {})",
            op.roles.names().join(", ")
        ))),
    }
}

// === kill switch ===

pub(crate) async fn kill_state(gw: &Gateway) -> Result<Value, OpError> {
    let rows = gw.store.switches().await.map_err(down)?;
    let engaged: Vec<Value> = rows.iter().filter(|r| r.engaged).map(switch_json).collect();
    Ok(json!({
        "engaged": engaged,
        "switches": rows.iter().map(switch_json).collect::<Vec<_>>(),
        "state_age_ms": gw.levers.state_age().map(|d| d.as_millis() as u64),
        "lease_ms": gw.levers.lease().as_millis() as u64,
        "scopes": crate::levers::KillScope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    }))
}

fn switch_json(r: &store::SwitchRow) -> Value {
    json!({
        "scope": r.scope,
        "target": r.target,
        "engaged": r.engaged,
        "reason": r.reason,
        "actor": r.actor,
        "changed_at_ms": r.changed_at,
    })
}

fn down(e: store::StoreError) -> OpError {
    tracing::error!(error = %e, "admin read failed: store unavailable");
    OpError::Unavailable("the store cannot be reached".into())
}

async fn get_kill(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading the kill switch")?;
    Ok(axum::Json(kill_state(&a.gw).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    scope: String,
    #[serde(default)]
    target: Option<String>,
    engaged: bool,
    reason: String,
}

async fn post_kill(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    let b: KillBody = parse_body(&body)?;
    let (row, voided) = crate::operate::set_kill(
        &a.gw,
        &op,
        &b.scope,
        b.target.as_deref(),
        b.engaged,
        &b.reason,
    )
    .await?;
    Ok(
        axum::Json(json!({ "switch": switch_json(&row), "voided_approvals": voided }))
            .into_response(),
    )
}

// === mode ===

pub(crate) fn mode_state(gw: &Gateway) -> Value {
    let (mode, row) = gw.levers.mode();
    match row {
        Some(r) => json!({
            "mode": mode.as_str(),
            "source": "operator",
            "config_mode": gw.levers.config_mode().as_str(),
            "set_by": r.actor,
            "reason": r.reason,
            "changed_at_ms": r.changed_at,
        }),
        None => json!({ "mode": mode.as_str(), "source": "config", "config_mode": mode.as_str() }),
    }
}

async fn get_mode(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading the mode")?;
    Ok(axum::Json(mode_state(&a.gw)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
    reason: String,
}

async fn post_mode(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    let b: ModeBody = parse_body(&body)?;
    crate::operate::set_mode(&a.gw, &op, &b.mode, &b.reason).await?;
    Ok(axum::Json(mode_state(&a.gw)).into_response())
}

// === limits ===

async fn get_limits(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading limits and budgets")?;
    Ok(axum::Json(limits::state(&a.gw).await?).into_response())
}

async fn post_limits_adjust(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    let b = parse_body(&body)?;
    Ok(axum::Json(limits::adjust(&a.gw, &op, b).await?).into_response())
}

// === approvals ===

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

async fn list_approvals(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading approvals")?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            OpError::BadRequest(format!(
                "unknown status `{s}`; use pending, approved, denied, used, voided, expired or all"
            ))
        })?),
    };
    let list =
        a.gw.store
            .approvals(status, q.limit.unwrap_or(100).min(1000))
            .await
            .map_err(down)?;
    Ok(axum::Json(json!({ "approvals": list })).into_response())
}

async fn get_approval(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, OpError> {
    let op = a.operator(&headers).await?;
    require(&op, op.roles.any(), "reading approvals")?;
    let rec =
        a.gw.store
            .approval(&id)
            .await
            .map_err(down)?
            .ok_or_else(|| OpError::NotFound(format!("no approval request `{id}`")))?;
    Ok(axum::Json(rec).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    reason: String,
}

async fn post_verdict(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Path((id, verdict)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, OpError> {
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(OpError::NotFound("use /approve or /deny".into())),
    };
    let op = a.operator(&headers).await?;
    let b: VerdictBody = parse_body(&body)?;
    let rec = crate::operate::decide_approval(&a.gw, &op, &id, approve, &b.reason).await?;
    Ok(axum::Json(rec).into_response())
}

// === keys ===
