//! Dimension 04: observability and tracing (audit sinks, OTLP delivery, metrics).

use super::*;

pub(super) fn audit_sinks(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
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
        if let SinkKind::File {
            fsync: false, path, ..
        } = &s.kind
        {
            weak.push((
                    format!("audit.sinks[{i}].fsync"),
                    format!(
                        "file sink `{path}` is not synced: a power loss can lose any acknowledged event (a synced sink, at most those of the flush in progress)"
                    ),
                ));
        }
    }
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
}

/// Whether the record stays within the disk: every file sink rotates (and how many old files
/// it keeps), and the store's events have a retention period. Unbounded growth ends in a full
/// disk, a failing audit sink, and every call refused.
pub(super) fn audit_retention(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let audit = &reg.settings.audit;
    let mut facts = Vec::new();
    let mut unbounded = Vec::new();
    for (i, s) in audit.sinks.iter().enumerate() {
        match &s.kind {
            SinkKind::File { path, rotate, .. } => {
                let key = format!("audit.sinks[{i}].rotate");
                let text = match (rotate.is_on(), rotate.keep) {
                    (false, _) => {
                        unbounded.push(key.clone());
                        format!("file `{path}` never rotates: one file grows for ever")
                    }
                    (true, keep) => format!(
                        "file `{path}` rotates{}{}; {}",
                        rotate.size.map_or(String::new(), |b| format!(" at {}", bytes(b))),
                        rotate.every.map_or(String::new(), |d| format!(" every {}", human(d))),
                        keep.map_or_else(
                            || "every rotated file is kept, for the operator's archive to take away".to_owned(),
                            |k| format!("the newest {k} rotated file(s) are kept")
                        )
                    ),
                };
                facts.push((key, text));
            }
            SinkKind::Store => {
                let text = match audit.retention {
                    Some(d) => format!("store events are kept {}", human(d)),
                    None => {
                        unbounded.push("audit.retention".to_owned());
                        "store events are kept for ever (`audit.retention: off`)".to_owned()
                    }
                };
                facts.push(("audit.retention".to_owned(), text));
            }
            SinkKind::Stdout => {}
        }
    }
    if facts.is_empty() {
        return;
    }
    let ev: Vec<String> = facts
        .iter()
        .map(|(p, o)| ix.config(reg, p, o.clone()))
        .collect();
    let said = facts
        .iter()
        .map(|(_, o)| o.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    out.push(match unbounded.is_empty() {
        true => c
            .says(
                "The audit record is rotated and pruned within set bounds",
                format!("{said}. `portcullis audit verify` follows the hash chain across rotated files."),
                "",
            )
            .cites(ev)
            .pass(ix),
        false => c
            .says(
                "Part of the audit record grows without bound",
                format!("{said}."),
                "A disk that fills makes the audit sink fail, and a gateway whose required sink fails refuses every call.",
            )
            .cites(ev)
            .gap(
                ix,
                Status::Partial,
                Severity::Low,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Bound the audit record",
                    "Give each file sink `rotate: { size: 100MiB, keep: 30 }` (or ship rotated files elsewhere) and set `audit.retention` (e.g. `90d`) for the store.",
                    "S",
                ),
            ),
    });
}

/// `100 MiB`, `512 KiB` or `700 bytes`: the largest whole unit.
fn bytes(b: u64) -> String {
    match b {
        _ if b >= 1 << 30 && b.is_multiple_of(1 << 30) => format!("{} GiB", b >> 30),
        _ if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        _ if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        _ => format!("{b} bytes"),
    }
}

/// `90d`, `12h`, `30m` or `45s`: the largest whole unit.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub(super) fn otlp(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
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
}

pub(super) fn metrics(_: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let b = ix.build(
            "metrics",
            "/metrics on the admin listener: requests, latency, tool calls, upstream results, fail-closed refusals by cause, approvals, switches, audit sinks",
        );
    out.push(
            c
                .says(
                    "Prometheus metrics with closed-set labels on the admin listener",
                    "Refusals are counted by cause, so a fail-closed storm is visible; labels carry no identity, argument or secret.",
                    "",
                )
                .cites([b])
                .pass(ix),
        );
}
