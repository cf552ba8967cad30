//! One token request: the form posted to the token endpoint with the gateway's client
//! authentication (`client_secret_basic`, or a `private_key_jwt` assertion), its answer read
//! within a size cap and the deadline, and an error answer reduced to its `error` code.

use std::time::Duration;

use registry::{ClientAuth, OAuthClient};

use super::{ASSERTION_LIFETIME, JWT_BEARER, MAX_ANSWER, MintError, TokenAnswer};
use crate::secrets::Secrets;

/// Post `form` to `endpoint` as `client`, and read the token answer.
pub(super) async fn token(
    http: &reqwest::Client,
    secrets: &Secrets,
    server: &str,
    client: &OAuthClient,
    endpoint: &str,
    mut form: Vec<(&'static str, String)>,
) -> Result<TokenAnswer, MintError> {
    let fail = |why: String| MintError::Endpoint {
        server: server.into(),
        why,
    };
    if let Some(a) = &client.audience {
        form.push(("audience", a.clone()));
    }
    if let Some(r) = &client.resource {
        form.push(("resource", r.clone()));
    }
    let secret_of = |why: String| MintError::Secret {
        server: server.into(),
        why,
    };
    let mut request = http.post(endpoint);
    match &client.auth {
        ClientAuth::Secret(reference) => {
            let secret = secrets
                .resolve(reference)
                .await
                .map_err(|e| secret_of(e.to_string()))?;
            request = request.basic_auth(
                form_encode(&client.client_id),
                Some(form_encode(secret.expose())),
            );
        }
        ClientAuth::PrivateKeyJwt { key, alg, kid } => {
            let pem = secrets
                .resolve(key)
                .await
                .map_err(|e| secret_of(e.to_string()))?;
            let assertion = assertion(&client.client_id, endpoint, pem.expose(), alg, kid)
                .map_err(secret_of)?;
            form.push(("client_id", client.client_id.clone()));
            form.push(("client_assertion_type", JWT_BEARER.to_string()));
            form.push(("client_assertion", assertion));
        }
    }
    let body =
        serde_urlencoded::to_string(&form).map_err(|_| fail("unencodable request".into()))?;
    let answer = request
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .timeout(client.timeout)
        .send()
        .await
        .map_err(|e| match e.is_timeout() {
            true => fail(format!("no answer within {:?}", client.timeout)),
            false => fail("unreachable".into()),
        })?;
    let status = answer.status();
    let body = read_capped(answer, client.timeout).await.map_err(fail)?;
    if !status.is_success() {
        // RFC 6749 §5.2: `error` (and `error_description`), never a token to hide.
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| "no error code".into());
        return Err(fail(format!("HTTP {status}: {}", truncate(&code, 64))));
    }
    serde_json::from_slice(&body).map_err(|_| fail("the answer is not a token response".into()))
}

/// An RFC 7523 client assertion: the gateway's client id as issuer and subject, the token
/// endpoint as audience, a fresh id, one minute of validity; signed with its PEM private key.
pub(super) fn assertion(
    client_id: &str,
    endpoint: &str,
    pem: &str,
    alg: &str,
    kid: &Option<String>,
) -> Result<String, String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let algorithm: Algorithm = alg
        .parse()
        .map_err(|_| format!("`{alg}` is not an algorithm"))?;
    let key = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map_err(|_| format!("the private key is not a PEM {alg} key"))?;
    let now = crate::auth::unix_now();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": endpoint,
        "jti": hex::encode(rand::random::<[u8; 16]>()),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    let mut header = Header::new(algorithm);
    header.kid = kid.clone();
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|_| "the assertion could not be signed".to_string())
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic authentication.
pub(super) fn form_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

pub(super) async fn read_capped(
    mut answer: reqwest::Response,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let read = async {
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|_| "the answer broke off".to_string())?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))??;
    Ok(body)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}
