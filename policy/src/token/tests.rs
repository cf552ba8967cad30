use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;

fn b(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn token(header: Value, claims: Value) -> String {
    format!(
        "{}.{}.{}",
        b(&header),
        b(&claims),
        URL_SAFE_NO_PAD.encode(b"sig")
    )
}

const NOW: u64 = 1_800_000_000;
const EXPECT: Expectations<'static> = Expectations {
    issuer: "https://idp",
    audience: "http://gw",
    leeway: 30,
};

fn good() -> Value {
    json!({"iss": "https://idp", "aud": "http://gw", "exp": NOW + 100, "sub": "alice"})
}

#[test]
fn compact_parts() {
    let t = token(json!({"alg": "RS256", "kid": "k1"}), good());
    let jws = parse_compact(&t).unwrap();
    assert_eq!(
        jws.header,
        JwsHeader {
            alg: "RS256".into(),
            kid: Some("k1".into())
        }
    );
    assert_eq!(jws.signature, b"sig");
    assert_eq!(jws.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
}

#[test]
fn compact_refusals() {
    let cases = [
        ("a.b".to_owned(), TokenError::Shape),
        ("a.b.c.d".to_owned(), TokenError::Shape),
        (
            format!("{}=.e30.AA", b(&json!({"alg":"RS256"}))),
            TokenError::Encoding("header"),
        ),
        (token(json!([1]), good()), TokenError::Json("header")),
        (token(json!({"alg": ""}), good()), TokenError::NoAlgorithm),
        (token(json!({"kid": "x"}), good()), TokenError::NoAlgorithm),
        (
            token(json!({"alg": "RS256", "kid": 3}), good()),
            TokenError::KeyId,
        ),
        (
            token(json!({"alg": "RS256", "crit": ["x"]}), good()),
            TokenError::Critical,
        ),
        ("x".repeat(MAX_TOKEN_LEN + 1), TokenError::TooLong),
    ];
    for (t, want) in cases {
        assert_eq!(parse_compact(&t).err(), Some(want), "{t:.60}");
    }
}

#[test]
fn registered_claims() {
    let check = |claims: Value| check_registered(claims.as_object().unwrap(), &EXPECT, NOW);
    assert_eq!(check(good()), Ok(NOW + 100));
    let mut c = good();
    c["aud"] = json!(["other", "http://gw"]);
    assert!(check(c).is_ok());
    let cases = [
        (json!({"iss": "https://evil"}), TokenError::Issuer),
        (json!({"aud": "http://gw/"}), TokenError::Audience),
        (json!({"aud": ["http://other"]}), TokenError::Audience),
        (json!({"exp": "soon"}), TokenError::NoExpiry),
        (json!({"exp": NOW - 31}), TokenError::Expired),
        (json!({"nbf": NOW + 31}), TokenError::NotYetValid),
        (json!({"nbf": "now"}), TokenError::NotYetValid),
    ];
    for (patch, want) in cases {
        let mut c = good();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        assert_eq!(check(c.clone()), Err(want), "{c}");
    }
    // Within leeway.
    let mut c = good();
    c["exp"] = json!(NOW - 29);
    c["nbf"] = json!(NOW + 29);
    assert!(check(c).is_ok());
}

#[test]
fn leeway_is_capped() {
    let mut c = good();
    c["exp"] = json!(NOW - MAX_LEEWAY);
    let lax = Expectations {
        leeway: 3600,
        ..EXPECT
    };
    assert_eq!(
        check_registered(c.as_object().unwrap(), &lax, NOW),
        Err(TokenError::Expired)
    );
}

#[test]
fn claims_to_levels() {
    let map = ClaimMap {
        org: Some("org".into()),
        team: Some("groups".into()),
        user: Some("sub".into()),
        agent: Some("client.name".into()),
    };
    let claims = json!({"org": "acme", "groups": ["b", "a", "b"], "sub": "alice",
                        "client": {"name": "bot"}});
    let levels = map_claims(claims.as_object().unwrap(), &map);
    assert_eq!(levels.org, Binding::Resolved(vec!["acme".into()]));
    assert_eq!(levels.team, Binding::Resolved(vec!["a".into(), "b".into()]));
    assert_eq!(levels.user, Binding::Resolved(vec!["alice".into()]));
    assert_eq!(levels.agent, Binding::Resolved(vec!["bot".into()]));
    assert_eq!(levels.key, Binding::Absent);

    let faulty = json!({"org": 42, "groups": ["a", 7], "sub": "", "client": {"name": ["x", "y"]}});
    let levels = map_claims(faulty.as_object().unwrap(), &map);
    for level in [Level::Org, Level::Team, Level::User, Level::Agent] {
        assert!(matches!(levels.get(level), Binding::Fault(_)), "{level}");
    }

    let levels = map_claims(json!({"groups": []}).as_object().unwrap(), &map);
    assert_eq!(levels.team, Binding::Absent);
    assert_eq!(levels.org, Binding::Absent);
}
