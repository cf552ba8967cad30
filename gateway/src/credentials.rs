//! Credentials minted for upstreams: RFC 8693 token exchange (the caller's token for one issued
//! to the upstream, the gateway authenticating as the actor) and OAuth 2.0 client credentials
//! (the gateway's own token for the upstream), with a cache.
//!
//! Requests are form posts to the authorization server's token endpoint (configured, or read
//! from the issuer's metadata) with `client_secret_basic` or `private_key_jwt` (RFC 7523)
//! authentication, through a client that
//! follows no redirects and uses no proxy. Tokens are cached by (token endpoint, subject, actor,
//! audience, resource, scope) until their expiry less a skew, never shared across subjects, in a
//! bounded map; the cache is emptied when a key is revoked or a kill switch engaged. Any failure
//! is an error the call is refused with: there is no fallback to another credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry::{Minted, OAuthClient, TokenEndpoint};
use serde::Deserialize;

use crate::secrets::Secrets;

mod request;

use request::read_capped;

/// Cached tokens at most; past it, expired ones go, then the oldest.
const MAX_CACHED: usize = 10_000;
/// A token is not used within this of its expiry.
const SKEW: Duration = Duration::from_secs(30);
/// How long a token without `expires_in` is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long an issuer's discovered token endpoint is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The longest a minted token is kept, whatever it says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion is good for.
const ASSERTION_LIFETIME: u64 = 60;

/// Why no credential could be minted. Each refuses the call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    /// The caller has no token to exchange and the server takes no other credential.
    #[error(
        "the caller has no IdP token to exchange, and `{0}` takes no other credential (an API key cannot reach it)"
    )]
    NoSubjectToken(String),
    /// The caller's token carries none of the scopes the server asks for (or none at all).
    #[error("the caller's token carries none of the scopes `{server}` asks for ({wanted})")]
    NoScope { server: String, wanted: String },
    /// The caller's token is from another issuer than the one this server exchanges for.
    #[error(
        "`{server}` exchanges tokens of `{expected}` only; the caller's is from another issuer"
    )]
    OtherIssuer { server: String, expected: String },
    /// The authorization server could not be reached, took too long or answered an error.
    #[error("token endpoint for `{server}`: {why}")]
    Endpoint { server: String, why: String },
    /// The client secret could not be read.
    #[error("client secret for `{server}`: {why}")]
    Secret { server: String, why: String },
}

/// A minted token and what the record says about it (never the token).
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: Arc<str>,
    /// `exchange` or `client_credentials`.
    pub(crate) kind: &'static str,
    /// The scopes asked for.
    pub(crate) scope: String,
    /// Served from the cache.
    pub(crate) cached: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    endpoint: String,
    /// `exchange` or `client_credentials`, and the token type asked for.
    kind: &'static str,
    token_type: String,
    /// The caller's subject and a digest of the very token exchanged (a later token of the
    /// same subject, with other claims, is exchanged afresh); empty for the gateway's own.
    subject: String,
    subject_token: [u8; 32],
    actor: String,
    audience: Option<String>,
    resource: Option<String>,
    scope: String,
}

struct Cached {
    value: Arc<str>,
    good_until: Instant,
    made: Instant,
}

/// Mints and caches upstream credentials.
pub(crate) struct Minter {
    /// `None` if the client could not be built: every mint then fails.
    http: Option<reqwest::Client>,
    secrets: Arc<Secrets>,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    endpoints: Mutex<HashMap<String, (String, Instant)>>,
    /// Moved by [`Minter::forget_all`]: a token asked for before is not kept after.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    issued_token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    issuer: Option<String>,
    token_endpoint: String,
}

/// What a request asks for, beyond the form.
struct Ask {
    kind: &'static str,
    token_type: String,
    subject: String,
    subject_token: [u8; 32],
    /// The subject token's expiry: nothing minted from it outlives it.
    until: Option<u64>,
    scope: String,
}

impl Minter {
    pub(crate) fn new(secrets: Arc<Secrets>) -> Minter {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .inspect_err(|e| tracing::error!(error = %e, "no HTTP client for token requests"))
            .ok();
        Minter {
            http,
            secrets,
            cache: Mutex::default(),
            endpoints: Mutex::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The token a call by `subject` (with `token`, its own IdP token, if any) carries to
    /// `server`.
    pub(crate) async fn for_call(
        &self,
        server: &str,
        minted: &Minted,
        subject: &str,
        token: Option<&crate::auth::SubjectToken>,
    ) -> Result<Token, MintError> {
        match (minted, token) {
            (Minted::ClientCredentials(client), _) => self.own(server, client).await,
            (
                Minted::Exchange {
                    client,
                    requested_token_type,
                    ..
                },
                Some(t),
            ) => {
                self.exchange(server, client, requested_token_type, subject, t)
                    .await
            }
            (
                Minted::Exchange {
                    client, api_keys, ..
                },
                None,
            ) => match api_keys {
                registry::ApiKeyCallers::ClientCredentials => self.own(server, client).await,
                registry::ApiKeyCallers::Refuse => Err(MintError::NoSubjectToken(server.into())),
            },
        }
    }

    /// The gateway's own token for `server` (client credentials): also what its connection
    /// to a server with minted credentials carries outside of calls (initialize, listings).
    pub(crate) async fn own(&self, server: &str, client: &OAuthClient) -> Result<Token, MintError> {
        let scope = client.scope.join(" ");
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scope.is_empty() {
            form.push(("scope", scope.clone()));
        }
        let ask = Ask {
            kind: "client_credentials",
            token_type: registry::ACCESS_TOKEN_TYPE.to_string(),
            subject: String::new(),
            subject_token: [0; 32],
            until: None,
            scope,
        };
        self.mint(server, client, ask, form).await
    }

    async fn exchange(
        &self,
        server: &str,
        client: &OAuthClient,
        requested_token_type: &str,
        subject: &str,
        token: &crate::auth::SubjectToken,
    ) -> Result<Token, MintError> {
        // Only to the caller's own issuer.
        if client.issuer() != Some(token.issuer.as_str()) {
            return Err(MintError::OtherIssuer {
                server: server.into(),
                expected: client.issuer().unwrap_or_default().to_string(),
            });
        }
        // Never wider than the caller's own: the configured scopes the caller's token carries,
        // or (none configured) the caller's own; never none, which would leave the scope to the
        // authorization server's default.
        let scopes: Vec<&str> = match client.scope.is_empty() {
            true => token.scopes.iter().map(String::as_str).collect(),
            false => client
                .scope
                .iter()
                .filter(|s| token.scopes.contains(s))
                .map(String::as_str)
                .collect(),
        };
        if scopes.is_empty() {
            return Err(MintError::NoScope {
                server: server.into(),
                wanted: match client.scope.is_empty() {
                    true => "any".into(),
                    false => client.scope.join(" "),
                },
            });
        }
        let scope = scopes.join(" ");
        let mut form = vec![
            ("grant_type", EXCHANGE_GRANT.to_string()),
            ("subject_token", token.raw.clone()),
            (
                "subject_token_type",
                registry::ACCESS_TOKEN_TYPE.to_string(),
            ),
            ("requested_token_type", requested_token_type.to_string()),
        ];
        form.push(("scope", scope.clone()));
        use sha2::Digest as _;
        let ask = Ask {
            kind: "exchange",
            token_type: requested_token_type.to_string(),
            subject: subject.to_string(),
            subject_token: sha2::Sha256::digest(token.raw.as_bytes()).into(),
            until: token.expires_at,
            scope,
        };
        self.mint(server, client, ask, form).await
    }

    async fn mint(
        &self,
        server: &str,
        client: &OAuthClient,
        ask: Ask,
        form: Vec<(&'static str, String)>,
    ) -> Result<Token, MintError> {
        let Ask {
            kind,
            token_type,
            subject,
            subject_token,
            until,
            scope,
        } = ask;
        let fail = |why: String| MintError::Endpoint {
            server: server.into(),
            why,
        };
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| fail("no HTTP client".into()))?;
        let endpoint = self.endpoint(server, client).await?;
        let key = CacheKey {
            endpoint: endpoint.clone(),
            kind,
            token_type: token_type.clone(),
            subject,
            subject_token,
            actor: client.client_id.clone(),
            audience: client.audience.clone(),
            resource: client.resource.clone(),
            scope: scope.clone(),
        };
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some(value) = self.cached(&key) {
            return Ok(Token {
                value,
                kind,
                scope,
                cached: true,
            });
        }
        // Boxed: a cached token is the usual case, and the request's future is large.
        let parsed = Box::pin(request::token(
            http,
            &self.secrets,
            server,
            client,
            &endpoint,
            form,
        ))
        .await?;
        checked(&parsed, kind, &token_type, &scope).map_err(fail)?;
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs)
            .min(MAX_LIFETIME);
        // Nothing minted from a caller's token outlives it.
        let left = until.map(|u| Duration::from_secs(u.saturating_sub(crate::auth::unix_now())));
        let lifetime = left.map_or(lifetime, |l| lifetime.min(l));
        let value: Arc<str> = Arc::from(parsed.access_token);
        let current = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some(usable) = lifetime.checked_sub(SKEW).filter(|d| !d.is_zero())
            && current == generation
        {
            self.keep(key, value.clone(), usable);
        }
        Ok(Token {
            value,
            kind,
            scope,
            cached: false,
        })
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<str>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|c| c.good_until > Instant::now())
            .map(|c| c.value.clone())
    }

    fn keep(&self, key: CacheKey, value: Arc<str>, usable: Duration) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.good_until > now);
        }
        if cache.len() >= MAX_CACHED
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.made)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        let Some(good_until) = now.checked_add(usable) else {
            return;
        };
        cache.insert(
            key,
            Cached {
                value,
                good_until,
                made: now,
            },
        );
    }

    /// Forget every cached token (a key was revoked, a kill switch engaged).
    pub(crate) fn forget_all(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The token endpoint: configured, or the issuer's (discovered, cached for an hour).
    async fn endpoint(&self, server: &str, client: &OAuthClient) -> Result<String, MintError> {
        let issuer = match &client.endpoint {
            TokenEndpoint::Url(u) => return Ok(u.clone()),
            TokenEndpoint::Issuer(i) => i,
        };
        if let Ok(known) = self.endpoints.lock()
            && let Some((url, at)) = known.get(issuer)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(url.clone());
        }
        // Boxed: rare, and every call's future would otherwise carry room for it.
        Box::pin(self.discover(server, client, issuer)).await
    }

    /// The token endpoint of `issuer`'s metadata (RFC 8414, OpenID Connect Discovery), kept.
    async fn discover(
        &self,
        server: &str,
        client: &OAuthClient,
        issuer: &str,
    ) -> Result<String, MintError> {
        let fail = |why: String| MintError::Endpoint {
            server: server.into(),
            why,
        };
        let mut last = String::from("no metadata");
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let Some(http) = &self.http else {
                return Err(fail("no HTTP client".into()));
            };
            let answer = http
                .get(format!("{issuer}{path}"))
                .timeout(client.timeout)
                .send()
                .await;
            let Ok(answer) = answer.map_err(|e| last = format!("metadata unreachable: {e}")) else {
                continue;
            };
            if !answer.status().is_success() {
                last = format!("metadata: HTTP {}", answer.status());
                continue;
            }
            let body = read_capped(answer, client.timeout).await.map_err(&fail)?;
            let Ok(meta) = serde_json::from_slice::<Metadata>(&body) else {
                last = "metadata without a token_endpoint".into();
                continue;
            };
            // RFC 8414 §3.3: the metadata is the issuer's own; its endpoint is as safe to use.
            if meta.issuer.as_deref().map(|i| i.trim_end_matches('/')) != Some(issuer) {
                last = "metadata of another issuer".into();
                continue;
            }
            if !registry::secure_url(&meta.token_endpoint) {
                return Err(fail("the metadata's token_endpoint is not https".into()));
            }
            if let Ok(mut known) = self.endpoints.lock() {
                known.insert(
                    issuer.to_owned(),
                    (meta.token_endpoint.clone(), Instant::now()),
                );
            }
            return Ok(meta.token_endpoint);
        }
        Err(fail(last))
    }
}

/// A token answer the call may use: a usable bearer token, of the type asked for, no wider than
/// the scope asked for (RFC 6749 §5.1, RFC 8693 §2.2.1).
fn checked(a: &TokenAnswer, kind: &str, token_type: &str, scope: &str) -> Result<(), String> {
    let t = &a.access_token;
    if t.is_empty() || t.len() > 16 * 1024 || t.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("the answer carries no usable token".into());
    }
    if a.token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err("the answer's token_type is not Bearer".into());
    }
    if kind == "exchange" && a.issued_token_type.as_deref() != Some(token_type) {
        return Err("the answer's issued_token_type is not the type asked for".into());
    }
    if let Some(granted) = &a.scope {
        let asked: Vec<&str> = scope.split_whitespace().collect();
        if granted.split_whitespace().any(|g| !asked.contains(&g)) {
            return Err("the answer grants a scope that was not asked for".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
