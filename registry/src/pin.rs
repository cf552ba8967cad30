//! Pins: what a server is allowed to be. A stdio server's artifact is pinned by exact version and
//! digest; an upstream's tools are pinned by a digest of each allowlisted definition.

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha512};

/// A digest an artifact must have: `sha256:<hex>`, or Subresource-Integrity form
/// `sha256-<base64>` / `sha512-<base64>` (what npm records as `dist.integrity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integrity {
    /// The hash function.
    pub algorithm: HashAlgorithm,
    /// The expected digest.
    pub digest: Vec<u8>,
    /// As written in the config.
    pub text: String,
}

/// A hash function an [`Integrity`] may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Integrity {
    /// Parse `sha256:<64 hex>`, `sha256-<base64>` or `sha512-<base64>`.
    pub fn parse(text: &str) -> Option<Integrity> {
        let (algorithm, digest) = if let Some(hex) = text.strip_prefix("sha256:") {
            (HashAlgorithm::Sha256, hex::decode(hex).ok()?)
        } else if let Some(b) = text.strip_prefix("sha256-") {
            (
                HashAlgorithm::Sha256,
                base64::engine::general_purpose::STANDARD.decode(b).ok()?,
            )
        } else if let Some(b) = text.strip_prefix("sha512-") {
            (
                HashAlgorithm::Sha512,
                base64::engine::general_purpose::STANDARD.decode(b).ok()?,
            )
        } else {
            return None;
        };
        let want = match algorithm {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        };
        (digest.len() == want).then(|| Integrity {
            algorithm,
            digest,
            text: text.to_string(),
        })
    }

    /// The digest of `bytes` under this integrity's hash function, written the same way.
    pub fn of(&self, bytes: &[u8]) -> Vec<u8> {
        match self.algorithm {
            HashAlgorithm::Sha256 => Sha256::digest(bytes).to_vec(),
            HashAlgorithm::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }

    /// True when `bytes` have exactly this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.of(bytes) == self.digest
    }

    /// `actual` written in this integrity's notation, for error messages.
    pub fn render(&self, actual: &[u8]) -> String {
        match (self.algorithm, self.text.starts_with("sha256:")) {
            (HashAlgorithm::Sha256, true) => format!("sha256:{}", hex::encode(actual)),
            (HashAlgorithm::Sha256, false) => format!(
                "sha256-{}",
                base64::engine::general_purpose::STANDARD.encode(actual)
            ),
            (HashAlgorithm::Sha512, _) => format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(actual)
            ),
        }
    }
}

/// Where a stdio server's code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// A program on this machine, whose file must have the digest.
    Local {
        /// The program's path.
        program: String,
        /// The digest of the program file.
        integrity: Integrity,
    },
    /// An npm package at an exact version; the digest is that of its published tarball.
    Npm {
        /// The package name, e.g. `@scope/name`.
        name: String,
        /// The exact version.
        version: String,
        /// The tarball's digest.
        integrity: Integrity,
        /// The executable to run from the package (defaults to the package's only `bin`).
        bin: Option<String>,
    },
    /// A PyPI distribution at an exact version; the digest is that of the downloaded file.
    Pypi {
        /// The distribution name.
        name: String,
        /// The exact version.
        version: String,
        /// The file's digest.
        integrity: Integrity,
        /// The console script to run (defaults to the distribution name).
        bin: Option<String>,
    },
    /// No pin (refused in the production profile).
    Unpinned {
        /// The program's path.
        program: String,
    },
}

impl Artifact {
    /// True unless the artifact is unpinned.
    pub fn is_pinned(&self) -> bool {
        !matches!(self, Artifact::Unpinned { .. })
    }

    /// A short description: `npm:@scope/name@1.2.3`, `pypi:name==1.2.3` or the program.
    pub fn describe(&self) -> String {
        match self {
            Artifact::Local { program, .. } | Artifact::Unpinned { program } => program.clone(),
            Artifact::Npm { name, version, .. } => format!("npm:{name}@{version}"),
            Artifact::Pypi { name, version, .. } => format!("pypi:{name}=={version}"),
        }
    }
}

/// An exact version: `1.2.3`, optionally with a pre-release or build suffix. Ranges, tags and
/// wildcards are not versions.
pub fn exact_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    (2..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// Split `npm:<name>@<version>` into name and version.
pub fn npm_spec(spec: &str) -> Option<(String, String)> {
    let rest = spec.strip_prefix("npm:")?;
    let (name, version) = match rest.strip_prefix('@') {
        Some(scoped) => {
            let (n, v) = scoped.rsplit_once('@')?;
            (format!("@{n}"), v)
        }
        None => {
            let (n, v) = rest.split_once('@')?;
            (n.to_string(), v)
        }
    };
    let ok_name = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'@' | b'/' | b'-' | b'_' | b'.')
        });
    (ok_name && exact_version(version)).then(|| (name, version.to_string()))
}

/// Split `pypi:<name>==<version>` into name and version.
pub fn pypi_spec(spec: &str) -> Option<(String, String)> {
    let rest = spec.strip_prefix("pypi:")?;
    let (name, version) = rest.split_once("==")?;
    let ok_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (ok_name && exact_version(version)).then(|| (name.to_string(), version.to_string()))
}

/// The fields of a tool definition that its pin covers, in canonical JSON.
const PINNED_FIELDS: &[&str] = &[
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// `sha256:<hex>` over the canonical JSON (RFC 8785 member order) of a tool definition's name,
/// title, description, input and output schemas and annotations. Other members (icons, `_meta`)
/// do not move the pin.
pub fn tool_pin(definition: &Value) -> String {
    let mut picked = Map::new();
    if let Value::Object(def) = definition {
        for f in PINNED_FIELDS {
            if let Some(v) = def.get(*f).filter(|v| !v.is_null()) {
                picked.insert((*f).to_string(), v.clone());
            }
        }
    }
    let bytes = crate::canonical_json(&Value::Object(picked));
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Why a tool description cannot be pinned: it carries characters that hide text from a human
/// reviewer or steer a terminal (C0/C1 controls other than tab and newline, ANSI escapes, bidi
/// overrides, isolates and marks, Unicode tag characters, zero-width and other invisible
/// characters, and the supplementary variation selectors that can carry hidden bytes).
pub fn hidden_characters(text: &str) -> Option<&'static str> {
    for c in text.chars() {
        let why = match c {
            '\t' | '\n' | '\r' => continue,
            '\u{1b}' => "an ANSI escape",
            c if c.is_control() => "a control character",
            '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}' => "a bidirectional override",
            '\u{e0000}'..='\u{e007f}' => "a Unicode tag character",
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => "a zero-width character",
            '\u{00ad}'
            | '\u{034f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180e}'
            | '\u{2061}'..='\u{2064}'
            | '\u{206a}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{ffa0}' => "an invisible character",
            // Selectors 1-14 (15 and 16 choose text or emoji presentation, and are common).
            '\u{fe00}'..='\u{fe0d}' => "a variation selector",
            '\u{e0100}'..='\u{e01ef}' => "a supplementary variation selector",
            _ => continue,
        };
        return Some(why);
    }
    None
}

/// Every string inside a tool definition that a reviewer reads (description, title, schema
/// descriptions), checked for hidden characters. Returns the JSON pointer and why.
pub fn hidden_in_definition(definition: &Value) -> Option<(String, &'static str)> {
    first_string(definition, "", &hidden_characters)
}

/// The first string (a value or an object key) of `v` for which `found` says something, with
/// its JSON pointer below `at`.
fn first_string(
    v: &Value,
    at: &str,
    found: &dyn Fn(&str) -> Option<&'static str>,
) -> Option<(String, &'static str)> {
    match v {
        Value::String(s) => found(s).map(|why| (at.to_string(), why)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_string(x, &format!("{at}/{i}"), found)),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            // RFC 6901: `~` and `/` in a key are escaped.
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            match found(k) {
                Some(why) => Some((here, why)),
                None => first_string(x, &here, found),
            }
        }),
        _ => None,
    }
}

/// Markup that addresses a model rather than describing a tool, lower case.
const INSTRUCTION_MARKUP: &[&str] = &[
    "<important",
    "</important",
    "<system",
    "</system",
    "<instruction",
    "<instructions",
    "<hidden",
    "<secret",
    "<admin",
    "<prompt",
    "[inst]",
    "<<sys>>",
    "<|im_start|>",
    "<|system|>",
    "### system",
];

/// Phrasings seen in tool-poisoning attacks, lower case.
const INJECTION_PHRASES: &[&str] = &[
    "ignore previous instructions",
    "ignore all previous",
    "ignore the above",
    "ignore your instructions",
    "disregard previous",
    "disregard all prior",
    "forget your instructions",
    "override your instructions",
    "new instructions:",
    "do not tell the user",
    "don't tell the user",
    "do not inform the user",
    "do not mention this",
    "without telling the user",
    "without the user knowing",
    "hide this from the user",
    "the user must not know",
    "before using this tool, read",
    "before using this tool read",
    "~/.ssh",
    "id_rsa",
    ".aws/credentials",
    "/etc/passwd",
    "/etc/shadow",
    "your system prompt",
    "reveal the system prompt",
    "you are now",
];

/// Instruction-like text in a tool definition: markup addressed to a model (`<IMPORTANT>`,
/// `<system>`, chat-template tokens) or a phrasing known from tool-poisoning attacks ("ignore
/// previous instructions", "do not tell the user", paths to private keys). Returns the JSON
/// pointer and what was found. A finding is for an operator to review: such a definition is
/// pinned only when the operator confirms it, and served unpinned never.
pub fn instructions_in_definition(definition: &Value) -> Option<(String, &'static str)> {
    let found = |s: &str| {
        let lower = s.to_lowercase();
        INSTRUCTION_MARKUP
            .iter()
            .chain(INJECTION_PHRASES)
            .find(|m| lower.contains(**m))
            .copied()
    };
    first_string(definition, "", &found)
}

#[cfg(test)]
mod tests;
