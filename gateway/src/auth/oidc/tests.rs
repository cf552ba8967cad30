use serde_json::json;

use super::*;

#[test]
fn keys_only_verify_their_own_family() {
    let rsa = parse_jwk(&json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"})).unwrap();
    let ec = parse_jwk(&json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})).unwrap();
    // HMAC with an RSA public key as the secret is the classic confusion: no family fits it.
    for alg in ["HS256", "HS384", "none", "RS256 ", "rs256"] {
        assert!(!family_fits(alg, &rsa.material), "{alg}");
        assert!(!verify(alg, &rsa, b"m", b"s"), "{alg}");
    }
    assert!(family_fits("PS256", &rsa.material));
    assert!(!family_fits("ES256", &rsa.material));
    assert!(family_fits("ES256", &ec.material));
    assert!(!family_fits("ES384", &ec.material));
    assert!(!family_fits("RS256", &ec.material));
}

#[test]
fn encryption_keys_and_unknown_types_are_ignored() {
    assert!(parse_jwk(&json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})).is_none());
    assert!(parse_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
    assert!(parse_jwk(&json!({"kty": "OKP", "crv": "X25519", "x": "AA"})).is_none());
}

#[test]
fn kid_selection() {
    let key = |kid: Option<&str>, alg: Option<&str>| Jwk {
        kid: kid.map(str::to_owned),
        alg: alg.map(str::to_owned),
        material: Material::Rsa {
            n: vec![1],
            e: vec![1],
        },
    };
    let one = KeySet {
        keys: vec![key(Some("a"), None)],
        ..KeySet::default()
    };
    assert!(find(&one, Some("a"), "RS256").is_some());
    assert!(find(&one, Some("b"), "RS256").is_none());
    assert!(
        find(&one, None, "RS256").is_some(),
        "a single key may be used without kid"
    );
    let two = KeySet {
        keys: vec![key(Some("a"), Some("RS256")), key(Some("b"), None)],
        ..KeySet::default()
    };
    assert!(
        find(&two, None, "RS256").is_none(),
        "with several keys a kid is required"
    );
    assert!(
        find(&two, Some("a"), "PS256").is_none(),
        "the key's own alg binds"
    );
}

/// A stand-in key server (static discovery and JWKS documents) that counts its requests, so the
/// refetch rule can be observed; the real provider is exercised end to end in `tests/tests/oidc.rs`.
async fn counting_key_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (iss, h1, h2) = (issuer.clone(), hits.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let iss = iss.clone();
                h1.fetch_add(1, Ordering::SeqCst);
                async move { axum::Json(json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                h2.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::Json(
                        json!({"keys": [{"kty": "RSA", "kid": "known", "n": "AQAB", "e": "AQAB"}]}),
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, hits)
}

fn unsigned(issuer: &str, kid: &str) -> String {
    let b = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    format!(
        "{}.{}.c2ln",
        b(json!({"alg": "RS256", "kid": kid})),
        b(json!({"iss": issuer, "aud": "http://gw", "exp": 4_000_000_000u64, "sub": "s"}))
    )
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    use std::sync::atomic::Ordering;
    let (issuer, hits) = counting_key_server().await;
    let config = OidcIssuer {
        issuer: issuer.clone(),
        audience: None,
        algorithms: vec!["RS256".into()],
        claims: policy::token::ClaimMap::default(),
        roles_claim: None,
        scopes: vec![],
        jwks_ttl: Duration::from_secs(600),
        jwks_min_refresh: Duration::from_secs(60),
    };
    let issuers = Issuers::new(&[config], "http://gw", []);
    let now = 1_800_000_000;
    // First sight: keys are fetched (discovery + JWKS); the kid is not among them.
    let r = issuers.verify(&unsigned(&issuer, "rotated"), now).await;
    assert!(matches!(r, Err(OidcError::Rejected(_))), "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Another unknown kid within the interval: no new fetch, still refused.
    let r = issuers.verify(&unsigned(&issuer, "other"), now).await;
    assert!(matches!(r, Err(OidcError::Rejected(_))), "{r:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "refetch was not rate-limited"
    );
    // A known kid with a signature that does not verify: keys are fresh, no fetch, refused.
    let r = issuers.verify(&unsigned(&issuer, "known"), now).await;
    match r {
        Err(OidcError::Rejected(why)) => assert!(why.contains("signature"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn signatures_of_every_family_verify_and_tampered_ones_do_not() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self as sig, KeyPair as _};
    let rng = SystemRandom::new();
    let message = b"header.claims";
    let mut cases: Vec<(&str, Jwk, Vec<u8>)> = Vec::new();
    let jwk = |material| Jwk {
        kid: None,
        alg: None,
        material,
    };
    // RSA: PKCS#1 v1.5 and PSS with one key.
    let rsa = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = rsa.public_key();
    let components = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(public);
    let rsa_material = Material::Rsa {
        n: components.n.clone(),
        e: components.e.clone(),
    };
    for (alg, padding) in [
        ("RS256", &sig::RSA_PKCS1_SHA256 as &dyn sig::RsaEncoding),
        ("PS256", &sig::RSA_PSS_SHA256),
    ] {
        let mut out = vec![0; rsa.public_modulus_len()];
        rsa.sign(padding, &rng, message, &mut out).unwrap();
        cases.push((alg, jwk(rsa_material.clone()), out));
    }
    // ECDSA P-256, fixed-length signatures as JWS uses.
    let ec = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ec_sig = ec.sign(&rng, message).unwrap().as_ref().to_vec();
    let point = ec.public_key().as_ref().to_vec();
    cases.push((
        "ES256",
        jwk(Material::Ec {
            curve: "P-256".into(),
            point,
        }),
        ec_sig,
    ));
    // Ed25519.
    let ed = sig::Ed25519KeyPair::generate().unwrap();
    let ed_sig = ed.sign(message).as_ref().to_vec();
    cases.push((
        "EdDSA",
        jwk(Material::Ed25519(ed.public_key().as_ref().to_vec())),
        ed_sig,
    ));
    for (alg, key, signature) in &cases {
        assert!(verify(alg, key, message, signature), "{alg}");
        assert!(
            !verify(alg, key, b"header.other", signature),
            "{alg}: another message"
        );
        let mut flipped = signature.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert!(!verify(alg, key, message, &flipped), "{alg}: a flipped bit");
    }
    // A key of another family never verifies, whatever the signature.
    let (_, ec_key, ec_signature) = &cases[2];
    assert!(!verify("RS256", ec_key, message, ec_signature));
    let (_, rsa_key, rsa_signature) = &cases[0];
    assert!(!verify("ES256", rsa_key, message, rsa_signature));
    assert!(!verify("HS256", rsa_key, message, rsa_signature));
}
