//! `servers.<name>.credentials.token_exchange` and `.client_credentials`: credentials the gateway
//! mints for an upstream from an OAuth authorization server, checked at load.
//!
//! With `token_exchange` (RFC 8693) each call carries a token the authorization server issued
//! for that upstream in exchange for the caller's own (the gateway authenticates as the actor);
//! with `client_credentials` every call carries the gateway's own token for that upstream. The
//! caller's token is never sent upstream.

use serde::Deserialize;

use crate::error::ConfigProblem;
use crate::secret::{SecretRef, reference};
use crate::source_map::{SourceMap, child};

/// The token type of an OAuth access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A client of an authorization server, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub(crate) token_endpoint: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) private_key_jwt: Option<RawKeyJwt>,
    pub(crate) audience: Option<String>,
    pub(crate) resource: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) timeout: Option<String>,
    /// Token exchange only.
    pub(crate) requested_token_type: Option<String>,
    /// Token exchange only: what a caller without an IdP token (an API key) gets.
    pub(crate) api_keys: Option<String>,
}

/// `private_key_jwt` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyJwt {
    pub(crate) key: Option<String>,
    pub(crate) alg: Option<String>,
    pub(crate) kid: Option<String>,
}

/// How the gateway authenticates to the authorization server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: the secret, by reference.
    Secret(SecretRef),
    /// `private_key_jwt` (RFC 7523): an assertion signed with this PEM private key.
    PrivateKeyJwt {
        key: SecretRef,
        /// `RS256`, `PS256` or `ES256`.
        alg: String,
        kid: Option<String>,
    },
}

/// Where tokens are asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenEndpoint {
    /// This URL.
    Url(String),
    /// The `token_endpoint` this issuer's metadata names (OpenID Connect discovery, then
    /// RFC 8414).
    Issuer(String),
}

impl OAuthClient {
    /// The issuer whose tokens may be exchanged here: only a caller token from this issuer is
    /// ever sent to this authorization server.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }
}

/// The gateway as a client of an authorization server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    pub endpoint: TokenEndpoint,
    /// The authorization server's issuer, when named (required for token exchange).
    pub issuer: Option<String>,
    pub client_id: String,
    pub auth: ClientAuth,
    /// `audience` of the request: the upstream's logical name at the authorization server.
    pub audience: Option<String>,
    /// `resource` of the request (RFC 8707): the upstream's URL.
    pub resource: Option<String>,
    /// Scopes asked for; with token exchange, only those the caller's own token carries.
    pub scope: Vec<String>,
    /// How long a token request may take.
    pub timeout: std::time::Duration,
}

/// What a caller without a token to exchange (an API key) gets from a token-exchange server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyCallers {
    /// Refused: the upstream is for callers with an IdP token only.
    Refuse,
    /// The gateway's own client-credentials token for the upstream.
    ClientCredentials,
}

/// A credential minted for each call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Minted {
    /// RFC 8693: the caller's token exchanged for one issued to the upstream, the gateway acting.
    Exchange {
        client: OAuthClient,
        requested_token_type: String,
        api_keys: ApiKeyCallers,
    },
    /// The gateway's own token for the upstream (OAuth 2.0 client credentials grant).
    ClientCredentials(OAuthClient),
}

impl Minted {
    /// The client of either kind.
    pub fn client(&self) -> &OAuthClient {
        match self {
            Minted::Exchange { client, .. } | Minted::ClientCredentials(client) => client,
        }
    }
}

/// The default deadline of a token request.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn minted(
    exchange: Option<RawClient>,
    credentials: Option<RawClient>,
    at: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Minted> {
    match (exchange, credentials) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            problems.push(map.problem(
                &child(at, "client_credentials"),
                "`token_exchange` and `client_credentials` together".into(),
                "keep one: `token_exchange` (with `api_keys: client_credentials` for callers without an IdP token) or `client_credentials`",
            ));
            None
        }
        (Some(raw), None) => {
            let here = child(at, "token_exchange");
            let requested_token_type = raw
                .requested_token_type
                .clone()
                .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_string());
            if !requested_token_type.starts_with("urn:") {
                problems.push(map.problem(
                    &child(&here, "requested_token_type"),
                    format!("`{requested_token_type}` is not a token type URI"),
                    "leave it out for an access token, or write a `urn:ietf:params:oauth:token-type:` URI",
                ));
            }
            let api_keys = match raw.api_keys.as_deref() {
                None | Some("refuse") => ApiKeyCallers::Refuse,
                Some("client_credentials") => ApiKeyCallers::ClientCredentials,
                Some(other) => {
                    problems.push(map.problem(
                        &child(&here, "api_keys"),
                        format!("`{other}` is not what API-key callers can get"),
                        "write `refuse` (the default) or `client_credentials`",
                    ));
                    ApiKeyCallers::Refuse
                }
            };
            if raw.issuer.is_none() {
                problems.push(map.problem(
                    &here,
                    "a token exchange without `issuer`".into(),
                    "add the `issuer` whose tokens are exchanged here: a caller's token goes only to its own issuer (`token_endpoint` may still name the endpoint)",
                ));
            }
            let client = client(raw, &here, map, problems)?;
            Some(Minted::Exchange {
                client,
                requested_token_type,
                api_keys,
            })
        }
        (None, Some(raw)) => {
            let here = child(at, "client_credentials");
            for (key, set) in [
                ("requested_token_type", raw.requested_token_type.is_some()),
                ("api_keys", raw.api_keys.is_some()),
            ] {
                if set {
                    problems.push(map.problem(
                        &child(&here, key),
                        format!("`{key}` belongs to `token_exchange`"),
                        "remove it",
                    ));
                }
            }
            client(raw, &here, map, problems).map(Minted::ClientCredentials)
        }
    }
}

fn client(
    raw: RawClient,
    at: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<OAuthClient> {
    let secure = |u: &str, key: &str, problems: &mut Vec<ConfigProblem>| {
        let ok = crate::access::secure_url(u);
        if !ok {
            problems.push(map.problem(
                &child(at, key),
                "not an https:// URL (plain http only to a loopback host)".into(),
                "write the authorization server's https:// URL: client secrets and caller tokens travel to it",
            ));
        }
        ok
    };
    let issuer = raw
        .issuer
        .as_deref()
        .filter(|i| secure(i, "issuer", problems))
        .map(|i| i.trim_end_matches('/').to_string());
    let endpoint = match (raw.token_endpoint, &issuer) {
        (Some(u), _) => secure(&u, "token_endpoint", problems).then_some(TokenEndpoint::Url(u)),
        (None, Some(i)) => Some(TokenEndpoint::Issuer(i.clone())),
        (None, None) => {
            if raw.issuer.is_none() {
                problems.push(map.problem(
                    at,
                    "no `token_endpoint` or `issuer`".into(),
                    "add `issuer: https://idp.example.com` (its metadata names the token endpoint), or `token_endpoint: https://idp.example.com/token`",
                ));
            }
            None
        }
    };
    let client_id = raw.client_id.filter(|c| !c.trim().is_empty());
    if client_id.is_none() {
        problems.push(map.problem(
            &child(at, "client_id"),
            "no `client_id`".into(),
            "add the client id the gateway is registered under at the authorization server",
        ));
    }
    let auth = match (raw.client_secret, raw.private_key_jwt) {
        (Some(s), None) => {
            reference(&s, &child(at, "client_secret"), map, problems).map(ClientAuth::Secret)
        }
        (None, Some(k)) => {
            let here = child(at, "private_key_jwt");
            let alg = k.alg.unwrap_or_else(|| "RS256".into());
            if !matches!(alg.as_str(), "RS256" | "PS256" | "ES256") {
                problems.push(map.problem(
                    &child(&here, "alg"),
                    format!("`{alg}` is not a signing algorithm the gateway uses"),
                    "write `RS256` (the default), `PS256` or `ES256` to match the key",
                ));
            }
            let key = match k.key {
                Some(r) => reference(&r, &child(&here, "key"), map, problems),
                None => {
                    problems.push(map.problem(
                        &here,
                        "no `key`".into(),
                        "add the PEM private key by reference, e.g. `key: file:/run/secrets/idp-key.pem`",
                    ));
                    None
                }
            };
            key.map(|key| ClientAuth::PrivateKeyJwt {
                key,
                alg,
                kid: k.kid,
            })
        }
        (Some(_), Some(_)) => {
            problems.push(map.problem(
                &child(at, "private_key_jwt"),
                "both `client_secret` and `private_key_jwt`".into(),
                "keep one way for the gateway to authenticate",
            ));
            None
        }
        (None, None) => {
            problems.push(map.problem(
                &child(at, "client_secret"),
                "no `client_secret` or `private_key_jwt`".into(),
                "add the gateway's client secret by reference (`client_secret: vault:secret/portcullis/idp#secret`), or `private_key_jwt: { key: file:/path/key.pem, alg: RS256 }`",
            ));
            None
        }
    };
    if raw.audience.is_none() && raw.resource.is_none() {
        problems.push(map.problem(
            at,
            "neither `audience` nor `resource`".into(),
            "name the upstream the token is for: `audience: notes-api` and/or `resource: https://notes.example.com/mcp`",
        ));
    }
    let timeout = match raw.timeout.as_deref().map(crate::parse_duration) {
        None => Some(DEFAULT_TIMEOUT),
        Some(Some(d)) if !d.is_zero() && d <= std::time::Duration::from_secs(60) => Some(d),
        Some(_) => {
            problems.push(map.problem(
                &child(at, "timeout"),
                "not a duration from 1ms to 60s".into(),
                "write e.g. `timeout: 5s`",
            ));
            None
        }
    };
    let scope = raw
        .scope
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Some(OAuthClient {
        endpoint: endpoint?,
        client_id: client_id?,
        issuer,
        auth: auth?,
        audience: raw.audience,
        resource: raw.resource,
        scope,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests;
