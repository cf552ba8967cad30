//! The self-audit: the gateway scores its own configuration and running state against the
//! seven readiness dimensions, the ten-area security checklist (0–20) and the per-server
//! production gate (0–18).
//!
//! Evidence is gathered, never asserted. Config facts cite file, line and key; probes run the
//! real code (a credential check against an unreachable store, a decision for a key whose stored
//! grants are corrupt, a panicking evaluation, an event written to the audit sinks, the
//! kill-switch snapshot, each issuer's key set, each upstream's offered tools); build facts name
//! the version and commit. A control this build does not have is a finding (cause `unbuilt`),
//! never a pass, and a check that needs the running gateway is marked static-only when the
//! report is made offline (`portcullis audit --config`).

use std::collections::BTreeMap;

use registry::Registry;
use serde::Serialize;

use crate::gateway::Gateway;

mod assemble;
mod checks;
mod deployment;
mod html;
mod probes;
mod render;

pub(crate) use html::{esc, html};
pub(crate) use render::markdown;

/// Version of the report's JSON shape (`schema`), documented in `docs/self-audit.md`.
pub(crate) const SCHEMA: &str = "portcullis.self-audit/1";

/// How well a control holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// The control exists, is enforced and was verified: green.
    Pass,
    /// The intent exists with gaps: yellow.
    Partial,
    /// No effective control, or it fails open: red.
    Absent,
}

impl Status {
    pub(crate) fn color(self) -> &'static str {
        match self {
            Status::Pass => "green",
            Status::Partial => "yellow",
            Status::Absent => "red",
        }
    }
}

/// How much a gap matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub(crate) fn title(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// How likely a gap is to be exploited or to bite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Likelihood {
    Low,
    Medium,
    High,
}

impl Likelihood {
    pub(crate) fn title(self) -> &'static str {
        match self {
            Likelihood::Low => "Low",
            Likelihood::Medium => "Medium",
            Likelihood::High => "High",
        }
    }
}

/// Where a gap comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Cause {
    /// A setting in the config file: the operator can change it.
    Config,
    /// What a live probe observed.
    Probe,
    /// This build has no such control yet.
    Unbuilt,
}

/// What a piece of evidence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EvidenceKind {
    /// A config key, cited by file, line and column.
    Config,
    /// A probe run against this gateway's code or its running state.
    Probe,
    /// A fact about this build.
    Build,
}

/// One row of the evidence index.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Evidence {
    /// `E1`, `E2`, … in the order first cited.
    pub(crate) id: String,
    pub(crate) kind: EvidenceKind,
    /// `file:line:column` and key for config, the probe's name, or the build fact's name.
    pub(crate) source: String,
    /// What was observed.
    pub(crate) observed: String,
    /// For a probe: whether it saw what a safe gateway shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<bool>,
    /// True when the probe needs the running gateway and the report was made offline.
    pub(crate) static_only: bool,
    /// The rubric line the row supports: the status legend line of the worst finding citing it.
    pub(crate) rubric: String,
    /// That finding's colour (`green`, `yellow`, `red`).
    pub(crate) color: &'static str,
    /// That finding's severity where it is a gap (absent for rows only passes cite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity: Option<Severity>,
}

/// A roadmap item: the change that closes a gap.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Fix {
    pub(crate) title: String,
    pub(crate) detail: String,
    /// `S`, `M` or `L`.
    pub(crate) effort: &'static str,
}

/// One finding: a control looked at, what was found, and the evidence.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    /// Stable id, e.g. `rbac.approvals`.
    pub(crate) id: &'static str,
    /// 1–7.
    pub(crate) dimension: u8,
    pub(crate) status: Status,
    /// For a gap: how much it matters. Passing findings carry `low`.
    pub(crate) severity: Severity,
    pub(crate) likelihood: Likelihood,
    /// For a gap: where it comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<Cause>,
    /// One line.
    pub(crate) title: String,
    /// What was found, with the numbers.
    pub(crate) found: String,
    /// Why it matters.
    pub(crate) why: String,
    /// How to close it (gaps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<Fix>,
    /// Evidence ids.
    pub(crate) evidence: Vec<String>,
    /// True when its evidence includes a probe that could not run offline.
    pub(crate) static_only: bool,
}

/// One of the seven dimensions.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Dimension {
    pub(crate) number: u8,
    pub(crate) key: &'static str,
    pub(crate) title: &'static str,
    /// The worst of its findings.
    pub(crate) status: Status,
    pub(crate) color: &'static str,
    /// The gap matrix's one line.
    pub(crate) finding: String,
    /// The worst gap's severity (`low` when green).
    pub(crate) severity: Severity,
    pub(crate) looked_at: &'static str,
    pub(crate) found: String,
    pub(crate) why_it_matters: String,
    /// Ids of its findings.
    pub(crate) findings: Vec<&'static str>,
    /// The effort of the change that closes its worst gap (`S`, `M`, `L`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) effort: Option<&'static str>,
    /// The roadmap items (`R1`, …) that close its gaps.
    pub(crate) roadmap: Vec<String>,
}

/// A ranked risk.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Risk {
    pub(crate) rank: usize,
    pub(crate) finding: &'static str,
    pub(crate) title: String,
    pub(crate) dimension: u8,
    pub(crate) likelihood: Likelihood,
    pub(crate) impact: Severity,
}

/// One phase of the roadmap.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Phase {
    pub(crate) phase: u8,
    pub(crate) weeks: &'static str,
    pub(crate) title: &'static str,
    pub(crate) items: Vec<RoadmapItem>,
}

/// One change on the roadmap, traced to its finding.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RoadmapItem {
    /// `R1`, `R2`, … in roadmap order; the gap matrix points here.
    pub(crate) id: String,
    pub(crate) finding: &'static str,
    pub(crate) dimension: u8,
    pub(crate) title: String,
    pub(crate) detail: String,
    pub(crate) effort: &'static str,
    /// What is true once it is done.
    pub(crate) outcome: String,
    /// Items to do first: earlier items on gaps of the same dimension.
    pub(crate) depends_on: Vec<String>,
}

/// One area of the ten-area security checklist.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Area {
    pub(crate) key: &'static str,
    pub(crate) title: &'static str,
    /// 0 missing, 1 partial, 2 reviewable.
    pub(crate) score: u8,
    pub(crate) why: String,
    /// The findings the score rests on.
    pub(crate) findings: Vec<&'static str>,
}

/// The checklist's score and band.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Checklist {
    pub(crate) score: u8,
    pub(crate) max: u8,
    /// `do_not_approve` (0–8), `limited_pilot` (9–15), `production_candidate` (16–20).
    pub(crate) band: &'static str,
    pub(crate) band_title: &'static str,
    pub(crate) areas: Vec<Area>,
}

/// One dimension of a server's gate.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ServerDimension {
    pub(crate) key: &'static str,
    pub(crate) title: &'static str,
    pub(crate) score: u8,
    pub(crate) why: String,
    pub(crate) evidence: Vec<String>,
}

/// A server's production gate.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ServerGate {
    pub(crate) server: String,
    pub(crate) score: u8,
    pub(crate) max: u8,
    pub(crate) gate: &'static str,
    pub(crate) gate_title: &'static str,
    pub(crate) gate_reason: String,
    pub(crate) dimensions: Vec<ServerDimension>,
}

/// Build facts.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Build {
    pub(crate) version: &'static str,
    pub(crate) commit: &'static str,
    pub(crate) components: Vec<&'static str>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) schema: &'static str,
    pub(crate) generated_at: String,
    /// `live` (from the running gateway) or `static` (offline, from the config).
    pub(crate) mode: &'static str,
    pub(crate) config_file: String,
    pub(crate) config_digest: String,
    pub(crate) profile: &'static str,
    pub(crate) build: Build,
    pub(crate) verdict: String,
    pub(crate) verdict_key: &'static str,
    /// Why the verdict: reasoned from the safety-critical dimensions (01, 02, 06) first.
    pub(crate) verdict_reasoning: String,
    pub(crate) summary: String,
    pub(crate) counts: BTreeMap<&'static str, usize>,
    pub(crate) dimensions: Vec<Dimension>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) top_risks: Vec<Risk>,
    pub(crate) roadmap: Vec<Phase>,
    pub(crate) checklist: Checklist,
    pub(crate) servers: Vec<ServerGate>,
    pub(crate) evidence: Vec<Evidence>,
}

/// The seven dimensions: key, title, what is looked at, why it matters.
pub(crate) const DIMENSIONS: [(&str, &str, &str, &str); 7] = [
    (
        "rbac",
        "Tool-access governance & RBAC",
        "Where the authorization decision lives, whether the model can take part in it, how fine the grants are, and which calls wait for a human.",
        "Keeping the model out of the decision defeats prompt-injection-to-tool-call; what is left is operator configuration: broad grants and unheld writes.",
    ),
    (
        "fail_closed",
        "Fail-close vs fail-open",
        "Every error on the decision path (store, identity, policy evaluation, audit sink, kill-switch state): does a degraded check deny or allow?",
        "A check that fails open turns an outage or an attack on a dependency into an allow, silently.",
    ),
    (
        "onboarding",
        "MCP / agent onboarding flow",
        "How servers and tools are registered, whether the running tool set can be rebuilt from source control, and whether what runs is pinned.",
        "A tool set that drifts from source control, or an unpinned server, is a changed package or definition away from a supply-chain incident (OWASP LLM05).",
    ),
    (
        "observability",
        "Observability & tracing",
        "Whether every decision is recorded before it acts and made durable, whether traces leave the process, and whether a run can be reconstructed.",
        "Without a complete, durable record an incident cannot be reconstructed, and without traces a slow or failing hop cannot be found.",
    ),
    (
        "cost",
        "Multi-LLM routing & cost controls",
        "For an MCP gateway the routes go to upstream MCP servers rather than to models, and the cost is upstream work: whether routing to upstreams is declarative and bounded in time, and whether calls are bounded in rate, concurrency and budget.",
        "Unbounded calls are a path to bill shock and to denial of service of the upstreams (OWASP LLM10).",
    ),
    (
        "identity",
        "Security, secrets & identity (IDP)",
        "Where identity is rooted, whether secrets are inlined, how upstreams are credentialed, and what is exposed on the network.",
        "Who can do what must be answerable and revocable, and no credential may leak through config, logs or a caller's token passed on.",
    ),
    (
        "operations",
        "Production-readiness gaps",
        "The levers that stop a misbehaving tool, staged-rollout modes, the profile, and whether the deployment shape matches the store.",
        "The operational levers decide whether an incident is contained in seconds or needs a redeploy.",
    ),
];

/// The running gateway to probe, and who asked (credited with the probe's audit event).
pub(crate) struct LiveTarget<'a> {
    pub(crate) gw: &'a Gateway,
    pub(crate) requested_by: &'a str,
}

/// The policy the HTML report is served under: its only style is inline, it has no scripts.
pub(crate) const HTML_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// The report of the running gateway, asked for by the operator `requested_by`.
pub(crate) async fn live_report(gw: &Gateway, requested_by: &str) -> Report {
    report(&gw.registry(), Some(LiveTarget { gw, requested_by })).await
}

/// Make the report. With `live`, the probes that need the running gateway run against it;
/// without, they are marked static-only.
pub(crate) async fn report(reg: &Registry, live: Option<LiveTarget<'_>>) -> Report {
    let is_live = live.is_some();
    let probes = probes::run(reg, live).await;
    let mut index = checks::Index::default();
    let findings = checks::findings(reg, &probes, &mut index);
    let servers = checks::server_gates(reg, &mut index);
    assemble::assemble(reg, is_live, findings, servers, index)
}

fn build() -> Build {
    Build {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("PORTCULLIS_COMMIT").unwrap_or("unknown"),
        components: vec![
            "store: SQLite or PostgreSQL (sqlx)",
            "tls: rustls",
            "oidc: RS/PS/ES/EdDSA via jsonwebtoken (aws-lc-rs)",
            "traces: OTLP/HTTP protobuf",
            "mcp: rmcp (Streamable HTTP, stdio)",
        ],
    }
}

#[cfg(test)]
mod tests;
