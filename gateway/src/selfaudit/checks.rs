//! The checks: each looks at config keys, probe results or build facts and yields one finding
//! citing them.

use std::net::IpAddr;

use policy::{Approval, Level, ToolClass};
use registry::{Registry, ServerSource, SinkKind};

use super::probes::{Outcome, Probes};
use super::{
    Area, Cause, Checklist, Evidence, EvidenceKind, Finding, Fix, Likelihood, ServerDimension,
    ServerGate, Severity, Status,
};

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

/// Every finding, in dimension order.
pub(crate) fn findings(reg: &Registry, probes: &Probes, ix: &mut Index) -> Vec<Finding> {
    let mut out = Vec::new();
    rbac(reg, ix, &mut out);
    fail_closed(reg, probes, ix, &mut out);
    onboarding(reg, probes, ix, &mut out);
    observability(reg, probes, ix, &mut out);
    cost(reg, ix, &mut out);
    identity(reg, probes, ix, &mut out);
    operations(reg, probes, ix, &mut out);
    out
}

fn rbac(reg: &Registry, ix: &mut Index, out: &mut Vec<Finding>) {
    let e = ix.build(
        "policy",
        "every call is decided by policy::decide over each resolved level (org, team, key, user, agent); a call is allowed only if every resolved level grants it; property-tested",
    );
    out.push(
        Check::new("rbac.intersection", 1)
            .says(
                "Authorization is decided by the gateway on caller identity, as the intersection of every resolved level",
                "The decision is made by the gateway, never the model: each resolved level must grant the call, and unmapped callers are denied.",
                "This is what defeats prompt-injection-to-tool-call.",
            )
            .cites([e])
            .pass(ix),
    );

    let tools: usize = reg.servers.iter().map(|s| s.tools.len()).sum();
    let ev = ix.per_server(reg, "tools", |s| {
        format!("{} allowlisted tool(s)", s.tools.len())
    });
    out.push(
        Check::new("rbac.allowlists", 1)
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

    let mut broad = Vec::new();
    for s in &reg.servers {
        for p in registry::default_grants_reaching_writes(reg, s) {
            if !broad.iter().any(|(q, _): &(String, String)| *q == p) {
                broad.push((p, s.name.clone()));
            }
        }
    }
    let c = Check::new("rbac.default_grants", 1);
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

    let c = Check::new("rbac.approvals", 1);
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
            Check::new("rbac.generic_tools", 1)
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

fn fail_closed(reg: &Registry, probes: &Probes, ix: &mut Index, out: &mut Vec<Finding>) {
    for (id, name, outcome, title) in [
        (
            "fail.store_error",
            "credential check with the store unreachable",
            &probes.store_error,
            "A store error during authentication is a refusal",
        ),
        (
            "fail.faulted_level",
            "decision for a key whose stored grants are corrupt",
            &probes.faulted_level,
            "A level that cannot be resolved denies the call",
        ),
        (
            "fail.panic",
            "policy evaluation that panics",
            &probes.panic_guard,
            "A failure inside policy evaluation is a deny",
        ),
    ] {
        let e = ix.probe(name, outcome);
        let c = Check::new(id, 2).cites([e]);
        out.push(match outcome.ok {
            true => c.says(title, format!("Probe: {}.", outcome.observed), "").pass(ix),
            false => c
                .says(
                    format!("FAIL-OPEN: {name}"),
                    format!("Probe: {}.", outcome.observed),
                    "A degraded check silently became an allow.",
                )
                .gap(
                    ix,
                    Status::Absent,
                    Severity::Critical,
                    Likelihood::Medium,
                    Cause::Probe,
                    (
                        "Make the failing path deny",
                        "Return a deny from this path on every error and add a regression test that injects the fault.",
                        "S",
                    ),
                ),
        });
    }

    let required: Vec<String> = reg
        .settings
        .audit
        .sinks
        .iter()
        .enumerate()
        .filter(|(_, s)| s.required)
        .map(|(i, s)| format!("audit.sinks[{i}] ({})", s.kind.name()))
        .collect();
    let mut ev = vec![ix.config(
        reg,
        "audit.sinks",
        format!("required sink(s): {}", required.join(", ")),
    )];
    let c = Check::new("fail.audit", 2);
    let f = match probes.live.as_ref().map(|l| &l.audit_sink) {
        Some(o) if !o.ok => {
            ev.push(ix.probe("audit probe event", o));
            c.says(
                "No required audit sink accepts events: every call is being refused",
                o.observed.clone(),
                "The gateway is failing closed: nothing runs until a sink accepts events again.",
            )
            .cites(ev)
            .gap(
                ix,
                Status::Partial,
                Severity::High,
                Likelihood::High,
                Cause::Probe,
                (
                    "Repair the audit sink",
                    "Make a required sink writable again (disk space, permissions, the store); calls resume once one accepts the request event.",
                    "S",
                ),
            )
        }
        other => {
            ev.push(match other {
                Some(o) => ix.probe("audit probe event", o),
                None => ix.not_run("audit probe event"),
            });
            c.says(
                "A call runs only after its request event is written to a required audit sink",
                format!(
                    "{} required sink(s); if none accepts the request event within 5 s the call is refused (-32001) and the upstream is not called.",
                    required.len()
                ),
                "",
            )
            .cites(ev)
            .pass(ix)
        }
    };
    out.push(f);

    let lease = reg.settings.kill_switch.lease;
    let mut ev = vec![ix.config(
        reg,
        "kill_switch.lease",
        format!("{} s", lease.as_secs_f64()),
    )];
    let live = probes.live.as_ref().map(|l| &l.kill_switch);
    ev.push(match live {
        Some(o) => ix.probe("kill-switch state", o),
        None => ix.not_run("kill-switch state"),
    });
    let c = Check::new("fail.kill_lease", 2).cites(ev);
    out.push(if live.is_some_and(|o| !o.ok) {
        c.says(
            "The kill-switch state cannot be read: every call is refused",
            live.map(|o| o.observed.clone()).unwrap_or_default(),
            "The gateway fails closed while the store is unreadable.",
        )
        .gap(
            ix,
            Status::Partial,
            Severity::High,
            Likelihood::High,
            Cause::Probe,
            (
                "Restore the store",
                "Make the store readable; the state is read again every poll and calls resume within a second.",
                "S",
            ),
        )
    } else if lease.as_millis() > 30_000 {
        c.says(
            format!("A process that cannot read the kill switch keeps its last view for {} s", lease.as_secs_f64()),
            "Past the lease every call is refused, but within it an engaged switch may not be seen.",
            "A switch engaged during a store outage takes effect only after the lease.",
        )
        .gap(
            ix,
            Status::Partial,
            Severity::Medium,
            Likelihood::Low,
            Cause::Config,
            (
                "Shorten the kill-switch lease",
                "Set `kill_switch.lease` to 30 s or less (the default is 5 s).",
                "S",
            ),
        )
    } else {
        c.says(
            "An unreadable kill-switch state counts as engaged after its lease",
            format!(
                "The state is read every {} ms; after {} s without a successful read every call is refused.",
                reg.settings.kill_switch.poll.as_millis(),
                lease.as_secs_f64()
            ),
            "",
        )
        .pass(ix)
    });
}

fn onboarding(reg: &Registry, probes: &Probes, ix: &mut Index, out: &mut Vec<Finding>) {
    let e = ix.config(reg, "servers", format!("config digest {}", reg.digest));
    let b = ix.build(
        "admin API",
        "routes: kill-switch, mode, approvals, keys, events, audit, metrics, self-audit; none adds a server or a tool; keys may be issued with their own grants",
    );
    let required: Vec<&str> = Level::ALL
        .iter()
        .filter(|l| **l != Level::Key && reg.access.policy.requires(**l))
        .map(|l| l.as_str())
        .collect();
    let r = ix.config(
        reg,
        "identity.require",
        match required.is_empty() {
            true => "no level besides the key required".to_owned(),
            false => required.join(", "),
        },
    );
    let c = Check::new("onboard.source_of_truth", 3).cites([e, b, r]);
    out.push(match required.is_empty() {
        false => c
            .says(
                "Servers, tools and grants come only from the config file",
                format!(
                    "The running tool set is this file (digest {}); no API adds a server or a tool. Keys issued through the admin API may carry their own grants, but every call also needs a required level ({}) whose grants come from this file, so no key reaches beyond it.",
                    reg.digest,
                    required.join(", ")
                ),
                "",
            )
            .pass(ix),
        true => c
            .says(
                "Keys issued at runtime carry grants the config does not bound",
                format!(
                    "Servers and tools come only from this file (digest {}), but no identity level besides the key is required: a key issued through the admin API with its own grants (any allowlisted tool) and no org or team is decided on those grants alone.",
                    reg.digest
                ),
                "Who may call what cannot be read from source control alone; it also depends on keys issued since.",
            )
            .gap(
                ix,
                Status::Partial,
                Severity::Low,
                Likelihood::Low,
                Cause::Config,
                (
                    "Bound runtime keys by config grants",
                    "Add a level whose grants live in the config (e.g. `org`) to `identity.require`, so a key's own grants can only narrow them.",
                    "S",
                ),
            ),
    });

    if let Some(drift) = probes
        .live
        .as_ref()
        .and_then(|l| l.config_file.as_ref())
        .filter(|o| !o.ok)
    {
        let e = ix.probe("config file", drift);
        out.push(
            Check::new("onboard.config_drift", 3)
                .says(
                    "The config file is not the config in force",
                    "The file on disk differs from what this process runs, most likely because its last reload was refused; the file's changes are not in effect.",
                    "What source control shows is not what the gateway enforces until the file loads.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::High,
                    Cause::Probe,
                    (
                        "Make the file load",
                        "Fix the problems the `config.reload` event names (`portcullis check --config FILE`), or restart if it changes a restart-only setting.",
                        "S",
                    ),
                ),
        );
    }

    let commands: Vec<(&registry::Server, &registry::CommandSource)> = reg
        .servers
        .iter()
        .filter_map(|s| match &s.source {
            ServerSource::Command(c) => Some((s, &**c)),
            _ => None,
        })
        .collect();
    if !commands.is_empty() {
        let ev: Vec<String> = commands
            .iter()
            .map(|(s, c)| {
                let observed = match &c.artifact {
                    registry::Artifact::Unpinned { program } => {
                        format!("program `{program}`: no digest; runs only because the profile is development")
                    }
                    registry::Artifact::Local { program, integrity } => {
                        format!("program `{program}` pinned to {}; verified before every spawn", integrity.text)
                    }
                    a => format!("{} pinned to its published digest; verified before every spawn", a.describe()),
                };
                ix.config(reg, &format!("servers.{}.command", s.name), observed)
            })
            .collect();
        let unpinned: Vec<&str> = commands
            .iter()
            .filter(|(_, c)| !c.artifact.is_pinned())
            .map(|(s, _)| s.name.as_str())
            .collect();
        let c = Check::new("onboard.stdio_pinning", 3).cites(ev);
        out.push(match unpinned.is_empty() {
            true => c
                .says(
                    "Every stdio server is pinned by digest and verified before each launch",
                    format!(
                        "{} stdio server(s); each artifact (program file, npm tarball or PyPI file) is hashed before every spawn and a mismatch is not started. Launches use no shell and a cleared environment.",
                        commands.len()
                    ),
                    "What runs is what was reviewed, even after a restart.",
                )
                .pass(ix),
            false => c
                .says(
                    format!("stdio server(s) launched unpinned: {}", unpinned.join(", ")),
                    "The development profile lets these servers run from a program path with no digest; whatever is at that path when the server restarts is what runs.",
                    "An unreviewed binary runs with the gateway's grants.",
                )
                .gap(
                    ix,
                    Status::Absent,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Pin stdio servers by digest",
                        "Add `integrity:` (the program's sha256, or a package's published digest) to every `command`.",
                        "S",
                    ),
                ),
        });
    }

    let pinnable: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| !matches!(s.source, ServerSource::Builtin(_)))
        .collect();
    if !pinnable.is_empty() {
        let mut ev = Vec::new();
        let mut unpinned = Vec::new();
        for s in &pinnable {
            let missing: Vec<&str> = s
                .tools
                .keys()
                .filter(|t| !s.pins.as_ref().is_some_and(|p| p.contains_key(*t)))
                .map(String::as_str)
                .collect();
            let http = matches!(s.source, ServerSource::Http { .. });
            let observed = match (&s.pins, missing.is_empty()) {
                (Some(p), true) => format!("{} tool definition(s) pinned", p.len()),
                (Some(_), false) => format!(
                    "allowlisted but not pinned (hidden): {}",
                    missing.join(", ")
                ),
                (None, _) if http && reg.settings.profile == registry::Profile::Production => {
                    "no `pin`: every tool of this server is hidden".to_string()
                }
                (None, _) => {
                    "no `pin`: the definitions first seen are kept for the process's lifetime"
                        .to_string()
                }
            };
            if !missing.is_empty() && (http || s.pins.is_some()) {
                unpinned.push(s.name.as_str());
            }
            let path = match s.pins.is_some() {
                true => format!("servers.{}.pin", s.name),
                false => format!("servers.{}", s.name),
            };
            ev.push(ix.config(reg, &path, observed));
        }
        let mut quarantined = Vec::new();
        let mut instructed = Vec::new();
        let mut raised = Vec::new();
        if probes.live.is_none() {
            // Whether the upstreams now serve what was pinned is seen only by the running gateway.
            ev.push(ix.not_run("upstream tool definitions against their pins"));
        }
        if let Some(live) = &probes.live {
            for (name, o) in &live.upstreams {
                if pinnable.iter().any(|s| &s.name == name) {
                    ev.push(ix.probe(&format!("upstream `{name}` tools"), o));
                    if o.observed.contains("quarantined") {
                        quarantined.push(name.as_str());
                    }
                    if o.observed.contains("instruction-like text in served") {
                        instructed.push(name.as_str());
                    }
                    if o.observed
                        .contains("class raised by the upstream's annotations")
                    {
                        raised.push(name.as_str());
                    }
                }
            }
        }
        if !instructed.is_empty() {
            let evidence: Vec<_> = ev.clone();
            out.push(
                Check::new("onboard.tool_text", 3).cites(evidence).says(
                    format!("Tools whose text addresses the model are served on: {}", instructed.join(", ")),
                    "These definitions carry instruction-like markup or phrasing (`<IMPORTANT>`, \"do not tell the user\", paths to private keys); an operator confirmed them at pin time, and clients' models read them as written.",
                    "A poisoned description steers the model without a call being made: it is an injection that every client reads.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Probe,
                    (
                        "Review tools whose descriptions address the model",
                        "Read each flagged description; remove the tool from the allowlist or ask the upstream to fix it, then re-pin.",
                        "S",
                    ),
                ),
            );
        }
        if !raised.is_empty() {
            out.push(
                Check::new("onboard.class_raised", 3).cites(ev.clone()).says(
                    format!("The config understates the class of tools on: {}", raised.join(", ")),
                    "Their upstream annotates them as writing or destructive while the config says less; the gateway enforces the higher class (approval, read-only mode), so the control holds, but the config no longer says what is enforced.",
                    "Reviewers and `portcullis check` read the config: a tool listed as `read` that is enforced as destructive surprises both.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Low,
                    Likelihood::High,
                    Cause::Probe,
                    (
                        "Make each tool's class what is enforced",
                        "Set `class:` to the enforced class for each tool named in the evidence (`portcullis pin` and `portcullis check` name them too).",
                        "S",
                    ),
                ),
            );
        }
        let c = Check::new("onboard.fingerprints", 3).cites(ev);
        out.push(match (unpinned.is_empty(), quarantined.is_empty()) {
            (true, true) => c
                .says(
                    "Tool definitions are pinned; a changed tool is quarantined",
                    "Each allowlisted tool's definition (name, title, description, schemas, annotations) is digested on connect and on `list_changed`; one that differs from its pin is hidden and refused with `quarantined` until an operator re-pins it. Definitions with control, bidi, tag or zero-width characters are refused.",
                    "A rug pull reaches no client.",
                )
                .pass(ix),
            (_, false) => c
                .says(
                    format!("Quarantined tools on: {}", quarantined.join(", ")),
                    "An upstream now offers a definition that differs from its pin; those tools are hidden and refused until an operator reviews the change and re-pins (`portcullis pin`).",
                    "Clients are protected, but the tools are unavailable and the change needs review.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::High,
                    Cause::Probe,
                    (
                        "Review quarantined tools",
                        "Read the diff `portcullis pin` shows; re-pin if the change is benign, otherwise remove the server.",
                        "S",
                    ),
                ),
            (false, true) => c
                .says(
                    format!("Allowlisted tools without pins on: {}", unpinned.join(", ")),
                    "Tools without a pin are hidden; clients cannot use them until they are pinned.",
                    "Nothing unreviewed is served, but the allowlist promises tools clients do not get.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::High,
                    Cause::Config,
                    (
                        "Pin every allowlisted tool",
                        "Run `portcullis pin --config FILE` and commit the `pin:` it writes.",
                        "S",
                    ),
                ),
        });
    }

    let problems = registry::check(reg);
    let b = ix.build(
            "commands",
            "`portcullis check --config FILE` (the CI gate: allowlist, pinned source, reaching grant, rate limit on write tools, no inline secret) and `portcullis pin`",
        );
    let mut ev = vec![b];
    for p in problems.iter().take(8) {
        ev.push(ix.config(reg, &p.path, p.message.clone()));
    }
    let c = Check::new("onboard.ci_gate", 3).cites(ev);
    out.push(match problems.is_empty() {
            true => c
                .says(
                    "`portcullis check` passes on this config",
                    "The CI gate finds every server allowlisted, pinned, reached by a grant and rate-limited on its write tools, with no inline secret.",
                    "Run in CI, it stops a change that loosens any of these before it merges.",
                )
                .pass(ix),
            false => c
                .says(
                    format!("`portcullis check` finds {} problem(s)", problems.len()),
                    "The CI gate would fail this config: see the cited keys.",
                    "A change like this would not pass review if the gate ran in CI.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Make `portcullis check` pass and run it in CI",
                        "Fix each problem `portcullis check` lists, and run it on every pull request that touches the config.",
                        "S",
                    ),
                ),
        });
}

fn observability(reg: &Registry, probes: &Probes, ix: &mut Index, out: &mut Vec<Finding>) {
    let sinks = &reg.settings.audit.sinks;
    let mut weak = Vec::new();
    for (i, s) in sinks.iter().enumerate() {
        if !s.required {
            weak.push((
                format!("audit.sinks[{i}].required"),
                format!(
                    "{} sink is best-effort: events it misses are not retried",
                    s.kind.name()
                ),
            ));
        }
        if let SinkKind::File { fsync: false, path } = &s.kind {
            weak.push((
                    format!("audit.sinks[{i}].fsync"),
                    format!(
                        "file sink `{path}` is not synced: a power loss can lose any acknowledged event (a synced sink, at most those of the flush in progress)"
                    ),
                ));
        }
    }
    let c = Check::new("obs.audit_sinks", 4);
    out.push(match weak.is_empty() {
            true => {
                let e = ix.config(
                    reg,
                    "audit.sinks",
                    sinks
                        .iter()
                        .map(|s| format!("{} (required)", s.kind.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                let readable = sinks
                    .iter()
                    .any(|s| matches!(s.kind, SinkKind::Store | SinkKind::File { .. }));
                c.says(
                    "Every decision is one redacted, hash-chained event in required sinks",
                    format!(
                        "{} sink(s), all required; file sinks are synced once per batch; `portcullis audit verify` checks the chain; {}",
                        sinks.len(),
                        match readable {
                            true => "`/admin/audit` exports and replays runs.",
                            false => "the sinks are stdout only, so `/admin/audit` cannot read them back.",
                        }
                    ),
                    "",
                )
                .cites([e])
                .pass(ix)
            }
            false => {
                let ev: Vec<String> = weak.iter().map(|(p, o)| ix.config(reg, p, o.clone())).collect();
                c.says(
                    format!("{} audit sink setting(s) weaken the record", weak.len()),
                    weak.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>().join("; ") + ".",
                    "A sink that can miss or lose events is not the record an incident review can rely on.",
                )
                .cites(ev)
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Low,
                    Cause::Config,
                    (
                        "Make every audit sink required and synced",
                        "Set `required: true` and `fsync: true` on each sink that is part of the record, or remove it.",
                        "S",
                    ),
                )
            }
        });

    let c = Check::new("obs.otlp", 4);
    out.push(match &reg.settings.telemetry.otlp {
            Some(o) => {
                let endpoint = crate::redact::uri_for_record(&o.endpoint);
                let e = ix.config(reg, "telemetry.otlp.endpoint", endpoint.clone());
                // Configured is not delivered: the running gateway says what its last export did.
                let delivery = match probes.live.as_ref().and_then(|l| l.otlp.as_ref()) {
                    Some(outcome) => (ix.probe("latest OTLP export", outcome), Some(outcome.clone())),
                    None => (ix.not_run("latest OTLP export"), None),
                };
                match delivery {
                    (d, Some(outcome)) if !outcome.ok && outcome.observed.contains("failed") => c
                        .says(
                            "Traces are configured, but the latest export failed",
                            format!(
                                "Spans are sent to {endpoint}, and the collector did not take the latest batch: {}.",
                                outcome.observed
                            ),
                            "Spans that are not delivered cannot reconstruct a failing hop; the exporter drops what it cannot send.",
                        )
                        .cites([e, d])
                        .gap(
                            ix,
                            Status::Partial,
                            Severity::Medium,
                            Likelihood::High,
                            Cause::Probe,
                            (
                                "Restore trace delivery",
                                "Check that the collector at `telemetry.otlp.endpoint` is up and accepts OTLP/HTTP on `/v1/traces`, then watch the next self-audit show a delivered export.",
                                "S",
                            ),
                        ),
                    (d, outcome) => c
                        .says(
                            "Traces are exported over OTLP with GenAI/MCP attributes",
                            format!(
                                "A SERVER span per request and a CLIENT span per upstream call go to {}; inbound W3C traceparent is the parent and is passed to upstreams. Delivery: {}.",
                                endpoint,
                                outcome.map_or_else(
                                    || "not observed offline".to_owned(),
                                    |o| o.observed
                                )
                            ),
                            "",
                        )
                        .cites([e, d])
                        .pass(ix),
                }
            }
            None => {
                let e = ix.config(reg, "telemetry.otlp", "no OTLP exporter configured");
                c.says(
                    "No trace exporter: spans are not exported",
                    "`telemetry.otlp` is not set, so no span leaves the process; a slow or failing hop can be found only from the audit log and metrics.",
                    "End-to-end reconstruction across agent, gateway and upstream needs the traces.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Export traces",
                        "Set `telemetry.otlp.endpoint` to your collector's OTLP/HTTP endpoint.",
                        "S",
                    ),
                )
            }
        });

    let b = ix.build(
            "metrics",
            "/metrics on the admin listener: requests, latency, tool calls, upstream results, fail-closed refusals by cause, approvals, switches, audit sinks",
        );
    out.push(
            Check::new("obs.metrics", 4)
                .says(
                    "Prometheus metrics with closed-set labels on the admin listener",
                    "Refusals are counted by cause, so a fail-closed storm is visible; labels carry no identity, argument or secret.",
                    "",
                )
                .cites([b])
                .pass(ix),
        );
}

fn cost(reg: &Registry, ix: &mut Index, out: &mut Vec<Finding>) {
    request_bounds(reg, ix, out);
    let ev = ix.per_server(reg, "timeout", |s| format!("{} s", s.timeout.as_secs_f64()));
    out.push(
            Check::new("cost.routing", 5)
                .says(
                    "Routing to upstreams is declarative and bounded in time",
                    format!(
                        "{} upstream(s) named in config, each with a timeout after which the caller gets an error naming the server.",
                        reg.servers.len()
                    ),
                    "",
                )
                .cites(ev)
                .pass(ix),
        );

    let w = writes(reg);
    let unlimited: Vec<&(String, String)> = w
        .iter()
        .filter(|(s, t)| {
            reg.servers
                .iter()
                .find(|x| &x.name == s)
                .and_then(|x| x.tools.get(t))
                .is_none_or(|e| e.rate.is_none())
        })
        .collect();
    let mut ev: Vec<String> = unlimited
        .iter()
        .take(10)
        .map(|(s, t)| {
            ix.config(
                reg,
                &tool_path(s, t),
                "write/destructive tool with no `rate`",
            )
        })
        .collect();
    let limited = w.len() - unlimited.len();
    if limited > 0 {
        ev.push(ix.file(
            reg,
            format!("{limited} write/destructive tool(s) with a `rate` limit"),
        ));
    }
    ev.push(ix.build(
            "limits",
            "per-tool rate limits (`tools.<name>.rate`, counted per process, refused with `rate_limited`); no per-identity limits, concurrency caps or budgets",
        ));
    let c = Check::new("cost.limits", 5).cites(ev);
    out.push(match unlimited.is_empty() {
            true => c
                .says(
                    "Write tools are rate-limited; there are no per-identity budgets",
                    format!(
                        "{} write/destructive tool(s), each with a per-tool rate limit counted in each gateway process. This build has no per-identity rate limits, concurrency caps or budget units.",
                        w.len()
                    ),
                    "A looping agent is bounded per tool, but one caller can use the whole allowance and spend is not tracked.",
                )
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Medium,
                    Cause::Unbuilt,
                    (
                        "Add per-identity limits and budgets",
                        "Bound calls per identity level (rate, concurrency, budget units per period), shared across replicas, refusing with `rate_limited` or `budget_exceeded`.",
                        "M",
                    ),
                ),
            false => c
                .says(
                    format!("{} write/destructive tool(s) without a rate limit", unlimited.len()),
                    "These tools can be called as fast as a client sends; per-identity limits and budgets are not in this build either.",
                    "A looping agent can exhaust an upstream's quota or run up its bill, and nothing stops it but the kill switch.",
                )
                .gap(
                    ix,
                    Status::Absent,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Rate-limit every write tool",
                        "Add `rate:` (e.g. `10/min`) to each write and destructive tool.",
                        "S",
                    ),
                ),
        });
}

/// Request sizes and deadlines past which one caller can tie up the gateway: a body or a tool's
/// arguments larger than this, or a head or body deadline longer than this.
const GENEROUS_BODY: usize = 16 * 1024 * 1024;
const GENEROUS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

fn request_bounds(reg: &Registry, ix: &mut Index, out: &mut Vec<Finding>) {
    let st = &reg.settings;
    let mut ev = vec![
        ix.config(reg, "http.max_body", format!("{} bytes", st.max_body)),
        ix.config(
            reg,
            "http.header_timeout",
            format!("{} s", st.header_timeout.as_secs_f64()),
        ),
        ix.config(
            reg,
            "http.body_timeout",
            format!("{} s", st.body_timeout.as_secs_f64()),
        ),
    ];
    let mut loose: Vec<String> = Vec::new();
    if st.max_body > GENEROUS_BODY {
        loose.push(format!(
            "`http.max_body` is {} MiB",
            st.max_body / (1024 * 1024)
        ));
    }
    for (key, d) in [
        ("http.header_timeout", st.header_timeout),
        ("http.body_timeout", st.body_timeout),
    ] {
        if d > GENEROUS_DEADLINE {
            loose.push(format!("`{key}` is {} s", d.as_secs()));
        }
    }
    for s in &reg.servers {
        for (t, e) in &s.tools {
            if e.argument_limits.bytes > GENEROUS_BODY {
                let path = format!("{}.max_argument_bytes", tool_path(&s.name, t));
                ev.push(ix.config(reg, &path, format!("{} bytes", e.argument_limits.bytes)));
                loose.push(format!(
                    "`{}/{t}` takes {} MiB of arguments",
                    s.name,
                    e.argument_limits.bytes / (1024 * 1024)
                ));
            }
        }
    }
    let c = Check::new("cost.request_bounds", 5).cites(ev);
    out.push(match loose.is_empty() {
        true => c
            .says(
                "Request sizes and deadlines are bounded",
                format!(
                    "Bodies are at most {} KiB, read only after authentication within {} s; request heads must arrive within {} s; each tool's arguments are bounded in size, values and depth.",
                    st.max_body / 1024,
                    st.body_timeout.as_secs_f64(),
                    st.header_timeout.as_secs_f64()
                ),
                "",
            )
            .pass(ix),
        false => c
            .says(
                format!("Generous request bounds: {}", loose.join("; ")),
                "One caller (or, before authentication, anyone) can hold memory or a connection this long or this large per request.",
                "Unbounded consumption: a few slow or large requests tie up what every caller shares.",
            )
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Tighten request bounds",
                    "Keep `http.max_body` to what tools need (the default is 4 MiB), deadlines to seconds, and `max_argument_bytes` below the body limit.",
                    "S",
                ),
            ),
    });
}

fn identity(reg: &Registry, probes: &Probes, ix: &mut Index, out: &mut Vec<Finding>) {
    let b = ix.build(
            "authentication",
            "every /mcp request needs an API key (stored hashed) or a verified OIDC token; no anonymous path",
        );
    out.push(
            Check::new("id.no_anonymous", 6)
                .says(
                    "Every MCP request carries a verified identity; there is no anonymous path",
                    "Keys are stored as hashes and revocable at once; sessions are bound to the caller that opened them.",
                    "",
                )
                .cites([b])
                .pass(ix),
        );

    let issuers = &reg.access.oidc;
    let c = Check::new("id.oidc", 6);
    out.push(if issuers.is_empty() {
            let e = ix.config(reg, "identity.oidc", "no OIDC issuer: identity is gateway-issued API keys only");
            c.says(
                "Identity is gateway-issued API keys only (no identity provider)",
                "Callers are identified by long-lived API keys; there is no IdP-rooted identity, token lifetime or central revocation.",
                "Who a key belongs to is only as good as the record kept when it was issued.",
            )
            .cites([e])
            .gap(
                ix,
                Status::Partial,
                Severity::Low,
                Likelihood::Low,
                Cause::Config,
                (
                    "Root identity in your IdP",
                    "Add an `identity.oidc` issuer so callers present short-lived tokens whose claims map to org, team, user and agent.",
                    "M",
                ),
            )
        } else {
            let mut ev: Vec<String> = issuers
                .iter()
                .enumerate()
                .map(|(i, o)| ix.config(reg, &format!("identity.oidc[{i}].issuer"), o.issuer.clone()))
                .collect();
            let mut failing = Vec::new();
            match &probes.live {
                Some(live) => {
                    for (issuer, o) in &live.oidc {
                        ev.push(ix.probe(&format!("JWKS of {issuer}"), o));
                        if !o.ok {
                            failing.push(issuer.clone());
                        }
                    }
                }
                None => ev.push(ix.not_run("JWKS of each issuer")),
            }
            let c = c.cites(ev);
            match failing.is_empty() {
                true => c
                    .says(
                        "Identity is rooted in OIDC: signed, expiring tokens verified against the issuer's keys",
                        format!(
                            "{} issuer(s); issuer, audience, expiry and algorithm are checked; claims map to identity levels.",
                            issuers.len()
                        ),
                        "",
                    )
                    .pass(ix),
                false => c
                    .says(
                        format!("Identity provider key set unreachable: {}", failing.join(", ")),
                        "Tokens from these issuers cannot be verified now; their callers are refused (503).",
                        "The gateway fails closed, so callers are locked out until the IdP answers.",
                    )
                    .gap(
                        ix,
                        Status::Partial,
                        Severity::High,
                        Likelihood::High,
                        Cause::Probe,
                        (
                            "Restore the IdP connection",
                            "Check the issuer's discovery document and JWKS from the gateway host.",
                            "S",
                        ),
                    ),
            }
        });

    let c = Check::new("id.tenancy", 6);
    let required: Vec<&str> = Level::ALL
        .iter()
        .filter(|l| reg.access.policy.requires(**l))
        .map(|l| l.as_str())
        .collect();
    let e = ix.config(
        reg,
        "identity.require",
        match required.is_empty() {
            true => "no level required".to_owned(),
            false => required.join(", "),
        },
    );
    out.push(match reg.access.policy.requires(Level::Org) {
            true => c
                .says(
                    "Every caller must resolve to an org: tenants are separated at the decision",
                    format!("Required levels: {}.", required.join(", ")),
                    "",
                )
                .cites([e])
                .pass(ix),
            false => c
                .says(
                    "No org level is required: tenant separation rests on each key's grants",
                    "A caller with no org is decided on its other levels; sessions are still bound to their caller and discovery equals permission.",
                    "A key issued without an org falls outside every tenant boundary.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Low,
                    Likelihood::Low,
                    Cause::Config,
                    (
                        "Require the org level",
                        "Add `org` to `identity.require` so a caller without an org is refused.",
                        "S",
                    ),
                ),
        });

    // Operators: the admin views are not scoped by org in this build. That matters only where
    // the config has tenants (an org level required, or grants naming orgs).
    let orgs: Vec<String> = reg
        .access
        .policy
        .grants()
        .entries()
        .into_iter()
        .filter(|(level, name, _)| *level == Level::Org && *name != "*")
        .map(|(_, name, _)| name.to_owned())
        .collect();
    let key_orgs: Vec<String> = probes
        .live
        .as_ref()
        .map(|l| l.key_orgs.clone())
        .unwrap_or_default();
    let tenants =
        reg.access.policy.requires(Level::Org) || !orgs.is_empty() || !key_orgs.is_empty();
    let b = ix.build(
        "operator scope",
        "operator keys and tokens carry roles, not an org: an approver sees and decides every org's approvals, an auditor reads every org's audit events, an admin manages every org's keys",
    );
    let c = Check::new("id.operator_scope", 6);
    out.push(match tenants {
        false => c
            .says(
                "One tenant: no org appears in the config or on a key, so operator views have none to keep apart",
                "No org level is required, no grant names an org, and no key seen carries one; every operator serves the same tenant.",
                "",
            )
            .cites([b])
            .pass(ix),
        true => {
            let e = match (orgs.is_empty(), key_orgs.is_empty()) {
                (false, _) => ix.config(reg, "grants", format!("orgs granted: {}", orgs.join(", "))),
                (true, false) => ix.probe(
                    "orgs of the stored keys",
                    &Outcome {
                        ok: false,
                        observed: format!("active keys carry the orgs: {}", key_orgs.join(", ")),
                    },
                ),
                (true, true) => ix.config(reg, "identity.require", "org is required"),
            };
            c.says(
                "Operator views are not scoped by org: approvers and auditors see every tenant",
                "Calls are decided per org, but the operator page and the admin API show every org's pending approvals (with their argument previews), audit events and keys to any approver, auditor or admin.",
                "An operator of one tenant can read another tenant's call arguments and records; tenant isolation holds for callers, not for operators.",
            )
            .cites([e, b])
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Unbuilt,
                (
                    "Scope operators by org",
                    "Let an operator key or token carry an org, and show and decide only that org's approvals, audit events and keys; until then, give operator roles only to people trusted with every tenant.",
                    "M",
                ),
            )
        }
    });

    // The loader refuses secret-looking literals, so a loaded config holds references only.
    let refs = crate::secrets::references(reg);
    let vault = refs
        .iter()
        .filter(|(_, r)| matches!(r, registry::SecretRef::Vault { .. }))
        .count();
    let mut ev = vec![ix.build(
            "secret references",
            "`env:`, `file:` and `vault:` (KV v2) references; string values that look like secrets (key prefixes, PEM blocks, bearer tokens, passwords in URLs, long random strings) are refused when the config loads, without repeating them",
        )];
    ev.push(ix.file(
        reg,
        format!(
            "{} string value(s) loaded; {} secret reference(s), {vault} from Vault",
            reg.strings.len(),
            refs.len()
        ),
    ));
    for (at, r) in refs.iter().take(6) {
        let path = at.split(' ').next().unwrap_or(at);
        ev.push(ix.config(reg, path, format!("reference `{r}`")));
    }
    out.push(
            Check::new("id.secrets", 6)
                .says(
                    "Secrets are held by reference only; inline secrets are refused at load",
                    format!(
                        "{} secret reference(s) in this config; none is a literal. Secrets are read when needed (at start, and at each upstream connection) and never written to logs, errors or the audit log.",
                        refs.len()
                    ),
                    "A leaked config file leaks no credential, and rotation needs no config change.",
                )
                .cites(ev)
                .pass(ix),
        );

    let c = Check::new("id.redaction_key", 6);
    out.push(match &reg.settings.audit.redact_key {
            Some(_) => {
                let e = ix.config(reg, "audit.redact_key", "by reference");
                c.says(
                    "Audit redaction is keyed by a secret held outside the store",
                    "Redacted values are replaced by an HMAC under a key passed by reference.",
                    "",
                )
                .cites([e])
                .pass(ix)
            }
            None => {
                let e = ix.config(reg, "audit.redact_key", "a random key kept in the store");
                c.says(
                    "The audit redaction key is kept in the store",
                    "Redacted values are HMACs under a random key kept in the store: whoever can read the store and the log can test guesses of a redacted value.",
                    "Redaction should not be undone by one stolen database file.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Low,
                    Likelihood::Low,
                    Cause::Config,
                    (
                        "Pass the redaction key by reference",
                        "Set `audit.redact_key: env:NAME` (or `file:/path`) with at least 32 random bytes.",
                        "S",
                    ),
                )
            }
        });

    let upstream: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| !matches!(s.source, ServerSource::Builtin(_)))
        .collect();
    let b = ix.build(
            "upstream credentials",
            "the caller's credential is never forwarded; an upstream may get a static secret by reference (`credentials.bearer`, `credentials.headers`), the same for every caller; no token exchange (RFC 8693)",
        );
    let c = Check::new("id.token_exchange", 6);
    out.push(match upstream.is_empty() {
            true => c
                .says(
                    "Caller tokens never leave the gateway; built-in upstreams need no credential",
                    "Only built-in upstreams are configured.",
                    "",
                )
                .cites([b])
                .pass(ix),
            false => {
                let mut ev = vec![b];
                let mut with_secret = 0;
                ev.extend(upstream.iter().map(|s| {
                    if s.credentials.is_empty() {
                        return ix.config(
                            reg,
                            &format!("servers.{}", s.name),
                            "no credential: the upstream is reached with none",
                        );
                    }
                    with_secret += 1;
                    let headers: Vec<String> = s
                        .credentials
                        .iter()
                        .map(|c| format!("`{}` from `{}`", c.header, c.secret))
                        .collect();
                    ix.config(
                        reg,
                        &format!("servers.{}.credentials", s.name),
                        format!(
                            "a static secret by reference ({}), the same for every caller",
                            headers.join(", ")
                        ),
                    )
                }));
                c.says(
                    "Upstreams get no per-caller credential (no token exchange)",
                    format!(
                        "The caller's token is never passed on. Of {} upstream(s), {with_secret} get a static secret by reference and {} none; none gets a credential minted for the call, so no upstream can narrow access per caller.",
                        upstream.len(),
                        upstream.len() - with_secret
                    ),
                    "Upstream access is whatever the upstream grants the gateway's network position.",
                )
                .cites(ev)
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Medium,
                    Likelihood::Low,
                    Cause::Unbuilt,
                    (
                        "Mint credentials per upstream",
                        "Exchange the caller's identity for an audience- and scope-bound upstream token (RFC 8693), with secrets by reference.",
                        "L",
                    ),
                )
            }
        });

    let admin = reg.settings.admin_listen;
    let c = Check::new("id.admin_listener", 6);
    let e = ix.config(reg, "admin_listen", admin.to_string());
    out.push(match public(admin.ip()) {
            false => c
                .says(
                    "The admin listener is bound to loopback",
                    format!("Admin API and UI on {admin}, reachable from this host only."),
                    "",
                )
                .cites([e])
                .pass(ix),
            true => c
                .says(
                    format!("The admin listener is on a network address ({admin})"),
                    "The admin API and UI (kill switch, approvals, keys, audit export) are served over plain HTTP to the network.",
                    "Operator credentials and session cookies cross the network in cleartext, and the admin surface is exposed to anyone who can reach the port.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Absent,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Keep the admin listener on loopback",
                        "Set `admin_listen: 127.0.0.1:<port>` and reach it through an SSH tunnel or a TLS-terminating proxy with its own access control.",
                        "S",
                    ),
                ),
        });

    let listen = reg.settings.listen;
    let https = reg
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let cleartext_upstreams: Vec<(String, String)> = reg
        .servers
        .iter()
        .filter_map(|s| match &s.source {
            ServerSource::Http { url }
                if url.to_ascii_lowercase().starts_with("http://") && !loopback_url(url) =>
            {
                Some((s.name.clone(), crate::redact::uri_for_record(url)))
            }
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    let mut ev = Vec::new();
    if public(listen.ip()) && !https {
        problems.push(format!(
                "the MCP listener is on {listen} and the public URL is not https: keys and tokens cross the network in cleartext unless TLS is terminated in front"
            ));
        ev.push(ix.config(reg, "listen", listen.to_string()));
        ev.push(
            ix.config(
                reg,
                "public_url",
                reg.settings
                    .public_url
                    .as_deref()
                    .map_or_else(|| format!("http://{listen}"), crate::redact::uri_for_record),
            ),
        );
    }
    for (name, url) in &cleartext_upstreams {
        problems.push(format!(
            "upstream `{name}` is reached over plain HTTP on the network"
        ));
        ev.push(ix.config(reg, &format!("servers.{name}.url"), url.clone()));
    }
    let c = Check::new("id.transport", 6);
    out.push(match problems.is_empty() {
            true => {
                let mut ev = vec![ix.config(reg, "listen", listen.to_string())];
                let found = match public(listen.ip()) {
                    false => "The MCP listener is on loopback; upstreams off this host are reached over https.",
                    true => {
                        ev.push(ix.config(
                            reg,
                            "public_url",
                            reg.settings
                                .public_url
                                .as_deref()
                                .map(crate::redact::uri_for_record)
                                .unwrap_or_default(),
                        ));
                        "The MCP listener is on the network behind an https public URL (TLS is terminated in front of the gateway; the gateway cannot see that it is); upstreams off this host are reached over https."
                    }
                };
                c.says("No credential crosses the network in cleartext", found, "")
                    .cites(ev)
                    .pass(ix)
            }
            false => c
                .says(
                    "Credentials or calls cross the network in cleartext",
                    problems.join("; ") + ".",
                    "Anyone on the path can read keys, tokens and tool arguments.",
                )
                .cites(ev)
                .gap(
                    ix,
                    Status::Partial,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Use TLS on every network hop",
                        "Terminate TLS in front of the gateway and set an https `public_url`; use https upstream URLs off this host.",
                        "S",
                    ),
                ),
        });

    let http: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| matches!(s.source, ServerSource::Http { .. }))
        .collect();
    if !http.is_empty() {
        let private: Vec<&registry::Server> =
            http.iter().copied().filter(|s| s.allow_private).collect();
        let mut ev = vec![ix.build(
                "upstream addresses",
                "every address an upstream host resolves to is checked (loopback, private, link-local/metadata, IPv4 inside IPv6) and the connection is pinned to the checked addresses; redirects are not followed",
            )];
        for s in &private {
            ev.push(ix.config(
                reg,
                &format!("servers.{}.allow_private", s.name),
                "private addresses allowed",
            ));
        }
        let c = Check::new("id.ssrf", 6).cites(ev);
        out.push(match private.is_empty() {
                true => c
                    .says(
                        "Upstream addresses are guarded against private and metadata ranges",
                        format!(
                            "{} HTTP upstream(s), none allowed to reach private addresses.",
                            http.len()
                        ),
                        "A config change or a DNS answer cannot point the gateway at internal services.",
                    )
                    .pass(ix),
                false => c
                    .says(
                        format!(
                            "Private addresses allowed for: {}",
                            private.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        "These servers may name or resolve to loopback, private or link-local addresses (the guard is off for them by config).",
                        "If such a server's name is hijacked, the gateway can be steered at internal services.",
                    )
                    .gap(
                        ix,
                        Status::Partial,
                        Severity::Low,
                        Likelihood::Low,
                        Cause::Config,
                        (
                            "Keep private upstreams deliberate",
                            "Remove `allow_private` where the upstream is public; keep it only for servers that really live on a private network.",
                            "S",
                        ),
                    ),
        });
    }
}

fn operations(reg: &Registry, probes: &Probes, ix: &mut Index, out: &mut Vec<Finding>) {
    let b = ix.build(
        "kill switch",
        "scopes global, server, tool, key, team, org, user, agent; engaged → refused within 1 s on every process on the store; in-flight calls cancelled",
    );
    let mut ev = vec![b];
    let live = probes.live.as_ref().map(|l| &l.kill_switch);
    ev.push(match live {
        Some(o) => ix.probe("kill-switch state", o),
        None => ix.not_run("kill-switch state"),
    });
    let c = Check::new("ops.kill_switch", 7).cites(ev);
    out.push(match live {
        Some(o) if !o.ok => c
            .says(
                "The kill-switch state cannot be read, so switches cannot be seen or changed",
                format!("Probe: {}.", o.observed),
                "Every call is refused until the store answers; an operator cannot engage or release a switch meanwhile.",
            )
            .gap(
                ix,
                Status::Partial,
                Severity::High,
                Likelihood::High,
                Cause::Probe,
                (
                    "Restore the store",
                    "Make the store readable and writable; switches then apply within a second.",
                    "S",
                ),
            ),
        _ => c
            .says(
                "A tested kill switch stops the gateway, a server, a tool or an identity without a redeploy",
                "`portcullis kill engage`, `POST /admin/kill-switch` or the admin page; pending approvals in scope are voided.",
                "",
            )
            .pass(ix),
    });

    let e = ix.config(reg, "mode", reg.settings.mode.as_str());
    out.push(
        Check::new("ops.modes", 7)
            .says(
                "Shadow and read-only modes allow a staged rollout",
                format!(
                    "Configured mode `{}`; operators switch between enforce, read_only and shadow at runtime, recorded in the audit log.",
                    reg.settings.mode.as_str()
                ),
                "",
            )
            .cites([e])
            .pass(ix),
    );

    let c = Check::new("ops.profile", 7);
    let e = ix.config(
        reg,
        "profile",
        match reg.settings.profile {
            registry::Profile::Production => "production",
            registry::Profile::Development => "development",
        },
    );
    out.push(match reg.settings.profile {
        registry::Profile::Production => c
            .says("The production profile is in force", "`profile: production`.", "")
            .cites([e])
            .pass(ix),
        registry::Profile::Development => c
            .says(
                "The development profile is in force",
                "`profile: development` marks this gateway as a development setup (as the quickstart writes it).",
                "A development configuration is not reviewed for production use.",
            )
            .cites([e])
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Switch to the production profile",
                    "Set `profile: production` once the rest of this report is addressed.",
                    "S",
                ),
            ),
    });

    let store = &reg.settings.store;
    let mut ev = vec![ix.config(reg, "store", crate::redact::uri_for_record(store))];
    let c = Check::new("ops.replicas", 7);
    let seen = probes.live.as_ref().map(|l| &l.instances);
    let f = match seen {
        Some(Ok(seen)) if seen.len() > 1 => {
            let n = seen.len();
            ev.push(ix.probe(
                "gateway processes on this store",
                &Outcome {
                    ok: false,
                    observed: format!(
                        "{n} gateway processes wrote heartbeats in the last 15 s: {}",
                        seen.join("; ")
                    ),
                },
            ));
            c.says(
                format!("{n} gateway processes share one SQLite store"),
                format!("{n} `serve` processes use `{store}` at once; SQLite is a single-process store here."),
                "Replicas on one SQLite file contend for its lock: writes stall for up to the busy timeout, and a network filesystem can corrupt it.",
            )
            .cites(ev)
            .gap(
                ix,
                Status::Absent,
                Severity::High,
                Likelihood::High,
                Cause::Probe,
                (
                    "Run one process per SQLite store",
                    "Run a single gateway process on this store; replicas need a shared server database, which this build does not support.",
                    "S",
                ),
            )
        }
        other => {
            ev.push(match other {
                Some(Ok(seen)) => ix.probe(
                    "gateway processes on this store",
                    &Outcome {
                        ok: true,
                        observed: format!(
                            "{} gateway process(es) wrote heartbeats in the last 15 s: {}",
                            seen.len(),
                            seen.join("; ")
                        ),
                    },
                ),
                Some(Err(e)) => ix.probe(
                    "gateway processes on this store",
                    &Outcome {
                        ok: false,
                        observed: format!("heartbeats not readable: {e}"),
                    },
                ),
                None => ix.not_run("gateway processes on this store"),
            });
            let b = ix.build("store", "SQLite only: one gateway process per store");
            ev.push(b);
            c.says(
                "One process per store: the deployment cannot scale out to replicas",
                "This build stores keys, approvals, switches and the audit log in SQLite, which one process uses; there is no shared server database for replicas.",
                "A single process is a single point of failure for every agent behind it.",
            )
            .cites(ev)
            .gap(
                ix,
                Status::Partial,
                Severity::Low,
                Likelihood::Low,
                Cause::Unbuilt,
                (
                    "Support a shared store for replicas",
                    "Add a server database (PostgreSQL) so several stateless replicas share keys, switches, approvals and budgets.",
                    "L",
                ),
            )
        }
    };
    out.push(f);

    if let Some(live) = &probes.live {
        let down: Vec<&(String, Outcome)> = live.upstreams.iter().filter(|(_, o)| !o.ok).collect();
        if !down.is_empty() {
            let ev: Vec<String> = down
                .iter()
                .map(|(n, o)| ix.probe(&format!("upstream `{n}` tools"), o))
                .collect();
            let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
            out.push(
                Check::new("ops.upstreams", 7)
                    .says(
                        format!("Upstream(s) not serving their allowlist: {}", names.join(", ")),
                        "These upstreams are down or do not offer every allowlisted tool; callers get errors naming the server.",
                        "Agents that depend on these tools are failing now.",
                    )
                    .cites(ev)
                    .gap(
                        ix,
                        Status::Partial,
                        Severity::Medium,
                        Likelihood::High,
                        Cause::Probe,
                        (
                            "Repair the upstreams",
                            "Bring the upstream back, or remove tools it no longer offers from the allowlist.",
                            "S",
                        ),
                    ),
            );
        }
    }
}

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
                "caller tokens never leave the gateway; upstreams need no caller credential"
            } else {
                "caller tokens never leave the gateway, but upstream credentials are not minted per call"
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
