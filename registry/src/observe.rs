//! The `audit:` and `telemetry:` sections: where the record goes and what is kept out of it.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigProblem;
use crate::secret::SecretRef;
use crate::source_map::SourceMap;
use crate::validate::duration_or;

/// The audit log's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where events are written. At least one is required.
    pub sinks: Vec<AuditSink>,
    /// Argument paths replaced by a keyed digest before anything is written.
    pub redact: Vec<RedactPath>,
    /// The key of the redaction HMAC, by reference. Without it a random key is kept in the store.
    pub redact_key: Option<SecretRef>,
}

/// One destination of audit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSink {
    /// What it is.
    pub kind: SinkKind,
    /// Whether a call may proceed only once this sink (or another required one) has the event.
    pub required: bool,
}

/// The kinds of audit sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// Append-only JSON lines, flushed to disk (`fsync`) before an event counts as written.
    File {
        /// The file's path.
        path: String,
        /// Whether each batch is fsynced (power-loss durability) or only written (process-crash
        /// durability).
        fsync: bool,
    },
    /// The gateway's store (`audit_events`), which `/admin/audit` reads.
    Store,
    /// The process's standard output, one JSON line per event.
    Stdout,
}

impl SinkKind {
    /// The config spelling.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::File { .. } => "file",
            SinkKind::Store => "store",
            SinkKind::Stdout => "stdout",
        }
    }
}

/// A JSON path into a tool call's arguments, e.g. `$.arguments.password` or `$..token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactPath {
    /// As written.
    pub text: String,
    /// The steps below `arguments`.
    pub steps: Vec<PathStep>,
}

/// One step of a [`RedactPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// A member by name.
    Key(String),
    /// An array element.
    Index(usize),
    /// Every member or element.
    Any,
    /// A member by name at any depth below.
    Descendant(String),
}

impl RedactPath {
    /// Parse `$.arguments…` or `$..name…`. Supported: `.name`, `['name']`, `[N]`, `[*]`, `.*`,
    /// `..name`.
    pub fn parse(text: &str) -> Result<RedactPath, String> {
        let mut rest = text.strip_prefix('$').ok_or("a path starts with `$`")?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("..") {
                let (name, r) = take_name(r);
                if name.is_empty() {
                    return Err("`..` must be followed by a member name".into());
                }
                steps.push(PathStep::Descendant(name.to_string()));
                rest = r;
            } else if let Some(r) = rest.strip_prefix('.') {
                if let Some(r) = r.strip_prefix('*') {
                    steps.push(PathStep::Any);
                    rest = r;
                    continue;
                }
                let (name, r) = take_name(r);
                if name.is_empty() {
                    return Err("`.` must be followed by a member name".into());
                }
                steps.push(PathStep::Key(name.to_string()));
                rest = r;
            } else if let Some(r) = rest.strip_prefix('[') {
                let (inner, r) = r.split_once(']').ok_or("`[` without `]`")?;
                let step = if inner == "*" {
                    PathStep::Any
                } else if let Some(q) = inner.strip_prefix('\'').and_then(|q| q.strip_suffix('\''))
                {
                    PathStep::Key(q.to_string())
                } else {
                    PathStep::Index(
                        inner
                            .parse()
                            .map_err(|_| format!("`[{inner}]` is not an index, `*` or 'name'"))?,
                    )
                };
                steps.push(step);
                rest = r;
            } else {
                return Err(format!("unexpected `{rest}`"));
            }
        }
        match steps.first() {
            Some(PathStep::Key(k)) if k == "arguments" => {
                steps.remove(0);
            }
            Some(PathStep::Descendant(_)) => {}
            _ => return Err("paths start at the call's arguments".into()),
        }
        Ok(RedactPath {
            text: text.to_string(),
            steps,
        })
    }
}

fn take_name(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// OpenTelemetry export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Where spans go (OTLP over HTTP, protobuf); none means spans are not exported.
    pub otlp: Option<OtlpSettings>,
    /// `service.name` of the exported resource.
    pub service_name: String,
}

/// An OTLP/HTTP collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's base URL; spans are posted to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// How long one export may take.
    pub timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) sinks: Option<Vec<RawSink>>,
    #[serde(default)]
    pub(crate) redact: Vec<String>,
    pub(crate) redact_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) path: Option<String>,
    pub(crate) required: Option<bool>,
    pub(crate) fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub(crate) otlp: Option<RawOtlp>,
    pub(crate) service_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    pub(crate) endpoint: String,
    pub(crate) timeout: Option<String>,
}

/// The file sink used when `audit.sinks` is not written.
pub const DEFAULT_AUDIT_FILE: &str = "audit.jsonl";

pub(crate) fn audit(
    raw: &RawAudit,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> AuditSettings {
    let sinks = match &raw.sinks {
        None => vec![
            AuditSink {
                kind: SinkKind::File {
                    path: DEFAULT_AUDIT_FILE.to_string(),
                    fsync: true,
                },
                required: true,
            },
            AuditSink {
                kind: SinkKind::Store,
                required: true,
            },
        ],
        Some(list) => {
            let mut out: Vec<AuditSink> = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let at = format!("audit.sinks[{i}]");
                let kind = match (s.kind.as_str(), &s.path) {
                    ("file", Some(p)) if !p.trim().is_empty() => SinkKind::File {
                        path: p.clone(),
                        fsync: s.fsync.unwrap_or(true),
                    },
                    ("file", _) => {
                        problems.push(map.problem(
                            &at,
                            "a file sink needs a `path`".into(),
                            "add `path: audit.jsonl` (relative paths are taken from the gateway's working directory)",
                        ));
                        continue;
                    }
                    ("store" | "stdout", Some(_)) => {
                        problems.push(map.problem(
                            &format!("{at}.path"),
                            format!("a {} sink has no path", s.kind),
                            "remove `path`, or use `type: file`",
                        ));
                        continue;
                    }
                    ("store", None) => SinkKind::Store,
                    ("stdout", None) => SinkKind::Stdout,
                    (other, _) => {
                        problems.push(map.problem(
                            &format!("{at}.type"),
                            format!("unknown audit sink type `{other}`"),
                            "use `file`, `store` or `stdout`",
                        ));
                        continue;
                    }
                };
                if s.fsync.is_some() && !matches!(kind, SinkKind::File { .. }) {
                    problems.push(map.problem(
                        &format!("{at}.fsync"),
                        "only a file sink has `fsync`".into(),
                        "remove `fsync`",
                    ));
                }
                if out
                    .iter()
                    .any(|o| o.kind == kind || same_kind_twice(&o.kind, &kind))
                {
                    problems.push(map.problem(
                        &at,
                        format!("a second `{}` sink with the same destination", kind.name()),
                        "list each destination once",
                    ));
                    continue;
                }
                out.push(AuditSink {
                    kind,
                    required: s.required.unwrap_or(true),
                });
            }
            if !out.iter().any(|s| s.required) && problems.is_empty() {
                problems.push(map.problem(
                    "audit.sinks",
                    "no required audit sink: calls would run with nothing recording them".into(),
                    "mark at least one sink `required: true` (the default), e.g. `- { type: file, path: audit.jsonl }`",
                ));
            }
            out
        }
    };
    let mut redact = Vec::new();
    for (i, text) in raw.redact.iter().enumerate() {
        match RedactPath::parse(text) {
            Ok(p) => redact.push(p),
            Err(why) => problems.push(map.problem(
                &format!("audit.redact[{i}]"),
                format!("`{text}` is not a redaction path: {why}"),
                "write a path into the call's arguments, e.g. `$.arguments.password`, `$.arguments.items[*].token` or `$..secret`",
            )),
        }
    }
    let redact_key = raw.redact_key.as_ref().and_then(|k| {
        let r = SecretRef::parse(k).filter(|r| !matches!(r, SecretRef::Vault { .. }));
        if r.is_none() {
            problems.push(map.problem(
                "audit.redact_key",
                "the redaction key must be an `env:` or `file:` reference, never the key itself".into(),
                "write `env:NAME` or `file:/path/to/key`",
            ));
        }
        r
    });
    AuditSettings {
        sinks,
        redact,
        redact_key,
    }
}

fn same_kind_twice(a: &SinkKind, b: &SinkKind) -> bool {
    match (a, b) {
        (SinkKind::File { path: p, .. }, SinkKind::File { path: q, .. }) => p == q,
        (SinkKind::Store, SinkKind::Store) | (SinkKind::Stdout, SinkKind::Stdout) => true,
        _ => false,
    }
}

pub(crate) fn telemetry(
    raw: &RawTelemetry,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> TelemetrySettings {
    let otlp = raw.otlp.as_ref().map(|o| {
        let endpoint = o.endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            problems.push(map.problem(
                "telemetry.otlp.endpoint",
                format!("`{endpoint}` is not an http(s) URL"),
                "give the collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`",
            ));
        }
        let timeout = duration_or(
            o.timeout.as_deref(),
            "telemetry.otlp.timeout",
            Duration::from_secs(5),
            map,
            problems,
        );
        OtlpSettings { endpoint, timeout }
    });
    TelemetrySettings {
        otlp,
        service_name: raw
            .service_name
            .clone()
            .unwrap_or_else(|| "portcullis".to_string()),
    }
}
