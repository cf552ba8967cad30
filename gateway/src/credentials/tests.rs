use super::request::form_encode;
use super::*;

fn answer(
    token: &str,
    token_type: Option<&str>,
    issued: Option<&str>,
    scope: Option<&str>,
) -> TokenAnswer {
    TokenAnswer {
        access_token: token.into(),
        expires_in: Some(300),
        token_type: token_type.map(str::to_string),
        issued_token_type: issued.map(str::to_string),
        scope: scope.map(str::to_string),
    }
}

const AT: &str = registry::ACCESS_TOKEN_TYPE;

#[test]
fn only_a_usable_bearer_token_of_the_type_and_scope_asked_for_is_taken() {
    let ok = answer("eyJ.a.b", Some("Bearer"), Some(AT), Some("read"));
    assert!(checked(&ok, "exchange", AT, "read write").is_ok());
    // Wider than asked.
    let wide = answer("t", Some("bearer"), Some(AT), Some("read admin"));
    assert!(checked(&wide, "exchange", AT, "read write").is_err());
    // Not a bearer token, or not the type asked for, or none said.
    assert!(
        checked(
            &answer("t", Some("DPoP"), Some(AT), None),
            "exchange",
            AT,
            "r"
        )
        .is_err()
    );
    let id_token = "urn:ietf:params:oauth:token-type:id_token";
    assert!(
        checked(
            &answer("t", None, Some(id_token), None),
            "exchange",
            AT,
            "r"
        )
        .is_err()
    );
    assert!(checked(&answer("t", None, None, None), "exchange", AT, "r").is_err());
    // Client credentials answers carry no issued_token_type.
    assert!(
        checked(
            &answer("t", Some("Bearer"), None, None),
            "client_credentials",
            AT,
            ""
        )
        .is_ok()
    );
    // Empty, or with bytes that cannot go in a header.
    for bad in ["", "a b", "a\r\nX-Injected: 1", "tok\u{7f}"] {
        assert!(
            checked(&answer(bad, None, Some(AT), None), "exchange", AT, "r").is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn client_credentials_are_form_encoded_before_basic_authentication() {
    assert_eq!(form_encode("gw"), "gw");
    assert_eq!(form_encode("a b:c&d"), "a+b%3Ac%26d");
}

#[test]
fn a_token_is_kept_until_its_expiry_less_the_skew_and_the_cache_stays_bounded() {
    let minter = Minter::new(Arc::new(Secrets::new(None).unwrap()));
    let key = |n: usize| CacheKey {
        endpoint: "https://idp/token".into(),
        kind: "exchange",
        token_type: AT.into(),
        subject: format!("oidc:i#{n}"),
        subject_token: [0; 32],
        actor: "gw".into(),
        audience: Some("a".into()),
        resource: None,
        scope: "r".into(),
    };
    minter.keep(key(0), Arc::from("t0"), Duration::from_secs(60));
    assert_eq!(minter.cached(&key(0)).as_deref(), Some("t0"));
    // Another subject never gets it.
    assert!(minter.cached(&key(1)).is_none());
    // A lifetime past what an Instant can hold is not kept, and does not panic.
    minter.keep(key(2), Arc::from("t2"), Duration::MAX);
    assert!(minter.cached(&key(2)).is_none());
    for n in 3..(MAX_CACHED + 10) {
        minter.keep(key(n), Arc::from("t"), Duration::from_secs(60));
    }
    assert!(minter.cache.lock().unwrap().len() <= MAX_CACHED);
    minter.forget_all();
    assert!(minter.cached(&key(MAX_CACHED)).is_none());
}
