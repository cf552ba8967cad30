//! Semantic validation: the raw shape becomes a [`Registry`] only if every rule holds.
//!
//! All problems are collected, not just the first, so an operator fixes a file in one pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use policy::{ToolClass, is_wire_tool_name};
use serde_json::Value;

use crate::access::{Access, access};
use crate::duration::parse_duration;
use crate::error::{ConfigError, ConfigProblem};
use crate::observe::{AuditSettings, TelemetrySettings};
use crate::pin::{Artifact, Integrity, npm_spec, pypi_spec};
use crate::schema::{BuiltinServer, Mode, Profile, RawCommand, RawConfig, RawServer};
use crate::secret::{SecretRef, reference};
use crate::source_map::{SourceMap, child};

mod servers;
mod settings;

use servers::server;
use settings::{argument_limits, settings};
pub(crate) use settings::{duration_or, parse_size};

const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_SERVER_NAME: usize = 32;

/// A validated config: what the gateway serves and how.
#[derive(Clone, Debug)]
pub struct Registry {
    /// Listener and store settings.
    pub settings: Settings,
    /// Servers in name order.
    pub servers: Vec<Server>,
    /// Identity sources, grants and the approval rule.
    pub access: Access,
    /// Rate limits and concurrency caps per principal (`limits:`).
    pub limits: Vec<crate::limits::Limit>,
    /// Where each key came from, for errors and the self-audit.
    pub source: SourceMap,
    /// `sha256:<hex>` of the config text, recorded when the gateway starts or reloads.
    pub digest: String,
    /// Every string value written in the file, with its dotted path: what the self-audit scans
    /// for literals that look like secrets.
    pub strings: Vec<(String, String)>,
}

/// Process-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Strictness profile.
    pub profile: Profile,
    /// The MCP listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin_listen: SocketAddr,
    /// The canonical URL of this gateway (token audience, metadata), when configured. Without
    /// it the gateway uses `http://<bound listen address>`.
    pub public_url: Option<String>,
    /// Store URL (`sqlite://…` or `postgres://…`).
    pub store: String,
    /// The PostgreSQL store's password, by reference.
    pub store_password: Option<SecretRef>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Browser origins allowed besides the public URL's own.
    pub allowed_origins: Vec<String>,
    /// How long an idle session lives.
    pub session_idle: Duration,
    /// How long a session id stays valid after it was issued, on any replica.
    pub session_lifetime: Duration,
    /// The keys that seal session ids, by reference: the first seals, every one opens (a
    /// rotation adds the new key first and drops the old one after a lifetime). Empty: a key
    /// kept in the store, shared by every process on it.
    pub session_keys: Vec<SecretRef>,
    /// A request head must arrive whole within this long of the connection opening or of the
    /// previous answer (which also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// A request body must arrive whole within this long.
    pub body_timeout: Duration,
    /// An answer's write that makes no progress for this long (the caller has stopped reading)
    /// ends its connection.
    pub write_timeout: Duration,
    /// Open connections on the MCP listener; `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
    /// Open connections from one peer address; `None`: a quarter of `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    /// What happens to allowed calls, until an operator switches it at runtime.
    pub mode: Mode,
    /// How the kill-switch state is kept current.
    pub kill_switch: KillSwitchSettings,
    /// Where the audit log goes and what is redacted.
    pub audit: AuditSettings,
    /// OpenTelemetry export.
    pub telemetry: TelemetrySettings,
    /// Where `vault:` references are read.
    pub vault: Option<VaultSettings>,
    /// Where pinned packages are fetched and verified.
    pub cache_dir: String,
}

/// The Vault (or OpenBao) server that `vault:` references are read from (KV version 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSettings {
    /// The server's base URL.
    pub address: String,
    /// The token, itself a reference (`env:` or `file:`).
    pub token: SecretRef,
    /// An enterprise namespace, when used.
    pub namespace: Option<String>,
    /// How long one read may take.
    pub timeout: Duration,
}

/// How often the kill-switch state is read from the store, and how long a read stays good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillSwitchSettings {
    /// Interval between reads.
    pub poll: Duration,
    /// If no read has succeeded for this long, every call is refused as if the switch were
    /// engaged.
    pub lease: Duration,
}

const DEFAULT_KILL_POLL: Duration = Duration::from_millis(250);
const DEFAULT_KILL_LEASE: Duration = Duration::from_secs(5);

/// One upstream MCP server.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// The registry name; the prefix of federated names.
    pub name: String,
    /// How to reach it.
    pub source: ServerSource,
    /// The allowlist: only these tools exist for clients.
    pub tools: BTreeMap<String, ToolEntry>,
    /// Resource URIs clients may list and read.
    pub resources: Vec<ResourcePattern>,
    /// Prompt names clients may list and get.
    pub prompts: Vec<String>,
    /// How long one upstream request may take without progress.
    pub timeout: Duration,
    /// How long one upstream request may take in all, progress or not (at least `timeout`).
    pub max_timeout: Duration,
    /// The bounds on its answers and its circuit breaker.
    pub resilience: crate::resilience::Resilience,
    /// True when the operator allows this upstream's URL to name or resolve to a loopback,
    /// private or link-local address.
    pub allow_private: bool,
    /// Whether client sessions share one upstream connection or each get their own.
    pub connection: crate::schema::Connection,
    /// Headers sent to the upstream with a secret's value (never the caller's token).
    pub credentials: Vec<Credential>,
    /// A token minted for each call (token exchange or client credentials), sent as
    /// `Authorization: Bearer`.
    pub minted: Option<crate::minted::Minted>,
    /// Each allowlisted tool's pinned definition digest (`sha256:<hex>`), written by
    /// `portcullis pin`. `None` when the server has no `pin` key.
    pub pins: Option<BTreeMap<String, String>>,
}

/// A header the gateway sends to an upstream, its value taken from a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Header name, lower case.
    pub header: String,
    /// Where the value comes from.
    pub secret: SecretRef,
    /// Sent as `Bearer <secret>`.
    pub bearer: bool,
}

/// A rate limit of `count` calls per `per`, enforced as GCRA: a burst of `count` (or a
/// `limits:` entry's `burst`), then one call per `per / count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed in one window.
    pub count: u32,
    /// The window.
    pub per: Duration,
}

impl Rate {
    /// Parse `5/min`, `100/h`, `2/s`, `1000/day`.
    pub fn parse(text: &str) -> Option<Rate> {
        let (n, unit) = text.trim().split_once('/')?;
        let count: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return None,
        };
        Some(Rate { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// How an upstream is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSource {
    /// Streamable HTTP at this URL.
    Http {
        /// The first endpoint's URL (what `portcullis pin` lists).
        url: String,
        /// Every endpoint, `url` first: replicas of one server, balanced and failed over.
        endpoints: Vec<crate::resilience::Endpoint>,
    },
    /// A child process speaking MCP over stdio.
    Command(Box<CommandSource>),
    /// An upstream compiled into the gateway.
    Builtin(BuiltinServer),
}

/// A child process to launch without a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSource {
    /// What is run, for display: the program path, or the package and version.
    pub program: String,
    /// The pinned artifact the process is started from.
    pub artifact: Artifact,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set in its otherwise empty environment, each from a secret reference.
    pub env: BTreeMap<String, SecretRef>,
    /// Working directory.
    pub cwd: Option<String>,
}

/// An allowlisted tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolEntry {
    /// What the operator says the tool does.
    pub class: ToolClass,
    /// The operator's JSON Schema for the arguments, checked in addition to the upstream's own
    /// `inputSchema` (so it can only narrow what the upstream accepts).
    pub arguments: Option<Value>,
    /// How long a call of this tool may take without progress, in place of the server's
    /// `timeout` (never past the server's `max_timeout`).
    pub timeout: Option<Duration>,
    /// Calls per window, per gateway process: a burst of `count`, then one per `per / count`.
    pub rate: Option<Rate>,
    /// Units each call spends from the budgets of `limits:` that cover it (default 1).
    pub cost: u64,
    /// How large and complex one call's arguments may be.
    pub argument_limits: crate::ArgumentLimits,
}

/// An allowed resource URI: exact, or a prefix written with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourcePattern {
    /// This URI only.
    Exact(String),
    /// Any URI starting with this.
    Prefix(String),
}

// === impl ResourcePattern ===

impl ResourcePattern {
    fn parse(s: &str) -> ResourcePattern {
        match s.strip_suffix('*') {
            Some(prefix) => ResourcePattern::Prefix(prefix.to_string()),
            None => ResourcePattern::Exact(s.to_string()),
        }
    }

    /// True when `uri` is allowed by this pattern. Comparison is byte-exact.
    pub fn matches(&self, uri: &str) -> bool {
        match self {
            ResourcePattern::Exact(u) => u == uri,
            ResourcePattern::Prefix(p) => uri.starts_with(p.as_str()),
        }
    }
}

/// True when `uri` means what its bytes say, so that a prefix match on it is a match on what
/// the upstream will read: no dot segments (`.`, `..`), no percent-encoded `.`, `/`, `\` or `%`
/// (which an upstream may decode into dot segments or separators), no malformed escape, no
/// backslash and no control character. A URI that is not in this form is refused rather than
/// rewritten, so what the upstream receives is exactly what was decided on.
pub fn normal_uri(uri: &str) -> bool {
    if uri.chars().any(|c| c == '\\' || c.is_control()) {
        return false;
    }
    let bytes = uri.as_bytes();
    let mut i = 0;
    while let Some(b) = bytes.get(i) {
        if *b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return false;
            };
            let (Some(h), Some(l)) = ((*h as char).to_digit(16), (*l as char).to_digit(16)) else {
                return false;
            };
            if matches!(h * 16 + l, 0x2e | 0x2f | 0x5c | 0x25) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

// === impl Registry ===

impl Registry {
    /// The keys whose change a running gateway cannot apply: listeners, store, audit sinks,
    /// telemetry, identity issuers and the other process-wide settings. A reload that changes
    /// any of them is refused whole, so the running config is always one file's exact content.
    /// Servers, tools, pins, grants, the approval rule and `audit.retention` can change at a
    /// reload.
    pub fn restart_only_changes(&self, next: &Registry) -> Vec<&'static str> {
        let (a, b) = (&self.settings, &next.settings);
        let fields: [(&'static str, bool); 22] = [
            ("profile", a.profile == b.profile),
            ("listen", a.listen == b.listen),
            ("admin_listen", a.admin_listen == b.admin_listen),
            ("public_url", a.public_url == b.public_url),
            (
                "store",
                a.store == b.store && a.store_password == b.store_password,
            ),
            ("http.max_body", a.max_body == b.max_body),
            (
                "http.allowed_origins",
                a.allowed_origins == b.allowed_origins,
            ),
            ("http.session_idle", a.session_idle == b.session_idle),
            (
                "http.session_lifetime",
                a.session_lifetime == b.session_lifetime,
            ),
            ("http.session_keys", a.session_keys == b.session_keys),
            ("http.header_timeout", a.header_timeout == b.header_timeout),
            ("http.body_timeout", a.body_timeout == b.body_timeout),
            ("http.write_timeout", a.write_timeout == b.write_timeout),
            (
                "http.max_connections",
                a.max_connections == b.max_connections,
            ),
            (
                "http.max_connections_per_peer",
                a.max_connections_per_peer == b.max_connections_per_peer,
            ),
            ("mode", a.mode == b.mode),
            ("kill_switch", a.kill_switch == b.kill_switch),
            // The store's retention is read where it applies, so it may change at a reload.
            (
                "audit",
                a.audit.sinks == b.audit.sinks
                    && a.audit.redact == b.audit.redact
                    && a.audit.redact_key == b.audit.redact_key,
            ),
            ("telemetry", a.telemetry == b.telemetry),
            ("secrets.vault", a.vault == b.vault),
            ("cache_dir", a.cache_dir == b.cache_dir),
            ("identity.oidc", self.access.oidc == next.access.oidc),
        ];
        fields
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(key, _)| key)
            .collect()
    }
}

// === impl Server ===

impl Server {
    /// True when `next` reaches the same upstream the same way (source, credentials, address
    /// rule), so a live connection can be kept across a reload.
    pub fn same_connection(&self, next: &Server) -> bool {
        // Endpoint weights apply in place; the URLs are connections.
        let unweighted = |s: &ServerSource| match s {
            ServerSource::Http { url, endpoints } => ServerSource::Http {
                url: url.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|e| crate::resilience::Endpoint {
                        url: e.url.clone(),
                        weight: 1,
                    })
                    .collect(),
            },
            other => other.clone(),
        };
        unweighted(&self.source) == unweighted(&next.source)
            && self.credentials == next.credentials
            && self.allow_private == next.allow_private
            && self.connection == next.connection
    }

    /// True when `next` lists what this lists: the same tool entries (allowlist, classes and
    /// presentation), resource patterns, prompts and pins. A change elsewhere (weights, timeouts,
    /// resilience, minted credentials) leaves every session's lists as they were.
    pub fn same_listing(&self, next: &Server) -> bool {
        self.tools == next.tools
            && self.resources == next.resources
            && self.prompts == next.prompts
            && self.pins == next.pins
    }

    /// True when the resource `uri` may be shown and read: it is in normal form (see
    /// [`normal_uri`]) and a pattern allows it.
    pub fn allows_resource(&self, uri: &str) -> bool {
        normal_uri(uri) && self.resources.iter().any(|p| p.matches(uri))
    }

    /// True when the prompt `name` may be shown and fetched.
    pub fn allows_prompt(&self, name: &str) -> bool {
        self.prompts.iter().any(|p| p == name)
    }
}

pub(crate) fn validate(raw: RawConfig, map: SourceMap) -> Result<Registry, ConfigError> {
    let mut problems = Vec::new();
    let settings = settings(&raw, &map, &mut problems);
    let mut servers = Vec::new();
    match raw.servers {
        None => problems.push(ConfigProblem {
            location: map.value(""),
            path: "servers".to_string(),
            message: "missing key `servers`".to_string(),
            fix: "add a `servers:` map; each server needs `url`, `command` or `builtin`, and a `tools` allowlist".to_string(),
        }),
        Some(raw_servers) => {
            for (name, s) in raw_servers {
                if let Some(server) = server(&name, s, settings.profile, &map, &mut problems) {
                    servers.push(server);
                }
            }
        }
    }
    let uses_vault = servers.iter().any(|s| {
        s.credentials
            .iter()
            .map(|c| &c.secret)
            .chain(match &s.source {
                ServerSource::Command(c) => c.env.values().collect(),
                _ => Vec::new(),
            })
            .any(|r| matches!(r, SecretRef::Vault { .. }))
    });
    if uses_vault && settings.vault.is_none() {
        problems.push(map.problem(
            "secrets",
            "a `vault:` reference is used but no Vault is configured".to_string(),
            "add `secrets: { vault: { address: https://vault.example.com:8200, token: env:VAULT_TOKEN } }`",
        ));
    }
    let access = access(
        raw.identity,
        raw.grants,
        &raw.approvals,
        &servers,
        &map,
        &mut problems,
    );
    let limits = crate::limits::limits(&raw.limits, &servers, &map, &mut problems);
    if problems.is_empty() {
        Ok(Registry {
            settings,
            servers,
            access,
            limits,
            source: map,
            digest: String::new(),
            strings: Vec::new(),
        })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// True when `name` has the shape of a server name (whether or not such a server exists).
pub fn is_server_name(name: &str) -> bool {
    valid_server_name(name)
}

fn valid_server_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= MAX_SERVER_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests;
