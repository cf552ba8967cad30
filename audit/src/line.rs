//! An event's line: its members and the chain's, in canonical JSON, without its hash (which
//! covers these bytes and is then spliced in).
//!
//! The members are written straight from the event, in canonical order, rather than built as a
//! JSON object, sorted and written (`generic`, which stays as the reference: a test holds the
//! two to the same bytes, and a member written out of order falls back to it).

use registry::{CanonicalObject, Members};
use serde_json::{Map, Value, json};

use super::{Event, SCHEMA};

/// What the chain adds to an event.
pub(crate) struct Link<'a> {
    pub(crate) chain: &'a str,
    pub(crate) seq: i64,
    pub(crate) prev: &'a str,
    /// The event's session as recorded (`session_ref`).
    pub(crate) session: Option<&'a str>,
}

/// The event's line without `hash`.
pub(crate) fn unhashed(event: &Event, link: &Link<'_>) -> CanonicalObject<'static> {
    members(event, link).unwrap_or_else(|| generic(event, link))
}

/// The members in canonical (byte) order; `hash` goes between `detail` and `id`.
fn members(e: &Event, l: &Link<'_>) -> Option<CanonicalObject<'static>> {
    let mut m = Members::new("hash", 512);
    if let Some(v) = &e.arguments {
        m.value("arguments", v);
    }
    if let Some(d) = &e.arguments_digest {
        m.string("arguments_digest", d);
    }
    m.string("chain", l.chain);
    if let Some(v) = &e.detail {
        m.value("detail", v);
    }
    m.string("id", &format!("{}-{}", l.chain, l.seq));
    if let Some(who) = &e.identity {
        m.object("identity", |o| {
            o.strings("principals", &who.principals)
                .string("subject", &who.subject);
        });
    }
    m.string("kind", e.kind);
    if let Some(ms) = e.latency_ms {
        m.value("latency_ms", &Value::from(ms));
    }
    if let Some(s) = &e.level {
        m.string("level", s);
    }
    if let Some(s) = &e.method {
        m.string("method", s);
    }
    if let Some(s) = e.outcome {
        m.string("outcome", s);
    }
    m.string("prev", l.prev);
    if let Some(s) = &e.reason {
        m.string("reason", s);
    }
    if let Some(n) = e.request_bytes {
        m.number("request_bytes", n);
    }
    if let Some(s) = &e.request_id {
        m.string("request_id", s);
    }
    if let Some(n) = e.response_bytes {
        m.number("response_bytes", n);
    }
    m.number("seq", l.seq);
    if let Some(s) = &e.server {
        m.string("server", s);
    }
    if let Some(s) = l.session {
        m.string("session", s);
    }
    if let Some(s) = e.status {
        m.string("status", s);
    }
    m.string("time", &crate::clock::rfc3339_ms(e.at_ms));
    if let Some(s) = &e.tool {
        m.string("tool", s);
    }
    if let Some(s) = &e.trace_id {
        m.string("trace_id", s);
    }
    m.number("v", SCHEMA);
    m.finish()
}

/// The same bytes by way of a JSON object: the event serialised, the chain's members added.
pub(crate) fn generic(event: &Event, l: &Link<'_>) -> CanonicalObject<'static> {
    let mut map = match serde_json::to_value(event) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("kind".into(), json!(event.kind));
            m.insert("reason".into(), json!("event could not be serialised"));
            m
        }
    };
    map.remove("session");
    if let Some(s) = l.session {
        map.insert("session".into(), json!(s));
    }
    map.insert("v".into(), json!(SCHEMA));
    map.insert("id".into(), json!(format!("{}-{}", l.chain, l.seq)));
    map.insert("time".into(), json!(crate::clock::rfc3339_ms(event.at_ms)));
    map.insert("chain".into(), json!(l.chain));
    map.insert("seq".into(), json!(l.seq));
    map.insert("prev".into(), json!(l.prev));
    registry::canonical_object(&map, "hash")
}

#[cfg(test)]
mod tests;
