//! Prometheus metrics, served at the admin listener's `/metrics`.
//!
//! Every label value comes from a closed set (methods, outcomes, causes) or from the registry
//! (server and tool names that passed the allowlist), never from a caller: no identity, no
//! argument and no unknown tool name ever becomes a label, so cardinality is bounded by config.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le
                && let Some(c) = self.counts.get_mut(i)
            {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Inner {
    requests: HashMap<(&'static str, &'static str), u64>,
    request_seconds: HashMap<&'static str, Histogram>,
    tool_calls: HashMap<(String, String, &'static str), u64>,
    limits: HashMap<(usize, &'static str), u64>,
    credentials: HashMap<(String, &'static str, &'static str), u64>,
    upstream: HashMap<(String, &'static str), u64>,
    upstream_seconds: HashMap<String, Histogram>,
    fail_closed: HashMap<&'static str, u64>,
    violations: HashMap<(String, &'static str), u64>,
    refused_connections: HashMap<(&'static str, &'static str), u64>,
}

/// The process's metrics.
pub(crate) struct Metrics(Mutex<Inner>);

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics(Mutex::new(Inner::default())));

/// The process-wide registry.
pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

/// MCP methods as labels; anything else is `other`.
pub(crate) fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// An outcome as a label. Outcomes come from the closed mappings of the request path
/// (`refusal.rs`); anything not shaped like one is `error`, so no free text becomes a series.
pub(crate) fn outcome_label(outcome: &'static str) -> &'static str {
    let shaped = !outcome.is_empty()
        && outcome.len() <= 32
        && outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if shaped { outcome } else { "error" }
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.0.lock() {
            f(&mut inner);
        }
    }

    /// One inbound request answered.
    pub(crate) fn request(&self, method: &str, outcome: &'static str, took: Duration) {
        let (m, o) = (method_label(method), outcome_label(outcome));
        self.with(|i| {
            *i.requests.entry((m, o)).or_default() += 1;
            i.request_seconds
                .entry(m)
                .or_default()
                .observe(took.as_secs_f64());
        });
    }

    /// One decided tool call; `server` and `tool` are registry names.
    pub(crate) fn tool_call(&self, server: &str, tool: &str, outcome: &'static str) {
        let o = outcome_label(outcome);
        self.with(|i| {
            *i.tool_calls
                .entry((server.to_string(), tool.to_string(), o))
                .or_default() += 1;
        });
    }

    /// One call decided under `limits[entry]`: `admitted`, or the refusal's reason.
    pub(crate) fn limit(&self, entry: usize, outcome: &'static str) {
        let o = outcome_label(outcome);
        self.with(|i| *i.limits.entry((entry, o)).or_default() += 1);
    }

    /// One upstream credential asked for a call: `kind` `exchange` or `client_credentials`,
    /// `outcome` `minted`, `cached` or `refused`.
    pub(crate) fn credential(&self, server: &str, kind: &'static str, outcome: &'static str) {
        self.with(|i| {
            *i.credentials
                .entry((server.to_string(), kind, outcome))
                .or_default() += 1;
        });
    }

    /// One request to an upstream (`server` is a registry name).
    pub(crate) fn upstream(&self, server: &str, ok: bool, took: Duration) {
        let o = if ok { "ok" } else { "error" };
        self.with(|i| {
            *i.upstream.entry((server.to_string(), o)).or_default() += 1;
            i.upstream_seconds
                .entry(server.to_string())
                .or_default()
                .observe(took.as_secs_f64());
        });
    }

    /// A request refused because something on the decision path could not answer.
    pub(crate) fn fail_closed(&self, cause: &'static str) {
        self.with(|i| *i.fail_closed.entry(cause).or_default() += 1);
    }

    /// Something an upstream sent that the gateway dropped or rewrote (`kind` is a fixed word:
    /// `foreign_answer`, `forged_meta`, `secret_echo`).
    pub(crate) fn violation(&self, server: &str, kind: &'static str) {
        self.with(|i| {
            *i.violations.entry((server.to_string(), kind)).or_default() += 1;
        });
    }

    /// A connection closed on arrival: `listener` is `mcp` or `admin`, `cap` is `total` or
    /// `peer`.
    pub(crate) fn connection_refused(&self, listener: &'static str, cap: &'static str) {
        self.with(|i| *i.refused_connections.entry((listener, cap)).or_default() += 1);
    }

    /// The text exposition (format 0.0.4) of everything counted so far, followed by `extra`.
    pub(crate) fn render(&self, extra: &[Gauge]) -> String {
        let mut out = String::new();
        let Ok(i) = self.0.lock() else {
            return out;
        };
        let mut requests: Vec<_> = i.requests.iter().collect();
        requests.sort();
        header(
            &mut out,
            "portcullis_requests_total",
            "counter",
            "Inbound MCP requests answered, by method and outcome.",
        );
        for ((m, o), v) in requests {
            let _ = writeln!(
                out,
                "portcullis_requests_total{{method=\"{m}\",outcome=\"{o}\"}} {v}"
            );
        }
        header(
            &mut out,
            "portcullis_request_duration_seconds",
            "histogram",
            "Time to answer an inbound MCP request (mcp.server.operation.duration).",
        );
        let mut hs: Vec<_> = i.request_seconds.iter().collect();
        hs.sort_by(|a, b| a.0.cmp(b.0));
        for (m, h) in hs {
            histogram(
                &mut out,
                "portcullis_request_duration_seconds",
                &format!("method=\"{m}\""),
                h,
            );
        }
        header(
            &mut out,
            "portcullis_tool_calls_total",
            "counter",
            "Tool calls by registry server, tool and decision or result.",
        );
        let mut calls: Vec<_> = i.tool_calls.iter().collect();
        calls.sort();
        for ((s, t, o), v) in calls {
            let _ = writeln!(
                out,
                "portcullis_tool_calls_total{{server=\"{}\",tool=\"{}\",outcome=\"{o}\"}} {v}",
                escape(s),
                escape(t)
            );
        }
        header(
            &mut out,
            "portcullis_limit_decisions_total",
            "counter",
            "Tool calls decided under each `limits:` entry that covers them: admitted, or the refusal.",
        );
        let mut limits: Vec<_> = i.limits.iter().collect();
        limits.sort();
        for ((e, o), v) in limits {
            let _ = writeln!(
                out,
                "portcullis_limit_decisions_total{{entry=\"limits[{e}]\",outcome=\"{o}\"}} {v}"
            );
        }
        header(
            &mut out,
            "portcullis_upstream_credentials_total",
            "counter",
            "Upstream credentials asked for calls, by server, kind (exchange, client_credentials) and outcome (minted, cached, refused).",
        );
        let mut creds: Vec<_> = i.credentials.iter().collect();
        creds.sort();
        for ((s, k, o), v) in creds {
            let _ = writeln!(
                out,
                "portcullis_upstream_credentials_total{{server=\"{}\",kind=\"{k}\",outcome=\"{o}\"}} {v}",
                escape(s)
            );
        }
        header(
            &mut out,
            "portcullis_upstream_requests_total",
            "counter",
            "Requests to upstream servers, by server and result (errors include timeouts and lost connections).",
        );
        let mut ups: Vec<_> = i.upstream.iter().collect();
        ups.sort();
        for ((s, o), v) in ups {
            let _ = writeln!(
                out,
                "portcullis_upstream_requests_total{{server=\"{}\",outcome=\"{o}\"}} {v}",
                escape(s)
            );
        }
        header(
            &mut out,
            "portcullis_upstream_duration_seconds",
            "histogram",
            "Time an upstream took to answer (mcp.client.operation.duration).",
        );
        let mut uhs: Vec<_> = i.upstream_seconds.iter().collect();
        uhs.sort_by(|a, b| a.0.cmp(b.0));
        for (s, h) in uhs {
            histogram(
                &mut out,
                "portcullis_upstream_duration_seconds",
                &format!("server=\"{}\"", escape(s)),
                h,
            );
        }
        header(
            &mut out,
            "portcullis_fail_closed_total",
            "counter",
            "Requests refused because a check on the decision path could not answer, by cause.",
        );
        let mut fc: Vec<_> = i.fail_closed.iter().collect();
        fc.sort();
        for (c, v) in fc {
            let _ = writeln!(out, "portcullis_fail_closed_total{{cause=\"{c}\"}} {v}");
        }
        header(
            &mut out,
            "portcullis_upstream_violations_total",
            "counter",
            "What upstreams sent that the gateway dropped or rewrote: answers on another request's stream, forged gateway markers, echoed credentials.",
        );
        let mut vs: Vec<_> = i.violations.iter().collect();
        vs.sort();
        for ((s, k), v) in vs {
            let _ = writeln!(
                out,
                "portcullis_upstream_violations_total{{server=\"{}\",kind=\"{k}\"}} {v}",
                escape(s)
            );
        }
        header(
            &mut out,
            "portcullis_connections_refused_total",
            "counter",
            "Connections closed on arrival because a listener or one peer address was at its connection cap.",
        );
        let mut rc: Vec<_> = i.refused_connections.iter().collect();
        rc.sort();
        for ((l, c), v) in rc {
            let _ = writeln!(
                out,
                "portcullis_connections_refused_total{{listener=\"{l}\",cap=\"{c}\"}} {v}"
            );
        }
        drop(i);
        let mut last = "";
        for g in extra {
            if g.name != last {
                header(&mut out, g.name, g.kind, g.help);
                last = g.name;
            }
            let labels = if g.labels.is_empty() {
                String::new()
            } else {
                let inner: Vec<String> = g
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                format!("{{{}}}", inner.join(","))
            };
            let _ = writeln!(out, "{}{labels} {}", g.name, g.value);
        }
        out
    }
}

/// A value read at scrape time (pending approvals, switches, audit sink counters).
pub(crate) struct Gauge {
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) help: &'static str,
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: f64,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (le, c) in BUCKETS.iter().zip(h.counts.iter()) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
