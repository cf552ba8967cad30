//! Issuing API keys: what a new key may carry, and the rule that no key is wider than its maker.
//!
//! An operator with the config and the store issues keys directly. A key may also mint keys for
//! its own agents (`parent`): the child keeps the parent's org, team and agent, can be a service
//! key only if the parent is one, and every grant it carries must be covered by the parent's own
//! grants, so delegation can only narrow.

pub(crate) mod command;

use policy::{Pattern, Rules};
use registry::Registry;

use store::{IssuedKey, KeyRole, KeyScope, Store, StoreError};

/// What to issue. `scope.parent` names the key minting this one, if a key is.
#[derive(Clone, Debug)]
pub(crate) struct MintRequest {
    pub(crate) name: String,
    pub(crate) role: KeyRole,
    pub(crate) scope: KeyScope,
}

/// Why a key was not issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refused(why: impl Into<String>) -> MintError {
    MintError::Refused(why.into())
}

/// Check a request against the registry and the parent key, then issue it.
pub(crate) async fn mint(
    store: &Store,
    registry: &Registry,
    req: MintRequest,
) -> Result<IssuedKey, MintError> {
    if req.name.trim().is_empty() {
        return Err(refused("a key needs a name"));
    }
    let MintRequest { name, role, scope } = req;
    if scope
        .user
        .as_deref()
        .is_some_and(|v| v.is_empty() || v.chars().any(char::is_control))
    {
        return Err(refused("the user name is empty or has control characters"));
    }
    if matches!(role, KeyRole::Admin | KeyRole::Approver) && scope.user.is_none() {
        return Err(refused(format!(
            "an {} key can approve calls, so it must name the person holding it (`--user NAME`): nobody may approve their own call",
            role.as_str()
        )));
    }
    if scope.service && scope.user.is_some() {
        return Err(refused(
            "a service key names its end user on each request (`Portcullis-End-User`); it cannot also carry `--user`",
        ));
    }
    if role.is_operator() {
        let only_user = KeyScope {
            user: scope.user.clone(),
            ..KeyScope::default()
        };
        if scope != only_user {
            return Err(refused(format!(
                "an {} key names at most the person it belongs to (`--user`); it carries no org, team, agent, grants, service flag or parent",
                role.as_str()
            )));
        }
        return Ok(store.create_key(&name, role, scope).await?);
    }
    if scope.grants.is_empty() {
        return Err(refused(
            "a client key needs at least one grant (`server/tool` or `server/*`)",
        ));
    }
    let mut patterns = Vec::new();
    for g in &scope.grants {
        let p: Pattern = g.parse().map_err(|e| refused(format!("grant {e}")))?;
        let Some(server) = registry.servers.iter().find(|s| s.name == p.server()) else {
            return Err(refused(format!(
                "grant `{g}` names a server that is not configured"
            )));
        };
        if let Pattern::Tool(_, t) = &p
            && !server.tools.contains_key(t)
        {
            return Err(refused(format!(
                "grant `{g}` names a tool that is not in the server's allowlist"
            )));
        }
        patterns.push(p);
    }
    for (what, v) in [
        ("org", &scope.org),
        ("team", &scope.team),
        ("agent", &scope.agent),
    ] {
        if v.as_deref()
            .is_some_and(|v| v.is_empty() || v.chars().any(char::is_control))
        {
            return Err(refused(format!(
                "the {what} name is empty or has control characters"
            )));
        }
    }
    let mut scope = KeyScope {
        grants: patterns.iter().map(ToString::to_string).collect(),
        ..scope
    };
    if let Some(parent_id) = scope.parent.take() {
        let parent = store
            .key(&parent_id)
            .await?
            .filter(|k| k.revoked_at.is_none() && k.role == KeyRole::Client)
            .ok_or_else(|| refused(format!("no active client key `{parent_id}`")))?;
        let ps = &parent.scope;
        let parent_rules = Rules::parse_granting(ps.grants.iter().map(String::as_str))
            .map_err(|e| refused(format!("the parent key's grants do not parse: {e}")))?;
        if ps.grants.is_empty() {
            return Err(refused(
                "the parent key has no grants of its own to delegate",
            ));
        }
        for p in &patterns {
            if !parent_rules.covers(p) {
                return Err(refused(format!(
                    "grant `{p}` is wider than the parent key's grants"
                )));
            }
        }
        for (what, child, parent) in [
            ("org", &mut scope.org, &ps.org),
            ("team", &mut scope.team, &ps.team),
            ("agent", &mut scope.agent, &ps.agent),
            ("user", &mut scope.user, &ps.user),
        ] {
            match (child.as_ref(), parent) {
                (None, None) => {}
                // A level the parent lacks is one the child may not gain: with a required
                // level, the parent is denied everything and such a child would not be.
                (Some(_), None) => {
                    return Err(refused(format!(
                        "the parent key has no {what}, so a key it mints cannot name one"
                    )));
                }
                (None, Some(p)) => *child = Some(p.clone()),
                (Some(c), Some(p)) if c == p => {}
                (Some(_), Some(p)) => {
                    return Err(refused(format!("the {what} must be the parent's (`{p}`)")));
                }
            }
        }
        if scope.service && !ps.service {
            return Err(refused("only a service key can mint a service key"));
        }
        scope.parent = Some(parent.id);
    }
    Ok(store.create_key(&name, role, scope).await?)
}

#[cfg(test)]
mod tests;
