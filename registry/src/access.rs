//! Who may reach what: identity sources, required levels, grants and the approval rule.
//!
//! Grants name principals as `level:name` (`level:*` is the default for any principal of that
//! level without its own entry) and tools as `server/tool` or `server/*`. Every pattern must name
//! a configured server and an allowlisted tool, so a typo is a load error rather than a grant
//! that silently reaches nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use policy::token::ClaimMap;
use policy::{Approval, GrantTable, Level, Pattern, Policy, ToolClass};

use crate::error::ConfigProblem;
use crate::schema::{RawApprovals, RawGrant, RawIdentity, RawOidc};
use crate::source_map::{SourceMap, child};
use crate::validate::{Server, duration_or};

/// Signing algorithms a token may use. HMAC and `none` are never accepted: an HMAC "key" would be
/// a shared secret, and confusing it with a public key is the classic forgery.
pub const SUPPORTED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
const DEFAULT_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];
const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(600);
const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

/// Access control as configured.
#[derive(Clone, Debug)]
pub struct Access {
    /// The compiled grants, required levels and approval rule.
    pub policy: Policy,
    /// Trusted token issuers.
    pub oidc: Vec<OidcIssuer>,
    /// How held calls are handled.
    pub approvals: Approvals,
}

/// How calls that need a human's approval are held and for how long an answer counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approvals {
    /// How long a request waits for a decision, and how long an approval stays usable.
    pub ttl: Duration,
    /// How long the call itself waits for a decision before answering `approval_pending`.
    pub hold: Duration,
    /// Argument names whose value names the resource a call acts on (shown to approvers).
    pub target_arguments: Vec<String>,
}

const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(15 * 60);
const DEFAULT_APPROVAL_HOLD: Duration = Duration::from_secs(30);

/// One trusted OpenID Connect issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIssuer {
    /// The exact `iss`; discovery is fetched from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The audience tokens must carry; the gateway's public URL when not set.
    pub audience: Option<String>,
    /// Accepted signing algorithms.
    pub algorithms: Vec<String>,
    /// Which claim feeds which identity level.
    pub claims: ClaimMap,
    /// The claim (a name or dotted path) whose values are the holder's operator roles on the
    /// admin listener (`admin`, `approver`, `auditor`); without it, tokens from this issuer are
    /// not accepted there.
    pub roles_claim: Option<String>,
    /// Scopes a token must carry (all of them) to call MCP.
    pub scopes: Vec<String>,
    /// How long fetched keys are used before they are fetched again.
    pub jwks_ttl: Duration,
    /// The shortest interval between fetches triggered by an unknown `kid`.
    pub jwks_min_refresh: Duration,
}

pub(crate) fn access(
    identity: RawIdentity,
    grants: BTreeMap<String, RawGrant>,
    approvals: &RawApprovals,
    servers: &[Server],
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Access {
    let mut required = Vec::new();
    for (i, name) in identity.require.iter().enumerate() {
        match name.parse::<Level>() {
            Ok(level) => required.push(level),
            Err(_) => problems.push(map.problem(
                &format!("identity.require[{i}]"),
                format!("unknown identity level `{name}`"),
                "use `org`, `team`, `key`, `user` or `agent`",
            )),
        }
    }
    let oidc = identity
        .oidc
        .into_iter()
        .enumerate()
        .filter_map(|(i, raw)| issuer(&format!("identity.oidc[{i}]"), raw, map, problems))
        .collect();
    let table = grant_table(grants, servers, map, problems);
    let approval = match approvals.required_from.as_deref() {
        None => Approval::From(ToolClass::Write),
        Some("none") => Approval::Never,
        Some(c) => match c.parse::<ToolClass>() {
            Ok(class) => Approval::From(class),
            Err(_) => {
                problems.push(map.problem(
                    "approvals.required_from",
                    format!("unknown tool class `{c}`"),
                    "use `write` (the default: write and destructive tools), `destructive`, `read` (every tool) or `none`",
                ));
                Approval::From(ToolClass::Write)
            }
        },
    };
    let ttl = duration_or(
        approvals.ttl.as_deref(),
        "approvals.ttl",
        DEFAULT_APPROVAL_TTL,
        map,
        problems,
    );
    // A hold of zero answers `approval_pending` at once.
    let hold = match approvals.hold.as_deref() {
        Some("0") | Some("0s") => Duration::ZERO,
        h => duration_or(h, "approvals.hold", DEFAULT_APPROVAL_HOLD, map, problems),
    };
    if hold > ttl {
        problems.push(map.problem(
            "approvals.hold",
            "the hold is longer than the approval's lifetime (`approvals.ttl`)".to_owned(),
            "make `hold` shorter than `ttl`; a held call cannot outlive its request",
        ));
    }
    for (i, name) in approvals.target_arguments.iter().enumerate() {
        if name.is_empty() {
            problems.push(map.problem(
                &format!("approvals.target_arguments[{i}]"),
                "an empty argument name".to_owned(),
                "name a top-level argument, e.g. `path` or `id`",
            ));
        }
    }
    Access {
        policy: Policy::new(table, &required, approval),
        oidc,
        approvals: Approvals {
            ttl,
            hold,
            target_arguments: approvals.target_arguments.clone(),
        },
    }
}

fn issuer(
    base: &str,
    raw: RawOidc,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<OidcIssuer> {
    let before = problems.len();
    if !secure_url(&raw.issuer) {
        problems.push(map.problem(
            &child(base, "issuer"),
            format!("issuer `{}` is not an https URL", raw.issuer),
            "use the issuer's https URL exactly as it appears in its tokens' `iss` (plain http is accepted only on loopback addresses)",
        ));
    }
    if let Some(aud) = raw
        .audience
        .as_ref()
        .filter(|a| !(a.starts_with("https://") || a.starts_with("http://")))
    {
        problems.push(map.problem(
            &child(base, "audience"),
            format!("audience `{aud}` is not this gateway's URL"),
            "leave it out to use `public_url`, or give the URL clients use to reach this gateway",
        ));
    }
    let algorithms = match raw.algorithms {
        None => DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
        Some(list) => {
            for (i, alg) in list.iter().enumerate() {
                if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                    let why = match alg.as_str() {
                        "none" => "unsigned tokens are never accepted".to_owned(),
                        a if a.starts_with("HS") => {
                            "HMAC needs a shared secret and invites key confusion".to_owned()
                        }
                        a => format!("`{a}` is not a supported signing algorithm"),
                    };
                    problems.push(map.problem(
                        &format!("{}[{i}]", child(base, "algorithms")),
                        format!("algorithm `{alg}` refused: {why}"),
                        &format!("use some of {}", SUPPORTED_ALGORITHMS.join(", ")),
                    ));
                }
            }
            if list.is_empty() {
                problems.push(map.problem(
                    &child(base, "algorithms"),
                    "no algorithm allowed, so no token could ever verify".to_owned(),
                    "list the algorithms your issuer signs with, e.g. `[RS256]`, or remove the key",
                ));
            }
            list
        }
    };
    let mut roles_claim = None;
    let claims = match raw.claims {
        None => {
            problems.push(map.problem(
                base,
                format!("issuer `{}` has no `claims` mapping", raw.issuer),
                "say which claim feeds which level, e.g. `claims: { org: org, team: groups, user: sub, agent: azp }`",
            ));
            ClaimMap::default()
        }
        Some(c) => {
            roles_claim = c.roles;
            let map_ = ClaimMap {
                org: c.org,
                team: c.team,
                user: c.user,
                agent: c.agent,
            };
            if map_ == ClaimMap::default() {
                problems.push(map.problem(
                    &child(base, "claims"),
                    "the claims mapping maps no level".to_owned(),
                    "map at least one of `org`, `team`, `user`, `agent` to a claim name",
                ));
            }
            map_
        }
    };
    let jwks_ttl = duration_or(
        raw.jwks_ttl.as_deref(),
        &child(base, "jwks_ttl"),
        DEFAULT_JWKS_TTL,
        map,
        problems,
    );
    let jwks_min_refresh = duration_or(
        raw.jwks_min_refresh.as_deref(),
        &child(base, "jwks_min_refresh"),
        DEFAULT_JWKS_MIN_REFRESH,
        map,
        problems,
    );
    if problems.len() > before {
        return None;
    }
    Some(OidcIssuer {
        issuer: raw.issuer.trim_end_matches('/').to_owned(),
        audience: raw.audience.map(|a| a.trim_end_matches('/').to_owned()),
        algorithms,
        claims,
        roles_claim,
        scopes: raw.scopes,
        jwks_ttl,
        jwks_min_refresh,
    })
}

/// https, or http to a loopback host (a local IdP in development and tests).
/// `https://`, or `http://` to a loopback host.
pub fn secure_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn grant_table(
    grants: BTreeMap<String, RawGrant>,
    servers: &[Server],
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> GrantTable {
    let mut table = GrantTable::new();
    for (principal, raw) in grants {
        let base = child("grants", &principal);
        let parsed = principal
            .split_once(':')
            .and_then(|(l, n)| Some((l.parse::<Level>().ok()?, n)))
            .filter(|(_, n)| !n.is_empty() && !n.chars().any(char::is_control));
        let Some((level, name)) = parsed else {
            problems.push(ConfigProblem {
                location: map.key(&base),
                path: base.clone(),
                message: format!("`{principal}` is not a principal"),
                fix: "write `level:name` with level `org`, `team`, `key`, `user` or `agent`, e.g. `team:research`, or `team:*` for every team".to_owned(),
            });
            continue;
        };
        let (allow, deny, allow_path, deny_path) = match raw {
            RawGrant::List(list) => (list, Vec::new(), base.clone(), String::new()),
            RawGrant::Rules(r) => (r.allow, r.deny, child(&base, "allow"), child(&base, "deny")),
        };
        let mut parse_all = |list: Vec<String>, path: &str| -> Vec<Pattern> {
            let mut out = Vec::new();
            for (i, text) in list.iter().enumerate() {
                let at = format!("{path}[{i}]");
                match text.parse::<Pattern>() {
                    Ok(p) => {
                        if reaches_something(&p, servers, &at, map, problems) {
                            out.push(p);
                        }
                    }
                    Err(e) => problems.push(map.problem(
                        &at,
                        e.to_string(),
                        "write `server/tool` for one tool or `server/*` for all of a server",
                    )),
                }
            }
            out
        };
        let allow = parse_all(allow, &allow_path);
        let deny = parse_all(deny, &deny_path);
        let rules = table.rules_mut(level, name);
        for p in allow {
            rules.allow(p);
        }
        for p in deny {
            rules.deny(p);
        }
    }
    table
}

fn reaches_something(
    p: &Pattern,
    servers: &[Server],
    at: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> bool {
    let Some(server) = servers.iter().find(|s| s.name == p.server()) else {
        let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        problems.push(map.problem(
            at,
            format!(
                "`{p}` names server `{}`, which is not configured",
                p.server()
            ),
            &format!("use one of the configured servers: {}", known.join(", ")),
        ));
        return false;
    };
    match p {
        Pattern::Server(_) => true,
        Pattern::Tool(_, t) if server.tools.contains_key(t) => true,
        Pattern::Tool(s, t) => {
            problems.push(map.problem(
                at,
                format!("`{p}` names tool `{t}`, which is not in `servers.{s}.tools`"),
                "grant an allowlisted tool (names compare exactly, case included), or add the tool to the server's allowlist",
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests;
