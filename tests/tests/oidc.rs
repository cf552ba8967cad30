//! Bearer tokens from a real OpenID Connect provider (npm `oidc-provider`): valid tokens map
//! claims to identity levels; expired, not-yet-valid, wrong-issuer, wrong-audience, unknown-kid,
//! `none`, HMAC-confusion and forged tokens are refused; a malformed claim and unreachable keys
//! deny without the upstream ever being called.

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, Idp, fixture_server};
use serde_json::{Value, json};

fn config(issuer: &str) -> String {
    format!(
        "identity:
  require: [org, team]
  oidc:
    - issuer: {issuer}
      claims: {{ org: org, team: groups, user: sub, agent: client_id }}
      scopes: [mcp]
grants:
  org:acme: [\"fixture/*\"]
  org:globex: [\"fixture/*\"]
  team:research: [\"fixture/echo\", \"fixture/test_simple_text\"]
  user:*: [\"fixture/*\"]
  agent:*: [\"fixture/*\"]
"
    )
}

struct Setup {
    idp: Idp,
    fx: Fixture,
    gw: Gateway,
}

fn setup() -> Setup {
    let idp = Idp::start().unwrap();
    let fx = Fixture::start("both").unwrap();
    let gw =
        Gateway::start_with(&config(&idp.issuer), &fixture_server("fixture", &fx.url)).unwrap();
    Setup { idp, fx, gw }
}

fn initialize() -> Value {
    req(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    )
}

/// POST `initialize` with a token; the status and `WWW-Authenticate`.
async fn knock(s: &Setup, token: &str) -> (u16, String) {
    let resp = Raw::new(s.gw.mcp(), token)
        .post(&initialize().to_string())
        .send()
        .await
        .unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status().as_u16(), www)
}

#[tokio::test]
async fn provider_tokens_map_claims_to_levels() {
    let s = setup();
    let token = s
        .idp
        .token("agent-acme", &s.gw.base, Some("mcp"))
        .await
        .unwrap();
    let mut acme = Raw::new(s.gw.mcp(), &token);
    acme.init().await;
    // org acme ∩ team research ∩ user ∩ agent: the research tools only.
    assert_eq!(
        acme.tool_names().await,
        ["fixture__echo", "fixture__test_simple_text"]
    );
    let (_, r) = acme
        .call(req(
            2,
            "tools/call",
            json!({"name": "fixture__echo", "arguments": {"text": "hi"}}),
        ))
        .await;
    assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");

    // A token for the endpoint URL itself (what MCP clients ask for) is accepted too.
    let for_endpoint = s
        .idp
        .token("agent-acme", &s.gw.mcp(), Some("mcp"))
        .await
        .unwrap();
    assert_eq!(knock(&s, &for_endpoint).await.0, 200);

    // A token for one server's endpoint is good there, and nowhere else.
    let for_server = s
        .idp
        .token("agent-acme", &s.gw.server("fixture"), Some("mcp"))
        .await
        .unwrap();
    assert_eq!(knock(&s, &for_server).await.0, 401);
    let mut own = Raw::new(s.gw.server("fixture"), &for_server);
    own.init().await;
    assert_eq!(own.tool_names().await, ["echo", "test_simple_text"]);

    // Another tenant, whose team has no grants, sees and reaches nothing.
    let other = s
        .idp
        .token("agent-other", &s.gw.base, Some("mcp"))
        .await
        .unwrap();
    let mut globex = Raw::new(s.gw.mcp(), &other);
    globex.init().await;
    assert_eq!(globex.tool_names().await, Vec::<String>::new());

    // A session is bound to the token's subject: another client's token cannot use it.
    let mut stolen = Raw::new(s.gw.mcp(), &other);
    stolen.session = acme.session.clone();
    assert_eq!(stolen.call(req(3, "tools/list", json!({}))).await.0, 404);

    // ES256 from the same issuer verifies.
    let claims = json!({"sub": "es", "org": "acme", "groups": ["research"], "client_id": "x", "scope": "mcp"});
    let es = s.idp.mint("es256", &s.gw.base, claims).await.unwrap();
    assert_eq!(knock(&s, &es).await.0, 200);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let s = setup();
    let claims = json!({"sub": "m", "org": "acme", "groups": ["research"], "client_id": "x", "scope": "mcp"});
    // The baseline passes, so each refusal below is the kind's doing.
    let valid = s
        .idp
        .mint("valid", &s.gw.base, claims.clone())
        .await
        .unwrap();
    assert_eq!(knock(&s, &valid).await.0, 200);
    for kind in [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "alg_none",
        "alg_hs256_confusion",
        "bad_signature",
    ] {
        let token = s.idp.mint(kind, &s.gw.base, claims.clone()).await.unwrap();
        let (status, www) = knock(&s, &token).await;
        assert_eq!(status, 401, "{kind}");
        assert!(
            www.starts_with("Bearer resource_metadata=")
                && www.ends_with("/.well-known/oauth-protected-resource/mcp\""),
            "{kind}: {www}"
        );
    }
    // A token the provider issued for another resource (RFC 8707 audience) is refused.
    let elsewhere = s
        .idp
        .token("agent-acme", "http://127.0.0.1:1/elsewhere", Some("mcp"))
        .await
        .unwrap();
    assert_eq!(knock(&s, &elsewhere).await.0, 401);
    // Without the required scope: 403 naming it.
    let unscoped = s.idp.token("agent-acme", &s.gw.base, None).await.unwrap();
    let (status, www) = knock(&s, &unscoped).await;
    assert_eq!(status, 403);
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains("scope=\"mcp\""),
        "{www}"
    );
    // RFC 9728 metadata names the issuer and the scope.
    let meta: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        s.gw.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(meta["authorization_servers"], json!([s.idp.issuer]));
    assert_eq!(meta["scopes_supported"], json!(["mcp"]));
}

#[tokio::test]
async fn malformed_claim_denies_without_reaching_the_upstream() {
    let s = setup();
    // Fault: the provider issues `org` as a number.
    let token = s
        .idp
        .token("agent-badclaim", &s.gw.base, Some("mcp"))
        .await
        .unwrap();
    let mut c = Raw::new(s.gw.mcp(), &token);
    c.init().await;
    let before = s.fx.calls();
    assert_eq!(c.tool_names().await, Vec::<String>::new());
    let (_, r) = c
        .call(req(
            2,
            "tools/call",
            json!({"name": "fixture__echo", "arguments": {"text": "hi"}}),
        ))
        .await;
    assert_eq!(r["error"]["data"]["reason"], "not_found", "{r}");
    assert_eq!(s.fx.calls(), before);
}

#[tokio::test]
async fn unreachable_keys_refuse_with_503_and_never_reach_the_upstream() {
    let mut s = setup();
    let token = s
        .idp
        .token("agent-acme", &s.gw.base, Some("mcp"))
        .await
        .unwrap();
    // Fault: the provider (discovery and JWKS) is gone before the gateway ever fetched its keys.
    s.idp.stop();
    let before = s.fx.calls();
    let c = Raw::new(s.gw.mcp(), &token);
    let (status, _) = c
        .call(req(
            2,
            "tools/call",
            json!({"name": "fixture__echo", "arguments": {"text": "hi"}}),
        ))
        .await;
    assert_eq!(status, 503);
    assert_eq!(knock(&s, &token).await.0, 503);
    assert_eq!(s.fx.calls(), before);
}

/// Operator roles from a token claim work on the admin listener only, for tokens minted for it.
#[tokio::test(flavor = "multi_thread")]
async fn operator_roles_come_from_a_claim_and_admin_tokens_are_bound_to_the_admin_listener() {
    let idp = Idp::start().unwrap();
    let fx = Fixture::start("both").unwrap();
    let top = config(&idp.issuer)
        .replace(
            "agent: client_id }",
            "agent: client_id, roles: realm.roles }",
        )
        .replace(
            "grants:",
            "approvals: { required_from: write, hold: 0s }\ngrants:",
        )
        .replace(
            "team:research: [\"fixture/echo\", \"fixture/test_simple_text\"]",
            "team:research: [\"fixture/*\"]",
        );
    let gw = Gateway::start_with(&top, &fixture_server("fixture", &fx.url)).unwrap();
    let http = reqwest::Client::new();
    let person = |roles: Value, sub: &str| json!({ "sub": sub, "scope": "mcp", "org": "acme", "groups": ["research"], "client_id": "agent-acme", "realm": { "roles": roles } });
    let admin_get = |token: String| {
        let http = http.clone();
        let url = format!("{}/admin/approvals", gw.admin);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // An approver's token for the admin listener reads approvals but cannot pull the kill switch.
    let approver = idp
        .mint("valid", &gw.admin, person(json!(["approver"]), "carol"))
        .await
        .unwrap();
    assert_eq!(admin_get(approver.clone()).await, 200);
    let r = http
        .post(format!("{}/admin/kill-switch", gw.admin))
        .bearer_auth(&approver)
        .json(&json!({ "scope": "global", "engaged": true, "reason": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No role: forbidden. A token for the MCP endpoint: not accepted here at all.
    let none = idp
        .mint("valid", &gw.admin, person(json!([]), "dave"))
        .await
        .unwrap();
    assert_eq!(admin_get(none).await, 403);
    let mcp_aud = idp
        .mint("valid", &gw.base, person(json!(["admin"]), "erin"))
        .await
        .unwrap();
    assert_eq!(admin_get(mcp_aud).await, 401);
    // …and an admin-audience token does not call MCP.
    let admin_token = idp
        .mint("valid", &gw.admin, person(json!(["admin"]), "erin"))
        .await
        .unwrap();
    let (status, _) = Raw::new(gw.mcp(), &admin_token).call(initialize()).await;
    assert_eq!(status, 401);
    assert_eq!(admin_get(admin_token.clone()).await, 200);

    // Carol's own agent call cannot be approved by carol; erin may approve it.
    let carol_mcp = idp
        .mint("valid", &gw.base, person(json!([]), "carol"))
        .await
        .unwrap();
    let mut c = Raw::new(gw.server("fixture"), &carol_mcp);
    c.init().await;
    let (_, r) = c
        .call(req(
            1,
            "tools/call",
            json!({ "name": "slow", "arguments": { "ms": 0 } }),
        ))
        .await;
    let id = r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let verdict = format!("{}/admin/approvals/{id}/approve", gw.admin);
    let r = http
        .post(&verdict)
        .bearer_auth(&approver)
        .json(&json!({ "reason": "mine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(&verdict)
        .bearer_auth(&admin_token)
        .json(&json!({ "reason": "ok" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, r) = c
        .call(req(
            2,
            "tools/call",
            json!({ "name": "slow", "arguments": { "ms": 0 } }),
        ))
        .await;
    assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
}
