//! The operator page's limits: each `limits:` entry, who is running calls under its cap, and
//! each principal's budget in the current window; an admin resets or raises a budget here.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{back, csrf_field, esc};
use crate::admin::Admin;

/// The section, from `/admin/limits`' own answer (`admin::limits::state`).
pub(super) fn section(b: &mut String, state: &Value, admin: bool, csrf: &str) {
    let none = Vec::new();
    let entries = state
        .get("limits")
        .and_then(Value::as_array)
        .unwrap_or(&none);
    let _ = write!(
        b,
        "<section id=\"limits\"><h2>Limits and budgets ({})</h2>",
        entries.len()
    );
    if entries.is_empty() {
        b.push_str("<p id=\"limits-none\">No <code>limits:</code> entries: calls are bounded only by each tool's own <code>rate</code>.</p></section>");
        return;
    }
    b.push_str("<div class=\"scroll\"><table id=\"limit-table\"><thead><tr><th>Entry</th><th>Applies to</th><th>Rate</th><th>Concurrency</th><th>Budget</th><th>Usage this window</th></tr></thead><tbody>");
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "—".to_owned(),
    };
    for e in entries {
        let scope = format!(
            "{} on {}/{}",
            text(e.get("match")),
            e.get("server").and_then(Value::as_str).unwrap_or("*"),
            e.get("tool").and_then(Value::as_str).unwrap_or("*"),
        );
        let rate = match (
            e.get("rate").and_then(Value::as_str),
            e.get("burst").and_then(Value::as_u64),
        ) {
            (Some(r), Some(burst)) => format!("{r} (burst {burst})"),
            (Some(r), None) => r.to_owned(),
            _ => "—".to_owned(),
        };
        let running: Vec<String> = e
            .get("running")
            .and_then(Value::as_array)
            .unwrap_or(&none)
            .iter()
            .map(|r| format!("{}: {}", text(r.get("principal")), text(r.get("running"))))
            .collect();
        let concurrency = match e.get("concurrency").and_then(Value::as_u64) {
            Some(cap) if running.is_empty() => format!("{cap} at once (none running)"),
            Some(cap) => format!("{cap} at once; running: {}", running.join(", ")),
            None => "—".to_owned(),
        };
        let (budget, usage) = match e.get("budget") {
            Some(bu) => {
                let used: Vec<String> = bu
                    .get("principals")
                    .and_then(Value::as_array)
                    .unwrap_or(&none)
                    .iter()
                    .map(|p| {
                        format!(
                            "{}: {} of {} used, {} left",
                            text(p.get("principal")),
                            text(p.get("used")),
                            text(p.get("allowed")),
                            text(p.get("remaining")),
                        )
                    })
                    .collect();
                let resets = bu
                    .get("resets_at_ms")
                    .and_then(Value::as_i64)
                    .map_or_else(String::new, super::when);
                (
                    format!(
                        "{} units per {} (window {}, renews {resets})",
                        text(bu.get("units")),
                        text(bu.get("per")),
                        text(bu.get("window"))
                    ),
                    if used.is_empty() {
                        "nothing spent".to_owned()
                    } else {
                        used.join("; ")
                    },
                )
            }
            None => ("—".to_owned(), "—".to_owned()),
        };
        let _ = write!(
            b,
            "<tr><td><code>{}</code><br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(e.get("entry"))),
            esc(&text(e.get("at"))),
            esc(&scope),
            esc(&rate),
            esc(&concurrency),
            esc(&budget),
            esc(&usage),
        );
    }
    b.push_str("</tbody></table></div>");
    let budgets: Vec<String> = entries
        .iter()
        .filter(|e| e.get("budget").is_some())
        .map(|e| text(e.get("entry")))
        .collect();
    if admin && !budgets.is_empty() {
        let options: String = budgets
            .iter()
            .map(|e| format!("<option value=\"{0}\">{0}</option>", esc(e)))
            .collect();
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/ui/limits\" class=\"row\" id=\"budget-adjust\">{csrf}<label>Budget <select name=\"entry\">{options}</select></label><label>Principal <input name=\"principal\" required placeholder=\"team:research\"></label><label>Raise by <input name=\"raise\" type=\"number\" min=\"0\" value=\"0\"></label><label><input type=\"checkbox\" name=\"reset\" value=\"on\"> Reset usage</label><label>Reason <input name=\"reason\" required maxlength=\"500\"></label><button type=\"submit\">Change budget</button></form>",
            csrf = csrf_field(csrf),
        );
    }
    b.push_str("</section>");
}

#[derive(Deserialize)]
pub(super) struct AdjustForm {
    csrf: String,
    entry: String,
    principal: String,
    #[serde(default)]
    raise: String,
    #[serde(default)]
    reset: Option<String>,
    reason: String,
}

pub(super) async fn adjust(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (op, id, form) = match super::posted::<AdjustForm>(&a, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let raise = match form.raise.trim() {
        "" => Ok(0),
        n => n.parse::<u64>(),
    };
    let outcome = match raise {
        Ok(raise) => {
            let change = json!({
                "entry": form.entry, "principal": form.principal.trim(),
                "reset": form.reset.is_some(), "raise": raise, "reason": form.reason,
            });
            match serde_json::from_value(change) {
                Ok(change) => crate::admin::limits::adjust(&a.gw, &op, change).await,
                Err(e) => Err(crate::operate::OpError::BadRequest(e.to_string())),
            }
        }
        Err(_) => Err(crate::operate::OpError::BadRequest(
            "`Raise by` must be a whole number".into(),
        )),
    };
    let msg = match &outcome {
        Ok(v) => format!(
            "Budget {} for {}: {} of {} used, {} left.",
            v.get("entry").and_then(Value::as_str).unwrap_or("?"),
            v.get("principal").and_then(Value::as_str).unwrap_or("?"),
            v.get("used").and_then(Value::as_i64).unwrap_or(0),
            v.get("allowed").and_then(Value::as_i64).unwrap_or(0),
            v.get("remaining").and_then(Value::as_i64).unwrap_or(0),
        ),
        Err(e) => format!("Budget not changed: {e}"),
    };
    a.ui.flash(&id, outcome.is_ok(), msg);
    back()
}

impl super::Form for AdjustForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
