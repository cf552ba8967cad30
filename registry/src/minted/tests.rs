use crate::load_str;
use crate::{ApiKeyCallers, Minted, TokenEndpoint};

fn server(credentials: &str) -> String {
    format!(
        "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools: {{ search: {{ class: read }} }}\n    credentials:\n{credentials}"
    )
}

fn problems(credentials: &str) -> Vec<String> {
    match load_str("t.yaml", &server(credentials)) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{}: {} ({})", p.path, p.message, p.location))
            .collect(),
    }
}

#[test]
fn a_token_exchange_loads_with_its_client_and_target() {
    let reg = load_str(
        "t.yaml",
        &server("      token_exchange:\n        issuer: https://idp.example.com/\n        client_id: portcullis\n        client_secret: env:IDP_SECRET\n        audience: notes-api\n        scope: notes:read notes:write\n        api_keys: client_credentials\n"),
    )
    .unwrap();
    match &reg.servers[0].minted {
        Some(Minted::Exchange {
            client,
            requested_token_type,
            api_keys,
        }) => {
            assert_eq!(
                client.endpoint,
                TokenEndpoint::Issuer("https://idp.example.com".into())
            );
            assert_eq!(client.scope, vec!["notes:read", "notes:write"]);
            assert_eq!(client.audience.as_deref(), Some("notes-api"));
            assert_eq!(requested_token_type, crate::ACCESS_TOKEN_TYPE);
            assert_eq!(*api_keys, ApiKeyCallers::ClientCredentials);
            assert_eq!(client.timeout, std::time::Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_mistake_names_its_line_and_the_fix() {
    let ok = "        issuer: https://idp.example.com\n        client_id: gw\n        client_secret: env:S\n        audience: a\n";
    let cases = [
        ("      token_exchange:\n        token_endpoint: https://x/t\n        client_id: gw\n        client_secret: env:S\n        audience: a\n".to_string(), "token_exchange", "without `issuer`"),
        (format!("      headers: {{ X-Key: env:K }}\n      token_exchange:\n{ok}"), "credentials.headers", "static credential headers"),
        (
            "      token_exchange:\n        client_id: gw\n        client_secret: env:S\n        audience: a\n".to_string(),
            "token_exchange",
            "no `token_endpoint` or `issuer`",
        ),
        (
            "      token_exchange:\n        token_endpoint: ftp://x\n        client_id: gw\n        client_secret: env:S\n        audience: a\n".to_string(),
            "token_exchange.token_endpoint",
            "not an https:// URL",
        ),
        (
            "      token_exchange:\n        token_endpoint: https://x/t\n        client_secret: env:S\n        audience: a\n".to_string(),
            "token_exchange.client_id",
            "no `client_id`",
        ),
        (
            "      token_exchange:\n        token_endpoint: https://x/t\n        client_id: gw\n        client_secret: hunter2hunter2\n        audience: a\n".to_string(),
            "token_exchange.client_secret",
            "by reference",
        ),
        (
            "      token_exchange:\n        token_endpoint: https://x/t\n        client_id: gw\n        client_secret: env:S\n".to_string(),
            "token_exchange",
            "neither `audience` nor `resource`",
        ),
        (
            format!("      token_exchange:\n{ok}        api_keys: pass_through\n"),
            "token_exchange.api_keys",
            "not what API-key callers can get",
        ),
        (
            format!("      token_exchange:\n{ok}        timeout: 5h\n"),
            "token_exchange.timeout",
            "1ms to 60s",
        ),
        (
            format!("      client_credentials:\n{ok}        api_keys: refuse\n"),
            "client_credentials.api_keys",
            "belongs to `token_exchange`",
        ),
        (
            format!("      bearer: env:B\n      client_credentials:\n{ok}"),
            "credentials.bearer",
            "static `bearer`",
        ),
        (
            format!("      token_exchange:\n{ok}      client_credentials:\n{ok}"),
            "credentials.client_credentials",
            "together",
        ),
    ];
    for (credentials, path, says) in cases {
        let found = problems(&credentials);
        assert!(
            found
                .iter()
                .any(|p| p.contains(path) && p.contains(says) && p.contains("t.yaml:")),
            "{credentials}: {found:?}"
        );
    }
}

#[test]
fn a_token_endpoint_is_a_url_not_a_secret_but_a_secret_pasted_there_is_still_caught() {
    let ok = "      client_credentials:\n        token_endpoint: https://idp.example.com/oauth/token\n        client_id: gw\n        client_secret: env:S\n        audience: a\n";
    assert!(problems(ok).is_empty(), "{:?}", problems(ok));
    let pasted = ok.replace(
        "https://idp.example.com/oauth/token",
        "https://gw:hunter2@idp.example.com/token",
    );
    assert!(
        problems(&pasted)
            .iter()
            .any(|p| p.contains("password inside a URL")),
        "{:?}",
        problems(&pasted)
    );
}
