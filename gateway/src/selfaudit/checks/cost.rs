//! Dimension 05: routing and cost controls (deadlines, rates, request bounds).

use super::*;

pub(super) fn routing(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let ev = ix.per_server(reg, "timeout", |s| format!("{} s", s.timeout.as_secs_f64()));
    out.push(
            c
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
}

pub(super) fn limits(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let w = writes(reg);
    let unlimited: Vec<&(String, String)> = w
        .iter()
        .filter(|(s, t)| reg.call_bounds(s, t).is_empty())
        .collect();
    let mut ev: Vec<String> = unlimited
        .iter()
        .take(10)
        .map(|(s, t)| {
            ix.config(
                reg,
                &tool_path(s, t),
                "write/destructive tool with no `rate` and no `limits:` rate or budget",
            )
        })
        .collect();
    for l in reg.limits.iter().take(10) {
        let mut what = Vec::new();
        if let Some(r) = l.rate {
            what.push(format!("rate {r}"));
        }
        if let Some(n) = l.concurrency {
            what.push(format!("{n} at once"));
        }
        if let Some(b) = l.budget {
            what.push(format!("budget {b}"));
        }
        let on = format!(
            "{}/{}",
            l.server.as_deref().unwrap_or("*"),
            l.tool.as_deref().unwrap_or("*")
        );
        let text = format!("{} on {on}: {}", l.principal, what.join(", "));
        ev.push(ix.config(reg, &format!("limits[{}]", l.index), text));
    }
    // Budgets that cap every caller's spend, not only some principals'.
    let budgets = reg
        .limits
        .iter()
        .filter(|l| l.budget.is_some() && reg.applies_to_everyone(l))
        .count();
    ev.push(ix.build(
            "limits",
            "rates on governor (GCRA) per tool and per principal, concurrency caps, both counted in each process; budgets reserved in the store before each call is spent (never overspent across processes on one store; a large budget a little ahead, given back when idle, unless marked `exact`); refusals `rate_limited`, `concurrency_limited`, `budget_exceeded`, and `limits_unavailable` when the store cannot answer",
        ));
    let c = c.cites(ev);
    out.push(match (unlimited.is_empty(), budgets) {
        (true, 0) => c
            .says(
                "Write tools are rate-limited; no budget tracks spend",
                format!(
                    "{} write/destructive tool(s), each bounded by a rate; no `limits:` budget applies to every caller (`level:*` for a required level), so spend per period is not capped for everyone.",
                    w.len()
                ),
                "A looping agent is slowed, but over a day it can spend whatever the rates allow.",
            )
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Give principals budgets",
                    "Add a `limits:` entry such as `{ match: \"team:*\", budget: { units: N, per: day } }` for a level `identity.require` names, so every caller's spend is capped (tools spend their `cost`, 1 unless set).",
                    "S",
                ),
            ),
        (true, n) => c
            .says(
                "Calls are bounded by rates and budgets that stop them",
                format!(
                    "{} write/destructive tool(s), each bounded by a rate or a budget; {n} budget(s) reserved in the store before a call spends them, so an overrun is refused, never merely reported.",
                    w.len()
                ),
                "",
            )
            .pass(ix),
        (false, _) => c
            .says(
                format!(
                    "{} write/destructive tool(s) without a rate limit or budget",
                    unlimited.len()
                ),
                "These tools can be called as fast as a client sends, and no budget stops them.",
                "A looping agent can exhaust an upstream's quota or run up its bill, and nothing stops it but the kill switch.",
            )
            .gap(
                ix,
                Status::Absent,
                Severity::High,
                Likelihood::Medium,
                Cause::Config,
                (
                    "Bound every write tool",
                    "Add `rate:` (e.g. `10/min`) to each write and destructive tool, or a `limits:` entry with a `rate` or `budget` that covers it for every caller (`level:*` for a required level).",
                    "S",
                ),
            ),
    });
}

/// Request sizes and deadlines past which one caller can tie up the gateway: a body or a tool's
/// arguments larger than this, or a head, body or write deadline longer than this.
const GENEROUS_BODY: usize = 16 * 1024 * 1024;
const GENEROUS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

pub(super) fn request_bounds(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
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
        ix.config(
            reg,
            "http.write_timeout",
            format!("{} s", st.write_timeout.as_secs_f64()),
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
        ("http.write_timeout", st.write_timeout),
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
    let c = c.cites(ev);
    out.push(match loose.is_empty() {
        true => c
            .says(
                "Request sizes and deadlines are bounded",
                format!(
                    "Bodies are at most {} KiB, read only after authentication within {} s; request heads must arrive within {} s; an answer's write that makes no progress for {} s ends its connection; each tool's arguments are bounded in size, values and depth.",
                    st.max_body / 1024,
                    st.body_timeout.as_secs_f64(),
                    st.header_timeout.as_secs_f64(),
                    st.write_timeout.as_secs_f64()
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
