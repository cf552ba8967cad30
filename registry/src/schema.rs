//! The config file's shape, exactly as written. Validation turns it into a [`crate::Registry`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConfigError, ConfigProblem};
use crate::source_map::{SourceMap, child};

/// How strict the gateway is about unsafe settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Unsafe overrides are refused.
    Production,
    /// Unsafe overrides are allowed, flagged in the self-audit and logged.
    Development,
}

/// How an HTTP upstream's connections are shared among clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// One connection for every caller (the default). The upstream cannot reach any one
    /// client: its log messages are dropped and its sampling and elicitation requests refused.
    #[default]
    Shared,
    /// Each client session gets its own upstream session, opened at its first request. The
    /// upstream's log messages reach that client, and it may ask that client for sampling and
    /// elicitation when the client declared them.
    PerSession,
}

/// Upstreams compiled into the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinServer {
    /// A small notes service with read, write and destructive tools (the quickstart's upstream).
    Notes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) profile: Option<Profile>,
    pub(crate) listen: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) public_url: Option<String>,
    pub(crate) store: Option<String>,
    pub(crate) store_password: Option<String>,
    pub(crate) cache_dir: Option<String>,
    #[serde(default)]
    pub(crate) http: RawHttp,
    pub(crate) servers: Option<BTreeMap<String, RawServer>>,
    #[serde(default)]
    pub(crate) identity: RawIdentity,
    #[serde(default)]
    pub(crate) grants: BTreeMap<String, RawGrant>,
    #[serde(default)]
    pub(crate) approvals: RawApprovals,
    pub(crate) mode: Option<Mode>,
    #[serde(default)]
    pub(crate) kill_switch: RawKillSwitch,
    #[serde(default)]
    pub(crate) audit: crate::observe::RawAudit,
    #[serde(default)]
    pub(crate) telemetry: crate::observe::RawTelemetry,
    #[serde(default)]
    pub(crate) secrets: RawSecrets,
    #[serde(default)]
    pub(crate) limits: Vec<crate::limits::RawLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    pub(crate) vault: Option<RawVault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    pub(crate) address: String,
    pub(crate) token: String,
    pub(crate) namespace: Option<String>,
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    pub(crate) bearer: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) token_exchange: Option<crate::minted::RawClient>,
    pub(crate) client_credentials: Option<crate::minted::RawClient>,
}

/// What the gateway does with a call that policy allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Calls are decided and, when allowed, executed.
    Enforce,
    /// Write and destructive tools are refused (reason `read_only`); read tools run.
    ReadOnly,
    /// Calls are decided and recorded, then answered as not executed; no upstream is called.
    Shadow,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::ReadOnly => "read_only",
            Mode::Shadow => "shadow",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Mode, ()> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "read_only" => Ok(Mode::ReadOnly),
            "shadow" => Ok(Mode::Shadow),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKillSwitch {
    pub(crate) poll: Option<String>,
    pub(crate) lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    #[serde(default)]
    pub(crate) require: Vec<String>,
    #[serde(default)]
    pub(crate) oidc: Vec<RawOidc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub(crate) issuer: String,
    pub(crate) audience: Option<String>,
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) claims: Option<RawClaims>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) jwks_ttl: Option<String>,
    pub(crate) jwks_min_refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaims {
    pub(crate) org: Option<String>,
    pub(crate) team: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) roles: Option<String>,
}

/// A principal's grants: a list of patterns, or `{ allow: [...], deny: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawGrant {
    List(Vec<String>),
    Rules(RawRules),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRules {
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    #[serde(default)]
    pub(crate) deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApprovals {
    pub(crate) required_from: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) hold: Option<String>,
    #[serde(default)]
    pub(crate) target_arguments: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) max_body: Option<Value>,
    #[serde(default)]
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) session_idle: Option<String>,
    pub(crate) session_lifetime: Option<String>,
    #[serde(default)]
    pub(crate) session_keys: Vec<String>,
    pub(crate) header_timeout: Option<String>,
    pub(crate) body_timeout: Option<String>,
    pub(crate) write_timeout: Option<String>,
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_connections_per_peer: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) url: Option<crate::resilience::RawUrls>,
    pub(crate) endpoints: Option<Vec<crate::resilience::RawEndpoint>>,
    pub(crate) balance: Option<crate::resilience::Balance>,
    pub(crate) health: Option<crate::resilience::RawHealth>,
    pub(crate) retry_budget: Option<String>,
    pub(crate) command: Option<RawCommand>,
    pub(crate) builtin: Option<BuiltinServer>,
    pub(crate) tools: Option<BTreeMap<String, RawTool>>,
    #[serde(default)]
    pub(crate) resources: Vec<String>,
    #[serde(default)]
    pub(crate) prompts: Vec<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) max_timeout: Option<String>,
    pub(crate) max_response: Option<Value>,
    pub(crate) max_response_depth: Option<u64>,
    pub(crate) breaker: Option<crate::resilience::RawBreaker>,
    #[serde(default)]
    pub(crate) allow_private: bool,
    pub(crate) connection: Option<Connection>,
    pub(crate) credentials: Option<RawCredentials>,
    pub(crate) pin: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommand {
    pub(crate) program: Option<String>,
    pub(crate) package: Option<String>,
    pub(crate) integrity: Option<String>,
    pub(crate) bin: Option<String>,
    #[serde(default)]
    pub(crate) args: Vec<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTool {
    pub(crate) class: String,
    pub(crate) timeout: Option<String>,
    pub(crate) arguments: Option<Value>,
    pub(crate) rate: Option<String>,
    pub(crate) cost: Option<u64>,
    pub(crate) max_argument_bytes: Option<Value>,
    pub(crate) max_argument_nodes: Option<u64>,
    pub(crate) max_argument_depth: Option<u64>,
}

/// Deserialize the raw shape, turning the first type error into a located problem.
pub(crate) fn deserialize(value: Value, map: &SourceMap) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize::<_, RawConfig>(value).map_err(|e| {
        let mut path = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => path = child(&path, key),
                serde_path_to_error::Segment::Enum { variant } => path = child(&path, variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = e.into_inner().to_string();
        ConfigError::Invalid(vec![type_problem(&path, &inner, map)])
    })
}

fn type_problem(path: &str, message: &str, map: &SourceMap) -> ConfigProblem {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        let key_path = if path.ends_with(field) {
            path.to_string()
        } else {
            child(path, field)
        };
        return ConfigProblem {
            location: map.key(&key_path),
            path: key_path,
            message: format!("unknown key `{field}`"),
            fix: if expected.is_empty() {
                "remove this key".to_string()
            } else {
                format!("remove it or use one of the known keys: expected {expected}")
            },
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        return ConfigProblem {
            location: map.value(path),
            path: path.to_string(),
            message: message.to_string(),
            fix: format!("use {expected}"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ConfigProblem {
            location: map.value(path),
            path: path.to_string(),
            message: format!("missing key `{field}`"),
            fix: format!("add `{field}:` here"),
        };
    }
    ConfigProblem {
        location: map.value(path),
        path: path.to_string(),
        message: message.to_string(),
        fix: "give this key a value of the type named above".to_string(),
    }
}
