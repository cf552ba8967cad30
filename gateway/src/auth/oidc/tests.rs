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
