//! Canonical JSON (after RFC 8785): object members sorted by the UTF-16 code units of their
//! names, no insignificant whitespace, strings escaped minimally. Numbers use serde_json's
//! shortest round-trip form, which matches RFC 8785 for every integer and ordinary decimal; the
//! two differ only in how very large or very small doubles write their exponent.
//!
//! Equal JSON values give equal bytes whatever order their members arrived in, so digests over
//! arguments and tool definitions are stable.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// The canonical bytes of `v`.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write(v, &mut out);
    out
}

/// The canonical bytes of the object `map` without any member `key`, from which those of `map`
/// with `key` set follow without serialising it again: the member is spliced in where the
/// canonical order puts it. (An event's hash covers the event without its `hash` member.)
pub fn canonical_object<'k>(map: &Map<String, Value>, key: &'k str) -> CanonicalObject<'k> {
    let mut members = sorted(map);
    members.retain(|(k, _)| k.as_str() != key);
    let before = members
        .iter()
        .take_while(|(k, _)| utf16_cmp(k, key) == Ordering::Less)
        .count();
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut at = 1;
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if i == before {
            at = out.len();
        }
        write_string(k, &mut out);
        out.push(b':');
        write(v, &mut out);
    }
    if before == members.len() {
        at = out.len();
    }
    out.push(b'}');
    CanonicalObject {
        bytes: out,
        key,
        at,
        last: before == members.len(),
        empty: members.is_empty(),
    }
}

/// See [`canonical_object`].
pub struct CanonicalObject<'k> {
    bytes: Vec<u8>,
    key: &'k str,
    /// Where the new member's text goes.
    at: usize,
    /// Whether it goes after every other member.
    last: bool,
    empty: bool,
}

impl CanonicalObject<'_> {
    /// The canonical bytes of the object without the member `key`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The canonical bytes of the object with the member `key: value`.
    pub fn with(&self, value: &Value) -> Vec<u8> {
        let (head, tail) = self.bytes.split_at(self.at.min(self.bytes.len()));
        let mut out = Vec::with_capacity(self.bytes.len() + self.key.len() + 80);
        out.extend_from_slice(head);
        if self.last && !self.empty {
            out.push(b',');
        }
        write_string(self.key, &mut out);
        out.push(b':');
        write(value, &mut out);
        if !self.last {
            out.push(b',');
        }
        out.extend_from_slice(tail);
        out
    }
}

/// The canonical bytes of an object written member by member, without first building it as a
/// [`Value`]: the caller gives the members in canonical order (a member out of order is
/// refused: [`Members::finish`] returns `None`), and one member, `key`, is left to be spliced in
/// as [`CanonicalObject::with`] does.
pub struct Members<'k> {
    bytes: Vec<u8>,
    key: &'k str,
    /// Where `key`'s member goes, once a member after it was written.
    at: Option<usize>,
    count: usize,
    previous: &'static str,
    ordered: bool,
}

impl<'k> Members<'k> {
    /// An empty object, `key`'s member to be spliced in.
    pub fn new(key: &'k str, capacity: usize) -> Members<'k> {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.push(b'{');
        Members {
            bytes,
            key,
            at: None,
            count: 0,
            previous: "",
            ordered: true,
        }
    }

    /// The member `name: value`.
    pub fn value(&mut self, name: &'static str, value: &Value) -> &mut Self {
        self.name(name);
        write(value, &mut self.bytes);
        self
    }

    /// The member `name: "text"`.
    pub fn string(&mut self, name: &'static str, text: &str) -> &mut Self {
        self.name(name);
        write_string(text, &mut self.bytes);
        self
    }

    /// The member `name: n`.
    pub fn number(&mut self, name: &'static str, n: impl Into<serde_json::Number>) -> &mut Self {
        self.name(name);
        if serde_json::to_writer(&mut self.bytes, &n.into()).is_err() {
            self.bytes.extend_from_slice(b"null");
        }
        self
    }

    /// The member `name: [ "a", "b" ]`.
    pub fn strings(&mut self, name: &'static str, items: &[String]) -> &mut Self {
        self.name(name);
        self.bytes.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.bytes.push(b',');
            }
            write_string(s, &mut self.bytes);
        }
        self.bytes.push(b']');
        self
    }

    /// The member `name: { ... }`, its members written by `inner` (in canonical order too).
    pub fn object(
        &mut self,
        name: &'static str,
        inner: impl FnOnce(&mut Members<'_>),
    ) -> &mut Self {
        self.name(name);
        let mut nested = Members::new("", 64);
        inner(&mut nested);
        self.ordered &= nested.ordered && nested.at.is_none();
        nested.bytes.push(b'}');
        self.bytes.extend_from_slice(&nested.bytes);
        self
    }

    fn name(&mut self, name: &'static str) {
        self.ordered &= self.count == 0 || utf16_cmp(self.previous, name) == Ordering::Less;
        self.ordered &= name != self.key;
        if self.at.is_none() && !self.key.is_empty() && utf16_cmp(self.key, name) == Ordering::Less
        {
            self.at = Some(self.bytes.len());
        }
        if self.count > 0 {
            self.bytes.push(b',');
        }
        write_string(name, &mut self.bytes);
        self.bytes.push(b':');
        self.previous = name;
        self.count += 1;
    }

    /// The object without `key`, or `None` if the members came out of canonical order.
    pub fn finish(mut self) -> Option<CanonicalObject<'k>> {
        if !self.ordered {
            return None;
        }
        let last = self.at.is_none();
        // Before a member's comma-less start: a splice inserts its own comma after it.
        let at = match self.at {
            Some(at) => at,
            None => self.bytes.len(),
        };
        self.bytes.push(b'}');
        Some(CanonicalObject {
            bytes: self.bytes,
            key: self.key,
            at: if last || at == 1 { at } else { at + 1 },
            last,
            empty: self.count == 0,
        })
    }
}

/// `bytes` as lower-case hex, written a byte at a time into one buffer (`hex::encode` collects
/// a `char` at a time); digests and ids on the request path go through it.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    match hex::encode_to_slice(bytes, &mut out).map(|()| String::from_utf8(out)) {
        Ok(Ok(text)) => text,
        // The buffer is the right length and hex digits are ASCII: never taken.
        _ => hex::encode(bytes),
    }
}

fn members<'a>(items: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (k, v)) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(k, out);
        out.push(b':');
        write(v, out);
    }
}

/// Whether `map` iterates its names in canonical order: strictly rising bytes, none from
/// U+E000 up (where byte and UTF-16 order part).
fn in_order(map: &Map<String, Value>) -> bool {
    let mut previous: Option<&str> = None;
    for name in map.keys() {
        if !name.is_ascii() && name.bytes().any(|x| x >= 0xEE) {
            return false;
        }
        if previous.is_some_and(|p| p.as_bytes() >= name.as_bytes()) {
            return false;
        }
        previous = Some(name);
    }
    true
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|(a, _), (b, _)| utf16_cmp(a, b));
    members
}

/// Names compare by UTF-16 code units (RFC 8785). UTF-8 bytes compare by code point, which
/// agrees unless a name has a code point from U+E000 up (lead byte 0xEE or more): those, rare,
/// compare as UTF-16.
///
/// Bytes equal up to the first difference are equal characters; where that difference is
/// between two ASCII bytes (whole characters), it decides both orders alike, and a name whose
/// bytes begin another's is a prefix of it in UTF-16 too. Only the rest need a second look.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    match a.bytes().zip(b.bytes()).find(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some((x, y)) if x.is_ascii() && y.is_ascii() => x.cmp(&y),
        Some(_) if a.bytes().chain(b.bytes()).all(|x| x < 0xEE) => a.as_bytes().cmp(b.as_bytes()),
        Some(_) => a.encode_utf16().cmp(b.encode_utf16()),
    }
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            out.push(b'{');
            // A map whose names already come in canonical order is written as it iterates
            // (the usual case: serde_json's map is ordered by bytes); any other is sorted.
            match in_order(map) {
                true => members(map.iter(), out),
                false => members(sorted(map).into_iter(), out),
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        // serde_json escapes exactly `"`, `\` and control characters, as RFC 8785 requires, and
        // writes numbers in their shortest form; writing into a `Vec` cannot fail.
        Value::String(s) => write_string(s, out),
        Value::Number(n) => {
            if serde_json::to_writer(&mut *out, n).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// `s` as a JSON string, escaped as serde_json (and RFC 8785) escape: `"`, a backslash and control
/// characters only. Text with none of them (ids, digests, times, most values) is copied as it is.
fn write_string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests;
