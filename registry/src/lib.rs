//! The Portcullis registry: the single source of truth for what the gateway serves.
//!
//! Config is YAML under version control. This crate parses it, validates it completely and
//! returns either a [`Registry`] or errors that name file, line, column and the fix. It opens no
//! sockets and starts no processes: the gateway does that with what this crate returns.

mod access;
mod arguments;
mod canonical;
mod check;
mod duration;
mod error;
mod limits;
mod minted;
mod observe;
mod pin;
mod readiness;
mod resilience;
mod schema;
mod secret;
mod source_map;
mod ssrf;
mod validate;

#[cfg(test)]
mod testing;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use access::{Access, Approvals, OidcIssuer, SUPPORTED_ALGORITHMS, secure_url};
pub use arguments::{ArgumentExcess, ArgumentLimits};
pub use canonical::{CanonicalObject, Members, canonical_json, canonical_object, hex_lower};
pub use check::{check, raised_by_definitions, raised_class, write_pins};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigProblem, Location};
pub use limits::{Budget, Limit, LimitMatch, Period};
pub use minted::{
    ACCESS_TOKEN_TYPE, ApiKeyCallers, ClientAuth, Minted, OAuthClient, TokenEndpoint,
};
pub use observe::{
    AuditSettings, AuditSink, DEFAULT_AUDIT_FILE, DEFAULT_AUDIT_RETENTION, DEFAULT_ROTATION,
    OtlpSettings, PathStep, RedactPath, Rotation, SinkKind, TelemetrySettings,
};
pub use pin::{
    Artifact, HashAlgorithm, Integrity, exact_version, hidden_characters, hidden_in_definition,
    instructions_in_definition, npm_spec, pypi_spec, tool_pin,
};
pub use readiness::{
    Cited, DimensionScore, Gate, ServerReadiness, default_grants_reaching_writes,
    is_generic_tool_name, readiness, server_readiness,
};
pub use resilience::{
    Balance, Breaker, DEFAULT_HEALTH_INTERVAL, DEFAULT_MAX_RESPONSE, DEFAULT_MAX_RESPONSE_DEPTH,
    DEFAULT_RETRY_BUDGET, Endpoint, Resilience, nested_deeper_than, nesting,
};
pub use schema::{BuiltinServer, Connection, Mode, Profile};
pub use secret::{SecretRef, high_entropy, literal_secret, secret_key, secret_spans, secret_value};
pub use source_map::SourceMap;
pub use ssrf::{literal_host_problem, non_public, url_host};
pub use validate::{
    CommandSource, Credential, KillSwitchSettings, Rate, Registry, ResourcePattern, Server,
    ServerSource, Settings, ToolEntry, VaultSettings, is_server_name, normal_uri,
};

use std::path::Path;

/// Read, parse and validate the config file at `path`.
pub fn load_file(path: &Path) -> Result<Registry, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    load_str(&file, &text)
}

/// Parse and validate config text; `file` is the name used in error locations.
pub fn load_str(file: &str, text: &str) -> Result<Registry, ConfigError> {
    let (value, map) = source_map::parse(file, text)?;
    let mut strings = Vec::new();
    collect_strings("", &value, &mut strings);
    let raw = schema::deserialize(value, &map)?;
    let literals = secret::literal_problems(&strings, &map);
    let mut registry = match validate::validate(raw, map) {
        Ok(r) if literals.is_empty() => r,
        Ok(_) => return Err(ConfigError::Invalid(literals)),
        Err(ConfigError::Invalid(mut problems)) => {
            if !literals.is_empty() {
                problems.extend(literals);
                problems.sort_by_key(|p| (p.location.line, p.location.column));
            }
            return Err(ConfigError::Invalid(problems));
        }
        Err(e) => return Err(e),
    };
    registry.digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
    );
    registry.strings = strings;
    Ok(registry)
}

/// Every string value in the config with its dotted path (list items as `path[i]`).
fn collect_strings(path: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((path.to_owned(), s.clone())),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_strings(&format!("{path}[{i}]"), item, out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, item) in m {
                let p = match path.is_empty() {
                    true => k.clone(),
                    false => format!("{path}.{k}"),
                };
                collect_strings(&p, item, out);
            }
        }
        _ => {}
    }
}
