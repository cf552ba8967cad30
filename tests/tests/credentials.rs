//! Upstream credentials minted by a real OpenID Connect provider (npm `oidc-provider` with an
//! RFC 8693 token-exchange grant, `tests/node/idp.mjs`): the caller's token is exchanged for one
//! issued to the upstream, on every endpoint and in both eras, and never reaches the upstream;
//! the cache serves a subject's second call; API keys get the gateway's own token only where
//! the config says so; every failure of the exchange refuses the call before the upstream.

// Test code may unwrap and index: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, Idp, OtlpReceiver, audit_events, fixture_server};
use serde_json::{Value, json};

fn config(issuer: &str) -> String {
    format!(
        "identity:
  require: [org]
  oidc:
    - issuer: {issuer}
      claims: {{ org: org, team: groups, user: sub }}
      scopes: [mcp]
grants:
  org:*: [\"fixture/*\"]
  team:*: [\"fixture/*\"]
  user:*: [\"fixture/*\"]
  key:*: [\"fixture/*\"]
"
    )
}

/// The fixture, with `credentials` under its entry.
fn servers(url: &str, credentials: &str) -> String {
    fixture_server("fixture", url).replace(
        "    timeout: 5s\n",
        &format!("    timeout: 5s\n    credentials:\n{credentials}"),
    )
}

fn exchange(issuer: &str, secret: &std::path::Path, extra: &str) -> String {
    format!(
        "      token_exchange:\n        issuer: {issuer}\n        client_id: portcullis-gw\n        client_secret: file:{}\n        audience: fixture-api\n        scope: mcp mcp:admin\n        timeout: 1s\n{extra}",
        secret.display()
    )
}

struct Setup {
    idp: Idp,
    fx: Fixture,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

fn setup(extra: &str) -> Setup {
    let idp = Idp::start().unwrap();
    let fx = Fixture::start("both").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gw-secret");
    std::fs::write(&secret, "portcullis-gw-secret\n").unwrap();
    let servers = servers(&fx.url, &exchange(&idp.issuer, &secret, extra));
    let gw = Gateway::start_with(&config(&idp.issuer), &servers).unwrap();
    Setup {
        idp,
        fx,
        gw,
        _dir: dir,
    }
}

/// A token of this provider for the gateway, with `sub` and the scopes given.
async fn token_for(s: &Setup, sub: &str, scope: &str) -> String {
    let claims = json!({ "sub": sub, "org": "acme", "groups": ["research"], "scope": scope });
    s.idp.mint("valid", &s.gw.base, claims).await.unwrap()
}

async fn echo(url: String, token: &str, text: &str) -> Value {
    let mut c = Raw::new(url.clone(), token);
    c.init().await;
    let name = if url.ends_with("/mcp") {
        "fixture__echo"
    } else {
        "echo"
    };
    let (_, r) = c
        .call(req(
            7,
            "tools/call",
            json!({ "name": name, "arguments": { "text": text } }),
        ))
        .await;
    r
}

/// The same call as a 2026-07-28 request.
async fn echo_2026(s: &Setup, token: &str, text: &str) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "fixture__echo", "arguments": { "text": text },
        "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                   "io.modelcontextprotocol/clientCapabilities": {} } } });
    let r = reqwest::Client::new()
        .post(s.gw.mcp())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "fixture__echo")
        .json(&body)
        .send()
        .await
        .unwrap();
    portcullis_tests::raw::read(r).await.1
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The bearer tokens the fixture was sent, in order.
fn bearers(fx: &Fixture) -> Vec<String> {
    fx.authorizations()
        .iter()
        .filter_map(|a| a.strip_prefix("Bearer ").map(str::to_string))
        .collect()
}

/// The JWTs the fixture was sent for `sub`, in order (the connection's own traffic carries the
/// gateway's opaque token).
fn issued_for(fx: &Fixture, sub: &str) -> Vec<String> {
    bearers(fx)
        .into_iter()
        .filter(|t| t.split('.').count() == 3 && claims(t)["sub"] == sub)
        .collect()
}

/// A client key of org acme (every admitted caller has an org).
fn acme_key(s: &Setup) -> String {
    let grants = ["fixture/*".to_string()];
    portcullis_tests::create_key_with(&s.gw.config(), "acme", &grants, &["--org", "acme"]).unwrap()
}

fn text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_token_is_exchanged_for_the_upstreams_on_every_path_and_never_sent_upstream() {
    let s = setup("");
    let ann = token_for(&s, "ann", "mcp").await;
    let before = s.idp.exchanges().await;
    assert_eq!(text(&echo(s.gw.mcp(), &ann, "one").await), "one");
    let sent = bearers(&s.fx);
    assert!(
        !sent.contains(&ann),
        "the caller's token reached the upstream"
    );
    let issued = claims(issued_for(&s.fx, "ann").last().unwrap());
    assert_eq!(issued["aud"], "fixture-api", "{issued}");
    assert_eq!(issued["sub"], "ann", "{issued}");
    assert_eq!(issued["act"]["sub"], "portcullis-gw", "{issued}");
    // Configured `mcp mcp:admin`; the caller holds `mcp` only, and only that is asked for.
    assert_eq!(s.idp.last_exchange_scope().await.as_deref(), Some("mcp"));
    assert_eq!(issued["scope"], "mcp", "{issued}");
    assert_eq!(s.idp.exchanges().await, before + 1);
    // The same subject again, on the server's own endpoint and in the 2026 revision: the cache
    // serves it, and the upstream gets the same exchanged token.
    assert_eq!(
        text(&echo(s.gw.server("fixture"), &ann, "two").await),
        "two"
    );
    assert_eq!(text(&echo_2026(&s, &ann, "three").await), "three");
    // A resource read carries it too.
    let mut c = Raw::new(s.gw.server("fixture"), &ann);
    c.init().await;
    let (_, r) = c
        .call(req(
            8,
            "resources/read",
            json!({ "uri": "test://static-text" }),
        ))
        .await;
    assert!(r["result"]["contents"].is_array(), "{r}");
    assert_eq!(s.idp.exchanges().await, before + 1, "served from the cache");
    let anns = issued_for(&s.fx, "ann");
    assert_eq!(
        anns.len(),
        4,
        "the call, the server endpoint, 2026, the read"
    );
    assert!(anns.iter().all(|t| t == &anns[0]));
    // Another subject gets another token.
    let bob = token_for(&s, "bob", "mcp mcp:admin").await;
    assert_eq!(text(&echo(s.gw.mcp(), &bob, "four").await), "four");
    assert_eq!(s.idp.exchanges().await, before + 2);
    let bobs = claims(issued_for(&s.fx, "bob").last().unwrap());
    assert_eq!(
        (bobs["sub"].as_str(), bobs["scope"].as_str()),
        (Some("bob"), Some("mcp mcp:admin"))
    );
    // Engaging a kill switch forgets every minted token.
    let admin = s.gw.operator_key("admin", Some("ops")).unwrap();
    let http = reqwest::Client::new();
    for engaged in [true, false] {
        let r = http
            .post(format!("{}/admin/kill-switch", s.gw.admin))
            .bearer_auth(&admin)
            .json(&json!({ "scope": "user", "target": "carol", "engaged": engaged, "reason": "drill" }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    assert_eq!(text(&echo(s.gw.mcp(), &ann, "five").await), "five");
    assert_eq!(
        s.idp.exchanges().await,
        before + 3,
        "exchanged again after the switch"
    );
    // The record says what was minted, never a token.
    let deadline = Instant::now() + Duration::from_secs(5);
    let results = loop {
        let r = audit_events(&s.gw.audit_file(), "tool.result");
        if r.len() >= 5 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let credential = &results[0]["detail"]["credential"];
    assert_eq!(
        (
            credential["kind"].as_str(),
            credential["audience"].as_str(),
            credential["cached"].as_bool()
        ),
        (Some("exchange"), Some("fixture-api"), Some(false)),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["detail"]["credential"]["cached"], true);
    let log = std::fs::read_to_string(s.gw.audit_file()).unwrap();
    for t in bearers(&s.fx).iter().chain([&ann, &bob]) {
        assert!(!log.contains(t.as_str()), "a token is in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_gets_the_gateways_own_token_only_where_the_config_says_so() {
    let s = setup("");
    let key = acme_key(&s);
    let calls = s.fx.calls();
    let r = echo(s.gw.mcp(), &key, "key").await;
    assert_eq!(
        r["error"]["data"]["reason"], "credential_unavailable",
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not obtain a credential"),
        "{r}"
    );
    assert_eq!(s.fx.calls(), calls, "the upstream is untouched");
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        let found = audit_events(&s.gw.audit_file(), "tool.call")
            .into_iter()
            .find(|e| e["outcome"] == "unavailable");
        match found {
            Some(e) => break e,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => panic!("the refusal is not in the audit log"),
        }
    };
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("an API key cannot reach it"),
        "{why}"
    );

    let s = setup("        api_keys: client_credentials\n");
    let key = acme_key(&s);
    assert_eq!(text(&echo(s.gw.mcp(), &key, "key").await), "key");
    let sent = bearers(&s.fx);
    assert!(!sent.contains(&key), "the API key reached the upstream");
    // The gateway's own token: a client-credentials token, no exchange.
    assert!(sent.iter().all(|t| t.split('.').count() != 3), "{sent:?}");
    assert_eq!(s.idp.exchanges().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_of_the_exchange_refuses_the_call_before_the_upstream() {
    let mut s = setup("");
    // Up and working first: the connection is open, and one subject has a cached token.
    let ann = token_for(&s, "ann", "mcp").await;
    assert_eq!(text(&echo(s.gw.mcp(), &ann, "ok").await), "ok");
    let calls = s.fx.calls();
    let refused = |r: &Value| {
        assert_eq!(
            r["error"]["data"]["reason"], "credential_unavailable",
            "{r}"
        );
    };
    // The provider answers an error.
    s.idp.exchange_mode("error").await.unwrap();
    let bob = token_for(&s, "bob", "mcp").await;
    refused(&echo(s.gw.mcp(), &bob, "x").await);
    // The provider is slow: refused once the request's timeout (1 s) passes, not after 10 s.
    s.idp.exchange_mode("slow").await.unwrap();
    let carol = token_for(&s, "carol", "mcp").await;
    let started = Instant::now();
    refused(&echo(s.gw.mcp(), &carol, "x").await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The provider is gone.
    let dave = token_for(&s, "dave", "mcp").await;
    s.idp.stop();
    refused(&echo(s.gw.mcp(), &dave, "x").await);
    assert_eq!(s.fx.calls(), calls, "no refused call reached the upstream");
    // Each refusal is recorded with its cause, and counted as failing closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reasons: Vec<String> = loop {
        let r: Vec<String> = audit_events(&s.gw.audit_file(), "tool.call")
            .iter()
            .filter(|e| e["outcome"] == "unavailable")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        if r.len() >= 3 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reasons[0].contains("invalid_grant"), "{reasons:?}");
    assert!(reasons[1].contains("no answer within 1s"), "{reasons:?}");
    assert!(
        reasons[2].contains("unreachable") || reasons[2].contains("metadata"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_can_authenticate_with_a_signed_assertion() {
    let idp = Idp::start().unwrap();
    let fx = Fixture::start("both").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = reqwest::get(format!("{}/test/client-key", idp.issuer))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = dir.path().join("gw-key.pem");
    std::fs::write(&key, pem).unwrap();
    let credentials = format!(
        "      token_exchange:\n        issuer: {}\n        token_endpoint: {}\n        client_id: portcullis-gw-jwt\n        private_key_jwt: {{ key: \"file:{}\", alg: RS256 }}\n        audience: fixture-api\n",
        idp.issuer,
        idp.token_endpoint,
        key.display()
    );
    let otlp = OtlpReceiver::start().unwrap();
    let top = format!(
        "{}telemetry: {{ otlp: {{ endpoint: {}, timeout: 2s }} }}\n",
        config(&idp.issuer),
        otlp.url
    );
    let gw = Gateway::start_with(&top, &servers(&fx.url, &credentials)).unwrap();
    let s = Setup {
        idp,
        fx,
        gw,
        _dir: dir,
    };
    let ann = token_for(&s, "ann", "mcp").await;
    assert_eq!(text(&echo(s.gw.mcp(), &ann, "signed").await), "signed");
    let issued = claims(issued_for(&s.fx, "ann").last().unwrap());
    assert_eq!(issued["act"]["sub"], "portcullis-gw-jwt", "{issued}");
    assert_eq!(issued["sub"], "ann", "{issued}");
    // The exchange has a span of its own, under the call's, with no token in it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = otlp.spans();
        if spans.iter().any(|s| s["name"] == "credential exchange") || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let span = spans
        .iter()
        .find(|s| s["name"] == "credential exchange")
        .unwrap_or_else(|| panic!("no credential span in {spans:#?}"));
    assert_eq!(
        span["attributes"]["portcullis.credential.outcome"], "minted",
        "{span}"
    );
    assert_eq!(span["attributes"]["portcullis.server"], "fixture", "{span}");
    let call = spans
        .iter()
        .find(|s| s["name"] == "tools/call fixture__echo")
        .unwrap_or_else(|| panic!("no call span in {spans:#?}"));
    assert_eq!(span["trace_id"], call["trace_id"]);
    assert!(!serde_json::to_string(&spans).unwrap().contains(&ann));
}
