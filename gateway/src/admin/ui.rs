//! The operator web page at `/ui/`: sign-in, sessions and the forms that act (approvals, kill
//! switch, mode; budgets in `limits`); `dashboard` renders what the page shows.
//!
//! Server-rendered HTML with no scripts and no external assets, under a strict Content Security
//! Policy. Sign-in takes an operator key and opens a session held in this process (an
//! `HttpOnly`, `SameSite=Strict` cookie); every form carries the session's CSRF token, and the
//! key is re-checked on every request, so revoking it ends the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::Admin;
use crate::operate::{OpError, Operator};

mod dashboard;
mod limits;

const COOKIE: &str = "portcullis_ui";
const IDLE: Duration = Duration::from_secs(30 * 60);
const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
const MAX_SESSIONS: usize = 1000;
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const STYLE: &str = include_str!("ui.css");

/// Signed-in browser sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, UiSession>>,
}

#[derive(Clone)]
struct UiSession {
    /// The credential, re-checked on every request.
    secret: String,
    csrf: String,
    created: Instant,
    seen: Instant,
    flash: Option<(bool, String)>,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    fn open(&self, secret: String) -> Option<(String, String)> {
        let mut map = self.map.lock().ok()?;
        map.retain(|_, s| s.seen.elapsed() < IDLE && s.created.elapsed() < ABSOLUTE);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        map.insert(
            id.clone(),
            UiSession {
                secret,
                csrf: csrf.clone(),
                created: now,
                seen: now,
                flash: None,
            },
        );
        Some((id, csrf))
    }

    /// The live session `id`; the operator's activity keeps it from idling out.
    fn get(&self, id: &str) -> Option<UiSession> {
        self.lookup(id, true)
    }

    /// The live session `id`, without counting as activity: what a page fetches by itself
    /// (the self-refreshing pending list) must not keep an unattended session open.
    fn peek(&self, id: &str) -> Option<UiSession> {
        self.lookup(id, false)
    }

    fn lookup(&self, id: &str, touch: bool) -> Option<UiSession> {
        let mut map = self.map.lock().ok()?;
        let live = map
            .get(id)
            .is_some_and(|s| s.seen.elapsed() < IDLE && s.created.elapsed() < ABSOLUTE);
        if !live {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        if touch {
            s.seen = Instant::now();
        }
        Some(s.clone())
    }

    fn flash(&self, id: &str, ok: bool, message: String) {
        if let Ok(mut map) = self.map.lock()
            && let Some(s) = map.get_mut(id)
        {
            s.flash = Some((ok, message));
        }
    }

    fn take_flash(&self, id: &str) -> Option<(bool, String)> {
        self.map.lock().ok()?.get_mut(id)?.flash.take()
    }

    fn close(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(dashboard::dashboard))
        .route("/ui/pending", get(dashboard::pending))
        .route("/ui/style.css", get(style))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/approvals/{id}/{verdict}", post(verdict))
        .route("/ui/kill", post(kill))
        .route("/ui/mode", post(mode))
        .route("/ui/limits", post(limits::adjust))
        .route("/ui/self-audit", get(self_audit))
}

/// The self-audit report for a signed-in admin or auditor: the same page as
/// `/admin/self-audit?format=html`, made now against this process.
async fn self_audit(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let (op, _, _) = match signed_in(&a, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !(op.roles.admin || op.roles.auditor) {
        return page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "<main><h1>Forbidden</h1><p>The self-audit is for admins and auditors.</p></main>",
        );
    }
    let report = crate::selfaudit::live_report(&a.gw, &op.subject).await;
    let mut res = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::selfaudit::html(&report),
    )
        .into_response();
    secure_headers(res.headers_mut());
    // The report is one self-contained page: its only style is inline.
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::selfaudit::HTML_CSP),
    );
    res
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · Portcullis</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body>{body}</body></html>",
        esc(title)
    );
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    secure_headers(res.headers_mut());
    res
}

pub(crate) use crate::selfaudit::esc;

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn to_login() -> Response {
    let mut res = Redirect::to("/ui/login").into_response();
    secure_headers(res.headers_mut());
    res
}

/// The signed-in operator, with the session id and its CSRF token.
async fn signed_in(
    a: &Admin,
    headers: &HeaderMap,
) -> Result<(Operator, String, UiSession), Response> {
    signed_in_as(a, headers, true).await
}

/// As [`signed_in`]; `touch: false` for requests the page makes by itself, which are not the
/// operator's activity.
async fn signed_in_as(
    a: &Admin,
    headers: &HeaderMap,
    touch: bool,
) -> Result<(Operator, String, UiSession), Response> {
    let id = cookie(headers).ok_or_else(to_login)?;
    let session = match touch {
        true => a.ui.get(&id),
        false => a.ui.peek(&id),
    }
    .ok_or_else(to_login)?;
    match a.operator_from_secret(&session.secret).await {
        Ok(op) => Ok((op, id, session)),
        Err(OpError::Unavailable(m)) => Err(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("<main><h1>Unavailable</h1><p>{}</p></main>", esc(&m)),
        )),
        Err(_) => {
            a.ui.close(&id);
            Err(to_login())
        }
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STYLE,
    )
        .into_response()
}

fn login_form(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"flash bad\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<main class=\"narrow\"><h1>Portcullis operator sign-in</h1>{err}<form method=\"post\" action=\"/ui/login\"><label for=\"key\">Operator key (admin, approver or auditor)</label><input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" required><button type=\"submit\">Sign in</button></form><p class=\"muted\">Client keys do not work here. Issue an operator key on the gateway's host with <code>portcullis keys create --config portcullis.yaml --name my-admin --role admin --user YOUR-NAME</code> (roles: admin, approver, auditor; admins and approvers name the person with <code>--user</code>).</p></main>"
    )
}

async fn login_page() -> Response {
    page(StatusCode::OK, "Sign in", &login_form(None))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    if !from_this_page(&headers) {
        return csrf_refused();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in",
            &login_form(Some("the form was malformed")),
        );
    };
    let secret = form.key.trim().to_owned();
    match a.operator_from_secret(&secret).await {
        Ok(op) => {
            let Some((id, _)) = a.ui.open(secret) else {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign in",
                    &login_form(Some("too many open sessions; try again later")),
                );
            };
            tracing::info!(operator = %op.actor(), "operator signed in to the web UI");
            let _ =
                a.gw.store
                    .record_event("ui.sign_in", &op.actor(), &serde_json::json!({}))
                    .await;
            let mut res = Redirect::to("/ui/").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
                ABSOLUTE.as_secs()
            )) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            secure_headers(res.headers_mut());
            res
        }
        Err(OpError::Unavailable(m)) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign in",
            &login_form(Some(&m)),
        ),
        Err(OpError::Forbidden(m)) => page(StatusCode::FORBIDDEN, "Sign in", &login_form(Some(&m))),
        Err(_) => page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_form(Some("that key is not a live operator key")),
        ),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

/// A form post must say it comes from this page: browsers send `Origin` (checked against this
/// listener by the router's guard) or `Sec-Fetch-Site: same-origin` on every form post. A post
/// carrying neither is not from a browser on this page, so it is refused (login CSRF included).
fn from_this_page(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin")
}

fn csrf_ok(session: &UiSession, presented: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn csrf_refused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        "<main><h1>Refused</h1><p>The form's security token is missing or stale. Go back to <a href=\"/ui/\">the dashboard</a> and try again.</p></main>",
    )
}

async fn logout(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    if !from_this_page(&headers) {
        return csrf_refused();
    }
    let (op, id, session) = match signed_in(&a, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ok =
        serde_urlencoded::from_bytes::<CsrfOnly>(&body).is_ok_and(|f| csrf_ok(&session, &f.csrf));
    if !ok {
        return csrf_refused();
    }
    a.ui.close(&id);
    tracing::info!(operator = %op.actor(), "operator signed out of the web UI");
    let mut res = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// A form posted from this page by a signed-in operator: who, the session id, and the form,
/// once its origin and CSRF token hold (a form that does not parse is refused like a stale one).
trait Form: serde::de::DeserializeOwned {
    fn csrf(&self) -> &str;
}

async fn posted<F: Form>(
    a: &Admin,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Operator, String, F), Response> {
    if !from_this_page(headers) {
        return Err(csrf_refused());
    }
    let (op, id, session) = signed_in(a, headers).await?;
    let form = serde_urlencoded::from_bytes::<F>(body).map_err(|_| csrf_refused())?;
    if !csrf_ok(&session, form.csrf()) {
        return Err(csrf_refused());
    }
    Ok((op, id, form))
}

#[derive(Deserialize)]
struct VerdictForm {
    csrf: String,
    reason: String,
}

async fn verdict(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Path((approval, verdict)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (op, id, form) = match posted::<VerdictForm>(&a, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<main><h1>Not found</h1></main>",
            );
        }
    };
    let outcome =
        crate::operate::decide_approval(&a.gw, &op, &approval, approve, &form.reason).await;
    let msg = match &outcome {
        Ok(r) => format!(
            "Request {} {}.",
            r.id,
            if approve { "approved" } else { "denied" }
        ),
        Err(e) => format!("Request {approval} not decided: {e}"),
    };
    a.ui.flash(&id, outcome.is_ok(), msg);
    back()
}

#[derive(Deserialize)]
struct KillForm {
    csrf: String,
    scope: String,
    #[serde(default)]
    target: String,
    reason: String,
    action: String,
}

async fn kill(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    let (op, id, form) = match posted::<KillForm>(&a, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let engaged = form.action == "engage";
    let outcome = crate::operate::set_kill(
        &a.gw,
        &op,
        &form.scope,
        Some(&form.target),
        engaged,
        &form.reason,
    )
    .await;
    let what = match form.target.trim() {
        "" => form.scope.clone(),
        t => format!("{} `{t}`", form.scope),
    };
    let msg = match &outcome {
        Ok((_, voided)) if engaged => {
            format!("Kill switch engaged for {what}; {voided} pending approval(s) voided.")
        }
        Ok(_) => format!("Kill switch released for {what}."),
        Err(e) => format!("Kill switch not changed: {e}"),
    };
    a.ui.flash(&id, outcome.is_ok(), msg);
    back()
}

#[derive(Deserialize)]
struct ModeForm {
    csrf: String,
    mode: String,
    reason: String,
}

async fn mode(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    let (op, id, form) = match posted::<ModeForm>(&a, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let outcome = crate::operate::set_mode(&a.gw, &op, &form.mode, &form.reason).await;
    let msg = match &outcome {
        Ok(r) => format!("Mode is now {}.", r.mode),
        Err(e) => format!("Mode not changed: {e}"),
    };
    a.ui.flash(&id, outcome.is_ok(), msg);
    back()
}

fn back() -> Response {
    let mut res = Redirect::to("/ui/").into_response();
    *res.status_mut() = StatusCode::SEE_OTHER;
    secure_headers(res.headers_mut());
    res
}

fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::clock::civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

#[cfg(test)]
mod tests;

impl Form for VerdictForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Form for KillForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Form for ModeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
