//! Dimension 07: production-readiness (levers, modes, profile, replicas, upstreams).

use super::*;

pub(super) fn kill_switch(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let probes = cx.probes;
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
    let c = c.cites(ev);
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
}

pub(super) fn modes(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let e = ix.config(reg, "mode", reg.settings.mode.as_str());
    out.push(
        c
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
}

pub(super) fn profile(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
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
}

pub(super) fn replicas(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
    let store = &reg.settings.store;
    let mut ev = vec![ix.config(reg, "store", crate::redact::uri_for_record(store))];
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
}

pub(super) fn upstreams(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let probes = cx.probes;
    if let Some(live) = &probes.live {
        let down: Vec<&(String, Outcome)> = live.upstreams.iter().filter(|(_, o)| !o.ok).collect();
        if !down.is_empty() {
            let ev: Vec<String> = down
                .iter()
                .map(|(n, o)| ix.probe(&format!("upstream `{n}` tools"), o))
                .collect();
            let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
            out.push(
                c
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
