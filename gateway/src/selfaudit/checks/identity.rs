//! Dimension 06: security, secrets and identity.

use super::*;

pub(super) fn no_anonymous(_: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let b = ix.build(
            "authentication",
            "every /mcp request needs an API key (stored hashed) or a verified OIDC token; no anonymous path",
        );
    out.push(
            c
                .says(
                    "Every MCP request carries a verified identity; there is no anonymous path",
                    "Keys are stored as hashes and revocable at once; sessions are bound to the caller that opened them.",
                    "",
                )
                .cites([b])
                .pass(ix),
        );
}

pub(super) fn oidc(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
    let issuers = &reg.access.oidc;
    out.push(if issuers.is_empty() {
            let e = ix.config(reg, "identity.oidc", "no OIDC issuer: identity is gateway-issued API keys only");
            c.says(
                "Identity is gateway-issued API keys only (no identity provider)",
                "Callers are identified by long-lived API keys; there is no IdP-rooted identity, token lifetime or central revocation.",
                "Who a key belongs to is only as good as the record kept when it was issued.",
            )
            .cites([e])
            .gap(
                ix,
                Status::Partial,
                Severity::Low,
                Likelihood::Low,
                Cause::Config,
                (
                    "Root identity in your IdP",
                    "Add an `identity.oidc` issuer so callers present short-lived tokens whose claims map to org, team, user and agent.",
                    "M",
                ),
            )
        } else {
            let mut ev: Vec<String> = issuers
                .iter()
                .enumerate()
                .map(|(i, o)| ix.config(reg, &format!("identity.oidc[{i}].issuer"), o.issuer.clone()))
                .collect();
            let mut failing = Vec::new();
            match &probes.live {
                Some(live) => {
                    for (issuer, o) in &live.oidc {
                        ev.push(ix.probe(&format!("JWKS of {issuer}"), o));
                        if !o.ok {
                            failing.push(issuer.clone());
                        }
                    }
                }
                None => ev.push(ix.not_run("JWKS of each issuer")),
            }
            let c = c.cites(ev);
            match failing.is_empty() {
                true => c
                    .says(
                        "Identity is rooted in OIDC: signed, expiring tokens verified against the issuer's keys",
                        format!(
                            "{} issuer(s); issuer, audience, expiry and algorithm are checked; claims map to identity levels.",
                            issuers.len()
                        ),
                        "",
                    )
                    .pass(ix),
                false => c
                    .says(
                        format!("Identity provider key set unreachable: {}", failing.join(", ")),
                        "Tokens from these issuers cannot be verified now; their callers are refused (503).",
                        "The gateway fails closed, so callers are locked out until the IdP answers.",
                    )
                    .gap(
                        ix,
                        Status::Partial,
                        Severity::High,
                        Likelihood::High,
                        Cause::Probe,
                        (
                            "Restore the IdP connection",
                            "Check the issuer's discovery document and JWKS from the gateway host.",
                            "S",
                        ),
                    ),
            }
        });
}

pub(super) fn tenancy(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let required: Vec<&str> = Level::ALL
        .iter()
        .filter(|l| reg.access.policy.requires(**l))
        .map(|l| l.as_str())
        .collect();
    let e = ix.config(
        reg,
        "identity.require",
        match required.is_empty() {
            true => "no level required".to_owned(),
            false => required.join(", "),
        },
    );
    out.push(match reg.access.policy.requires(Level::Org) {
            true => c
                .says(
                    "Every caller must resolve to an org: tenants are separated at the decision",
                    format!("Required levels: {}.", required.join(", ")),
                    "",
                )
                .cites([e])
                .pass(ix),
            false => c
                .says(
                    "No org level is required: tenant separation rests on each key's grants",
                    "A caller with no org is decided on its other levels; sessions are still bound to their caller and discovery equals permission.",
                    "A key issued without an org falls outside every tenant boundary.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Low,
                    Likelihood::Low,
                    Cause::Config,
                    (
                        "Require the org level",
                        "Add `org` to `identity.require` so a caller without an org is refused.",
                        "S",
                    ),
                ),
        });

    // Operators: the admin views are not scoped by org in this build. That matters only where
    // the config has tenants (an org level required, or grants naming orgs).
}

pub(super) fn operator_scope(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let probes = cx.probes;
    let orgs: Vec<String> = reg
        .access
        .policy
        .grants()
        .entries()
        .into_iter()
        .filter(|(level, name, _)| *level == Level::Org && *name != "*")
        .map(|(_, name, _)| name.to_owned())
        .collect();
    let key_orgs: Vec<String> = probes
        .live
        .as_ref()
        .map(|l| l.key_orgs.clone())
        .unwrap_or_default();
    let tenants =
        reg.access.policy.requires(Level::Org) || !orgs.is_empty() || !key_orgs.is_empty();
    let b = ix.build(
        "operator scope",
        "operator keys and tokens carry roles, not an org: an approver sees and decides every org's approvals, an auditor reads every org's audit events, an admin manages every org's keys",
    );
    out.push(match tenants {
        false => c
            .says(
                "One tenant: no org appears in the config or on a key, so operator views have none to keep apart",
                "No org level is required, no grant names an org, and no key seen carries one; every operator serves the same tenant.",
                "",
            )
            .cites([b])
            .pass(ix),
        true => {
            let e = match (orgs.is_empty(), key_orgs.is_empty()) {
                (false, _) => ix.config(reg, "grants", format!("orgs granted: {}", orgs.join(", "))),
                (true, false) => ix.probe(
                    "orgs of the stored keys",
                    &Outcome {
                        ok: false,
                        observed: format!("active keys carry the orgs: {}", key_orgs.join(", ")),
                    },
                ),
                (true, true) => ix.config(reg, "identity.require", "org is required"),
            };
            c.says(
                "Operator views are not scoped by org: approvers and auditors see every tenant",
                "Calls are decided per org, but the operator page and the admin API show every org's pending approvals (with their argument previews), audit events and keys to any approver, auditor or admin.",
                "An operator of one tenant can read another tenant's call arguments and records; tenant isolation holds for callers, not for operators.",
            )
            .cites([e, b])
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Medium,
                Cause::Unbuilt,
                (
                    "Scope operators by org",
                    "Let an operator key or token carry an org, and show and decide only that org's approvals, audit events and keys; until then, give operator roles only to people trusted with every tenant.",
                    "M",
                ),
            )
        }
    });

    // The loader refuses secret-looking literals, so a loaded config holds references only.
}

pub(super) fn secrets(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let refs = crate::secrets::references(reg);
    let vault = refs
        .iter()
        .filter(|(_, r)| matches!(r, registry::SecretRef::Vault { .. }))
        .count();
    let mut ev = vec![ix.build(
            "secret references",
            "`env:`, `file:` and `vault:` (KV v2) references; string values that look like secrets (key prefixes, PEM blocks, bearer tokens, passwords in URLs, long random strings) are refused when the config loads, without repeating them",
        )];
    ev.push(ix.file(
        reg,
        format!(
            "{} string value(s) loaded; {} secret reference(s), {vault} from Vault",
            reg.strings.len(),
            refs.len()
        ),
    ));
    for (at, r) in refs.iter().take(6) {
        let path = at.split(' ').next().unwrap_or(at);
        ev.push(ix.config(reg, path, format!("reference `{r}`")));
    }
    out.push(
            c
                .says(
                    "Secrets are held by reference only; inline secrets are refused at load",
                    format!(
                        "{} secret reference(s) in this config; none is a literal. Secrets are read when needed (at start, and at each upstream connection) and never written to logs, errors or the audit log.",
                        refs.len()
                    ),
                    "A leaked config file leaks no credential, and rotation needs no config change.",
                )
                .cites(ev)
                .pass(ix),
        );
}

pub(super) fn redaction_key(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    out.push(match &reg.settings.audit.redact_key {
            Some(_) => {
                let e = ix.config(reg, "audit.redact_key", "by reference");
                c.says(
                    "Audit redaction is keyed by a secret held outside the store",
                    "Redacted values are replaced by an HMAC under a key passed by reference.",
                    "",
                )
                .cites([e])
                .pass(ix)
            }
            None => {
                let e = ix.config(reg, "audit.redact_key", "a random key kept in the store");
                c.says(
                    "The audit redaction key is kept in the store",
                    "Redacted values are HMACs under a random key kept in the store: whoever can read the store and the log can test guesses of a redacted value.",
                    "Redaction should not be undone by one stolen database file.",
                )
                .cites([e])
                .gap(
                    ix,
                    Status::Partial,
                    Severity::Low,
                    Likelihood::Low,
                    Cause::Config,
                    (
                        "Pass the redaction key by reference",
                        "Set `audit.redact_key: env:NAME` (or `file:/path`) with at least 32 random bytes.",
                        "S",
                    ),
                )
            }
        });
}

pub(super) fn token_exchange(cx: &Cx<'_>, ix: &mut Index, c: Check, out: &mut Vec<Finding>) {
    let reg = cx.reg;
    let upstream: Vec<&registry::Server> = reg
        .servers
        .iter()
        .filter(|s| !matches!(s.source, ServerSource::Builtin(_)))
        .collect();
    let b = ix.build(
            "upstream credentials",
            "the caller's credential is never forwarded; per server: RFC 8693 token exchange of the caller's IdP token for one issued to the upstream (`credentials.token_exchange`), the gateway's own client-credentials token (`credentials.client_credentials`), or a static secret by reference (`credentials.bearer`, `credentials.headers`); a token that cannot be minted refuses the call",
        );
    // Callers with their own identity at an IdP: a static secret makes every one of them the
    // same principal at the upstream.
    let end_users = !reg.access.oidc.is_empty();
    let mut ev = vec![b];
    let mut shared = Vec::new();
    let bare = upstream
        .iter()
        .filter(|s| s.minted.is_none() && s.credentials.is_empty())
        .count();
    for s in &upstream {
        let (path, text) = match (&s.minted, s.credentials.is_empty()) {
            (
                Some(registry::Minted::Exchange {
                    client, api_keys, ..
                }),
                _,
            ) => (
                format!("servers.{}.credentials.token_exchange", s.name),
                format!(
                    "token exchange for `{}` (scope `{}`); API keys: {}",
                    client
                        .audience
                        .as_deref()
                        .or(client.resource.as_deref())
                        .unwrap_or(""),
                    client.scope.join(" "),
                    match api_keys {
                        registry::ApiKeyCallers::Refuse => "refused",
                        registry::ApiKeyCallers::ClientCredentials => "the gateway's own token",
                    }
                ),
            ),
            (Some(registry::Minted::ClientCredentials(client)), _) => {
                shared.push(s.name.as_str());
                (
                    format!("servers.{}.credentials.client_credentials", s.name),
                    format!(
                        "the gateway's own client-credentials token for `{}`, the same for every caller",
                        client
                            .audience
                            .as_deref()
                            .or(client.resource.as_deref())
                            .unwrap_or("")
                    ),
                )
            }
            (None, true) => (
                format!("servers.{}", s.name),
                "no credential: the upstream is reached with none".to_string(),
            ),
            (None, false) => {
                shared.push(s.name.as_str());
                let headers: Vec<String> = s
                    .credentials
                    .iter()
                    .map(|c| format!("`{}` from `{}`", c.header, c.secret))
                    .collect();
                (
                    format!("servers.{}.credentials", s.name),
                    format!(
                        "a static secret by reference ({}), the same for every caller",
                        headers.join(", ")
                    ),
                )
            }
        };
        ev.push(ix.config(reg, &path, text));
    }
    let c = c.cites(ev);
    out.push(match (upstream.is_empty(), end_users && !shared.is_empty()) {
        (true, _) => c
            .says(
                "Caller tokens never leave the gateway; built-in upstreams need no credential",
                "Only built-in upstreams are configured.",
                "",
            )
            .pass(ix),
        (false, false) => c
            .says(
                "Caller tokens never leave the gateway; upstream credentials fit the callers",
                format!(
                    "The caller's token is never passed on. Of {} upstream(s), {} get a token exchanged for each caller; {}.",
                    upstream.len(),
                    upstream.len() - shared.len() - bare,
                    match (shared.len(), end_users) {
                        (0, _) => format!("{bare} get no credential"),
                        (n, _) => format!("{n} get one credential for every caller (callers use API keys only, so there is no caller identity to exchange) and {bare} none"),
                    }
                ),
                "",
            )
            .pass(ix),
        (false, true) => c
            .says(
                format!(
                    "{} upstream(s) get one credential for every caller ({})",
                    shared.len(),
                    shared.join(", ")
                ),
                "Callers sign in at an IdP, but these upstreams see the gateway's static secret or own token whoever calls, so they cannot tell callers apart or narrow access per caller.",
                "A caller reaches the upstream with the gateway's full access there; the upstream's own audit cannot name the person.",
            )
            .gap(
                ix,
                Status::Partial,
                Severity::Medium,
                Likelihood::Low,
                Cause::Config,
                (
                    "Exchange caller tokens for upstream tokens",
                    "Give these servers `credentials.token_exchange` (RFC 8693) so each call carries a token issued to the upstream for that caller, audience- and scope-bound.",
                    "M",
                ),
            ),
    });
}
