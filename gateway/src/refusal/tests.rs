use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::{Denial, DenyReason, Level, ToolClass};
use serde_json::json;

use super::*;

/// Outcome labels other than refusals: a request answered, and anything unforeseen.
const ANSWERED: [&str; 4] = ["ok", "allowed", "tool_error", "error"];

/// Every outcome and label a refusal maps to: the closed set of metric labels with
/// [`ANSWERED`]. A test walks every variant through [`Refusal::face`] against it.
const REFUSED: [&str; 26] = [
    "request_state_invalid",
    "approval_expired",
    "approval_used",
    "task_unavailable",
    "invalid_request",
    "not_found",
    "denied",
    "quarantined",
    "invalid_arguments",
    "killed",
    "read_only",
    "shadow",
    "rate_limited",
    "concurrency_limited",
    "budget_exceeded",
    "limits_unavailable",
    "held",
    "approval_pending",
    "approval_denied",
    "approval_unavailable",
    "unavailable",
    "cancelled",
    "audit_unavailable",
    "credential_unavailable",
    "upstream_error",
    "upstream_unavailable",
];

/// One of each variant. The match below has no wildcard: a new variant does not compile until
/// it is added here, so the walk always covers every variant.
fn every_variant() -> Vec<Refusal> {
    let name = || "fx__echo".to_string();
    let hit = || Hit {
        entry: 0,
        principal: "team:a".into(),
    };
    let denial = |reason| Denial {
        level: Some(Level::Team),
        principal: Some("team:ops".into()),
        reason,
    };
    let all = vec![
        Refusal::Malformed("missing string parameter `name`".into()),
        Refusal::NoSuchMethod("nope/nope".into()),
        Refusal::UnknownTool(name()),
        Refusal::Denied {
            name: name(),
            denial: denial(DenyReason::NotGranted),
        },
        Refusal::Denied {
            name: name(),
            denial: denial(DenyReason::Internal("boom".into())),
        },
        Refusal::Reloaded {
            name: name(),
            why: "the tool is no longer offered".into(),
        },
        Refusal::UnknownPrompt("fx__greet".into()),
        Refusal::NoCompletion,
        Refusal::UnknownResource {
            uri: "fx+mem://a".into(),
            modern: true,
        },
        Refusal::UnknownResource {
            uri: "fx+mem://a".into(),
            modern: false,
        },
        Refusal::Quarantined {
            name: name(),
            why: "definition changed".into(),
        },
        Refusal::Changed { name: name() },
        Refusal::HeaderMismatch("Mcp-Param-Region disagrees".into()),
        Refusal::InputStateInvalid {
            why: "it has expired".into(),
        },
        Refusal::InvalidArguments {
            message: "\"x\" is not of type \"integer\"".into(),
            at: "/n".into(),
        },
        Refusal::TooLargeToReview {
            name: name(),
            limit_kib: 64,
        },
        Refusal::Killed {
            what: name(),
            killed: Killed::StateUnknown,
        },
        Refusal::Voided {
            name: name(),
            approval: "apr_1".into(),
        },
        Refusal::ReadOnly {
            name: name(),
            class: ToolClass::Write,
        },
        Refusal::Shadow {
            name: name(),
            needs_approval: true,
        },
        Refusal::RateLimited {
            name: name(),
            rate: registry::Rate {
                count: 5,
                per: Duration::from_secs(60),
            },
            wait_s: 7,
            hit: None,
        },
        Refusal::ConcurrencyLimited {
            name: name(),
            cap: 2,
            hit: hit(),
        },
        Refusal::BudgetExceeded {
            name: name(),
            budget: registry::Budget {
                units: 10,
                per: registry::Period::Day,
                refund_failed: false,
                exact: false,
            },
            wait_s: 3600,
            hit: hit(),
        },
        Refusal::LimitsUnavailable {
            name: name(),
            error: "database is locked".into(),
        },
        Refusal::CredentialUnavailable {
            name: name(),
            error: "token endpoint for `fx`: unreachable".into(),
        },
        Refusal::ApprovalPending {
            name: name(),
            class: ToolClass::Write,
            approval: "apr_1".into(),
        },
        Refusal::ApprovalDenied {
            name: name(),
            approval: "apr_1".into(),
            by: "user:ann".into(),
        },
        Refusal::ApprovalUnavailable {
            error: "database is locked".into(),
        },
        Refusal::ApprovalLapsed {
            name: name(),
            approval: "apr_1".into(),
            used: false,
        },
        Refusal::ApprovalLapsed {
            name: name(),
            approval: "apr_1".into(),
            used: true,
        },
        Refusal::UnknownTask,
        Refusal::TaskUnavailable {
            error: "database is locked".into(),
            ran: true,
        },
        Refusal::TaskUnreadable {
            error: "task task_1's held call does not open".into(),
        },
        Refusal::TasksUndeclared,
        Refusal::TaskFailed(crate::jsonrpc::RpcError {
            code: -32001,
            message: "`fx__write` was not executed: request apr_1 was denied by user:ann".into(),
            data: Some(json!({ "reason": "approval_denied", "approval_id": "apr_1" })),
        }),
        Refusal::Cancelled {
            name: name(),
            approval: None,
        },
        Refusal::Cancelled {
            name: name(),
            approval: Some("apr_1".into()),
        },
        Refusal::Untracked { name: name() },
        Refusal::AuditUnavailable {
            what: name(),
            error: "disk full".into(),
        },
        Refusal::Upstream(UpstreamError::Timeout("fx".into(), Duration::from_secs(30))),
        Refusal::Upstream(UpstreamError::Rpc {
            server: "fx".into(),
            error: json!({ "code": -32000, "message": "boom", "data": { "k": 1 } }),
        }),
        Refusal::Upstream(UpstreamError::Rpc {
            server: "fx".into(),
            error: json!({ "code": -32021, "message": "needs sampling", "data": { "requiredCapabilities": { "sampling": {} } } }),
        }),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for r in &all {
        seen.insert(match r {
            Refusal::Malformed(_) => 0,
            Refusal::NoSuchMethod(_) => 1,
            Refusal::UnknownTool(_) => 2,
            Refusal::Denied { .. } => 3,
            Refusal::Reloaded { .. } => 4,
            Refusal::UnknownPrompt(_) => 5,
            Refusal::NoCompletion => 6,
            Refusal::UnknownResource { .. } => 7,
            Refusal::Quarantined { .. } => 8,
            Refusal::Changed { .. } => 9,
            Refusal::HeaderMismatch(_) => 10,
            Refusal::InvalidArguments { .. } => 11,
            Refusal::TooLargeToReview { .. } => 12,
            Refusal::Killed { .. } => 13,
            Refusal::Voided { .. } => 14,
            Refusal::ReadOnly { .. } => 15,
            Refusal::Shadow { .. } => 16,
            Refusal::RateLimited { .. } => 17,
            Refusal::ApprovalPending { .. } => 18,
            Refusal::ApprovalDenied { .. } => 19,
            Refusal::ApprovalUnavailable { .. } => 20,
            Refusal::Cancelled { .. } => 21,
            Refusal::Untracked { .. } => 22,
            Refusal::AuditUnavailable { .. } => 23,
            Refusal::Upstream(_) => 24,
            Refusal::ConcurrencyLimited { .. } => 25,
            Refusal::BudgetExceeded { .. } => 26,
            Refusal::LimitsUnavailable { .. } => 27,
            Refusal::CredentialUnavailable { .. } => 28,
            Refusal::ApprovalLapsed { .. } => 29,
            Refusal::UnknownTask => 30,
            Refusal::TasksUndeclared => 31,
            Refusal::TaskFailed(_) => 32,
            Refusal::TaskUnavailable { .. } => 33,
            Refusal::InputStateInvalid { .. } => 34,
            Refusal::TaskUnreadable { .. } => 35,
        });
    }
    assert_eq!(seen.len(), 36, "a variant has no example");
    all
}

#[test]
fn every_variant_maps_to_a_closed_code_reason_status_outcome_and_label() {
    let known = |s: &str| ANSWERED.contains(&s) || REFUSED.contains(&s);
    for r in every_variant() {
        let face = r.face();
        let shown = format!("{r:?}");
        assert!(known(face.outcome), "{shown}: outcome {}", face.outcome);
        assert!(known(face.label), "{shown}: label {}", face.label);
        assert_eq!(crate::metrics::outcome_label(face.label), face.label);
        assert_eq!(crate::metrics::outcome_label(face.outcome), face.outcome);
        if let Some(reason) = face.reason {
            assert!(REFUSED.contains(&reason), "{shown}: reason {reason}");
        }
        let replayed = matches!(r, Refusal::TaskFailed(_));
        match r.answer() {
            Ok(result) => {
                assert_eq!(face.code, None, "{shown}");
                assert!(result.is_object(), "{shown}: {result}");
            }
            Err(e) => {
                assert_eq!(Some(e.code), face.code, "{shown}");
                assert!(!e.message.is_empty(), "{shown}");
                // A failed task answers again with the error it ended in, its reason included.
                if !replayed {
                    let data_reason = e.data.as_ref().and_then(|d| d.get("reason"));
                    assert_eq!(data_reason.and_then(|v| v.as_str()), face.reason, "{shown}");
                }
            }
        }
    }
}

#[test]
fn a_denial_answers_exactly_like_a_missing_tool_and_keeps_its_reason_for_the_operator() {
    let missing = Refusal::UnknownTool("fx__echo".into()).answer();
    let denied = Refusal::Denied {
        name: "fx__echo".into(),
        denial: Denial {
            level: Some(Level::Team),
            principal: Some("team:ops".into()),
            reason: DenyReason::ExplicitDeny,
        },
    };
    assert_eq!(denied.face().outcome, "denied");
    assert_eq!(denied.level(), Some("team"));
    let why = denied.audit_reason().unwrap_or_default();
    assert!(why.contains("team:ops"), "{why}");
    assert_eq!(denied.answer(), missing);
    let reloaded = Refusal::Reloaded {
        name: "fx__echo".into(),
        why: "it now needs approval".into(),
    };
    assert_eq!(reloaded.answer(), missing);
}

#[test]
fn failures_that_fail_closed_are_counted_and_refusals_that_are_not_are_not() {
    let cause = |r: Refusal| r.face().fail_closed;
    assert_eq!(
        cause(Refusal::AuditUnavailable {
            what: "x".into(),
            error: "e".into()
        }),
        Some("audit_unavailable")
    );
    assert_eq!(
        cause(Refusal::Killed {
            what: "x".into(),
            killed: Killed::StateUnknown
        }),
        Some("kill_switch_state_unknown")
    );
    assert_eq!(cause(Refusal::UnknownTool("x".into())), None);
    assert_eq!(
        cause(Refusal::ApprovalPending {
            name: "x".into(),
            class: ToolClass::Write,
            approval: "a".into()
        }),
        None
    );
}

#[test]
fn the_2026_status_of_a_refusal_is_set_only_where_the_revision_names_one() {
    assert_eq!(
        Refusal::HeaderMismatch("x".into()).face().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        Refusal::NoSuchMethod("x".into()).face().status,
        StatusCode::NOT_FOUND
    );
    for r in every_variant() {
        let face = r.face();
        match r {
            Refusal::HeaderMismatch(_) | Refusal::NoSuchMethod(_) => {}
            // 2026-07-28: a missing client capability is 400.
            Refusal::TasksUndeclared => assert_eq!(face.status, StatusCode::BAD_REQUEST),
            // Over a limit: 429, with the wait in `data` where it is known.
            Refusal::RateLimited { wait_s, .. } | Refusal::BudgetExceeded { wait_s, .. } => {
                assert_eq!(face.status, StatusCode::TOO_MANY_REQUESTS);
                let e = r.answer().unwrap_err();
                let data = e.data.unwrap_or_default();
                assert_eq!(data["retry_after_s"], json!(wait_s));
            }
            Refusal::ConcurrencyLimited { .. } => {
                assert_eq!(face.status, StatusCode::TOO_MANY_REQUESTS);
            }
            // An upstream that needs a capability the client did not declare: the client's
            // missing capability, with what to declare.
            Refusal::Upstream(ref e) if e.code() == -32021 => {
                assert_eq!(face.status, StatusCode::BAD_REQUEST);
                let data = r.answer().unwrap_err().data.unwrap_or_default();
                assert_eq!(data["requiredCapabilities"], json!({ "sampling": {} }));
            }
            r => assert_eq!(face.status, StatusCode::OK, "{r:?}"),
        }
    }
}

/// Spellings of refusal reasons that other vocabularies share, each where it is and why.
const OTHER_VOCABULARIES: &[(&str, &str)] = &[
    // A status on the operator page and in the self-audit's evidence.
    ("admin/ui/dashboard.rs", "quarantined"),
    ("selfaudit/checks/onboarding.rs", "quarantined"),
    // The registry's own quarantine event, not a refusal of a call.
    ("upstream/listing.rs", "quarantined"),
    // The credential span's `error.type`, set where the refusal is not built yet.
    ("telemetry.rs", "credential_unavailable"),
    // Span `error.type` kinds of upstream failures.
    ("upstream/error.rs", "cancelled"),
    ("upstream/error.rs", "upstream_error"),
    // An upstream's task status (the tasks extension's vocabulary).
    ("upstream/task.rs", "cancelled"),
    // A server-to-client request the server withdrew, and its fail-closed cause.
    ("upstream/relay.rs", "cancelled"),
    ("upstream/relay.rs", "audit_unavailable"),
    // The outcome of an authentication failure (the HTTP layer).
    ("front.rs", "unavailable"),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for p in entries.flatten().map(|e| e.path()) {
        if p.is_dir() && p.file_name().is_some_and(|n| n != "tests") {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

#[test]
fn no_refusal_reason_is_spelled_outside_this_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 40, "{files:?}");
    let reasons: Vec<&str> = every_variant()
        .iter()
        .filter_map(|r| r.face().reason)
        .collect();
    let mut allowed_seen = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if rel == "refusal.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        // Unit tests at the end of a file may spell anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for r in &reasons {
            if code.contains(&format!("\"{r}\"")) {
                if OTHER_VOCABULARIES.contains(&(rel.as_str(), r)) {
                    allowed_seen.insert((rel.clone(), *r));
                } else {
                    found.push(format!("{rel}: \"{r}\""));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "refusal reasons built outside refusal.rs: {found:?}"
    );
    // The exceptions stay true: one that no longer occurs is removed from the list.
    for (file, r) in OTHER_VOCABULARIES {
        assert!(
            allowed_seen.contains(&(file.to_string(), *r)),
            "`{r}` no longer appears in {file}: drop it from OTHER_VOCABULARIES"
        );
    }
}
