//! The Portcullis registry: the single source of truth for what the gateway serves.
//!
//! Config is YAML under version control. This crate parses it, validates it completely and
//! returns either a [`Registry`] or errors that name file, line, column and the fix. It opens no
//! sockets and starts no processes: the gateway does that with what this crate returns.

mod access;
mod canonical;
mod duration;
mod error;
mod observe;
mod schema;
mod source_map;
mod validate;

#[cfg(test)]
mod testing;

pub use access::{Access, Approvals, OidcIssuer, SUPPORTED_ALGORITHMS};
pub use canonical::canonical_json;
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigProblem, Location};
pub use observe::{
    AuditSettings, AuditSink, DEFAULT_AUDIT_FILE, OtlpSettings, PathStep, RedactPath, SecretRef,
    SinkKind, TelemetrySettings,
};
pub use schema::{BuiltinServer, Mode, Profile};
pub use source_map::SourceMap;
pub use validate::{
    CommandSource, KillSwitchSettings, Registry, ResourcePattern, Server, ServerSource, Settings,
    ToolEntry,
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
    let raw = schema::deserialize(value, &map)?;
    let mut registry = validate::validate(raw, map)?;
    registry.digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
    );
    Ok(registry)
}
