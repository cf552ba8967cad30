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
    let mut e = vec![ix.config(
        reg,
        "profile",
        match reg.settings.profile {
            registry::Profile::Production => "production",
            registry::Profile::Development => "development",
        },
    )];
    // The image, chart or unit that started the process, and the confinement it has.
    let deployment = cx.probes.live.as_ref().and_then(|l| l.deployment.as_ref());
    if let Some(o) = deployment {
        e.push(ix.probe("deployment", o));
    }
    if let Some(o) = deployment.filter(|o| !o.ok) {
        out.push(
            c.says(
                "The gateway runs without the confinement its deployment artefacts give it",
                format!("Probe: {}.", o.observed),
                "A flaw in the gateway or a crate under it would act with more than the gateway needs.",
            )
            .cites(e)
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Low,
                Cause::Probe,
                (
                    "Run the gateway confined",
                    "Run it as deploy/, the chart or the unit set it up: a non-root user, no new privileges, a seccomp filter, no capabilities, a read-only root.",
                    "S",
                ),
            ),
        );
        return;
    }
    out.push(match reg.settings.profile {
        registry::Profile::Production => c
            .says("The production profile is in force", "`profile: production`.", "")
            .cites(e)
            .pass(ix),
        registry::Profile::Development => c
            .says(
                "The development profile is in force",
                "`profile: development` marks this gateway as a development setup (as the quickstart writes it).",
                "A development configuration is not reviewed for production use.",
            )
            .cites(e)
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
    let store = &reg.settings.store;
    let postgres = store.starts_with("postgres");
    let mut ev = vec![ix.config(reg, "store", crate::redact::uri_for_record(store))];
    let seen = cx.probes.live.as_ref().map(|l| &l.instances);
    let many = matches!(seen, Some(Ok(seen)) if seen.len() > 1);
    ev.push(match seen {
        Some(Ok(seen)) => ix.probe(
            "gateway processes on this store",
            &Outcome {
                ok: postgres || seen.len() <= 1,
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
    let keys = match reg.settings.session_keys.is_empty() {
        true => "the key kept in the store".to_string(),
        false => {
            ev.push(ix.config(reg, "http.session_keys", "by reference"));
            format!("{} configured key(s)", reg.settings.session_keys.len())
        }
    };
    let rates = match reg.limits.is_empty() {
        true => "no rate limits or concurrency caps are configured".to_string(),
        false => {
            ev.push(ix.config(reg, "limits", format!("{} entries", reg.limits.len())));
            "rate limits and concurrency caps count per replica (each allows the full rate); budgets are shared and never overspent".to_string()
        }
    };
    let probe_failed = matches!(seen, Some(Err(_)));
    let f = if postgres && (probe_failed || !verified_tls(store)) {
        let (title, fix) = match probe_failed {
            true => (
                "Replicas share PostgreSQL, but this replica cannot read who else runs",
                "Restore the store connection; replicas count each other by heartbeats in it.",
            ),
            false => (
                "Replicas share PostgreSQL over a connection whose server is not verified",
                "Add `sslmode=verify-full` (and `sslrootcert=`) to the store URL, unless the database is on this host.",
            ),
        };
        c.says(
            title,
            format!("`{}`", crate::redact::uri_for_record(store)),
            "Without a verified server, whoever sits on the path to the database can read and change keys, approvals and switches.",
        )
        .cites(ev)
        .gap(
            ix,
            Status::Partial,
            Severity::Medium,
            Likelihood::Low,
            if probe_failed { Cause::Probe } else { Cause::Config },
            ("Secure the shared store", fix, "S"),
        )
    } else if postgres {
        let n = match seen {
            Some(Ok(seen)) => format!("{} replica(s) seen", seen.len()),
            _ => "replicas not counted (static report)".to_string(),
        };
        c.says(
            format!("Replicas share one PostgreSQL store: {n}"),
            format!("Keys, kill switches and the mode (announced with NOTIFY, polled within the lease), approvals, budgets, the operator record and the store audit sink live in PostgreSQL; session ids are sealed with {keys}, so any replica continues any session; {rates}."),
            "",
        )
        .cites(ev)
        .pass(ix)
    } else if many {
        c.says(
            "Several gateway processes share one SQLite store",
            format!("More than one `serve` process uses `{store}` at once."),
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
                "Move replicas to PostgreSQL",
                "Run one process per SQLite store, or give every replica `store: postgres://USER@HOST:PORT/DB` with `store_password` by reference (`portcullis migrate` creates the tables).",
                "S",
            ),
        )
    } else {
        c.says(
            "One process on SQLite: the deployment does not scale out to replicas",
            "Keys, approvals, switches, budgets and the audit log are in SQLite, which one process uses.",
            "A single process is a single point of failure for every agent behind it.",
        )
        .cites(ev)
        .gap(
            ix,
            Status::Partial,
            Severity::Low,
            Likelihood::Low,
            Cause::Config,
            (
                "Run replicas on PostgreSQL",
                "Set `store: postgres://USER@HOST:PORT/DB` with `store_password` by reference and run several replicas behind a load balancer.",
                "M",
            ),
        )
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

/// Whether a PostgreSQL store URL verifies its server (`sslmode=verify-full` or `verify-ca`), or
/// needs not: the database is on this host (loopback or a socket).
fn verified_tls(store: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(store) else {
        return false;
    };
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned());
    let local = match url.host_str() {
        None | Some("") | Some("localhost") => true,
        Some(h) => h
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    local || matches!(mode.as_deref(), Some("verify-full" | "verify-ca"))
}
