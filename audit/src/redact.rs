//! Redaction for what operators are shown and what the audit log keeps.
//!
//! A value is replaced when its key names a secret (password, token, api key, authorization,
//! cookie, private key, credential, secret), when the value itself looks like one (bearer
//! tokens, well-known key prefixes, AWS key ids, PEM blocks, JWTs, long high-entropy strings), or
//! when an operator's `audit.redact` path selects it. Approvers' previews show `[redacted]`; the
//! audit log shows `[redacted:hmac:<16 hex>]`, a keyed digest, so equal secrets correlate without
//! the value being recoverable. Long strings are cut, and the whole summary is bounded.

use aws_lc_rs::hmac;
use registry::{PathStep, RedactPath};
pub use registry::{high_entropy, secret_key};
use serde_json::{Map, Value};

/// Longest string value kept in an audit summary.
const MAX_STRING: usize = 200;
/// Longest audit summary, in bytes.
const MAX_SUMMARY: usize = 4096;
/// Deepest nesting shown in an audit summary.
const MAX_DEPTH: usize = 8;
/// Longest approval preview, in bytes. Approvers see every argument: a call whose preview would
/// be longer is not held for approval at all (the arguments limits keep this rare).
pub const MAX_PREVIEW: usize = 256 * 1024;

const REDACTED: &str = "[redacted]";

/// How much of a value a rendering keeps.
#[derive(Clone, Copy)]
struct Bounds {
    string: usize,
    depth: usize,
}

/// Approvers: everything (serde_json itself refuses nesting past 128 levels).
const WHOLE: Bounds = Bounds {
    string: usize::MAX,
    depth: 256,
};
/// The audit log: enough to tell calls apart.
const SUMMARY: Bounds = Bounds {
    string: MAX_STRING,
    depth: MAX_DEPTH,
};

/// A redacted copy of `value`, secrets shown as `[redacted]`, nothing cut.
pub fn redact(value: &Value) -> Value {
    walk(value, 0, WHOLE, &|_| Value::String(REDACTED.into()))
}

fn walk(value: &Value, depth: usize, bounds: Bounds, hide: &dyn Fn(&Value) -> Value) -> Value {
    if depth >= bounds.depth {
        return Value::String("…".into());
    }
    match value {
        Value::String(s) if high_entropy(s) => hide(value),
        Value::String(s) => {
            let spans = registry::secret_spans(s);
            let mut out = match spans.is_empty() {
                true => s.clone(),
                false => masked(s, &spans, hide),
            };
            shorten(&mut out, bounds.string);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| walk(v, depth + 1, bounds, hide))
                .collect(),
        ),
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let shown = if secret_key(k) && !v.is_null() {
                    hide(v)
                } else {
                    walk(v, depth + 1, bounds, hide)
                };
                out.insert(k.clone(), shown);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `s` with each secret span replaced by its stand-in; the rest of the text stays readable.
fn masked(s: &str, spans: &[std::ops::Range<usize>], hide: &dyn Fn(&Value) -> Value) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in spans {
        out.push_str(s.get(at..r.start).unwrap_or_default());
        let secret = Value::String(s.get(r.clone()).unwrap_or_default().to_string());
        match hide(&secret) {
            Value::String(mark) => out.push_str(&mark),
            _ => out.push_str(REDACTED),
        }
        at = r.end;
    }
    out.push_str(s.get(at..).unwrap_or_default());
    out
}

/// The preview an approver sees: the whole call as compact JSON, secrets redacted, and every
/// character that would render invisibly or reorder text (bidi controls, zero-width and other
/// format characters, C1 controls, tag characters) written as a JSON `\u` escape, so the text
/// shown is the text that runs. `None` when it is longer than [`MAX_PREVIEW`].
pub fn preview(arguments: &Value) -> Option<String> {
    let text = visible(&redact(arguments).to_string());
    (text.len() <= MAX_PREVIEW).then_some(text)
}

/// `text` (JSON) with invisible and reordering characters escaped.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if invisible(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that change how text reads without showing themselves.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

/// The audit log's redaction: configured paths and the built-in detectors, each hidden value
/// replaced by an HMAC-SHA256 of its canonical JSON under the gateway's redaction key.
pub struct Redactor {
    key: hmac::Key,
    paths: Vec<RedactPath>,
}

impl Redactor {
    pub fn new(key: &[u8], paths: Vec<RedactPath>) -> Redactor {
        Redactor {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            paths,
        }
    }

    /// The stand-in for a hidden value.
    pub fn mark(&self, value: &Value) -> Value {
        let canonical = registry::canonical_json(value);
        let tag = hmac::sign(&self.key, &canonical);
        let hex = registry::hex_lower(tag.as_ref());
        Value::String(format!("[redacted:hmac:{}]", hex.get(..16).unwrap_or(&hex)))
    }

    /// The summary of `arguments` the audit log keeps: configured paths hidden first, then the
    /// detectors; bounded like the preview.
    pub fn summary(&self, arguments: &Value) -> Value {
        let hide = |v: &Value| self.mark(v);
        if self.paths.is_empty() {
            return bounded(walk(arguments, 0, SUMMARY, &hide));
        }
        let mut copy = arguments.clone();
        for p in &self.paths {
            apply(&mut copy, &p.steps, &hide);
        }
        bounded(walk(&copy, 0, SUMMARY, &hide))
    }
}

/// Replace what `steps` selects in `value`.
fn apply(value: &mut Value, steps: &[PathStep], hide: &dyn Fn(&Value) -> Value) {
    let Some((step, rest)) = steps.split_first() else {
        *value = hide(value);
        return;
    };
    match step {
        PathStep::Key(k) => {
            if let Some(v) = value.as_object_mut().and_then(|o| o.get_mut(k)) {
                apply(v, rest, hide);
            }
        }
        PathStep::Index(i) => {
            if let Some(v) = value.as_array_mut().and_then(|a| a.get_mut(*i)) {
                apply(v, rest, hide);
            }
        }
        PathStep::Any => match value {
            Value::Object(o) => o.values_mut().for_each(|v| apply(v, rest, hide)),
            Value::Array(a) => a.iter_mut().for_each(|v| apply(v, rest, hide)),
            _ => {}
        },
        PathStep::Descendant(k) => {
            if let Some(o) = value.as_object_mut()
                && let Some(v) = o.get_mut(k)
            {
                apply(v, rest, hide);
            }
            match value {
                Value::Object(o) => o
                    .iter_mut()
                    .filter(|(name, _)| *name != k)
                    .for_each(|(_, v)| apply(v, steps, hide)),
                Value::Array(a) => a.iter_mut().for_each(|v| apply(v, steps, hide)),
                _ => {}
            }
        }
    }
}

/// A summary too large to keep whole is kept as its bounded text. Its size is counted as it is
/// serialised, without building the text: nearly every summary is far below the bound.
fn bounded(v: Value) -> Value {
    let mut size = Counted(0);
    if serde_json::to_writer(&mut size, &v).is_ok() && size.0 <= MAX_SUMMARY {
        return v;
    }
    let mut text = v.to_string();
    shorten(&mut text, MAX_SUMMARY);
    Value::String(text)
}

/// Bytes written to it, counted and dropped.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A URI as records and spans show it: without userinfo, query or fragment (where signed URLs
/// and tokens travel), and bounded.
pub fn uri_for_record(uri: &str) -> String {
    let cut = uri.find(['?', '#']).unwrap_or(uri.len());
    let mut out = uri.get(..cut).unwrap_or(uri).to_string();
    if let Some((scheme, rest)) = out.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            out = format!("{scheme}://{host}{path}");
        }
    }
    if cut < uri.len() {
        out.push_str("?…");
    }
    shorten(&mut out, 256);
    out
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn shorten(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
}

#[cfg(test)]
mod tests;
