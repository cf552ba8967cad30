//! The two scores made from the findings and the registry: the ten-area checklist and each
//! server's 0-18 gate.

use super::*;

fn status_of<'a>(findings: &'a [Finding], id: &str) -> Option<&'a Finding> {
    findings.iter().find(|f| f.id == id)
}

/// The ten-area checklist, scored from the findings.
pub(crate) fn checklist(findings: &[Finding]) -> Checklist {
    let get = |id: &str| status_of(findings, id).map(|f| f.status);
    let pass = |id: &str| get(id).is_none_or(|s| s == Status::Pass);
    let absent = |id: &str| get(id) == Some(Status::Absent);
    let probe_failed = ["fail.store_error", "fail.faulted_level", "fail.panic"]
        .iter()
        .any(|id| absent(id));
    let area = |key, title, score: u8, why: &str, ids: &[&'static str]| Area {
        key,
        title,
        score,
        why: why.to_owned(),
        findings: ids.iter().copied().filter(|id| get(id).is_some()).collect(),
    };
    let approval = match get("rbac.approvals") {
        Some(Status::Pass) => 2,
        _ if status_of(findings, "rbac.approvals")
            .is_some_and(|f| f.severity == Severity::Medium) =>
        {
            1
        }
        _ => 0,
    };
    let audit = match (pass("fail.audit"), pass("obs.audit_sinks")) {
        (true, true) => 2,
        (false, _) if absent("fail.audit") => 0,
        _ => 1,
    };
    let tenancy = if pass("id.tenancy") && pass("id.operator_scope") {
        2
    } else {
        1
    };
    let tenancy_partly = match (pass("id.tenancy"), pass("id.operator_scope")) {
        (false, false) => {
            "no org level is required, so callers have no tenant boundary, and operator views are not scoped by org: approvers and auditors see every tenant"
        }
        (true, false) => {
            "callers are separated by a required org level, but operator views are not scoped by org: approvers and auditors see every tenant's approvals and audit events"
        }
        _ => {
            "discovery equals permission and sessions are bound to their caller, but no org level is required, so there is no tenant boundary"
        }
    };
    let secrets = if absent("id.secrets") {
        0
    } else if pass("id.secrets") && pass("id.redaction_key") {
        2
    } else {
        1
    };
    let injection = if pass("rbac.approvals") && pass("rbac.generic_tools") {
        2
    } else {
        1
    };
    let poisoning = if pass("onboard.fingerprints")
        && pass("onboard.stdio_pinning")
        && get("onboard.tool_text").is_none()
    {
        2
    } else {
        1
    };
    let fail_closed = if probe_failed {
        0
    } else if [
        "fail.store_error",
        "fail.faulted_level",
        "fail.panic",
        "fail.audit",
        "fail.kill_lease",
    ]
    .iter()
    .all(|id| pass(id))
    {
        2
    } else {
        1
    };
    // The sentence for the score the area got: never a control's full description when it is off.
    let says = |score: u8, full: &'static str, part: &'static str, none: &'static str| match score {
        2 => full,
        1 => part,
        _ => none,
    };
    let areas = vec![
        area(
            "authentication",
            "Authentication",
            if pass("id.oidc") { 2 } else { 1 },
            if pass("id.oidc") {
                "identity required on every call, rooted in an IdP with token lifetimes"
            } else {
                "identity required on every call, but keys are long-lived and not IdP-rooted (or the IdP is unreachable)"
            },
            &["id.no_anonymous", "id.oidc"],
        ),
        area(
            "rbac",
            "RBAC",
            if pass("rbac.default_grants") && pass("rbac.generic_tools") {
                2
            } else {
                1
            },
            if pass("rbac.default_grants") && pass("rbac.generic_tools") {
                "per-tool allowlists and intersection grants; no broad default reaches writes"
            } else {
                "per-tool allowlists and intersection grants, with broad defaults or generic tools"
            },
            &[
                "rbac.intersection",
                "rbac.allowlists",
                "rbac.default_grants",
                "rbac.generic_tools",
            ],
        ),
        area(
            "token_passthrough",
            "Token passthrough",
            if pass("id.token_exchange") { 2 } else { 1 },
            if pass("id.token_exchange") {
                "caller tokens never leave the gateway; each upstream's credential fits its callers (exchanged per caller where callers sign in at an IdP)"
            } else {
                "caller tokens never leave the gateway, but some upstreams get one credential for every caller"
            },
            &["id.token_exchange"],
        ),
        area(
            "tool_approval",
            "Tool approval",
            approval,
            says(
                approval,
                "write and destructive tools wait for a human, bound to the arguments, with a kill switch for emergencies",
                "only some state-changing tools wait for a human (destructive ones, say); the rest run on the model's word, with a kill switch for emergencies",
                "no tool waits for a human: state changes run on the model's word; only the kill switch stops them",
            ),
            &["rbac.approvals", "ops.kill_switch"],
        ),
        area(
            "audit_logs",
            "Audit logs",
            audit,
            says(
                audit,
                "every decision recorded before it acts, in required, synced, hash-chained sinks with an export",
                "decisions are recorded before they act, but a sink is not required or not synced, so a record can be lost",
                "the audit log cannot be shown to record a decision before it acts",
            ),
            &["fail.audit", "obs.audit_sinks"],
        ),
        area(
            "tenant_isolation",
            "Tenant isolation",
            tenancy,
            says(
                tenancy,
                "discovery equals permission, sessions are bound to their caller, an org level is required, and operators serve one tenant",
                tenancy_partly,
                "",
            ),
            &["id.tenancy", "id.operator_scope"],
        ),
        area(
            "secret_handling",
            "Secret handling",
            secrets,
            says(
                secrets,
                "no inline secrets, refused at load, secrets by reference, redaction keyed outside the store",
                "secrets by reference and none inline, but the redaction key is kept in the store beside what it protects",
                "a secret is written in the config",
            ),
            &["id.secrets", "id.redaction_key"],
        ),
        area(
            "prompt_injection",
            "Prompt injection",
            injection,
            says(
                injection,
                "the model never decides: allowlists, gateway-side grants, upstream annotations untrusted, and human approval for state changes",
                "the model never decides what is allowed (allowlists, gateway-side grants, upstream annotations untrusted), but a state change needs no human, or a generic tool takes whatever the model writes",
                "",
            ),
            &["rbac.intersection", "rbac.approvals", "rbac.generic_tools"],
        ),
        area(
            "tool_poisoning",
            "Tool poisoning",
            poisoning,
            says(
                poisoning,
                "tool names allowlisted; definitions fingerprinted and packages pinned by digest",
                "tool names allowlisted, but some definitions are not fingerprinted, are quarantined, or a package is not pinned by digest",
                "",
            ),
            &[
                "rbac.allowlists",
                "onboard.fingerprints",
                "onboard.stdio_pinning",
                "onboard.tool_text",
            ],
        ),
        area(
            "fail_closed",
            "Fail closed",
            fail_closed,
            says(
                fail_closed,
                "store, identity, policy, audit and kill-switch failures each shown to deny",
                "failures on the decision path deny, but not each one could be shown to (a probe could not run, or a lease or sink setting weakens it)",
                "a fault injected on the decision path did not end in a deny",
            ),
            &[
                "fail.store_error",
                "fail.faulted_level",
                "fail.panic",
                "fail.audit",
                "fail.kill_lease",
            ],
        ),
    ];
    let score: u8 = areas.iter().map(|a| a.score).sum();
    let (band, band_title) = match score {
        0..=8 => ("do_not_approve", "Do not approve"),
        9..=15 => ("limited_pilot", "Limited pilot"),
        _ => ("production_candidate", "Production candidate"),
    };
    Checklist {
        score,
        max: 20,
        band,
        band_title,
        areas,
    }
}

/// Each server's 0–18 gate, with its evidence in the index.
pub(crate) fn server_gates(reg: &Registry, ix: &mut Index) -> Vec<ServerGate> {
    registry::readiness(reg)
        .into_iter()
        .map(|r| ServerGate {
            server: r.server,
            score: r.total,
            max: 18,
            gate: r.gate.as_str(),
            gate_title: r.gate.title(),
            gate_reason: r.gate_reason,
            dimensions: r
                .dimensions
                .into_iter()
                .map(|d| ServerDimension {
                    evidence: d
                        .evidence
                        .iter()
                        .map(|c| {
                            ix.config(
                                reg,
                                &c.path,
                                format!("read for {} ({}/3)", d.title, d.score),
                            )
                        })
                        .collect(),
                    key: d.key,
                    title: d.title,
                    score: d.score,
                    why: d.why,
                })
                .collect(),
        })
        .collect()
}
