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

const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Store URL (`sqlite://…`).
    pub store: String,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Browser origins allowed besides the public URL's own.
    pub allowed_origins: Vec<String>,
    /// How long an idle session lives.
    pub session_idle: Duration,
    /// A request head must arrive whole within this long of the connection opening or of the
    /// previous answer (which also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// A request body must arrive whole within this long.
    pub body_timeout: Duration,
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
    /// True when the operator allows this upstream's URL to name or resolve to a loopback,
    /// private or link-local address.
    pub allow_private: bool,
    /// Whether client sessions share one upstream connection or each get their own.
    pub connection: crate::schema::Connection,
    /// Headers sent to the upstream with a secret's value (never the caller's token).
    pub credentials: Vec<Credential>,
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

/// A rate limit: at most `count` calls per `per`.
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
        /// The endpoint URL.
        url: String,
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
    /// At most this many calls per window, per gateway process.
    pub rate: Option<Rate>,
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
    /// Servers, tools, pins, grants and the approval rule can change at a reload.
    pub fn restart_only_changes(&self, next: &Registry) -> Vec<&'static str> {
        let (a, b) = (&self.settings, &next.settings);
        let fields: [(&'static str, bool); 19] = [
            ("profile", a.profile == b.profile),
            ("listen", a.listen == b.listen),
            ("admin_listen", a.admin_listen == b.admin_listen),
            ("public_url", a.public_url == b.public_url),
            ("store", a.store == b.store),
            ("http.max_body", a.max_body == b.max_body),
            (
                "http.allowed_origins",
                a.allowed_origins == b.allowed_origins,
            ),
            ("http.session_idle", a.session_idle == b.session_idle),
            ("http.header_timeout", a.header_timeout == b.header_timeout),
            ("http.body_timeout", a.body_timeout == b.body_timeout),
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
            ("audit", a.audit == b.audit),
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
        self.source == next.source
            && self.credentials == next.credentials
            && self.allow_private == next.allow_private
            && self.connection == next.connection
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
    if problems.is_empty() {
        Ok(Registry {
            settings,
            servers,
            access,
            source: map,
            digest: String::new(),
            strings: Vec::new(),
        })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn settings(raw: &RawConfig, map: &SourceMap, problems: &mut Vec<ConfigProblem>) -> Settings {
    let addr = |key: &str, v: &Option<String>, default: &str, problems: &mut Vec<ConfigProblem>| {
        let text = v.as_deref().unwrap_or(default);
        text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(map.problem(
                key,
                format!("`{text}` is not an address and port"),
                "write it as IP:PORT, e.g. `127.0.0.1:8080`",
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = addr("listen", &raw.listen, "127.0.0.1:8080", problems);
    let admin_listen = addr(
        "admin_listen",
        &raw.admin_listen,
        "127.0.0.1:8081",
        problems,
    );
    let public_url = raw.public_url.as_ref().map(|u| {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            problems.push(map.problem(
                "public_url",
                format!("`{u}` is not an http(s) URL"),
                "write the URL clients use to reach this gateway, e.g. `https://mcp.example.com`",
            ));
        }
        u.trim_end_matches('/').to_string()
    });
    let store = raw
        .store
        .clone()
        .unwrap_or_else(|| "sqlite://portcullis.db".to_string());
    if !store.starts_with("sqlite:") {
        problems.push(map.problem(
            "store",
            format!("unsupported store `{store}`"),
            "use `sqlite://PATH` (e.g. `sqlite://portcullis.db`)",
        ));
    } else if store.contains(":memory:") || store.contains("mode=memory") {
        problems.push(map.problem(
            "store",
            format!("`{store}` is an in-memory database: keys, approvals and the audit log would vanish when the gateway stops, and `portcullis keys` and the audit sink could not reach it"),
            "use a file: `sqlite://PATH` (e.g. `sqlite://portcullis.db`)",
        ));
    }
    let max_body = match &raw.http.max_body {
        None => DEFAULT_MAX_BODY,
        Some(v) => parse_size(v).unwrap_or_else(|| {
            problems.push(map.problem(
                "http.max_body",
                format!("`{v}` is not a size"),
                "write bytes as a number or with a unit, e.g. `4MiB`, `512KiB`",
            ));
            DEFAULT_MAX_BODY
        }),
    };
    let session_idle = duration_or(
        raw.http.session_idle.as_deref(),
        "http.session_idle",
        DEFAULT_SESSION_IDLE,
        map,
        problems,
    );
    let header_timeout = duration_or(
        raw.http.header_timeout.as_deref(),
        "http.header_timeout",
        DEFAULT_HEADER_TIMEOUT,
        map,
        problems,
    );
    let body_timeout = duration_or(
        raw.http.body_timeout.as_deref(),
        "http.body_timeout",
        DEFAULT_BODY_TIMEOUT,
        map,
        problems,
    );
    for (key, d) in [
        ("http.header_timeout", header_timeout),
        ("http.body_timeout", body_timeout),
    ] {
        if d > MAX_HTTP_TIMEOUT {
            problems.push(map.problem(
                key,
                format!("`{key}` is longer than an hour"),
                "a request head or body that takes longer is an attack, not a client: use seconds, e.g. `10s`",
            ));
        }
    }
    let count = |v: Option<u64>, key: &str, problems: &mut Vec<ConfigProblem>| {
        let n = v?;
        let ok = usize::try_from(n)
            .ok()
            .filter(|n| *n > 0 && *n <= MAX_CONNECTIONS);
        if ok.is_none() {
            problems.push(map.problem(
                key,
                format!("`{key}` must be a whole number from 1 to {MAX_CONNECTIONS}"),
                "write a count of connections, e.g. `512`, or remove it for the default",
            ));
        }
        ok
    };
    let max_connections = count(raw.http.max_connections, "http.max_connections", problems);
    let max_connections_per_peer = count(
        raw.http.max_connections_per_peer,
        "http.max_connections_per_peer",
        problems,
    );
    if let (Some(total), Some(peer)) = (max_connections, max_connections_per_peer)
        && peer > total
    {
        problems.push(map.problem(
            "http.max_connections_per_peer",
            format!("one peer may hold {peer} connections, more than the listener's {total}"),
            "make `max_connections_per_peer` at most `max_connections`",
        ));
    }
    if listen == admin_listen && listen.port() != 0 {
        problems.push(map.problem(
            "admin_listen",
            format!("the admin listener `{admin_listen}` is the MCP listener's address"),
            "give the admin listener its own port (the default is 127.0.0.1:8081); operator routes never share the MCP port",
        ));
    }
    let poll = duration_or(
        raw.kill_switch.poll.as_deref(),
        "kill_switch.poll",
        DEFAULT_KILL_POLL,
        map,
        problems,
    );
    let lease = duration_or(
        raw.kill_switch.lease.as_deref(),
        "kill_switch.lease",
        DEFAULT_KILL_LEASE,
        map,
        problems,
    );
    if poll > Duration::from_secs(1) {
        problems.push(map.problem(
            "kill_switch.poll",
            "the kill switch must reach every process within 1 s".to_owned(),
            "use a poll interval of 1s or less (the default is 250ms)",
        ));
    }
    if lease > Duration::from_secs(60) {
        problems.push(map.problem(
            "kill_switch.lease",
            "a process that cannot read the kill-switch state keeps serving for the whole lease".to_owned(),
            "use a lease of 60s or less (the default is 5s)",
        ));
    }
    if lease < poll.saturating_mul(2) {
        problems.push(
            map.problem(
                "kill_switch.lease",
                "the lease is shorter than two polls, so one slow read would stop every call"
                    .to_owned(),
                "make `lease` at least twice `poll` (the default is 5s)",
            ),
        );
    }
    Settings {
        profile: raw.profile.unwrap_or(Profile::Production),
        listen,
        admin_listen,
        public_url,
        store,
        max_body,
        allowed_origins: raw.http.allowed_origins.clone(),
        session_idle,
        header_timeout,
        body_timeout,
        max_connections,
        max_connections_per_peer,
        mode: raw.mode.unwrap_or(Mode::Enforce),
        kill_switch: KillSwitchSettings { poll, lease },
        audit: crate::observe::audit(&raw.audit, map, problems),
        telemetry: crate::observe::telemetry(&raw.telemetry, map, problems),
        vault: raw
            .secrets
            .vault
            .as_ref()
            .and_then(|v| vault(v, map, problems)),
        cache_dir: raw
            .cache_dir
            .clone()
            .unwrap_or_else(|| ".portcullis-cache".to_string()),
    }
}

fn vault(
    raw: &crate::schema::RawVault,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<VaultSettings> {
    let before = problems.len();
    let address = raw.address.trim_end_matches('/').to_string();
    if !(address.starts_with("https://") || loopback_http(&address)) {
        problems.push(map.problem(
            "secrets.vault.address",
            format!("`{address}` is not an https URL"),
            "reach Vault over https (plain http only on a loopback address, e.g. a dev server)",
        ));
    }
    let token = reference(&raw.token, "secrets.vault.token", map, problems);
    if matches!(token, Some(SecretRef::Vault { .. })) {
        problems.push(map.problem(
            "secrets.vault.token",
            "the Vault token cannot itself come from Vault".to_string(),
            "write `env:VAULT_TOKEN` or `file:/path/to/token`",
        ));
    }
    let timeout = duration_or(
        raw.timeout.as_deref(),
        "secrets.vault.timeout",
        Duration::from_secs(5),
        map,
        problems,
    );
    if problems.len() > before {
        return None;
    }
    Some(VaultSettings {
        address,
        token: token?,
        namespace: raw.namespace.clone(),
        timeout,
    })
}

/// `http://` to a loopback address (a local dev server).
fn loopback_http(url: &str) -> bool {
    url.starts_with("http://")
        && crate::ssrf::url_host(url).is_some_and(|(h, _)| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

pub(crate) fn duration_or(
    text: Option<&str>,
    path: &str,
    default: Duration,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Duration {
    match text {
        None => default,
        Some(t) => match parse_duration(t) {
            Some(d) if !d.is_zero() => d,
            _ => {
                problems.push(map.problem(
                    path,
                    format!("`{t}` is not a duration"),
                    "write a whole number and a unit, e.g. `500ms`, `30s`, `5m`",
                ));
                default
            }
        },
    }
}

fn parse_size(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: usize = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1024,
                "MiB" => 1024 * 1024,
                "KB" | "kB" => 1000,
                "MB" => 1_000_000,
                _ => return None,
            };
            n.checked_mul(mult).filter(|n| *n > 0)
        }
        _ => None,
    }
}

/// A tool's argument limits, defaults where the config is silent.
fn argument_limits(
    spec: &crate::schema::RawTool,
    path: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> crate::ArgumentLimits {
    let mut limits = crate::ArgumentLimits::default();
    if let Some(v) = &spec.max_argument_bytes {
        match parse_size(v) {
            Some(n) => limits.bytes = n,
            None => problems.push(map.problem(
                &child(path, "max_argument_bytes"),
                format!("`{v}` is not a size"),
                "write bytes, or a number with `KiB` or `MiB`, e.g. `64KiB`",
            )),
        }
    }
    let count = |value: Option<u64>, key: &str, problems: &mut Vec<ConfigProblem>| {
        let n = value?;
        match usize::try_from(n).ok().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                problems.push(map.problem(
                    &child(path, key),
                    format!("`{key}` must be a positive whole number"),
                    "write a count such as `4096`",
                ));
                None
            }
        }
    };
    if let Some(n) = count(spec.max_argument_nodes, "max_argument_nodes", problems) {
        limits.nodes = n;
    }
    if let Some(n) = count(spec.max_argument_depth, "max_argument_depth", problems) {
        limits.depth = n;
    }
    limits
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

fn server(
    name: &str,
    raw: RawServer,
    profile: Profile,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Server> {
    let base = child("servers", name);
    let before = problems.len();
    if !valid_server_name(name) {
        problems.push(ConfigProblem {
            location: map.key(&base),
            path: base.clone(),
            message: format!("server name `{name}` is not allowed"),
            fix: "use 1-32 characters of a-z, 0-9 and `-`, starting with a letter or digit (no `_`: it separates server and tool in federated names)".to_string(),
        });
    }
    let source = match (raw.url, raw.command, raw.builtin) {
        (Some(url), None, None) => {
            match crate::ssrf::url_host(&url) {
                None => problems.push(map.problem(
                    &child(&base, "url"),
                    format!("`{url}` is not an http(s) URL"),
                    "give the upstream's Streamable HTTP endpoint, e.g. `https://notes.example.com/mcp`",
                )),
                Some((host, _)) => {
                    if let Some(why) = crate::ssrf::literal_host_problem(&host)
                        && !raw.allow_private
                    {
                        problems.push(map.problem(
                            &child(&base, "url"),
                            format!("the upstream's host `{host}` is {why}"),
                            "point at a public address, or add `allow_private: true` to this server if it really is on a private network",
                        ));
                    }
                }
            }
            Some(ServerSource::Http { url })
        }
        (None, Some(cmd), None) => {
            command(&base, cmd, profile, map, problems).map(|c| ServerSource::Command(Box::new(c)))
        }
        (None, None, Some(b)) => Some(ServerSource::Builtin(b)),
        _ => {
            problems.push(map.problem(
                &base,
                format!("server `{name}` must have exactly one of `url`, `command`, `builtin`"),
                "keep one way to reach the server: `url:` for Streamable HTTP, `command:` for stdio",
            ));
            None
        }
    };
    let connection = raw.connection.unwrap_or_default();
    if connection == crate::schema::Connection::PerSession
        && !matches!(source, Some(ServerSource::Http { .. }) | None)
    {
        problems.push(map.problem(
            &child(&base, "connection"),
            "`connection: per_session` needs a server reached by `url`".to_string(),
            "remove `connection` (a stdio or built-in server is one process every session shares), or serve this upstream over Streamable HTTP",
        ));
    }
    let tools_path = child(&base, "tools");
    let mut tools = BTreeMap::new();
    match raw.tools {
        None => problems.push(ConfigProblem {
            location: map.key(&base),
            path: tools_path,
            message: format!("server `{name}` has no `tools` allowlist"),
            fix: "list every tool clients may call, each with its class, e.g. `tools: { search: { class: read } }`; write `tools: {}` to expose none".to_string(),
        }),
        Some(list) => {
            for (tool, spec) in list {
                let p = child(&tools_path, &tool);
                let federated = format!("{name}__{tool}");
                if !is_wire_tool_name(&tool) || !is_wire_tool_name(&federated) {
                    problems.push(ConfigProblem {
                        location: map.key(&p),
                        path: p.clone(),
                        message: format!("tool name `{tool}` cannot be served: `{federated}` must match ^[A-Za-z0-9_-]{{1,64}}$"),
                        fix: "use a shorter server name, or allowlist only tools whose names use A-Z, a-z, 0-9, `_` and `-`".to_string(),
                    });
                }
                let argument_limits = argument_limits(&spec, &p, map, problems);
                let arguments = spec
                    .arguments
                    .filter(|schema| valid_schema(schema, &child(&p, "arguments"), map, problems));
                let rate = spec.rate.as_deref().and_then(|r| {
                    let parsed = Rate::parse(r);
                    if parsed.is_none() {
                        problems.push(map.problem(
                            &child(&p, "rate"),
                            format!("`{r}` is not a rate"),
                            "write calls per window, e.g. `5/min`, `100/h`, `2/s` or `1000/day`",
                        ));
                    }
                    parsed
                });
                match spec.class.parse::<ToolClass>() {
                    Ok(class) => {
                        tools.insert(
                            tool,
                            ToolEntry {
                                class,
                                arguments,
                                rate,
                                argument_limits,
                            },
                        );
                    }
                    Err(_) => problems.push(map.problem(
                        &child(&p, "class"),
                        format!("unknown tool class `{}`", spec.class),
                        "use `read`, `write` or `destructive`",
                    )),
                }
            }
        }
    }
    let timeout = duration_or(
        raw.timeout.as_deref(),
        &child(&base, "timeout"),
        DEFAULT_TIMEOUT,
        map,
        problems,
    );
    let max_timeout = duration_or(
        raw.max_timeout.as_deref(),
        &child(&base, "max_timeout"),
        timeout,
        map,
        problems,
    );
    if max_timeout < timeout {
        problems.push(map.problem(
            &child(&base, "max_timeout"),
            format!("`max_timeout` ({max_timeout:?}) is shorter than `timeout` ({timeout:?})"),
            "make `max_timeout` at least `timeout`, or remove it (a call then never runs longer than `timeout`)",
        ));
    }
    let resources = raw
        .resources
        .iter()
        .map(|r| ResourcePattern::parse(r))
        .collect();
    let mut credentials = Vec::new();
    if let Some(c) = raw.credentials {
        let cp = child(&base, "credentials");
        if !matches!(source, Some(ServerSource::Http { .. })) {
            problems.push(map.problem(
                &cp,
                "credentials are sent over HTTP; this server is not reached over HTTP".to_string(),
                "remove `credentials`, or give a stdio server its secrets through `command.env`",
            ));
        }
        if let Some(b) = c.bearer
            && let Some(secret) = reference(&b, &child(&cp, "bearer"), map, problems)
        {
            credentials.push(Credential {
                header: "authorization".to_string(),
                secret,
                bearer: true,
            });
        }
        for (h, v) in c.headers {
            let hp = child(&child(&cp, "headers"), &h);
            let lower = h.to_ascii_lowercase();
            let valid = !h.is_empty()
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !matches!(
                    lower.as_str(),
                    "host"
                        | "content-length"
                        | "content-type"
                        | "mcp-session-id"
                        | "mcp-protocol-version"
                        | "accept"
                        | "connection"
                        | "transfer-encoding"
                )
                && !credentials.iter().any(|c| c.header == lower);
            if !valid {
                problems.push(map.problem(
                    &hp,
                    format!("`{h}` cannot be set as a credential header"),
                    "use a header name of letters, digits and `-` that the MCP transport does not set itself (e.g. `X-Api-Key`), once",
                ));
            }
            if let Some(secret) = reference(&v, &hp, map, problems) {
                credentials.push(Credential {
                    header: lower,
                    secret,
                    bearer: false,
                });
            }
        }
    }
    let pins = raw.pin.inspect(|pin| {
        let pp = child(&base, "pin");
        for (tool, digest) in pin {
            let at = child(&pp, tool);
            if !tools.contains_key(tool) {
                problems.push(map.problem(
                    &at,
                    format!("`{tool}` is pinned but not in the `tools` allowlist"),
                    "remove the pin, or run `portcullis pin` again after editing the allowlist",
                ));
            }
            let ok = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                problems.push(map.problem(
                    &at,
                    "a tool pin is `sha256:` and 64 hex digits".to_string(),
                    "run `portcullis pin --config FILE` to write the pins",
                ));
            }
        }
        if matches!(source, Some(ServerSource::Builtin(_))) {
            problems.push(map.problem(
                &pp,
                "a built-in server is pinned by the gateway's build".to_string(),
                "remove `pin` from this server",
            ));
        }
    });
    if problems.len() > before {
        return None;
    }
    Some(Server {
        name: name.to_string(),
        source: source?,
        tools,
        resources,
        prompts: raw.prompts,
        timeout,
        max_timeout,
        allow_private: raw.allow_private,
        connection,
        credentials,
        pins,
    })
}

/// An operator argument schema must be a JSON Schema object that compiles offline.
fn valid_schema(
    schema: &Value,
    path: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> bool {
    let error = match schema {
        Value::Object(_) => jsonschema::validator_for(schema)
            .err()
            .map(|e| e.to_string()),
        _ => Some("it is not a mapping".to_owned()),
    };
    match error {
        None => true,
        Some(why) => {
            problems.push(map.problem(
                path,
                format!("the argument schema is not a usable JSON Schema: {why}"),
                "write a JSON Schema mapping, e.g. `{ type: object, properties: { repo: { enum: [a, b] } } }`; remote `$ref`s are not fetched",
            ));
            false
        }
    }
}

fn command(
    base: &str,
    cmd: RawCommand,
    profile: Profile,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<CommandSource> {
    let p = child(base, "command");
    let before = problems.len();
    let integrity = cmd.integrity.as_deref().and_then(|i| {
        let parsed = Integrity::parse(i);
        if parsed.is_none() {
            problems.push(map.problem(
                &child(&p, "integrity"),
                "not a digest".to_string(),
                "write `sha256:<64 hex>`, or the package's `sha512-<base64>` integrity (npm `dist.integrity`)",
            ));
        }
        parsed
    });
    let missing_digest = |what: &str, problems: &mut Vec<ConfigProblem>| {
        problems.push(map.problem(
            &p,
            format!("{what} has no `integrity`, so nothing proves what would run"),
            "add `integrity:` with the artifact's digest (`sha256:<hex>` of the program file; npm's `dist.integrity` for a package; the file's sha256 for PyPI)",
        ));
    };
    let artifact = match (cmd.program, cmd.package) {
        (Some(program), None) => {
            if !program.starts_with('/') {
                problems.push(map.problem(
                    &child(&p, "program"),
                    format!("`{program}` is not an absolute path"),
                    "give the absolute path of the server executable (no PATH lookup, no working-directory surprises)",
                ));
            }
            match (integrity, profile) {
                (Some(integrity), _) => Artifact::Local { program, integrity },
                (None, Profile::Development) => Artifact::Unpinned { program },
                (None, Profile::Production) => {
                    if cmd.integrity.is_none() {
                        missing_digest("the program", problems);
                    }
                    Artifact::Unpinned { program }
                }
            }
        }
        (None, Some(package)) => {
            let pkg = child(&p, "package");
            let spec = npm_spec(&package)
                .map(|s| (true, s))
                .or_else(|| pypi_spec(&package).map(|s| (false, s)));
            match (spec, integrity) {
                (None, _) => {
                    problems.push(map.problem(
                        &pkg,
                        format!("`{package}` is not a pinned package"),
                        "name an exact version: `npm:@scope/name@1.2.3` or `pypi:name==1.2.3` (no tags, ranges or wildcards)",
                    ));
                    return None;
                }
                (Some(_), None) => {
                    if cmd.integrity.is_none() {
                        missing_digest("the package", problems);
                    }
                    return None;
                }
                (Some((true, (name, version))), Some(integrity)) => Artifact::Npm {
                    name,
                    version,
                    integrity,
                    bin: cmd.bin,
                },
                (Some((false, (name, version))), Some(integrity)) => Artifact::Pypi {
                    name,
                    version,
                    integrity,
                    bin: cmd.bin,
                },
            }
        }
        _ => {
            problems.push(map.problem(
                &p,
                "a command needs exactly one of `program` and `package`".to_string(),
                "write `program: /path/to/server` with `integrity: sha256:…`, or `package: npm:@scope/name@1.2.3` with `integrity: sha512-…`",
            ));
            return None;
        }
    };
    let mut env = BTreeMap::new();
    for (k, v) in &cmd.env {
        let at = child(&child(&p, "env"), k);
        if !SecretRef::is_reference(v) {
            problems.push(map.problem(
                &at,
                format!("environment value for `{k}` is a literal"),
                "pass values by reference: `env:NAME` (the gateway's environment), `file:/path` or `vault:mount/path#key`",
            ));
        } else if let Some(r) = reference(v, &at, map, problems) {
            env.insert(k.clone(), r);
        }
    }
    if let Some(cwd) = &cmd.cwd
        && !cwd.starts_with('/')
    {
        problems.push(map.problem(
            &child(&p, "cwd"),
            format!("`{cwd}` is not an absolute path"),
            "give the working directory as an absolute path",
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(CommandSource {
        program: artifact.describe(),
        artifact,
        args: cmd.args,
        env,
        cwd: cmd.cwd,
    })
}

#[cfg(test)]
mod tests;
