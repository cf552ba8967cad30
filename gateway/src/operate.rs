//! Operator actions, shared by the admin API, the web UI and (through the API) the CLI.
//!
//! Every action checks the operator's role, is recorded in the operator record with the
//! operator's identity before it takes effect (an action that cannot be recorded is not taken),
//! and is logged.

use std::fmt;

use registry::Mode;
use serde_json::json;
use store::{ApprovalRecord, DecideError, KeyRole, ModeRow, SwitchRow};

use crate::gateway::Gateway;
use crate::levers::{KillScope, SCOPES, Switch};

/// Longest reason accepted.
const MAX_REASON: usize = 500;

/// What an operator may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Roles {
    pub(crate) admin: bool,
    pub(crate) approver: bool,
    pub(crate) auditor: bool,
}

impl Roles {
    pub(crate) fn of(role: KeyRole) -> Roles {
        Roles {
            admin: role == KeyRole::Admin,
            approver: role == KeyRole::Approver,
            auditor: role == KeyRole::Auditor,
        }
    }

    /// From role names (an OIDC claim); unknown names are ignored.
    pub(crate) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Roles {
        let mut r = Roles::default();
        for n in names {
            match n {
                "admin" => r.admin = true,
                "approver" => r.approver = true,
                "auditor" => r.auditor = true,
                _ => {}
            }
        }
        r
    }

    pub(crate) fn any(self) -> bool {
        self.admin || self.approver || self.auditor
    }

    /// Admins approve too; auditors never do.
    pub(crate) fn may_approve(self) -> bool {
        self.admin || self.approver
    }

    pub(crate) fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.admin, "admin"),
            (self.approver, "approver"),
            (self.auditor, "auditor"),
        ] {
            if on {
                out.push(name);
            }
        }
        out
    }
}

/// An authenticated operator.
#[derive(Clone, Debug)]
pub(crate) struct Operator {
    /// `key:<id>` or `oidc:<issuer>#<sub>`.
    pub(crate) subject: String,
    /// A readable name: the key's name, or the token's subject.
    pub(crate) name: String,
    /// The person, when known: they may not approve calls made as that person.
    pub(crate) user: Option<String>,
    pub(crate) roles: Roles,
}

impl Operator {
    /// How the operator appears in records: `key:ab12… (alice)`.
    pub(crate) fn actor(&self) -> String {
        match &self.user {
            Some(u) => format!("{} ({}, user {u})", self.subject, self.name),
            None => format!("{} ({})", self.subject, self.name),
        }
    }
}

/// Why an action was not taken. Each maps to one HTTP status.
#[derive(Debug)]
pub(crate) enum OpError {
    /// 401: no credential, or one that is not recognised.
    Unauthorized,
    /// 400
    BadRequest(String),
    /// 403
    Forbidden(String),
    /// 404
    NotFound(String),
    /// 409
    Conflict(String),
    /// 503
    Unavailable(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Unauthorized => f.write_str("not authenticated"),
            OpError::BadRequest(m)
            | OpError::Forbidden(m)
            | OpError::NotFound(m)
            | OpError::Conflict(m)
            | OpError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl OpError {
    pub(crate) fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            OpError::Unauthorized => S::UNAUTHORIZED,
            OpError::BadRequest(_) => S::BAD_REQUEST,
            OpError::Forbidden(_) => S::FORBIDDEN,
            OpError::NotFound(_) => S::NOT_FOUND,
            OpError::Conflict(_) => S::CONFLICT,
            OpError::Unavailable(_) => S::SERVICE_UNAVAILABLE,
        }
    }
}

fn store_down(e: impl fmt::Display) -> OpError {
    tracing::error!(error = %e, "operator action not taken: store unavailable");
    OpError::Unavailable("the store cannot be reached; nothing was changed".into())
}

pub(crate) fn reason_of(reason: &str) -> Result<&str, OpError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(OpError::BadRequest(
            "a reason is required: say why, it is kept in the record".into(),
        ));
    }
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(OpError::BadRequest(format!(
            "the reason must be one line of at most {MAX_REASON} bytes"
        )));
    }
    Ok(r)
}

/// The audit event kind of an operator action (the kinds are a closed set, so the audit schema
/// stays documented).
fn operator_kind(kind: &str) -> &'static str {
    match kind {
        "kill_switch.engage" => "kill_switch.engage",
        "kill_switch.release" => "kill_switch.release",
        "mode.set" => "mode.set",
        "approval.approve" => "approval.approve",
        "approval.deny" => "approval.deny",
        "key.issue" => "key.issue",
        "key.revoke" => "key.revoke",
        "budget.adjust" => "budget.adjust",
        "ui.sign_in" => "operator.sign_in",
        _ => "operator.action",
    }
}

pub(crate) async fn record_operator(
    gw: &Gateway,
    op: &Operator,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), OpError> {
    tracing::info!(operator = %op.actor(), kind, %detail, "operator action");
    let mut event = audit::Event::new(operator_kind(kind));
    event.identity = Some(audit::Who {
        subject: op.subject.clone(),
        principals: op
            .user
            .iter()
            .map(|u| format!("user:{u}"))
            .chain(op.roles.names().into_iter().map(|r| format!("role:{r}")))
            .collect(),
    });
    event.detail = Some(detail.clone());
    if let Err(e) = gw.audit.record(event).await {
        tracing::error!(error = %e, kind, "operator action not recorded in the audit log; not taken");
        return Err(OpError::Unavailable(format!(
            "the audit log cannot record this action, so it was not taken ({e})"
        )));
    }
    gw.store
        .record_event(kind, &op.actor(), &detail)
        .await
        .map(drop)
        .map_err(store_down)
}

/// Engage or release a kill switch. Engaging voids pending approvals in its scope and
/// cancels matching calls in flight here at once (other processes within one poll).
pub(crate) async fn set_kill(
    gw: &Gateway,
    op: &Operator,
    scope: &str,
    target: Option<&str>,
    engaged: bool,
    reason: &str,
) -> Result<(SwitchRow, u64), OpError> {
    if !op.roles.admin {
        return Err(OpError::Forbidden(
            "the kill switch needs the admin role".into(),
        ));
    }
    let reason = reason_of(reason)?;
    let scope: KillScope = scope.parse().map_err(|()| {
        OpError::BadRequest(format!("unknown scope `{scope}`; valid scopes: {SCOPES}"))
    })?;
    let target = kill_target(gw, scope, target.unwrap_or("").trim())?;
    record_operator(
        gw,
        op,
        if engaged {
            "kill_switch.engage"
        } else {
            "kill_switch.release"
        },
        json!({ "scope": scope.as_str(), "target": target, "reason": reason }),
    )
    .await?;
    let row = gw
        .store
        .set_switch(scope.as_str(), &target, engaged, reason, &op.actor())
        .await
        .map_err(store_down)?;
    let mut voided = 0;
    if engaged {
        // Take effect here now rather than at the next poll; minted upstream tokens go too.
        let _ = gw.levers.refresh().await;
        gw.upstreams().minter().forget_all();
        let switch = Switch {
            scope,
            target: target.clone(),
            reason: reason.to_owned(),
        };
        let open = gw.store.open_approvals().await.map_err(store_down)?;
        let ids: Vec<String> = open
            .iter()
            .filter(|a| switch.covers_principals(&a.principals, &a.server, &a.tool))
            .map(|a| a.id.clone())
            .collect();
        let why = format!("kill switch {scope} `{target}` engaged: {reason}");
        voided = gw
            .store
            .void_approvals(&ids, &op.actor(), &why)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "switch engaged but approvals not voided");
                OpError::Unavailable(
                    "the switch is engaged, but pending approvals in its scope could not be voided (the store failed); they cannot be decided while it stays engaged".into(),
                )
            })?;
        if voided > 0 {
            gw.approval_decided.notify_waiters();
        }
    } else {
        let _ = gw.levers.refresh().await;
    }
    Ok((row, voided))
}

fn kill_target(gw: &Gateway, scope: KillScope, target: &str) -> Result<String, OpError> {
    let bad = |m: String| Err(OpError::BadRequest(m));
    match scope {
        KillScope::Global if target.is_empty() || target == "*" => Ok(String::new()),
        KillScope::Global => bad("the global scope takes no target".into()),
        _ if target.is_empty() => bad(format!("the {scope} scope needs a target")),
        _ if target.len() > 256 || target.chars().any(char::is_control) => {
            bad("the target is too long or has control characters".into())
        }
        KillScope::Server => match gw.registry().servers.iter().any(|s| s.name == target) {
            true => Ok(target.to_owned()),
            false => bad(format!("no server `{target}` is configured")),
        },
        KillScope::Tool => {
            let known = target.split_once('/').is_some_and(|(s, t)| {
                gw.registry()
                    .servers
                    .iter()
                    .any(|srv| srv.name == s && srv.tools.contains_key(t))
            });
            match known {
                true => Ok(target.to_owned()),
                false => bad(format!(
                    "`{target}` is not `server/tool` naming an allowlisted tool"
                )),
            }
        }
        _ => Ok(target.to_owned()),
    }
}

/// Switch the mode at runtime.
pub(crate) async fn set_mode(
    gw: &Gateway,
    op: &Operator,
    mode: &str,
    reason: &str,
) -> Result<ModeRow, OpError> {
    if !op.roles.admin {
        return Err(OpError::Forbidden(
            "changing the mode needs the admin role".into(),
        ));
    }
    let reason = reason_of(reason)?;
    let parsed: Mode = mode.parse().map_err(|()| {
        OpError::BadRequest(format!(
            "unknown mode `{mode}`; use enforce, read_only or shadow"
        ))
    })?;
    let (before, _) = gw.levers.mode();
    record_operator(
        gw,
        op,
        "mode.set",
        json!({ "from": before.as_str(), "to": parsed.as_str(), "reason": reason }),
    )
    .await?;
    let row = gw
        .store
        .set_mode(parsed.as_str(), reason, &op.actor())
        .await
        .map_err(store_down)?;
    let _ = gw.levers.refresh().await;
    Ok(row)
}

/// Approve or deny a held call.
pub(crate) async fn decide_approval(
    gw: &Gateway,
    op: &Operator,
    id: &str,
    approve: bool,
    reason: &str,
) -> Result<ApprovalRecord, OpError> {
    if !op.roles.may_approve() {
        return Err(OpError::Forbidden(
            "deciding approvals needs the approver or admin role".into(),
        ));
    }
    let reason = reason_of(reason)?;
    let record = gw
        .store
        .approval(id)
        .await
        .map_err(store_down)?
        .ok_or_else(|| OpError::NotFound(format!("no approval request `{id}`")))?;
    if own_request(op, &record) {
        return Err(OpError::Forbidden(
            "you made this request; another approver must decide it".into(),
        ));
    }
    if record.status != "pending" {
        return Err(OpError::Conflict(format!(
            "request `{id}` is {}, not pending",
            record.status
        )));
    }
    if let Some(killed) = gw
        .levers
        .covering(&record.principals, &record.server, &record.tool)
    {
        return Err(OpError::Conflict(format!(
            "request `{id}` cannot be decided now: {killed}"
        )));
    }
    record_operator(
        gw,
        op,
        if approve {
            "approval.approve"
        } else {
            "approval.deny"
        },
        json!({
            "approval_id": id,
            "requester": record.requester,
            "server": record.server,
            "tool": record.tool,
            "arguments_digest": record.arguments_digest,
            "reason": reason,
        }),
    )
    .await?;
    let ttl_ms = i64::try_from(gw.registry().access.approvals.ttl.as_millis()).unwrap_or(i64::MAX);
    let decided = gw
        .store
        .decide_approval(id, approve, &op.actor(), reason, ttl_ms)
        .await
        .map_err(|e| match e {
            DecideError::NotFound(m) => OpError::NotFound(format!("no approval request `{m}`")),
            e @ DecideError::NotPending { .. } => OpError::Conflict(e.to_string()),
            DecideError::Store(e) => store_down(e),
        })?;
    gw.approval_decided.notify_waiters();
    Ok(decided)
}

/// True when the operator is the person or credential that made the request.
fn own_request(op: &Operator, record: &ApprovalRecord) -> bool {
    let same_subject = record.requester == op.subject
        || record
            .requester
            .strip_prefix(op.subject.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    let same_user = op.user.as_ref().is_some_and(|u| {
        record.principals.iter().any(|p| *p == format!("user:{u}"))
            || record.requester.ends_with(&format!("/user:{u}"))
    });
    same_subject || same_user
}

#[cfg(test)]
mod tests;
