//! Dimension 02: fail-close vs fail-open, from the probes that inject faults.

use super::*;

/// A probe that injects a fault on the decision path: a deny is a pass, anything else is the
/// gate opening.
fn probe(ix: &mut Index, c: Check, name: &str, outcome: &Outcome, title: &str) -> Finding {
    let e = ix.probe(name, outcome);
    let c = c.cites([e]);
    match outcome.ok {
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
    }
}

pub(super) fn store_error(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let name = "credential check with the store unreachable";
    let title = "A store error during authentication is a refusal";
    out.push(probe(ix, c, name, &cx.probes.store_error, title));
}

pub(super) fn faulted_level(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let name = "decision for a key whose stored grants are corrupt";
    let title = "A level that cannot be resolved denies the call";
    out.push(probe(ix, c, name, &cx.probes.faulted_level, title));
}

pub(super) fn panic(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let name = "policy evaluation that panics";
    let title = "A failure inside policy evaluation is a deny";
    out.push(probe(ix, c, name, &cx.probes.panic_guard, title));
}

pub(super) fn audit(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
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
}

pub(super) fn kill_lease(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
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
    let c = c.cites(ev);
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
