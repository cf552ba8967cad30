//! What an upstream's answers may not carry to a client.
//!
//! - **The gateway's own markers.** `_meta` keys under `portcullis/` are the gateway's word to
//!   its clients (`portcullis/shadow`, `portcullis/executed`); an upstream that sets them would
//!   speak in the gateway's name, so they are removed wherever a `_meta` object appears.
//! - **The gateway's credentials.** The secrets this gateway sent the upstream (credential
//!   headers, a stdio child's environment) are replaced by `[redacted]` in every string of an
//!   answer or error, so an upstream that echoes what it received cannot hand them to a caller.
//!
//! Each removal is logged and counted (`portcullis_upstream_violations_total`).

use std::sync::{Arc, RwLock};

use serde_json::Value;

/// The secrets sent to one upstream, longest first, shared by everything that relays what the
/// upstream says (answers, errors, progress, log messages, requests to the client).
pub(crate) type Sent = Arc<RwLock<Arc<Vec<String>>>>;

/// What `sent` holds now.
pub(crate) fn snapshot(sent: &Sent) -> Arc<Vec<String>> {
    sent.read().map(|s| s.clone()).unwrap_or_default()
}

/// Shortest secret searched for: shorter values would match ordinary text.
const MIN_SECRET: usize = 6;
/// Most secrets remembered per upstream.
const MAX_SECRETS: usize = 64;

const MARKER_PREFIX: &str = "portcullis/";
const REDACTED: &str = "[redacted]";

/// Remove forged markers and known secrets from `value`, an upstream's answer or error.
pub(crate) fn scrub(value: &mut Value, server: &str, secrets: &[String]) {
    let mut found = Found::default();
    walk(value, secrets, &mut found);
    if found.markers {
        tracing::warn!(server = %server, "an upstream set the gateway's own `_meta` markers; removed");
        crate::metrics::get().violation(server, "forged_meta");
    }
    if found.secrets {
        tracing::warn!(server = %server, "an upstream echoed a credential the gateway sent it; redacted");
        crate::metrics::get().violation(server, "secret_echo");
    }
}

/// Add `found` to the secrets remembered for an upstream, oldest first; past the bound the
/// oldest go (a rotated secret's predecessor).
pub(crate) fn remember(known: &mut Vec<String>, found: impl IntoIterator<Item = String>) {
    for s in found {
        if s.len() >= MIN_SECRET {
            known.retain(|k| *k != s);
            known.push(s);
        }
    }
    if known.len() > MAX_SECRETS {
        let extra = known.len() - MAX_SECRETS;
        known.drain(..extra);
    }
}

/// The secrets in the order they are replaced: the longest first, so a secret that contains
/// another (`Bearer <token>` and `<token>`) is replaced whole.
pub(crate) fn by_length(known: &[String]) -> Vec<String> {
    let mut out = known.to_vec();
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

#[derive(Default)]
struct Found {
    markers: bool,
    secrets: bool,
}

fn walk(value: &mut Value, secrets: &[String], found: &mut Found) {
    match value {
        Value::String(s) if secrets.iter().any(|k| s.contains(k.as_str())) => {
            let mut clean = std::mem::take(s);
            for k in secrets {
                clean = clean.replace(k.as_str(), REDACTED);
            }
            *s = clean;
            found.secrets = true;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, secrets, found)),
        Value::Object(members) => {
            if let Some(Value::Object(meta)) = members.get_mut("_meta") {
                let before = meta.len();
                meta.retain(|k, _| !k.starts_with(MARKER_PREFIX));
                found.markers |= meta.len() != before;
            }
            members.values_mut().for_each(|v| walk(v, secrets, found));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
