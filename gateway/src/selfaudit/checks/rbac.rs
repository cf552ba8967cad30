//! Dimension 01: tool-access governance and RBAC.

use super::*;

pub(super) fn intersection(_: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let e = ix.build(
        "policy",
        "every call is decided by policy::decide over each resolved level (org, team, key, user, agent); a call is allowed only if every resolved level grants it; property-tested",
    );
    out.push(
        c
            .says(
                "Authorization is decided by the gateway on caller identity, as the intersection of every resolved level",
                "The decision is made by the gateway, never the model: each resolved level must grant the call, and unmapped callers are denied.",
                "This is what defeats prompt-injection-to-tool-call.",
            )
            .cites([e])
            .pass(ix),
    );
}

pub(super) fn allowlists(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let tools: usize = reg.servers.iter().map(|s| s.tools.len()).sum();
    let ev = ix.per_server(reg, "tools", |s| {
        format!("{} allowlisted tool(s)", s.tools.len())
    });
    out.push(
        c
            .says(
                "Every server has an explicit per-tool allowlist; other tools are invisible",
                format!(
                    "{} server(s), {tools} allowlisted tool(s) in all; a server without a `tools` map does not load, and a tool not granted answers like one that does not exist.",
                    reg.servers.len()
                ),
                "Least privilege per tool is the default, not an opt-in.",
            )
            .cites(ev)
            .pass(ix),
    );
}

pub(super) fn default_grants(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let mut broad = Vec::new();
    for s in &reg.servers {
        for p in registry::default_grants_reaching_writes(reg, s) {
            if !broad.iter().any(|(q, _): &(String, String)| *q == p) {
                broad.push((p, s.name.clone()));
            }
        }
    }
    out.push(match broad.is_empty() {
        true => {
            let e = ix.config(reg, "grants", "no `level:*` default grant reaches a write or destructive tool");
            c.says(
                "No default grant reaches a write or destructive tool",
                "Write and destructive tools are granted to named principals only.",
                "",
            )
            .cites([e])
            .pass(ix)
        }
        false => {
            let ev: Vec<String> = broad
                .iter()
                .map(|(p, s)| {
                    ix.config(
                        reg,
                        &format!("grants.{p}"),
                        format!("default grant reaching write/destructive tools of `{s}`"),
                    )
                })
                .collect();
            let names: Vec<&str> = broad.iter().map(|(p, _)| p.as_str()).collect();
            c.says(
                format!("Default grant(s) {} reach write or destructive tools", names.join(", ")),
                format!(
                    "Every principal of the level(s) {} may call write or destructive tools without a grant of its own.",
                    names.join(", ")
                ),
                "A new team, key or agent gets write access the moment it exists.",
            )
            .cites(ev)
            .gap(
                ix,
                Status::Partial,
                Severity::High,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Narrow the default grants",
                    "Give `level:*` defaults read tools only, and grant write and destructive tools to named principals.",
                    "S",
                ),
            )
        }
    });
}

pub(super) fn approvals(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let w = writes(reg);
    let e = ix.config(
        reg,
        "approvals.required_from",
        match reg.access.policy.approval() {
            Approval::Never => "none".to_owned(),
            Approval::From(c) => format!("{} (and above)", c.as_str()),
        },
    );
    out.push(match reg.access.policy.approval() {
        _ if w.is_empty() => c
            .says(
                "No write or destructive tool is allowlisted, so none can change state unapproved",
                "Every allowlisted tool is a read; adding a write tool brings `approvals.required_from` into play.",
                "",
            )
            .cites([e])
            .pass(ix),
        Approval::From(ToolClass::Read | ToolClass::Write) => c
            .says(
                "Write and destructive tools wait for a human's approval, bound to the exact arguments",
                format!(
                    "{} write/destructive tool(s) are held until an approver (not the requester) approves that call; approvals are single-use and expire.",
                    w.len()
                ),
                "",
            )
            .cites([e])
            .pass(ix),
        Approval::From(ToolClass::Destructive) => c
            .says(
                "Write tools run without human approval (`approvals.required_from: destructive`)",
                format!(
                    "Only destructive tools are held; {} write tool(s) run as soon as policy allows.",
                    w.iter()
                        .filter(|(s, t)| reg
                            .servers
                            .iter()
                            .any(|x| x.name == *s
                                && x.tools.get(t).is_some_and(|e| e.class == ToolClass::Write)))
                        .count()
                ),
                "A prompt-injected agent can change state without anyone seeing the change first.",
            )
            .cites([e])
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Hold write tools for approval",
                    "Set `approvals.required_from: write` (the default) so every state change waits for a human.",
                    "S",
                ),
            ),
        Approval::Never => c
            .says(
                "No tool waits for human approval (`approvals.required_from: none`)",
                format!(
                    "{} write/destructive tool(s) run as soon as policy allows.",
                    w.len()
                ),
                "Destructive actions taken by an agent are not seen by a person until after the fact.",
            )
            .cites([e])
            .gap(
                ix,
                Status::Partial,
                Severity::High,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Turn human approval back on",
                    "Remove `approvals.required_from: none`; write and destructive tools then wait for an approver.",
                    "S",
                ),
            ),
    });
}

pub(super) fn generic_tools(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let generic: Vec<(String, String)> = reg
        .servers
        .iter()
        .flat_map(|s| {
            s.tools
                .keys()
                .filter(|t| registry::is_generic_tool_name(t))
                .map(|t| (s.name.clone(), t.clone()))
        })
        .collect();
    if !generic.is_empty() {
        let ev: Vec<String> = generic
            .iter()
            .map(|(s, t)| {
                ix.config(
                    reg,
                    &tool_path(s, t),
                    "allowlisted tool named by a generic verb",
                )
            })
            .collect();
        let names: Vec<String> = generic.iter().map(|(s, t)| format!("{s}/{t}")).collect();
        out.push(
            c
                .says(
                    format!("Generic tool(s) allowlisted: {}", names.join(", ")),
                    "Tools named by a generic verb (run a command, execute SQL) do whatever their arguments say; a per-tool grant cannot narrow them.",
                    "A grant on a generic tool is a grant on everything it can reach.",
                )
                .cites(ev)
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Constrain generic tools",
                        "Give each generic tool an `arguments` schema that admits only the operations intended, or replace it with narrow tools.",
                        "M",
                    ),
                ),
        );
    }
}
