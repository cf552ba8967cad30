//! Reading the audit log back: filters for `/admin/audit`, and a run replayed as its calls.

use serde_json::{Map, Value, json};

/// What an export asks for. Every field narrows; none set means everything.
#[derive(Debug, Default)]
pub struct Filter {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    pub session: Option<String>,
    pub trace_id: Option<String>,
    /// A subject (`key:…`, `oidc:…`) or a principal (`team:research`).
    pub identity: Option<String>,
    /// A tool by its upstream name, `server/tool`, or the federated `server__tool`.
    pub tool: Option<String>,
    pub kind: Option<String>,
}

impl Filter {
    /// True when the event `e` is wanted.
    pub fn matches(&self, e: &Map<String, Value>) -> bool {
        let text = |k: &str| e.get(k).and_then(Value::as_str);
        let at = text("time").and_then(crate::clock::parse_time).unwrap_or(0);
        if at < self.since_ms || self.until_ms.is_some_and(|u| at > u) {
            return false;
        }
        if let Some(s) = &self.session
            && text("session") != Some(s.as_str())
        {
            return false;
        }
        if let Some(t) = &self.trace_id
            && text("trace_id") != Some(t.as_str())
        {
            return false;
        }
        if let Some(k) = &self.kind
            && text("kind") != Some(k.as_str())
        {
            return false;
        }
        if let Some(who) = &self.identity {
            let id = e.get("identity");
            let subject = id.and_then(|i| i.get("subject")).and_then(Value::as_str);
            let principal = id
                .and_then(|i| i.get("principals"))
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(who.as_str())));
            if subject != Some(who.as_str()) && !principal {
                return false;
            }
        }
        if let Some(t) = &self.tool {
            let (server, tool) = (text("server").unwrap_or(""), text("tool").unwrap_or(""));
            let hit =
                t == tool || *t == format!("{server}/{tool}") || *t == format!("{server}__{tool}");
            if !hit {
                return false;
            }
        }
        true
    }
}

/// The calls of a session or trace in order, one entry per request: what was asked, what was
/// decided, and how it ended.
pub fn replay(events: &[Map<String, Value>]) -> Vec<Value> {
    let mut calls: Vec<Map<String, Value>> = Vec::new();
    for e in events {
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("");
        if !matches!(
            kind,
            "tool.call" | "tool.result" | "mcp.request" | "mcp.list"
        ) {
            continue;
        }
        let rid = e.get("request_id").cloned().unwrap_or(Value::Null);
        let at = match calls
            .iter()
            .position(|c| !rid.is_null() && c.get("request_id") == Some(&rid))
        {
            Some(i) => i,
            None => {
                let mut c = Map::new();
                for k in ["time", "request_id", "method", "server", "tool"] {
                    if let Some(v) = e.get(k) {
                        c.insert(k.into(), v.clone());
                    }
                }
                calls.push(c);
                calls.len() - 1
            }
        };
        let Some(c) = calls.get_mut(at) else { continue };
        for k in [
            "outcome",
            "reason",
            "level",
            "arguments_digest",
            "arguments",
        ] {
            if let Some(v) = e.get(k)
                && kind != "tool.result"
            {
                c.insert(k.into(), v.clone());
            }
        }
        if let Some(a) = e.get("detail").and_then(|d| d.get("approval_id")) {
            c.insert("approval_id".into(), a.clone());
        }
        if kind == "tool.result" {
            c.insert("executed".into(), json!(true));
            for k in ["status", "latency_ms", "response_bytes"] {
                if let Some(v) = e.get(k) {
                    c.insert(k.into(), v.clone());
                }
            }
            if let Some(r) = e.get("reason") {
                c.insert("error".into(), r.clone());
            }
        }
    }
    calls.into_iter().map(Value::Object).collect()
}

/// Where an export reads from: the store sink if there is one, else the first file sink.
pub enum Source<'a> {
    Store(&'a store::Store),
    File(&'a str),
}

impl<'a> Source<'a> {
    pub fn of(
        settings: &'a registry::AuditSettings,
        store: &'a store::Store,
    ) -> Option<Source<'a>> {
        use registry::SinkKind;
        if settings.sinks.iter().any(|s| s.kind == SinkKind::Store) {
            return Some(Source::Store(store));
        }
        settings.sinks.iter().find_map(|s| match &s.kind {
            SinkKind::File { path, .. } => Some(Source::File(path.as_str())),
            _ => None,
        })
    }
}

/// One page of matching events, verbatim as written, and the cursor of the next page.
pub struct Page {
    pub lines: Vec<String>,
    pub next: Option<i64>,
}

/// Rows scanned for one page at most; a sparse filter answers with a cursor to go on from.
const MAX_SCAN: usize = 200_000;

/// Read events after cursor `after` (a row id, or a line number for a file) that match.
pub async fn read(
    source: &Source<'_>,
    filter: &Filter,
    after: i64,
    limit: usize,
) -> Result<Page, String> {
    let mut lines = Vec::new();
    let mut scanned = 0usize;
    let keep = |line: &str, lines: &mut Vec<String>| {
        if let Ok(Value::Object(e)) = serde_json::from_str::<Value>(line)
            && filter.matches(&e)
        {
            lines.push(line.to_string());
        }
    };
    match source {
        Source::Store(store) => {
            let mut cursor = after;
            loop {
                let rows = store
                    .audit_lines(
                        filter.since_ms,
                        filter.session.as_deref(),
                        filter.trace_id.as_deref(),
                        cursor,
                        1000,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let done = rows.len() < 1000;
                for (id, line) in rows {
                    cursor = id;
                    scanned += 1;
                    keep(&line, &mut lines);
                    if lines.len() >= limit || scanned >= MAX_SCAN {
                        return Ok(Page {
                            lines,
                            next: Some(cursor),
                        });
                    }
                }
                if done {
                    return Ok(Page { lines, next: None });
                }
            }
        }
        Source::File(path) => {
            use std::io::BufRead as _;
            // The files rotated away first, oldest first, then the current one: line numbers
            // count through all of them (a rotated file deleted between two pages shifts them:
            // page a file source while `keep` is not deleting, or export from the store).
            let mut files = crate::file::rotated_files(std::path::Path::new(path));
            files.push(std::path::PathBuf::from(path));
            let mut number = 0i64;
            for file in files {
                let shown = file.display().to_string();
                let reader = match std::fs::File::open(&file) {
                    Ok(f) => std::io::BufReader::new(f),
                    // A rotated file deleted meanwhile (`keep`) has nothing left to read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && shown != *path => {
                        continue;
                    }
                    Err(e) => return Err(format!("`{shown}`: {e}")),
                };
                for line in reader.lines() {
                    number += 1;
                    if number <= after {
                        continue;
                    }
                    let line = line.map_err(|e| format!("`{shown}`: {e}"))?;
                    scanned += 1;
                    keep(&line, &mut lines);
                    if lines.len() >= limit || scanned >= MAX_SCAN {
                        return Ok(Page {
                            lines,
                            next: Some(number),
                        });
                    }
                }
            }
            Ok(Page { lines, next: None })
        }
    }
}
