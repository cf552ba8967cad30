//! Bearer tokens in JWS compact form, and the claims they carry.
//!
//! Everything here reads untrusted bytes and is pure: the split into header, claims and signature
//! ([`parse_compact`]), the registered-claim checks against the configured issuer and audience
//! with the time passed in ([`check_registered`]), and the mapping of claims to identity levels
//! ([`map_claims`]). Signature verification needs key material and lives in the gateway; it is
//! given [`Jws::signing_input`] and [`Jws::signature`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::identity::{Binding, Level, PerLevel};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The most clock skew ever tolerated on `exp` and `nbf`, in seconds.
pub const MAX_LEEWAY: u64 = 60;
/// The longest principal name a claim may carry.
const MAX_NAME_LEN: usize = 256;

/// A token split into its parts. Nothing in it is verified yet.
#[derive(Clone, Debug)]
pub struct Jws<'a> {
    /// The protected header.
    pub header: JwsHeader,
    /// The claims set.
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The parts of the protected header the gateway uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwsHeader {
    /// The signing algorithm the token claims.
    pub alg: String,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// Which issuer and audience a token must carry.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// A value `aud` must be or contain: the gateway's canonical URL (RFC 8707).
    pub audience: &'a str,
    /// Clock skew tolerated, capped at [`MAX_LEEWAY`].
    pub leeway: u64,
}

/// Which claim feeds each level. `None` leaves the level unmapped (absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimMap {
    /// Claim for the org level.
    pub org: Option<String>,
    /// Claim for the team level (a string or an array of strings).
    pub team: Option<String>,
    /// Claim for the user level.
    pub user: Option<String>,
    /// Claim for the agent level.
    pub agent: Option<String>,
}

/// Why a token was not accepted. Messages are for the operator, never for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Over [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Not three dot-separated parts.
    #[error("not a JWS in compact form")]
    Shape,
    /// A part is not unpadded base64url.
    #[error("the {0} is not base64url")]
    Encoding(&'static str),
    /// A part is not a JSON object.
    #[error("the {0} is not a JSON object")]
    Json(&'static str),
    /// The header has no usable `alg`.
    #[error("the header has no `alg`")]
    NoAlgorithm,
    /// The header has a `kid` that is not a string.
    #[error("the header's `kid` is not a string")]
    KeyId,
    /// The header lists critical extensions, which this gateway does not implement.
    #[error("the header has `crit` extensions")]
    Critical,
    /// `iss` is missing or another issuer's.
    #[error("issuer is not the configured one")]
    Issuer,
    /// `aud` does not name this gateway.
    #[error("audience does not include this gateway")]
    Audience,
    /// `exp` missing or not a number.
    #[error("no numeric `exp`")]
    NoExpiry,
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (minus leeway), or `nbf` not a number.
    #[error("token not yet valid")]
    NotYetValid,
}

/// Split a compact JWS and decode its header and claims. Verifies nothing.
pub fn parse_compact(token: &str) -> Result<Jws<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Shape);
    };
    let header = decode_object(h, "header")?;
    let claims = decode_object(c, "claims")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Encoding("signature"))?;
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        _ => return Err(TokenError::NoAlgorithm),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::KeyId),
    };
    // INVARIANT: `h` and `c` are the first two parts, so `h.len() + 1 + c.len()` is a char
    // boundary within `token`.
    let signing_input = token
        .as_bytes()
        .get(..h.len() + 1 + c.len())
        .ok_or(TokenError::Shape)?;
    Ok(Jws {
        header: JwsHeader { alg, kid },
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Encoding(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Json(what)),
    }
}

/// Check `iss`, `aud`, `exp` and `nbf` at `now` (Unix seconds). Returns the token's `exp`.
pub fn check_registered(
    claims: &Map<String, Value>,
    expect: &Expectations<'_>,
    now: u64,
) -> Result<u64, TokenError> {
    let leeway = expect.leeway.min(MAX_LEEWAY);
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(TokenError::Issuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    let exp = claims
        .get("exp")
        .and_then(seconds)
        .ok_or(TokenError::NoExpiry)?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    match claims.get("nbf") {
        None => {}
        Some(v) => match seconds(v) {
            Some(nbf) if nbf <= now.saturating_add(leeway) => {}
            _ => return Err(TokenError::NotYetValid),
        },
    }
    Ok(exp)
}

/// A NumericDate: non-negative seconds, fractions truncated.
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            .map(|f| f as u64)
    })
}

/// Resolve the org, team, user and agent levels from claims. The key level is always absent.
///
/// A claim that is absent leaves its level absent. A claim of the wrong shape (a number, an
/// object, several values where one is expected, an empty or overlong name, control characters)
/// makes its level a fault, which denies.
pub fn map_claims(claims: &Map<String, Value>, map: &ClaimMap) -> PerLevel<Binding> {
    let one = |level: Level, path: &Option<String>| match path {
        None => Binding::Absent,
        Some(p) => bind(level, p, lookup(claims, p)),
    };
    PerLevel {
        org: one(Level::Org, &map.org),
        team: one(Level::Team, &map.team),
        key: Binding::Absent,
        user: one(Level::User, &map.user),
        agent: one(Level::Agent, &map.agent),
    }
}

/// Look a claim up by name, or by a dotted path into nested objects (`realm.roles`). An exact
/// top-level name wins over a path.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

fn bind(level: Level, claim: &str, value: Option<&Value>) -> Binding {
    let fault = |what: &str| Binding::Fault(format!("claim `{claim}` {what}"));
    match value {
        None | Some(Value::Null) => Binding::Absent,
        Some(Value::String(s)) => match valid_name(s) {
            true => Binding::Resolved(vec![s.clone()]),
            false => fault("is empty, too long or has control characters"),
        },
        Some(Value::Array(items)) if level == Level::Team => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if valid_name(s) => names.push(s.to_owned()),
                    _ => return fault("holds a value that is not a valid name"),
                }
            }
            names.sort();
            names.dedup();
            match names.is_empty() {
                true => Binding::Absent,
                false => Binding::Resolved(names),
            }
        }
        Some(Value::Array(_)) => fault("holds several values where one is expected"),
        Some(_) => fault("is not a string"),
    }
}

/// The string values of a claim (a string, or an array of strings) by name or dotted path.
/// Values that are not valid names are left out; a missing claim is an empty list.
pub fn claim_strings(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match lookup(claims, path) {
        Some(Value::String(s)) if valid_name(s) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| valid_name(s))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
