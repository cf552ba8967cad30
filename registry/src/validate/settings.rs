//! The gateway-wide settings: listeners, the store, HTTP bounds, Vault, the kill switch and
//! the helpers other sections share (durations, sizes, argument limits).

use super::*;

pub(super) fn settings(
    raw: &RawConfig,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Settings {
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
    store_url(&store, map, problems);
    let store_password = raw
        .store_password
        .as_deref()
        .and_then(|t| reference(t, "store_password", map, problems));
    if store_password.is_some() && store.starts_with("sqlite:") {
        problems.push(map.problem(
            "store_password",
            "a SQLite store has no password".to_string(),
            "remove `store_password`, or use a `postgres://` store",
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
    let session_lifetime = duration_or(
        raw.http.session_lifetime.as_deref(),
        "http.session_lifetime",
        DEFAULT_SESSION_LIFETIME,
        map,
        problems,
    );
    if session_lifetime < session_idle {
        problems.push(map.problem(
            "http.session_lifetime",
            "`http.session_lifetime` is shorter than `http.session_idle`".to_string(),
            "a session id must outlive its idle time: raise the lifetime (default 24h) or lower the idle time",
        ));
    }
    let session_keys = raw
        .http
        .session_keys
        .iter()
        .enumerate()
        .filter_map(|(i, t)| reference(t, &format!("http.session_keys[{i}]"), map, problems))
        .collect();
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
    let write_timeout = duration_or(
        raw.http.write_timeout.as_deref(),
        "http.write_timeout",
        DEFAULT_WRITE_TIMEOUT,
        map,
        problems,
    );
    for (key, d) in [
        ("http.header_timeout", header_timeout),
        ("http.body_timeout", body_timeout),
        ("http.write_timeout", write_timeout),
    ] {
        if d > MAX_HTTP_TIMEOUT {
            problems.push(map.problem(
                key,
                format!("`{key}` is longer than an hour"),
                "a request head or body that takes longer, or an answer's write stalled longer, is an attack, not a client: use seconds, e.g. `10s`",
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
    // On PostgreSQL a change is announced to every process (NOTIFY) and the poll only covers a
    // lost announcement; elsewhere the poll is what carries it.
    let announced = store.starts_with("postgres");
    if poll > Duration::from_secs(1) && !(announced && poll <= Duration::from_secs(5)) {
        problems.push(map.problem(
            "kill_switch.poll",
            "the kill switch must reach every process within 1 s".to_owned(),
            match announced {
                true => "use a poll interval of 5s or less: on PostgreSQL changes are announced at once and the poll only covers a lost announcement",
                false => "use a poll interval of 1s or less (the default is 250ms)",
            },
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
        session_lifetime,
        session_keys,
        header_timeout,
        body_timeout,
        write_timeout,
        max_connections,
        max_connections_per_peer,
        mode: raw.mode.unwrap_or(Mode::Enforce),
        kill_switch: KillSwitchSettings { poll, lease },
        audit: crate::observe::audit(&raw.audit, map, problems),
        telemetry: crate::observe::telemetry(&raw.telemetry, map, problems),
        store_password,
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

pub(super) fn vault(
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
pub(super) fn loopback_http(url: &str) -> bool {
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

pub(crate) fn parse_size(v: &Value) -> Option<usize> {
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
                "GiB" => 1024 * 1024 * 1024,
                "KB" | "kB" => 1000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            n.checked_mul(mult).filter(|n| *n > 0)
        }
        _ => None,
    }
}

/// A tool's argument limits, defaults where the config is silent.
pub(super) fn argument_limits(
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

/// A store URL the gateway can open: a SQLite file, or a PostgreSQL server whose password is
/// never written in the URL.
fn store_url(raw: &str, map: &SourceMap, problems: &mut Vec<ConfigProblem>) {
    // Repeated in messages without any password it carries.
    let shown = match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_string(),
    };
    let (store, raw) = (shown.as_str(), raw);
    let postgres = store.starts_with("postgres://") || store.starts_with("postgresql://");
    if !store.starts_with("sqlite:") && !postgres {
        problems.push(map.problem(
            "store",
            format!("unsupported store `{store}`"),
            "use `sqlite://PATH` (one process, e.g. `sqlite://portcullis.db`) or `postgres://USER@HOST:PORT/DB` (several replicas)",
        ));
    } else if store.contains(":memory:") || store.contains("mode=memory") {
        problems.push(map.problem(
            "store",
            format!("`{store}` is an in-memory database: keys, approvals and the audit log would vanish when the gateway stops, and `portcullis keys` and the audit sink could not reach it"),
            "use a file: `sqlite://PATH` (e.g. `sqlite://portcullis.db`)",
        ));
    } else if postgres {
        match url::Url::parse(raw) {
            Err(e) => problems.push(map.problem(
                "store",
                format!("`{store}` is not a URL: {e}"),
                "write it as `postgres://USER@HOST:PORT/DB`, options as query parameters (e.g. `?sslmode=verify-full`)",
            )),
            Ok(u) if u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password") => {
                problems.push(map.problem(
                    "store",
                    "the store URL carries a password, which leaks with the config file".to_string(),
                    "remove it from the URL and give it by reference: `store_password: env:NAME` (or `file:/path`, `vault:mount/path#key`)",
                ));
            }
            Ok(_) => {}
        }
    }
}
