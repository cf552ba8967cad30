//! One server entry: its source (URL, command or built-in), allowlist, pins, credentials and
//! limits.

use super::*;

pub(super) fn server(
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
    let urls = crate::resilience::endpoints(&base, raw.url, raw.endpoints, map, problems);
    let source = match (urls, raw.command, raw.builtin) {
        (Some(endpoints), None, None) => {
            for (at, e) in &endpoints {
                match crate::ssrf::url_host(&e.url) {
                    None => problems.push(map.problem(
                        at,
                        format!("`{}` is not an http(s) URL", e.url),
                        "give the upstream's Streamable HTTP endpoint, e.g. `https://notes.example.com/mcp`",
                    )),
                    Some((host, _)) => {
                        if let Some(why) = crate::ssrf::literal_host_problem(&host)
                            && !raw.allow_private
                        {
                            problems.push(map.problem(
                                at,
                                format!("the upstream's host `{host}` is {why}"),
                                "point at a public address, or add `allow_private: true` to this server if it really is on a private network",
                            ));
                        }
                    }
                }
            }
            let endpoints: Vec<_> = endpoints.into_iter().map(|(_, e)| e).collect();
            endpoints.first().map(|first| ServerSource::Http {
                url: first.url.clone(),
                endpoints: endpoints.clone(),
            })
        }
        (None, Some(cmd), None) => {
            command(&base, cmd, profile, map, problems).map(|c| ServerSource::Command(Box::new(c)))
        }
        (None, None, Some(b)) => Some(ServerSource::Builtin(b)),
        _ => {
            problems.push(map.problem(
                &base,
                format!("server `{name}` must have exactly one of `url` (or `endpoints`), `command`, `builtin`"),
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
            path: tools_path.clone(),
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
                let tool_timeout = spec.timeout.as_deref().map(|t| {
                    duration_or(Some(t), &child(&p, "timeout"), DEFAULT_TIMEOUT, map, problems)
                });
                match spec.class.parse::<ToolClass>() {
                    Ok(class) => {
                        tools.insert(
                            tool,
                            ToolEntry {
                                class,
                                timeout: tool_timeout,
                                arguments,
                                rate,
                                cost: spec.cost.unwrap_or(1).min(i64::MAX as u64),
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
    for (tool, entry) in &tools {
        if let Some(t) = entry.timeout.filter(|t| *t > max_timeout) {
            problems.push(map.problem(
                &child(&child(&tools_path, tool), "timeout"),
                format!("the tool's `timeout` ({t:?}) is longer than the server's `max_timeout` ({max_timeout:?})"),
                "shorten the tool's `timeout`, or raise the server's `max_timeout`: no call runs longer than that",
            ));
        }
    }
    let mut resilience = crate::resilience::resilience(
        &base,
        raw.max_response.as_ref(),
        raw.max_response_depth,
        raw.breaker,
        map,
        problems,
    );
    crate::resilience::routing(
        &mut resilience,
        &base,
        raw.balance,
        raw.health,
        raw.retry_budget.as_deref(),
        map,
        problems,
    );
    if let Some(ServerSource::Http { endpoints, .. }) = &source
        && endpoints.len() > 1
        && connection == crate::schema::Connection::PerSession
    {
        problems.push(map.problem(
            &child(&base, "connection"),
            "`connection: per_session` holds each session on one upstream process; this server has several endpoints".into(),
            "give a per-session server one `url`, or remove `connection` so the endpoints share calls",
        ));
    }
    let resources = raw
        .resources
        .iter()
        .map(|r| ResourcePattern::parse(r))
        .collect();
    let mut credentials = Vec::new();
    let mut minted = None;
    if let Some(c) = raw.credentials {
        let cp = child(&base, "credentials");
        minted = crate::minted::minted(c.token_exchange, c.client_credentials, &cp, map, problems);
        if minted.is_some() && c.bearer.is_some() {
            problems.push(map.problem(
                &child(&cp, "bearer"),
                "a static `bearer` beside a token minted per call".into(),
                "remove `bearer`: each call carries the minted token in `Authorization`",
            ));
        }
        if minted.is_some() && !c.headers.is_empty() {
            problems.push(map.problem(
                &child(&cp, "headers"),
                "static credential headers beside a token minted per call".into(),
                "remove `headers`: the upstream would see the same secret from every caller beside the minted token",
            ));
        }
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
        resilience,
        allow_private: raw.allow_private,
        connection,
        credentials,
        minted,
        pins,
    })
}

/// An operator argument schema must be a JSON Schema object that compiles offline.
pub(super) fn valid_schema(
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

pub(super) fn command(
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
