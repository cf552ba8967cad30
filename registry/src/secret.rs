//! Secrets: references to them, and the detectors that keep them out of config, logs and
//! previews.
//!
//! Config holds references only: `env:NAME`, `file:/path` or `vault:mount/path#key` (a KV v2
//! secret). A string value that looks like a credential (a well-known key prefix, a PEM block, a
//! bearer token, a password in a URL, a long high-entropy string) is refused when the config loads,
//! and the refusal names where it is, never what it is.

use std::ops::Range;

use crate::error::ConfigProblem;
use crate::source_map::SourceMap;

/// A reference to a secret: never the secret itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// The value of this environment variable of the gateway.
    Env(String),
    /// The contents of this file (trailing newline removed).
    File(String),
    /// A key of a KV version 2 secret in the configured Vault.
    Vault {
        /// The secrets engine's mount, e.g. `secret`.
        mount: String,
        /// The secret's path below the mount.
        path: String,
        /// The key inside the secret.
        key: String,
    },
}

impl SecretRef {
    /// Parse `env:NAME`, `file:/path` or `vault:mount/path#key`.
    pub fn parse(text: &str) -> Option<SecretRef> {
        if let Some(name) = text.strip_prefix("env:") {
            let ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            return ok.then(|| SecretRef::Env(name.to_string()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            return (!path.is_empty()).then(|| SecretRef::File(path.to_string()));
        }
        if let Some(rest) = text.strip_prefix("vault:") {
            let (full, key) = rest.split_once('#')?;
            let (mount, path) = full.trim_matches('/').split_once('/')?;
            let fine = |s: &str| {
                !s.is_empty()
                    && s.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')
                    })
                    && !s.split('/').any(|seg| seg.is_empty() || seg == "..")
            };
            return (fine(mount) && fine(path) && !key.is_empty()).then(|| SecretRef::Vault {
                mount: mount.to_string(),
                path: path.to_string(),
                key: key.to_string(),
            });
        }
        None
    }

    /// True when `text` is written as a reference (whether or not it is a well-formed one).
    pub fn is_reference(text: &str) -> bool {
        ["env:", "file:", "vault:"]
            .iter()
            .any(|p| text.starts_with(p))
    }

    /// Read an `env:` or `file:` secret. A `vault:` reference needs a client, which the gateway
    /// holds; here it is an error. The error names the reference, never a value.
    pub fn resolve_local(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read `{path}`: {}", e.kind())),
            SecretRef::Vault { .. } => Err(format!("{self} needs the Vault client")),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
            SecretRef::Vault { mount, path, key } => write!(f, "vault:{mount}/{path}#{key}"),
        }
    }
}

/// Parse a value that must be a secret reference, recording a problem (without the value) when
/// it is not.
pub(crate) fn reference(
    text: &str,
    path: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SecretRef> {
    let r = SecretRef::parse(text);
    if r.is_none() {
        let what = match SecretRef::is_reference(text) {
            true => "this secret reference is malformed",
            false => "a secret must be given by reference, never inline",
        };
        problems.push(map.problem(
            path,
            what.to_string(),
            "write `env:NAME`, `file:/path/to/secret` or `vault:mount/path#key`",
        ));
    }
    r
}

/// Paths whose values are digests or other public high-entropy data, never secrets.
fn digest_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    matches!(
        parts.as_slice(),
        ["servers", _, "pin", _] | ["servers", _, "command", "integrity"]
    )
}

/// An authorization server's public setting whose key only sounds secret (`token_endpoint`,
/// `requested_token_type`): its value is still judged by its shape.
fn oauth_setting(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    matches!(
        parts.as_slice(),
        [
            "servers",
            _,
            "credentials",
            "token_exchange" | "client_credentials",
            "token_endpoint" | "requested_token_type"
        ]
    )
}

/// A stdio server's well-formed package spec (`npm:@scope/name@1.2.3`, `pypi:name==1.2.3`),
/// whose whole reads as "random" by character statistics alone. Each part of the name is still
/// judged on its own, so a token pasted as a package name is caught.
fn package_spec(path: &str, value: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    if !matches!(parts.as_slice(), ["servers", _, "command", "package"]) {
        return false;
    }
    let Some((name, _version)) =
        crate::pin::npm_spec(value).or_else(|| crate::pin::pypi_spec(value))
    else {
        return false;
    };
    !name
        .split(['@', '/'])
        .any(|part| !part.is_empty() && high_entropy(part))
}

/// Why a literal config value looks like a secret, or `None`. The answer names the kind of
/// match only.
pub fn literal_secret(path: &str, value: &str) -> Option<&'static str> {
    if value.is_empty() || SecretRef::is_reference(value) || digest_path(path) {
        return None;
    }
    if value.contains("-----BEGIN ") {
        return Some("a PEM block");
    }
    if let Some((_, rest)) = value.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Some("a password inside a URL");
        }
    }
    if secret_value(value) {
        return Some("a credential's well-known shape (key prefix, bearer token or JWT)");
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    let last = last.split('[').next().unwrap_or(last);
    if secret_key(last) && !oauth_setting(path) {
        return Some("a value under a key that names a secret");
    }
    let local = value.starts_with('/') || value.starts_with("./") || value.contains("://");
    if !local && !package_spec(path, value) && high_entropy(value) {
        return Some("a long random string");
    }
    None
}

/// Every string value that looks like a secret, as a problem at its location.
pub(crate) fn literal_problems(
    strings: &[(String, String)],
    map: &SourceMap,
) -> Vec<ConfigProblem> {
    strings
        .iter()
        .filter_map(|(path, value)| {
            let why = literal_secret(path, value)?;
            Some(map.problem(
                path,
                format!("this value looks like a secret ({why}); secrets are never written in config"),
                "store it outside the file and refer to it: `env:NAME`, `file:/path` or `vault:mount/path#key`",
            ))
        })
        .collect()
}

/// Words that mark a key as naming a secret. A key is split into words at `_`, `-`, `.`, spaces
/// and lower-to-upper case changes (`max_tokens` is `max` + `tokens`, not a secret; `apiKey` is
/// `api` + `key`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
    "sessionid",
    "pwd",
    "pass",
    "pw",
    "passcode",
    "jwt",
    "otp",
    "dsn",
];

/// Word pairs that name a secret when adjacent (`api_key`, `private-key`, `session.id`).
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("private", "key"),
    ("session", "id"),
    ("access", "key"),
    ("connection", "string"),
    ("conn", "str"),
];

/// Prefixes of well-known credentials.
const SECRET_PREFIXES: &[&str] = &[
    "sk-",
    "sk_live_",
    "rk_live_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "AKIA",
    "ASIA",
    "glpat-",
    "pcl_",
    "AIza",
];

fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// True when `key` names something secret.
pub fn secret_key(key: &str) -> bool {
    let w = words(key);
    w.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || w.windows(2)
            .any(|p| matches!(p, [a, b] if SECRET_PAIRS.contains(&(a.as_str(), b.as_str()))))
}

/// True when one whitespace- or punctuation-delimited piece looks like a credential.
fn secret_piece(t: &str) -> bool {
    if SECRET_PREFIXES
        .iter()
        .any(|p| t.starts_with(p) && t.len() >= p.len() + 8)
    {
        return true;
    }
    // A JWT: three base64url parts, the first a JSON header.
    t.starts_with("eyJ") && t.len() > 40 && t.split('.').count() == 3
}

/// Names that, written as `name=value` or `name: value` inside text (a command line, a
/// connection string, a config snippet), make the value a secret.
const SECRET_ASSIGNED: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pass",
    "pw",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "secret_key",
    "private_key",
    "auth",
    "sig",
    "signature",
    "x-amz-signature",
];

/// True when a string value is, or contains, something shaped like a credential: a PEM block,
/// a `Bearer`/`Basic` token, a URL's password, or a piece with a well-known key prefix or the
/// shape of a JWT. (Values merely assigned to a secret name in text are left to
/// [`secret_spans`], which redaction uses: in config text such as a schema's description,
/// `token: …` is prose, not a credential.)
pub fn secret_value(v: &str) -> bool {
    !spans(v, false).is_empty()
}

/// The byte ranges of `v` that look like credentials, in order and not overlapping: what
/// [`secret_value`] finds, and values assigned to secret names (`password=…`, `Pwd: …`,
/// `Password=…;` in a connection string, `"client_secret": "…"`). A caller can hide just these
/// and keep the rest readable.
pub fn secret_spans(v: &str) -> Vec<Range<usize>> {
    spans(v, true)
}

fn spans(v: &str, with_assigned: bool) -> Vec<Range<usize>> {
    spans_searched(v, with_assigned, true)
}

/// [`secret_spans`] with every search run, whether or not the value could match it: the
/// reference the skipping is held to.
#[cfg(test)]
pub(crate) fn secret_spans_unskipped(v: &str) -> Vec<Range<usize>> {
    spans_searched(v, true, false)
}

fn spans_searched(v: &str, with_assigned: bool, skip: bool) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    if let Some(at) = v.find("-----BEGIN ") {
        spans.push(at..v.len());
    }
    // The searches below need a space (after `Bearer` or `Basic`) or an `=` or `:` (after a
    // secret name): most values have neither, and skip them and the lowercase copy.
    let spaced = !skip || v.as_bytes().contains(&b' ');
    let assigning = with_assigned && (!skip || v.bytes().any(|b| matches!(b, b'=' | b':')));
    let lower = match spaced || assigning {
        true => v.to_ascii_lowercase(),
        false => String::new(),
    };
    // `Bearer <token>` / `Basic <token>` anywhere, e.g. inside a command line.
    for scheme in ["bearer ", "basic "].iter().filter(|_| spaced) {
        for (at, _) in lower.match_indices(scheme) {
            let from = at + scheme.len();
            let len = token_len(v.get(from..).unwrap_or_default());
            if len >= 8 {
                spans.push(from..from + len);
            }
        }
    }
    for name in SECRET_ASSIGNED.iter().filter(|_| assigning) {
        for (at, _) in lower.match_indices(name) {
            let before = lower.get(..at).and_then(|b| b.chars().next_back());
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
                continue;
            }
            if let Some(value) = assigned(v, at + name.len()) {
                spans.push(value);
            }
        }
    }
    // `scheme://user:password@host`
    for (at, _) in v.match_indices("://") {
        let rest = v.get(at + 3..).unwrap_or_default();
        let authority_len = rest.find(['/', '?', '#', ' ']).unwrap_or(rest.len());
        let authority = rest.get(..authority_len).unwrap_or_default();
        if let Some(userinfo_end) = authority.rfind('@')
            && let Some(colon) = authority.get(..userinfo_end).and_then(|u| u.find(':'))
            && colon + 1 < userinfo_end
        {
            spans.push(at + 3 + colon + 1..at + 3 + userinfo_end);
        }
    }
    let mut start = 0;
    let end = std::iter::once((v.len(), ' '));
    for (i, c) in v.char_indices().chain(end) {
        if i == v.len() || c.is_whitespace() || PIECE_DELIMITERS.contains(&c) {
            if v.get(start..i).is_some_and(secret_piece) {
                spans.push(start..i);
            }
            start = i + c.len_utf8();
        }
    }
    merge(spans)
}

const PIECE_DELIMITERS: &[char] = &[
    '\'', '"', '=', ':', ',', ';', '(', ')', '[', ']', '{', '}', '<', '>',
];

/// Length in bytes of the token at the start of `s`: up to whitespace or a quote.
fn token_len(s: &str) -> usize {
    s.find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"'))
        .unwrap_or(s.len())
}

/// The value assigned at `from` (just after a secret name): optional closing quote, spaces,
/// `=` or `:`, spaces and an opening quote, then the value up to a delimiter.
fn assigned(v: &str, from: usize) -> Option<Range<usize>> {
    let bytes = v.as_bytes();
    let mut i = from;
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if !matches!(bytes.get(i), Some(b'=' | b':')) {
        return None;
    }
    i += 1;
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    // A quoted value runs to its closing quote, spaces and all.
    let quote = match bytes.get(i) {
        Some(q @ (b'"' | b'\'')) => {
            i += 1;
            Some(*q)
        }
        _ => None,
    };
    let start = i;
    while let Some(b) = bytes.get(i) {
        let end = match quote {
            Some(q) => *b == q,
            None => {
                b.is_ascii_whitespace()
                    || matches!(b, b';' | b'&' | b',' | b'"' | b'\'' | b'}' | b')')
            }
        };
        if end {
            break;
        }
        i += 1;
    }
    (i > start && v.is_char_boundary(start) && v.is_char_boundary(i)).then_some(start..i)
}

/// Sort and join overlapping ranges.
fn merge(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for r in spans {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// True when a string without spaces is long and random enough to be a key: at least 32
/// characters of mixed classes carrying more than 4.3 bits per character (hex digests, with at
/// most 4, are not flagged).
pub fn high_entropy(v: &str) -> bool {
    if v.len() < 32 || v.len() > 512 || v.chars().any(char::is_whitespace) {
        return false;
    }
    let mut counts = [0u32; 256];
    for b in v.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = v.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    let classes = [
        v.bytes().any(|b| b.is_ascii_lowercase()),
        v.bytes().any(|b| b.is_ascii_uppercase()),
        v.bytes().any(|b| b.is_ascii_digit()),
    ];
    bits > 4.3 && classes.iter().filter(|c| **c).count() >= 2
}
