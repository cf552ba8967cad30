//! Authentication on the MCP listener: every request carries a credential, or it is refused.
//!
//! There is no anonymous path. A credential is an API key issued by this gateway (`pcl_…`) or a
//! bearer token from a configured OpenID Connect issuer. Either resolves to a
//! [`policy::Identity`]; lookups that fail after the credential was recognised (a key's stored
//! grants that do not parse, a malformed claim) become faulted levels, which `policy::decide`
//! turns into denies. A store or key-fetch error is a refusal (503), never a pass.
//!
//! Verified credentials are cached briefly so the per-call cost is a hash and a map lookup;
//! revocation through this process clears the cache at once, and a revocation from another
//! process is seen within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use policy::{Binding, Identity, Level, Rules};
use sha2::{Digest, Sha256};

use store::{KeyRecord, KeyRole, Store, StoreError};

mod oidc;

pub(crate) use oidc::{Issuers, OidcError};

/// How long a verified credential is trusted without checking it again.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Upper bound on cached credentials; past it the cache is cleared rather than grown.
const CACHE_MAX: usize = 10_000;
/// The header a service key uses to name the end user of one request.
pub(crate) const END_USER_HEADER: &str = "portcullis-end-user";
/// Longest end-user name accepted.
const MAX_END_USER: usize = 256;

/// Who is calling.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// Binds sessions: `key:<id>` or `oidc:<issuer>#<sub>`, plus `/user:<name>` when a service key
    /// declared an end user. Never a secret.
    pub(crate) subject: String,
    /// The resolved levels.
    pub(crate) identity: Arc<Identity>,
    /// A token issued for one server's endpoint is good there only.
    pub(crate) endpoint: Option<String>,
    /// The caller's own verified IdP token, kept only to be exchanged for an upstream's
    /// (RFC 8693); never sent anywhere else. `None` for API keys.
    pub(crate) token: Option<Arc<SubjectToken>>,
}

/// A caller's verified token, as the subject of a token exchange.
pub(crate) struct SubjectToken {
    /// The compact JWS as presented.
    pub(crate) raw: String,
    /// Its issuer: it is only ever sent to that issuer's authorization server.
    pub(crate) issuer: String,
    /// The scopes it carries: an exchanged token never asks for more.
    pub(crate) scopes: Vec<String>,
    /// Unix seconds after which it is no longer accepted (nor is what it was exchanged for).
    pub(crate) expires_at: Option<u64>,
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectToken")
            .field("raw", &"[hidden]")
            .field("issuer", &self.issuer)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("no bearer credential")]
    Missing,
    #[error("credential not recognised")]
    Invalid,
    #[error("token refused: {0}")]
    Token(String),
    #[error("an operator key (admin, approver, auditor) cannot call MCP")]
    WrongRole,
    #[error("token lacks required scope `{0}`")]
    Scope(String),
    #[error("only a service key may declare an end user")]
    EndUserNotAllowed,
    #[error("the declared end user is not a valid name")]
    EndUserInvalid,
    #[error("credential could not be checked: {0}")]
    Unavailable(String),
}

/// Verifies credentials, with a short positive cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    store: Store,
    issuers: Issuers,
    cache: Mutex<HashMap<[u8; 32], (Resolved, Instant)>>,
}

/// A verified credential, before any per-request end user is applied.
#[derive(Clone, Debug)]
struct Resolved {
    subject: String,
    identity: Arc<Identity>,
    service: bool,
    endpoint: Option<String>,
    /// A token's scopes; `None` for an API key.
    scopes: Option<Vec<String>>,
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> AuthError {
        AuthError::Unavailable(e.to_string())
    }
}

/// The credential in an `Authorization: Bearer …` header value, if there is one.
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Unix seconds now. Policy takes time as an argument; this is where it is read.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl Authenticator ===

impl Authenticator {
    pub(crate) fn new(store: Store, issuers: Issuers) -> Authenticator {
        Authenticator {
            store,
            issuers,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Accept tokens for the endpoints of the servers a reloaded config names.
    pub(crate) fn set_servers<'a>(
        &self,
        public_url: &str,
        servers: impl IntoIterator<Item = &'a str>,
    ) {
        self.issuers.set_servers(public_url, servers);
    }

    /// The trusted token issuers.
    pub(crate) fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// Authenticate an `Authorization` header value, and the end user a service key declares.
    #[cfg(test)]
    pub(crate) async fn client(
        &self,
        header: Option<&str>,
        end_user: Option<&str>,
    ) -> Result<Caller, AuthError> {
        self.client_verified(header, end_user).await.map(|(c, _)| c)
    }

    /// Like [`Authenticator::client`]; the flag is true when the credential was checked now
    /// rather than taken from the cache (an authentication, for the audit log).
    pub(crate) async fn client_verified(
        &self,
        header: Option<&str>,
        end_user: Option<&str>,
    ) -> Result<(Caller, bool), AuthError> {
        let token = bearer(header).ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let mut fresh = false;
        let resolved = match self.cached(&digest, now) {
            Some(r) => r,
            None => {
                fresh = true;
                let r = self.resolve(token, now).await?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(digest, (r.clone(), Instant::now()));
                }
                r
            }
        };
        // An OIDC subject is `oidc:<issuer>#<sub>`.
        let issuer = resolved
            .subject
            .strip_prefix("oidc:")
            .and_then(|s| s.rsplit_once('#'))
            .map(|(issuer, _)| issuer.to_string());
        let subject_token = resolved.scopes.zip(issuer).map(|(scopes, issuer)| {
            Arc::new(SubjectToken {
                raw: token.to_string(),
                issuer,
                scopes,
                expires_at: resolved.identity.expires_at(),
            })
        });
        let caller = match end_user {
            None => Ok(Caller {
                subject: resolved.subject,
                identity: resolved.identity,
                endpoint: resolved.endpoint,
                token: subject_token,
            }),
            // A key that already names its user cannot swap it for another.
            Some(_)
                if !resolved.service
                    || !matches!(resolved.identity.binding(Level::User), Binding::Absent) =>
            {
                Err(AuthError::EndUserNotAllowed)
            }
            Some(u)
                if u.is_empty() || u.len() > MAX_END_USER || u.chars().any(char::is_control) =>
            {
                Err(AuthError::EndUserInvalid)
            }
            Some(u) => {
                // The end user is one more level: it can only narrow what the key may do.
                let identity = Identity::clone(&resolved.identity).with_name(Level::User, u);
                Ok(Caller {
                    subject: format!("{}/user:{u}", resolved.subject),
                    identity: Arc::new(identity),
                    endpoint: resolved.endpoint,
                    token: None,
                })
            }
        };
        caller.map(|c| (c, fresh))
    }

    async fn resolve(&self, token: &str, now: u64) -> Result<Resolved, AuthError> {
        if token.starts_with("pcl_") {
            let record = self
                .store
                .verify_key(token)
                .await?
                .ok_or(AuthError::Invalid)?;
            if record.role != KeyRole::Client {
                return Err(AuthError::WrongRole);
            }
            // A key minted under another lives only while every key above it does.
            let lineage = self
                .store
                .lineage(&record)
                .await?
                .ok_or(AuthError::Invalid)?;
            return Ok(Resolved {
                subject: format!("key:{}", record.id),
                service: record.scope.service,
                identity: Arc::new(key_identity(&record).with_key_lineage(lineage)),
                endpoint: None,
                scopes: None,
            });
        }
        if !self.issuers.any() {
            return Err(AuthError::Invalid);
        }
        match self.issuers.verify(token, now).await {
            Ok(v) => Ok(Resolved {
                subject: v.subject,
                identity: Arc::new(v.identity),
                service: false,
                endpoint: v.endpoint,
                scopes: Some(v.scopes),
            }),
            Err(oidc::OidcError::Rejected(why)) => Err(AuthError::Token(why)),
            Err(oidc::OidcError::Scope(s)) => Err(AuthError::Scope(s)),
            Err(oidc::OidcError::Unavailable(why)) => Err(AuthError::Unavailable(why)),
        }
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Resolved> {
        // A poisoned lock only loses the cache: fall through to a full check.
        let cache = self.cache.lock().ok()?;
        let (r, at) = cache.get(digest)?;
        let live = at.elapsed() < CACHE_TTL && r.identity.expires_at().is_none_or(|e| now < e);
        live.then(|| r.clone())
    }

    /// Forget every cached credential (after a revocation, so it applies at once here).
    pub(crate) fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }
}

/// A caller as the audit log names it: its subject and every principal it resolved to.
pub(crate) fn who(caller: &Caller) -> audit::Who {
    audit::Who {
        subject: caller.subject.clone(),
        principals: caller.identity.principals(),
    }
}

/// The identity of an API key: the key level, the org, team and agent it was issued for, and its
/// own grants (without any, the config's `key:<id>` or `key:*` entry applies). Grants that do not
/// parse fault the key level.
pub(crate) fn key_identity(record: &KeyRecord) -> Identity {
    let mut id = Identity::new().with_name(Level::Key, record.id.clone());
    let scope = &record.scope;
    for (level, value) in [
        (Level::Org, &scope.org),
        (Level::Team, &scope.team),
        (Level::Agent, &scope.agent),
        (Level::User, &scope.user),
    ] {
        if let Some(v) = value {
            id = id.with_name(level, v.clone());
        }
    }
    if scope.grants.is_empty() {
        return id;
    }
    match Rules::parse_granting(scope.grants.iter().map(String::as_str)) {
        Ok(rules) => id.with_key_rules(rules),
        Err(e) => id.with(
            Level::Key,
            Binding::Fault(format!("stored grants do not parse: {e}")),
        ),
    }
}

#[cfg(test)]
mod tests;
