//! The per-server production gate: six dimensions scored 0–3 from evidence the registry holds,
//! a total out of 18 and the gate it allows (Block … Production approved).
//!
//! Scores come from config facts only, each citing the keys it read. A dimension whose evidence
//! the registry cannot hold (a control the gateway does not have yet) is capped, and the reason
//! says so: the rubric never scores a control that is not there.

use policy::{Approval, Level, Pattern, ToolClass};

use crate::error::Location;
use crate::source_map::child;
use crate::validate::{Registry, ResourcePattern, Server, ServerSource};

/// Words in a tool name that hide what the tool does behind a generic verb.
const GENERIC_WORDS: [&str; 11] = [
    "exec",
    "execute",
    "shell",
    "bash",
    "eval",
    "cmd",
    "command",
    "sql",
    "script",
    "spawn",
    "powershell",
];

/// The five gates, strictest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gate {
    /// Do not connect the server to agents.
    Block,
    /// Sandbox work with fake data only.
    PrototypeOnly,
    /// Production reads only.
    ReadOnly,
    /// Writes after a human approved each one.
    WritesWithApproval,
    /// Routine production use.
    ProductionApproved,
}

impl Gate {
    /// The gate's name as the rubric writes it.
    pub fn title(self) -> &'static str {
        match self {
            Gate::Block => "Block",
            Gate::PrototypeOnly => "Prototype only",
            Gate::ReadOnly => "Read-only",
            Gate::WritesWithApproval => "Writes with approval",
            Gate::ProductionApproved => "Production approved",
        }
    }

    /// The stable machine name.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Block => "block",
            Gate::PrototypeOnly => "prototype_only",
            Gate::ReadOnly => "read_only",
            Gate::WritesWithApproval => "writes_with_approval",
            Gate::ProductionApproved => "production_approved",
        }
    }
}

/// A config key read as evidence, with where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cited {
    /// The dotted path, e.g. `servers.notes.tools.create_note`.
    pub path: String,
    /// Where the key is (its nearest written ancestor when the key is absent).
    pub location: Location,
    /// True when the file spells the key out; false when a default applies.
    pub written: bool,
}

/// One dimension's score.
#[derive(Clone, Debug)]
pub struct DimensionScore {
    /// Stable name, e.g. `tool_boundaries`.
    pub key: &'static str,
    /// The rubric's title.
    pub title: &'static str,
    /// 0 (missing, unsafe, unknown) to 3 (production-ready evidence).
    pub score: u8,
    /// Why this score, in one sentence.
    pub why: String,
    /// The keys read.
    pub evidence: Vec<Cited>,
}

/// A server's scores, total and gate.
#[derive(Clone, Debug)]
pub struct ServerReadiness {
    /// The registry name.
    pub server: String,
    /// The six dimensions in rubric order.
    pub dimensions: Vec<DimensionScore>,
    /// Sum of the scores, 0–18.
    pub total: u8,
    /// The gate the evidence allows: never looser than the total's band, stricter when one
    /// dimension fails outright or writes are not held for approval.
    pub gate: Gate,
    /// Why the gate is what it is.
    pub gate_reason: String,
}

/// Score every server of `reg`.
pub fn readiness(reg: &Registry) -> Vec<ServerReadiness> {
    reg.servers
        .iter()
        .map(|s| server_readiness(reg, s))
        .collect()
}

/// Score one server.
pub fn server_readiness(reg: &Registry, server: &Server) -> ServerReadiness {
    let dimensions = vec![
        tool_boundaries(reg, server),
        permission_model(reg, server),
        error_recovery(reg, server),
        verification(reg, server),
        sensitive_data(reg, server),
        maintainer(reg, server),
    ];
    let total = dimensions.iter().map(|d| d.score).sum::<u8>();
    let (gate, gate_reason) = gate(reg, server, &dimensions, total);
    ServerReadiness {
        server: server.name.clone(),
        dimensions,
        total,
        gate,
        gate_reason,
    }
}

fn cite(reg: &Registry, path: &str) -> Cited {
    Cited {
        path: path.to_owned(),
        location: reg.source.value(path),
        written: reg.source.contains(path),
    }
}

fn base(server: &Server) -> String {
    child("servers", &server.name)
}

fn writes(server: &Server) -> Vec<&str> {
    server
        .tools
        .iter()
        .filter(|(_, t)| t.class >= ToolClass::Write)
        .map(|(n, _)| n.as_str())
        .collect()
}

/// True when `name` is built around a generic verb such as `run_command` or `execute_sql`.
pub fn is_generic_tool_name(name: &str) -> bool {
    name.split(['_', '-', '.'])
        .map(str::to_ascii_lowercase)
        .any(|w| GENERIC_WORDS.contains(&w.as_str()))
}

fn tool_boundaries(reg: &Registry, server: &Server) -> DimensionScore {
    let tools = child(&base(server), "tools");
    let generic: Vec<&str> = server
        .tools
        .keys()
        .map(String::as_str)
        .filter(|n| is_generic_tool_name(n))
        .collect();
    let unconstrained: Vec<&str> = writes(server)
        .into_iter()
        .filter(|n| server.tools.get(*n).is_some_and(|t| t.arguments.is_none()))
        .collect();
    let (score, why, evidence) = if let Some(first) = generic.first() {
        (
            1,
            format!(
                "`{first}` is named by a generic verb: what it changes depends on its arguments, not its name"
            ),
            generic
                .iter()
                .map(|n| cite(reg, &child(&tools, n)))
                .collect(),
        )
    } else if unconstrained.is_empty() {
        (
            3,
            format!(
                "{} allowlisted tool(s), each with a class; every write or destructive tool has an operator argument schema",
                server.tools.len()
            ),
            vec![cite(reg, &tools)],
        )
    } else {
        (
            2,
            format!(
                "{} allowlisted tool(s), each with a class; {} write/destructive tool(s) accept whatever the upstream's schema allows (no `arguments` schema)",
                server.tools.len(),
                unconstrained.len()
            ),
            unconstrained
                .iter()
                .map(|n| cite(reg, &child(&tools, n)))
                .collect(),
        )
    };
    DimensionScore {
        key: "tool_boundaries",
        title: "Tool boundaries",
        score,
        why,
        evidence,
    }
}

/// The `level:*` default grants that reach one of the server's write or destructive tools.
pub fn default_grants_reaching_writes(reg: &Registry, server: &Server) -> Vec<String> {
    let table = reg.access.policy.grants();
    let mut out = Vec::new();
    for level in Level::ALL {
        let Some(rules) = table.rules(level, "*") else {
            continue;
        };
        let reaches = writes(server)
            .into_iter()
            .any(|t| rules.covers(&Pattern::Tool(server.name.clone(), t.to_owned())));
        if reaches {
            out.push(format!("{}:*", level.as_str()));
        }
    }
    out
}

fn permission_model(reg: &Registry, server: &Server) -> DimensionScore {
    let broad = default_grants_reaching_writes(reg, server);
    let (score, why, evidence) = match broad.first() {
        Some(principal) => (
            1,
            format!(
                "the default grant `{principal}` reaches write or destructive tools: every principal of that level may call them"
            ),
            broad
                .iter()
                .map(|p| cite(reg, &child("grants", p)))
                .collect(),
        ),
        // Exchanged per caller, the upstream's own scopes narrow each call too.
        None if matches!(server.minted, Some(crate::Minted::Exchange { .. })) => (
            2,
            "grants name principals explicitly, and each call carries a token exchanged for its caller (RFC 8693), bound to the upstream's audience and never wider than the caller's scopes".to_owned(),
            vec![
                cite(reg, "grants"),
                cite(reg, &child(&child(&base(server), "credentials"), "token_exchange")),
            ],
        ),
        // Otherwise the upstream sees the gateway's own access: narrow grants are the most the
        // evidence shows.
        None => (
            2,
            "grants name principals explicitly, but the upstream is reached without a per-caller credential (no token exchange), so its own scopes are not narrowed per call".to_owned(),
            vec![cite(reg, "grants"), cite(reg, &base(server))],
        ),
    };
    DimensionScore {
        key: "permission_model",
        title: "Permission model",
        score,
        why,
        evidence,
    }
}

fn error_recovery(reg: &Registry, server: &Server) -> DimensionScore {
    let timeout = child(&base(server), "timeout");
    let tools = child(&base(server), "tools");
    let w = writes(server);
    let unlimited: Vec<&str> = w
        .iter()
        .copied()
        .filter(|t| reg.call_bounds(&server.name, t).is_empty())
        .collect();
    let mut evidence = vec![cite(reg, &timeout), cite(reg, &tools)];
    let (score, why) = match (w.is_empty(), unlimited.is_empty()) {
        (true, _) => (
            2,
            format!(
                "read tools only, so retries are safe; upstream failures answer with an error naming the server after {} s",
                server.timeout.as_secs()
            ),
        ),
        (false, true) => {
            let mut bounds: Vec<String> = w
                .iter()
                .flat_map(|t| reg.call_bounds(&server.name, t))
                .collect();
            bounds.sort();
            bounds.dedup();
            evidence.extend(bounds.iter().map(|p| cite(reg, p)));
            (
                2,
                format!(
                    "{} write/destructive tool(s), each bounded by a rate or a budget (`rate`, `limits:`), so a client retrying after a failure is bounded; upstream failures answer with an error naming the server after {} s",
                    w.len(),
                    server.timeout.as_secs()
                ),
            )
        }
        // Every unlimited write waits for a human: an approval is single-use and bound to the
        // exact arguments, so a retried call cannot run twice without a second approval.
        (false, false) if unlimited.iter().all(|t| held_for_approval(reg, server, t)) => {
            evidence.push(cite(reg, "approvals"));
            (
                2,
                format!(
                    "{} of {} write/destructive tool(s) have no rate or budget, but each is held for a human's approval that is single-use and bound to the exact arguments, so a retry cannot run twice unapproved; upstream failures answer with an error naming the server after {} s",
                    unlimited.len(),
                    w.len(),
                    server.timeout.as_secs()
                ),
            )
        }
        (false, false) => (
            1,
            format!(
                "no rate limit or budget bounds retries of {} ({} of {} write/destructive tool(s)), and not all of them wait for approval; whether a repeated call is safe is unknown",
                unlimited.join(", "),
                unlimited.len(),
                w.len()
            ),
        ),
    };
    let (score, why) = recovery::resilience_read(reg, server, score, why, &mut evidence);
    DimensionScore {
        key: "error_recovery",
        title: "Error recovery",
        score,
        why,
        evidence,
    }
}

/// True when calls to `tool` wait for a human's approval under the config's threshold.
fn held_for_approval(reg: &Registry, server: &Server, tool: &str) -> bool {
    match reg.access.policy.approval() {
        Approval::Never => false,
        Approval::From(class) => server.tools.get(tool).is_some_and(|e| e.class >= class),
    }
}

fn verification(reg: &Registry, server: &Server) -> DimensionScore {
    let required = reg
        .settings
        .audit
        .sinks
        .iter()
        .filter(|s| s.required)
        .count();
    let (score, why) = match writes(server).is_empty() {
        true => (
            3,
            format!(
                "no write tools; every call is recorded with caller and tool before it runs ({required} required audit sink(s))"
            ),
        ),
        false => (
            2,
            format!(
                "every call is recorded with caller, tool and argument digest before it runs ({required} required audit sink(s)); read-back of writes by id is not verified by the gateway"
            ),
        ),
    };
    DimensionScore {
        key: "verification",
        title: "Verification",
        score,
        why,
        evidence: vec![cite(reg, "audit.sinks")],
    }
}

fn sensitive_data(reg: &Registry, server: &Server) -> DimensionScore {
    let resources = child(&base(server), "resources");
    let broad = server.resources.iter().find(|p| match p {
        ResourcePattern::Prefix(prefix) => {
            // A scheme alone (`file://`, `note://`) or nothing at all reaches every resource.
            prefix.is_empty()
                || prefix.ends_with(':')
                || prefix.ends_with(":/")
                || prefix.ends_with("://")
                || prefix.ends_with(":///")
        }
        ResourcePattern::Exact(_) => false,
    });
    let (score, why, evidence) = match broad {
        Some(p) => (
            1,
            format!(
                "resources allowlisted by a whole scheme (`{}*`): everything the upstream serves under it is readable",
                match p {
                    ResourcePattern::Prefix(s) | ResourcePattern::Exact(s) => s,
                }
            ),
            vec![cite(reg, &resources)],
        ),
        None => (
            2,
            "resource reads limited to allowlisted URIs; secrets in arguments are redacted from the audit log".to_owned(),
            vec![cite(reg, &resources), cite(reg, "audit.redact")],
        ),
    };
    DimensionScore {
        key: "sensitive_data",
        title: "Sensitive-data control",
        score,
        why,
        evidence,
    }
}

fn maintainer(reg: &Registry, server: &Server) -> DimensionScore {
    let b = base(server);
    let (score, why, path) = match &server.source {
        ServerSource::Builtin(_) => (
            3,
            "built into the gateway binary: its version is the gateway's".to_owned(),
            child(&b, "builtin"),
        ),
        ServerSource::Command(c) => match &c.artifact {
            crate::Artifact::Npm { .. } | crate::Artifact::Pypi { .. } => (
                3,
                format!(
                    "`{}` runs at an exact version from its published artifact, whose digest is checked before every spawn",
                    c.artifact.describe()
                ),
                child(&b, "command"),
            ),
            crate::Artifact::Local { .. } => (
                2,
                format!(
                    "`{}` is pinned by the digest of its file, checked before every spawn; where it came from is not recorded",
                    c.program
                ),
                child(&b, "command"),
            ),
            crate::Artifact::Unpinned { .. } => (
                0,
                format!(
                    "`{}` is launched by path with no version or digest pin: whatever is at that path runs",
                    c.program
                ),
                child(&b, "command"),
            ),
        },
        ServerSource::Http { .. } => {
            let unpinned: Vec<&str> = server
                .tools
                .keys()
                .filter(|t| server.pins.as_ref().is_none_or(|p| !p.contains_key(*t)))
                .map(String::as_str)
                .collect();
            match (server.pins.is_some(), unpinned.is_empty()) {
                (true, true) => (
                    2,
                    "each allowlisted tool's definition is fingerprinted (`pin`): a changed definition is quarantined until re-pinned; the upstream's own release process is not visible from here".to_owned(),
                    child(&b, "pin"),
                ),
                (true, false) => (
                    1,
                    format!(
                        "tool(s) {} are not fingerprinted, so a change to them is not caught (they stay hidden until pinned)",
                        unpinned.join(", ")
                    ),
                    child(&b, "pin"),
                ),
                (false, _) => (
                    1,
                    "reached by URL only: its tool definitions are not fingerprinted, so a changed definition is not caught".to_owned(),
                    child(&b, "url"),
                ),
            }
        }
    };
    DimensionScore {
        key: "maintainer_reliability",
        title: "Maintainer reliability",
        score,
        why,
        evidence: vec![cite(reg, &path)],
    }
}

fn gate(reg: &Registry, server: &Server, dims: &[DimensionScore], total: u8) -> (Gate, String) {
    if let Some(d) = dims.iter().find(|d| d.score == 0) {
        return (
            Gate::Block,
            format!(
                "{} scores 0, a critical failure whatever the total",
                d.title
            ),
        );
    }
    let band = match total {
        0..=5 => Gate::Block,
        6..=9 => Gate::PrototypeOnly,
        10..=13 => Gate::ReadOnly,
        14..=16 => Gate::WritesWithApproval,
        _ => Gate::ProductionApproved,
    };
    let held = match reg.access.policy.approval() {
        Approval::Never => false,
        Approval::From(class) => writes(server)
            .iter()
            .all(|t| server.tools.get(*t).is_some_and(|e| e.class >= class)),
    };
    if band >= Gate::WritesWithApproval && !writes(server).is_empty() && !held {
        return (
            Gate::ReadOnly,
            format!(
                "total {total}/18 would allow writes with approval, but `approvals.required_from` does not hold every write tool for a human"
            ),
        );
    }
    if band == Gate::ProductionApproved && dims.iter().any(|d| d.score < 3) {
        return (
            Gate::WritesWithApproval,
            format!("total {total}/18, but not every dimension has production evidence"),
        );
    }
    (band, format!("total {total}/18"))
}

mod recovery;

#[cfg(test)]
mod tests;
