//! Bearer tokens from trusted OpenID Connect issuers.
//!
//! For each configured issuer the gateway fetches discovery and the JWKS (no redirects, short
//! timeouts), caches the keys for `jwks_ttl`, and fetches again when a token names an unknown
//! `kid`, at most once per `jwks_min_refresh`. A token is accepted only when its algorithm is on
//! the issuer's allowlist, its key matches that algorithm's family (an RSA key never verifies an
//! HMAC or EC signature), the signature verifies, `iss` is the issuer, `aud` names this gateway,
//! and `exp`/`nbf` hold within at most 60 s of leeway. Parsing and claim checks are the pure
//! functions in `policy::token`; this module adds keys, signatures and HTTP.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use policy::token::{Expectations, Jws, MAX_LEEWAY, TokenError, check_registered, map_claims};
use policy::{Binding, Identity, Level};
use registry::OidcIssuer;
use serde_json::Value;

/// How long one discovery or JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 256 * 1024;

/// What a verified token says.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The identity its claims resolve to (faulted levels included).
    pub(crate) identity: Identity,
    /// A stable subject for binding sessions: issuer and `sub`.
    pub(crate) subject: String,
    /// When the token's audience is one server's endpoint (`<public_url>/mcp/<server>`), that
    /// server: the token is good on that endpoint only.
    pub(crate) endpoint: Option<String>,
    /// Operator roles from the issuer's `roles` claim, when it has one.
    pub(crate) roles: Vec<String>,
    /// The scopes the token carries (`scope` or `scp`).
    pub(crate) scopes: Vec<String>,
}

/// The scopes a token's claims grant: `scope` (space-separated) or `scp` (an array).
fn granted_scopes(claims: &serde_json::Map<String, Value>) -> Vec<&str> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        (_, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    /// The token is not acceptable (401).
    #[error("{0}")]
    Rejected(String),
    /// The token lacks a required scope (403).
    #[error("token lacks required scope `{0}`")]
    Scope(String),
    /// Keys could not be fetched, so the token cannot be checked (503).
    #[error("issuer keys unavailable: {0}")]
    Unavailable(String),
}

/// Every trusted issuer.
#[derive(Debug)]
pub(crate) struct Issuers {
    issuers: Vec<Issuer>,
    /// Audiences accepted: the public URL, the federated endpoint, any configured audience, and
    /// each server's endpoint (bound to that server; replaced when a reload changes servers).
    audiences: RwLock<Vec<(String, Option<String>)>>,
}

#[derive(Debug)]
struct Issuer {
    config: OidcIssuer,
    http: Option<reqwest::Client>,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises fetches so a burst of unknown `kid`s causes one request, not many.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    material: Material,
}

#[derive(Clone, Debug)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point `04 || x || y`.
    Ec {
        curve: String,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

// === impl Issuers ===

impl Issuers {
    /// The configured issuers; `public_url` is the gateway's canonical URL and `servers` the
    /// names of the per-server endpoints.
    pub(crate) fn new<'a>(
        configs: &[OidcIssuer],
        public_url: &str,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Issuers {
        // A client that cannot be built is no client: key fetches then fail, and tokens are refused.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .ok();
        let mut audiences = vec![
            (public_url.to_owned(), None),
            (format!("{public_url}/mcp"), None),
        ];
        for c in configs {
            if let Some(a) = &c.audience {
                audiences.push((a.clone(), None));
            }
        }
        for s in servers {
            audiences.push((format!("{public_url}/mcp/{s}"), Some(s.to_owned())));
        }
        Issuers {
            issuers: configs
                .iter()
                .map(|c| Issuer {
                    config: c.clone(),
                    http: http.clone(),
                    keys: RwLock::new(Arc::new(KeySet::default())),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            audiences: RwLock::new(audiences),
        }
    }

    /// The issuers whose tokens carry operator roles, accepting only `admin_url` as audience:
    /// a token for the MCP endpoint never works on the admin listener, nor the reverse.
    pub(crate) fn for_admin(configs: &[OidcIssuer], admin_url: &str) -> Issuers {
        let with_roles: Vec<OidcIssuer> = configs
            .iter()
            .filter(|c| c.roles_claim.is_some())
            .map(|c| OidcIssuer {
                // MCP scopes say nothing about operating the gateway.
                scopes: Vec::new(),
                ..c.clone()
            })
            .collect();
        let issuers = Issuers::new(&with_roles, admin_url, std::iter::empty());
        if let Ok(mut a) = issuers.audiences.write() {
            *a = vec![(admin_url.to_owned(), None)];
        }
        issuers
    }

    /// Bind server endpoint audiences to the servers a reloaded config names: a server added
    /// by a reload accepts tokens for its endpoint, a removed one no longer does.
    pub(crate) fn set_servers<'a>(
        &self,
        public_url: &str,
        servers: impl IntoIterator<Item = &'a str>,
    ) {
        let Ok(mut audiences) = self.audiences.write() else {
            return;
        };
        audiences.retain(|(_, endpoint)| endpoint.is_none());
        for s in servers {
            audiences.push((format!("{public_url}/mcp/{s}"), Some(s.to_owned())));
        }
    }

    /// Fetch each issuer's discovery document and key set now, without touching the cache:
    /// the self-audit's probe that the identity provider answers.
    pub(crate) async fn probe(&self) -> Vec<(String, Result<usize, String>)> {
        let mut out = Vec::new();
        for i in &self.issuers {
            out.push((i.config.issuer.clone(), i.fetch().await.map(|k| k.len())));
        }
        out
    }

    /// True when at least one issuer is configured.
    pub(crate) fn any(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// The issuers' URLs, for RFC 9728 metadata.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| i.config.issuer.clone())
            .collect()
    }

    /// Every scope some issuer requires.
    pub(crate) fn scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .issuers
            .iter()
            .flat_map(|i| i.config.scopes.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Verify a token at `now` (Unix seconds).
    pub(crate) async fn verify(&self, token: &str, now: u64) -> Result<Verified, OidcError> {
        let reject = |e: TokenError| OidcError::Rejected(e.to_string());
        let jws = policy::token::parse_compact(token).map_err(reject)?;
        // The issuer is read before the signature is checked only to choose whose keys to use;
        // the claim is checked again, exactly, once the signature holds.
        let iss = jws
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| OidcError::Rejected("issuer is not trusted".to_owned()))?;
        issuer.verify_signature(&jws).await?;
        let (exp, endpoint) = self.check_claims(issuer, &jws, now)?;
        issuer.check_scopes(&jws)?;
        let levels = map_claims(&jws.claims, &issuer.config.claims);
        let mut identity = Identity::new().expiring_at(exp.saturating_add(MAX_LEEWAY));
        for level in Level::ALL {
            identity = identity.with(level, levels.get(level).clone());
        }
        let sub = match jws.claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            // Without a subject the caller cannot be told apart from others: no session binding
            // could be safe, so the user level faults and every decision denies.
            _ => {
                identity = identity.with(Level::User, Binding::Fault("token has no `sub`".into()));
                String::new()
            }
        };
        let roles = issuer
            .config
            .roles_claim
            .as_deref()
            .map(|path| policy::token::claim_strings(&jws.claims, path))
            .unwrap_or_default();
        Ok(Verified {
            identity,
            subject: format!("oidc:{}#{sub}", issuer.config.issuer),
            endpoint,
            roles,
            scopes: granted_scopes(&jws.claims)
                .into_iter()
                .map(str::to_string)
                .collect(),
        })
    }

    /// The token's `exp`, and the server its audience binds it to, if any.
    fn check_claims(
        &self,
        issuer: &Issuer,
        jws: &Jws<'_>,
        now: u64,
    ) -> Result<(u64, Option<String>), OidcError> {
        let mut last = TokenError::Audience;
        // A poisoned list accepts no audience: the token is refused.
        let audiences = self.audiences.read().map(|a| a.clone()).unwrap_or_default();
        for (audience, endpoint) in &audiences {
            let expect = Expectations {
                issuer: &issuer.config.issuer,
                audience,
                leeway: MAX_LEEWAY,
            };
            match check_registered(&jws.claims, &expect, now) {
                Ok(exp) => return Ok((exp, endpoint.clone())),
                Err(TokenError::Audience) => {}
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(OidcError::Rejected(last.to_string()))
    }
}

// === impl Issuer ===

impl Issuer {
    async fn verify_signature(&self, jws: &Jws<'_>) -> Result<(), OidcError> {
        let alg = jws.header.alg.as_str();
        if !self.config.algorithms.iter().any(|a| a == alg) {
            return Err(OidcError::Rejected(format!(
                "algorithm `{alg}` not allowed"
            )));
        }
        let kid = jws.header.kid.as_deref();
        let mut set = self.current();
        let stale = set
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.config.jwks_ttl);
        if stale || find(&set, kid, alg).is_none() {
            set = self.refresh(stale).await?;
        }
        let key = find(&set, kid, alg).ok_or_else(|| {
            OidcError::Rejected("no key of the issuer matches the token's kid and alg".into())
        })?;
        match verify(alg, key, jws.signing_input, &jws.signature) {
            true => Ok(()),
            false => Err(OidcError::Rejected("signature does not verify".into())),
        }
    }

    fn check_scopes(&self, jws: &Jws<'_>) -> Result<(), OidcError> {
        let granted = granted_scopes(&jws.claims);
        match self
            .config
            .scopes
            .iter()
            .find(|want| !granted.contains(&want.as_str()))
        {
            Some(missing) => Err(OidcError::Scope(missing.clone())),
            None => Ok(()),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    /// Fetch the keys again, unless another fetch happened too recently. A fetch that fails
    /// leaves no keys to use when the cached ones are stale: the token then cannot be verified.
    async fn refresh(&self, stale: bool) -> Result<Arc<KeySet>, OidcError> {
        let _one_at_a_time = self.fetching.lock().await;
        let set = self.current();
        let recent = set
            .attempted_at
            .is_some_and(|t| t.elapsed() < self.config.jwks_min_refresh);
        if recent {
            let fresh = set
                .fetched_at
                .is_some_and(|t| t.elapsed() < self.config.jwks_ttl);
            return match fresh {
                true => Ok(set),
                false => Err(OidcError::Unavailable(
                    "the last key fetch failed and the retry interval has not passed".into(),
                )),
            };
        }
        let attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let next = Arc::new(KeySet {
                    keys,
                    fetched_at: attempted_at,
                    attempted_at,
                });
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Arc::clone(&next);
                }
                Ok(next)
            }
            Err(why) => {
                tracing::warn!(issuer = %self.config.issuer, error = %why, "key fetch failed");
                let keep = KeySet {
                    keys: match stale {
                        true => Vec::new(),
                        false => set.keys.clone(),
                    },
                    fetched_at: set.fetched_at.filter(|_| !stale),
                    attempted_at,
                };
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Arc::new(keep);
                }
                Err(OidcError::Unavailable(why))
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, String> {
        let issuer = &self.config.issuer;
        let discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err("discovery names another issuer".into());
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery has no jwks_uri")?;
        let same_scheme = jwks_uri.starts_with("https://")
            || (jwks_uri.starts_with("http://") && issuer.starts_with("http://"));
        if !same_scheme {
            return Err("jwks_uri is not https".into());
        }
        let jwks = self.get_json(jwks_uri).await?;
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no keys array")?;
        Ok(keys.iter().filter_map(parse_jwk).collect())
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let resp = http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_DOCUMENT {
            return Err(format!("GET {url}: document too large"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }
}

fn find<'a>(set: &'a KeySet, kid: Option<&str>, alg: &str) -> Option<&'a Jwk> {
    set.keys.iter().find(|k| {
        let kid_ok = match (kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            // A token without a kid may only use an issuer that publishes a single key.
            (None, _) => set.keys.len() == 1,
            (Some(_), None) => false,
        };
        kid_ok && k.alg.as_deref().is_none_or(|a| a == alg) && family_fits(alg, &k.material)
    })
}

fn family_fits(alg: &str, m: &Material) -> bool {
    match (alg, m) {
        ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", Material::Rsa { .. }) => true,
        ("ES256", Material::Ec { curve, .. }) => curve == "P-256",
        ("ES384", Material::Ec { curve, .. }) => curve == "P-384",
        ("EdDSA", Material::Ed25519(_)) => true,
        _ => false,
    }
}

fn parse_jwk(v: &Value) -> Option<Jwk> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let b = |k: &str| s(k).and_then(|x| URL_SAFE_NO_PAD.decode(x).ok());
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let material = match s("kty")? {
        "RSA" => Material::Rsa {
            n: b("n")?,
            e: b("e")?,
        },
        "EC" => {
            let (x, y) = (b("x")?, b("y")?);
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(4);
            point.extend(x);
            point.extend(y);
            Material::Ec {
                curve: s("crv")?.to_owned(),
                point,
            }
        }
        "OKP" if s("crv") == Some("Ed25519") => Material::Ed25519(b("x")?),
        _ => return None,
    };
    Some(Jwk {
        kid: s("kid").map(str::to_owned),
        alg: s("alg").map(str::to_owned),
        material,
    })
}

/// Whether `sig` is `key`'s signature of `message` under `alg` (through `jsonwebtoken`, on
/// aws-lc-rs). The key's family must fit the algorithm (checked when it is chosen, and again
/// by the library); anything else is false.
fn verify(alg: &str, key: &Jwk, message: &[u8], sig: &[u8]) -> bool {
    use jsonwebtoken::DecodingKey;
    let Ok(algorithm) = alg.parse::<jsonwebtoken::Algorithm>() else {
        return false;
    };
    if !family_fits(alg, &key.material) {
        return false;
    }
    let decoding = match &key.material {
        Material::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
        Material::Ec { point, .. } => DecodingKey::from_ec_der(point),
        Material::Ed25519(x) => DecodingKey::from_ed_der(x),
    };
    let sig = URL_SAFE_NO_PAD.encode(sig);
    jsonwebtoken::crypto::verify(&sig, message, &decoding, algorithm).unwrap_or(false)
}

#[cfg(test)]
mod tests;
