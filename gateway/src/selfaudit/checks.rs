//! The checks: each looks at config keys, probe results or build facts and yields one finding
//! citing them. One file per dimension; `scores` makes the checklist and the server gates.

use std::net::IpAddr;

use policy::{Approval, Level, ToolClass};
use registry::{Registry, ServerSource, SinkKind};

use super::probes::{Outcome, Probes};

mod cost;
mod exposure;
mod fail;
mod identity;
mod observability;
mod onboarding;
mod operations;
mod rbac;
mod scores;

use super::{
    Area, Cause, Checklist, Evidence, EvidenceKind, Finding, Fix, Likelihood, ServerDimension,
    ServerGate, Severity, Status,
};
pub(crate) use scores::{checklist, server_gates};

/// The evidence index being built: rows in first-cited order, one per distinct fact.
#[derive(Default)]
pub(crate) struct Index {
    rows: Vec<Evidence>,
}

impl Index {
    fn add(
        &mut self,
        kind: EvidenceKind,
        source: String,
        observed: String,
        ok: Option<bool>,
        static_only: bool,
    ) -> String {
        if let Some(e) = self
            .rows
            .iter()
            .find(|e| e.kind == kind && e.source == source && e.observed == observed)
        {
            return e.id.clone();
        }
        let id = format!("E{}", self.rows.len() + 1);
        self.rows.push(Evidence {
            id: id.clone(),
            kind,
            source,
            observed,
            ok,
            static_only,
            // Set once every finding is made (`assemble::grade_evidence`).
            rubric: String::new(),
            color: Status::Pass.color(),
            severity: None,
        });
        id
    }

    /// A config key: where it is written (or that it is not, and the default applies).
    pub(crate) fn config(
        &mut self,
        reg: &Registry,
        path: &str,
        observed: impl Into<String>,
    ) -> String {
        let at = reg.source.value(path);
        let observed = observed.into();
        let (source, observed) = match reg.source.contains(path) {
            true => (format!("{at} `{path}`"), observed),
            false => (
                format!("{} `{path}`", at.file),
                format!("{observed} (not set: the default applies)"),
            ),
        };
        self.add(EvidenceKind::Config, source, observed, None, false)
    }

    /// The key `servers.<name>.<key>` of every server, observed as `observed` says.
    fn per_server(
        &mut self,
        reg: &Registry,
        key: &str,
        observed: impl Fn(&registry::Server) -> String,
    ) -> Vec<String> {
        reg.servers
            .iter()
            .map(|s| self.config(reg, &format!("servers.{}.{key}", s.name), observed(s)))
            .collect()
    }

    /// The config file as a whole.
    fn file(&mut self, reg: &Registry, observed: impl Into<String>) -> String {
        self.add(
            EvidenceKind::Config,
            reg.source.file().to_owned(),
            observed.into(),
            None,
            false,
        )
    }

    fn probe(&mut self, name: &str, outcome: &Outcome) -> String {
        self.add(
            EvidenceKind::Probe,
            format!("probe: {name}"),
            outcome.observed.clone(),
            Some(outcome.ok),
            false,
        )
    }

    fn not_run(&mut self, name: &str) -> String {
        self.add(
            EvidenceKind::Probe,
            format!("probe: {name}"),
            "not run: needs the running gateway (static-only)".into(),
            None,
            true,
        )
    }

    fn build(&mut self, name: &str, observed: impl Into<String>) -> String {
        self.add(
            EvidenceKind::Build,
            format!("build: {name}"),
            observed.into(),
            None,
            false,
        )
    }

    pub(crate) fn into_rows(self) -> Vec<Evidence> {
        self.rows
    }

    fn is_static(&self, ids: &[String]) -> bool {
        self.rows
            .iter()
            .any(|e| e.static_only && ids.contains(&e.id))
    }
}

/// A finding under construction.
struct Check {
    id: &'static str,
    dimension: u8,
    title: String,
    found: String,
    why: String,
    evidence: Vec<String>,
}

impl Check {
    fn new(id: &'static str, dimension: u8) -> Check {
        Check {
            id,
            dimension,
            title: String::new(),
            found: String::new(),
            why: String::new(),
            evidence: Vec::new(),
        }
    }

    fn says(mut self, title: impl Into<String>, found: impl Into<String>, why: &str) -> Check {
        self.title = title.into();
        self.found = found.into();
        self.why = why.to_owned();
        self
    }

    fn cites(mut self, ids: impl IntoIterator<Item = String>) -> Check {
        self.evidence.extend(ids);
        self
    }

    fn pass(self, index: &Index) -> Finding {
        self.finish(
            index,
            Status::Pass,
            Severity::Low,
            Likelihood::Low,
            None,
            None,
        )
    }

    fn gap(
        self,
        index: &Index,
        status: Status,
        severity: Severity,
        likelihood: Likelihood,
        cause: Cause,
        fix: (&str, &str, &'static str),
    ) -> Finding {
        let (title, detail, effort) = fix;
        self.finish(
            index,
            status,
            severity,
            likelihood,
            Some(cause),
            Some(Fix {
                title: title.to_owned(),
                detail: detail.to_owned(),
                effort,
            }),
        )
    }

    fn finish(
        self,
        index: &Index,
        status: Status,
        severity: Severity,
        likelihood: Likelihood,
        cause: Option<Cause>,
        fix: Option<Fix>,
    ) -> Finding {
        Finding {
            static_only: index.is_static(&self.evidence),
            id: self.id,
            dimension: self.dimension,
            status,
            severity,
            likelihood,
            cause,
            title: self.title,
            found: self.found,
            why: self.why,
            fix,
            evidence: self.evidence,
        }
    }
}

fn writes(reg: &Registry) -> Vec<(String, String)> {
    reg.servers
        .iter()
        .flat_map(|s| {
            s.tools
                .iter()
                .filter(|(_, t)| t.class >= ToolClass::Write)
                .map(|(n, _)| (s.name.clone(), n.clone()))
        })
        .collect()
}

fn tool_path(server: &str, tool: &str) -> String {
    format!("servers.{server}.tools.{tool}")
}

/// True for an address others on the network can reach.
fn public(ip: IpAddr) -> bool {
    !ip.is_loopback()
}

/// True when `url`'s host is a loopback name or address.
fn loopback_url(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What the rules read: the config in force and the probes' results.
pub(crate) struct Cx<'a> {
    pub(crate) reg: &'a Registry,
    pub(crate) probes: &'a Probes,
}

/// One row of the self-audit: a finding's id, its readiness dimension, and the rule that reads
/// the evidence, cites it and grades it. A rule pushes only findings of its own id (none, when
/// it reports only a gap and there is none), each made from the `Check` it is given.
pub(crate) struct Rule {
    pub(crate) id: &'static str,
    pub(crate) dimension: u8,
    rule: fn(&Cx<'_>, &mut Index, Check, &mut Vec<Finding>),
}

const fn row(
    id: &'static str,
    dimension: u8,
    rule: fn(&Cx<'_>, &mut Index, Check, &mut Vec<Finding>),
) -> Rule {
    Rule {
        id,
        dimension,
        rule,
    }
}

/// The self-audit, as a table: every check in report order (dimension by dimension).
pub(crate) const RULES: &[Rule] = &[
    row("rbac.intersection", 1, rbac::intersection),
    row("rbac.allowlists", 1, rbac::allowlists),
    row("rbac.default_grants", 1, rbac::default_grants),
    row("rbac.approvals", 1, rbac::approvals),
    row("rbac.generic_tools", 1, rbac::generic_tools),
    row("fail.store_error", 2, fail::store_error),
    row("fail.faulted_level", 2, fail::faulted_level),
    row("fail.panic", 2, fail::panic),
    row("fail.audit", 2, fail::audit),
    row("fail.kill_lease", 2, fail::kill_lease),
    row("onboard.source_of_truth", 3, onboarding::source_of_truth),
    row("onboard.config_drift", 3, onboarding::config_drift),
    row("onboard.stdio_pinning", 3, onboarding::stdio_pinning),
    row("onboard.tool_text", 3, onboarding::tool_text),
    row("onboard.class_raised", 3, onboarding::class_raised),
    row("onboard.fingerprints", 3, onboarding::fingerprints),
    row("onboard.ci_gate", 3, onboarding::ci_gate),
    row("obs.audit_sinks", 4, observability::audit_sinks),
    row("obs.audit_retention", 4, observability::audit_retention),
    row("obs.otlp", 4, observability::otlp),
    row("obs.metrics", 4, observability::metrics),
    row("cost.request_bounds", 5, cost::request_bounds),
    row("cost.routing", 5, cost::routing),
    row("cost.limits", 5, cost::limits),
    row("id.no_anonymous", 6, identity::no_anonymous),
    row("id.oidc", 6, identity::oidc),
    row("id.tenancy", 6, identity::tenancy),
    row("id.operator_scope", 6, identity::operator_scope),
    row("id.secrets", 6, identity::secrets),
    row("id.redaction_key", 6, identity::redaction_key),
    row("id.token_exchange", 6, identity::token_exchange),
    row("id.admin_listener", 6, exposure::admin_listener),
    row("id.transport", 6, exposure::transport),
    row("id.ssrf", 6, exposure::ssrf),
    row("ops.kill_switch", 7, operations::kill_switch),
    row("ops.modes", 7, operations::modes),
    row("ops.profile", 7, operations::profile),
    row("ops.replicas", 7, operations::replicas),
    row("ops.upstreams", 7, operations::upstreams),
];

/// Every finding, in the table's order.
pub(crate) fn findings(reg: &Registry, probes: &Probes, ix: &mut Index) -> Vec<Finding> {
    let cx = Cx { reg, probes };
    let mut out = Vec::new();
    for r in RULES {
        (r.rule)(&cx, ix, Check::new(r.id, r.dimension), &mut out);
    }
    out
}
