//! Dimension 03: MCP / agent onboarding (source of truth, pins, fingerprints, the CI gate).

use super::*;

pub(super) fn source_of_truth(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
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
    let c = c.cites([e, b, r]);
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
}

pub(super) fn config_drift(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let probes = cx.probes;
    if let Some(drift) = probes
        .live
        .as_ref()
        .and_then(|l| l.config_file.as_ref())
        .filter(|o| !o.ok)
    {
        let e = ix.probe("config file", drift);
        out.push(
            c
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
}

pub(super) fn stdio_pinning(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
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
        let c = c.cites(ev);
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
}

/// What every non-built-in server's pins say, and what the running gateway saw of them
/// (shared by the three checks below; the evidence index keeps one row per fact).
struct Pins {
    ev: Vec<String>,
    unpinned: Vec<String>,
    quarantined: Vec<String>,
    instructed: Vec<String>,
    raised: Vec<String>,
}

fn pins(cx: &Cx<'_>, ix: &mut Index) -> Option<Pins> {
    let (reg, probes) = (cx.reg, cx.probes);
    let pinnable: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| !matches!(s.source, ServerSource::Builtin(_)))
        .collect();
    if pinnable.is_empty() {
        return None;
    }
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
            (None, _) => "no `pin`: the definitions first seen are kept for the process's lifetime"
                .to_string(),
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
    let own = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
    Some(Pins {
        ev,
        unpinned: own(unpinned),
        quarantined: own(quarantined),
        instructed: own(instructed),
        raised: own(raised),
    })
}

pub(super) fn tool_text(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let Some(Pins { ev, instructed, .. }) = pins(cx, ix) else {
        return;
    };
    if !instructed.is_empty() {
        let evidence: Vec<_> = ev.clone();
        out.push(
            c.cites(evidence).says(
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
}

pub(super) fn class_raised(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let Some(Pins { ev, raised, .. }) = pins(cx, ix) else {
        return;
    };
    if !raised.is_empty() {
        out.push(
            c.cites(ev.clone()).says(
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
}

pub(super) fn fingerprints(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let Some(Pins {
        ev,
        unpinned,
        quarantined,
        ..
    }) = pins(cx, ix)
    else {
        return;
    };
    let c = c.cites(ev);
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

pub(super) fn ci_gate(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let problems = registry::check(reg);
    let b = ix.build(
            "commands",
            "`portcullis check --config FILE` (the CI gate: allowlist, pinned source, reaching grant, rate limit on write tools, no inline secret) and `portcullis pin`",
        );
    let mut ev = vec![b];
    for p in problems.iter().take(8) {
        ev.push(ix.config(reg, &p.path, p.message.clone()));
    }
    let c = c.cites(ev);
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
