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
    /// How long the store sink's events are kept (`audit.retention`); `None` (`off`): for ever.
    pub retention: Option<Duration>,
}

/// The store sink's events are kept this long by default: the store is the operator's window
/// onto recent activity; the file sink, rotated and shipped, is the archive.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// When a file sink starts a new file, and how many it keeps (`audit.sinks[N].rotate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// A new file once the current one holds this many bytes.
    pub size: Option<u64>,
    /// A new file once the current one is this old.
    pub every: Option<Duration>,
    /// Rotated files kept, the newest first; older ones are deleted. `None`: all are kept.
    pub keep: Option<u32>,
}

impl Rotation {
    /// No rotation: one file that grows for ever (`rotate: off`).
    pub const OFF: Rotation = Rotation {
        size: None,
        every: None,
        keep: None,
    };

    /// Whether the sink ever starts a new file.
    pub fn is_on(&self) -> bool {
        self.size.is_some() || self.every.is_some()
    }
}

/// A file sink rotates at 100 MiB by default and keeps every rotated file.
pub const DEFAULT_ROTATION: Rotation = Rotation {
    size: Some(100 * 1024 * 1024),
    every: None,
    keep: None,
};

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
        /// When it moves on to a new file.
        rotate: Rotation,
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
    pub(crate) retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) path: Option<String>,
    pub(crate) required: Option<bool>,
    pub(crate) fsync: Option<bool>,
    pub(crate) rotate: Option<serde_json::Value>,
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
                    rotate: DEFAULT_ROTATION,
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
                        rotate: rotation(s.rotate.as_ref(), &at, map, problems),
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
                if s.rotate.is_some() && !matches!(kind, SinkKind::File { .. }) {
                    problems.push(map.problem(
                        &format!("{at}.rotate"),
                        "only a file sink rotates".into(),
                        "remove `rotate` (the store's events are kept for `audit.retention`)",
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
    let retention = match raw.retention.as_deref().map(str::trim) {
        None => Some(DEFAULT_AUDIT_RETENTION),
        Some("off") => None,
        Some(t) => Some(duration_or(
            Some(t),
            "audit.retention",
            DEFAULT_AUDIT_RETENTION,
            map,
            problems,
        )),
    };
    AuditSettings {
        sinks,
        redact,
        redact_key,
        retention,
    }
}

/// A file sink's `rotate:`: absent (the default), `off`, or `{ size, every, keep }`.
fn rotation(
    raw: Option<&serde_json::Value>,
    at: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Rotation {
    use serde_json::Value;
    let path = format!("{at}.rotate");
    let map_of = match raw {
        None => return DEFAULT_ROTATION,
        Some(Value::String(s)) if s.trim() == "off" => return Rotation::OFF,
        Some(Value::Object(m)) => m,
        Some(other) => {
            problems.push(map.problem(
                &path,
                format!("`{other}` is not a rotation"),
                "write `rotate: { size: 100MiB, every: 1d, keep: 30 }` (any of the three), or `rotate: off`",
            ));
            return DEFAULT_ROTATION;
        }
    };
    let mut r = Rotation::OFF;
    for (key, v) in map_of {
        let here = format!("{path}.{key}");
        match key.as_str() {
            "size" => match crate::validate::parse_size(v) {
                Some(n) => r.size = u64::try_from(n).ok(),
                None => problems.push(map.problem(
                    &here,
                    format!("`{v}` is not a size"),
                    "write bytes with a unit, e.g. `100MiB` or `1GiB`",
                )),
            },
            "every" => match v.as_str() {
                Some(t) => r.every = Some(duration_or(Some(t), &here, Duration::from_secs(86_400), map, problems)),
                None => problems.push(map.problem(
                    &here,
                    format!("`{v}` is not a duration"),
                    "write a whole number and a unit, e.g. `1h` or `1d`",
                )),
            },
            "keep" => match v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
                Some(n) => r.keep = Some(n),
                None => problems.push(map.problem(
                    &here,
                    format!("`{v}` is not a number of files"),
                    "write how many rotated files to keep, e.g. `keep: 30`, or leave `keep` out to keep them all",
                )),
            },
            other => problems.push(map.problem(
                &here,
                format!("unknown rotation setting `{other}`"),
                "use `size`, `every` and `keep`",
            )),
        }
    }
    if map_of.is_empty() {
        problems.push(map.problem(
            &path,
            "an empty `rotate` says neither when to rotate nor that the file never does".into(),
            "write `rotate: { size: 100MiB }` (or `every: 1d`), or `rotate: off`",
        ));
        return DEFAULT_ROTATION;
    }
    if !r.is_on() && map_of.contains_key("keep") {
        problems.push(map.problem(
            &path,
            "`keep` without `size` or `every`: the sink would never rotate".into(),
            "add `size: 100MiB` or `every: 1d`",
        ));
    }
    r
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

#[cfg(test)]
mod tests;
