//! Dimension 06, continued: what the gateway exposes (its admin listener, its listeners' and
//! upstreams' transport) and where it lets itself be sent (outbound addresses).

use super::*;

pub(super) fn admin_listener(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let admin = reg.settings.admin_listen;
    let e = ix.config(reg, "admin_listen", admin.to_string());
    out.push(match public(admin.ip()) {
            false => c
                .says(
                    "The admin listener is bound to loopback",
                    format!("Admin API and UI on {admin}, reachable from this host only."),
                    "",
                )
                .cites([e])
                .pass(ix),
            true => c
                .says(
                    format!("The admin listener is on a network address ({admin})"),
                    "The admin API and UI (kill switch, approvals, keys, audit export) are served over plain HTTP to the network.",
                    "Operator credentials and session cookies cross the network in cleartext, and the admin surface is exposed to anyone who can reach the port.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Absent,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Keep the admin listener on loopback",
                        "Set `admin_listen: 127.0.0.1:<port>` and reach it through an SSH tunnel or a TLS-terminating proxy with its own access control.",
                        "S",
                    ),
                ),
        });
}

pub(super) fn transport(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let listen = reg.settings.listen;
    let https = reg
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let cleartext_upstreams: Vec<(String, String)> = reg
        .servers
        .iter()
        .flat_map(|s| match &s.source {
            // Every endpoint crosses the network on its own.
            ServerSource::Http { endpoints, .. } => endpoints
                .iter()
                .filter(|e| {
                    e.url.to_ascii_lowercase().starts_with("http://") && !loopback_url(&e.url)
                })
                .map(|e| (s.name.clone(), crate::redact::uri_for_record(&e.url)))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut problems = Vec::new();
    let mut ev = Vec::new();
    if public(listen.ip()) && !https {
        problems.push(format!(
                "the MCP listener is on {listen} and the public URL is not https: keys and tokens cross the network in cleartext unless TLS is terminated in front"
            ));
        ev.push(ix.config(reg, "listen", listen.to_string()));
        ev.push(
            ix.config(
                reg,
                "public_url",
                reg.settings
                    .public_url
                    .as_deref()
                    .map_or_else(|| format!("http://{listen}"), crate::redact::uri_for_record),
            ),
        );
    }
    for (name, url) in &cleartext_upstreams {
        problems.push(format!(
            "upstream `{name}` is reached over plain HTTP on the network"
        ));
        ev.push(ix.config(reg, &format!("servers.{name}.url"), url.clone()));
    }
    out.push(match problems.is_empty() {
            true => {
                let mut ev = vec![ix.config(reg, "listen", listen.to_string())];
                let found = match public(listen.ip()) {
                    false => "The MCP listener is on loopback; upstreams off this host are reached over https.",
                    true => {
                        ev.push(ix.config(
                            reg,
                            "public_url",
                            reg.settings
                                .public_url
                                .as_deref()
                                .map(crate::redact::uri_for_record)
                                .unwrap_or_default(),
                        ));
                        "The MCP listener is on the network behind an https public URL (TLS is terminated in front of the gateway; the gateway cannot see that it is); upstreams off this host are reached over https."
                    }
                };
                c.says("No credential crosses the network in cleartext", found, "")
                    .cites(ev)
                    .pass(ix)
            }
            false => c
                .says(
                    "Credentials or calls cross the network in cleartext",
                    problems.join("; ") + ".",
                    "Anyone on the path can read keys, tokens and tool arguments.",
                )
                .cites(ev)
                .gap(
                    ix,
                    Status::Partial,
                    Severity::High,
                    Likelihood::Medium,
                    Cause::Config,
                    (
                        "Use TLS on every network hop",
                        "Terminate TLS in front of the gateway and set an https `public_url`; use https upstream URLs off this host.",
                        "S",
                    ),
                ),
        });
}

pub(super) fn ssrf(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let http: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| matches!(s.source, ServerSource::Http { .. }))
        .collect();
    if !http.is_empty() {
        let private: Vec<&registry::Server> =
            http.iter().copied().filter(|s| s.allow_private).collect();
        let mut ev = vec![ix.build(
                "upstream addresses",
                "every address an upstream host resolves to is checked (loopback, private, link-local/metadata, IPv4 inside IPv6) and the connection is pinned to the checked addresses; redirects are not followed",
            )];
        for s in &private {
            ev.push(ix.config(
                reg,
                &format!("servers.{}.allow_private", s.name),
                "private addresses allowed",
            ));
        }
        let c = c.cites(ev);
        out.push(match private.is_empty() {
                true => c
                    .says(
                        "Upstream addresses are guarded against private and metadata ranges",
                        format!(
                            "{} HTTP upstream(s), none allowed to reach private addresses.",
                            http.len()
                        ),
                        "A config change or a DNS answer cannot point the gateway at internal services.",
                    )
                    .pass(ix),
                false => c
                    .says(
                        format!(
                            "Private addresses allowed for: {}",
                            private.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        "These servers may name or resolve to loopback, private or link-local addresses (the guard is off for them by config).",
                        "If such a server's name is hijacked, the gateway can be steered at internal services.",
                    )
                    .gap(
                        ix,
                        Status::Partial,
                        Severity::Low,
                        Likelihood::Low,
                        Cause::Config,
                        (
                            "Keep private upstreams deliberate",
                            "Remove `allow_private` where the upstream is public; keep it only for servers that really live on a private network.",
                            "S",
                        ),
                    ),
        });
    }
}
