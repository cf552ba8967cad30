use super::*;
use serde_json::json;

#[test]
fn only_the_expected_answer_passes() {
    let n = Some(json!(3));
    let answer = |id: Value| json!({ "jsonrpc": "2.0", "id": id, "result": {} }).to_string();
    let check = |data: &str, expected: Option<&Value>| admits(data, expected, "s");
    assert_eq!(check(&answer(json!(3)), n.as_ref()), Verdict::Answer);
    assert_eq!(check(&answer(json!(4)), n.as_ref()), Verdict::Dropped);
    assert_eq!(check(&answer(json!("3")), n.as_ref()), Verdict::Dropped);
    assert_eq!(check(&answer(json!(3)), None), Verdict::Dropped);
    let error = json!({ "jsonrpc": "2.0", "id": 4, "error": { "code": 1, "message": "x" } });
    assert_eq!(check(&error.to_string(), n.as_ref()), Verdict::Dropped);
    let no_id = json!({ "jsonrpc": "2.0", "error": { "code": 1, "message": "x" } });
    assert_eq!(check(&no_id.to_string(), n.as_ref()), Verdict::Dropped);
    // Requests and notifications are not answers, whatever their id.
    let request = json!({ "jsonrpc": "2.0", "id": 4, "method": "ping" });
    assert_eq!(check(&request.to_string(), n.as_ref()), Verdict::Other);
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": {} });
    assert_eq!(check(&note.to_string(), None), Verdict::Other);
    // A null result is still an answer; what is not a JSON-RPC object goes nowhere.
    let null = json!({ "jsonrpc": "2.0", "id": 4, "result": null });
    assert_eq!(check(&null.to_string(), n.as_ref()), Verdict::Dropped);
    assert_eq!(check("[1,2]", n.as_ref()), Verdict::Dropped);
    assert_eq!(check("not json", n.as_ref()), Verdict::Dropped);
    assert_eq!(check("", n.as_ref()), Verdict::Other);
}

fn event(id: Option<&str>, data: Value) -> Result<Sse, SseError> {
    Ok(Sse {
        id: id.map(str::to_string),
        data: Some(data.to_string()),
        ..Sse::default()
    })
}

#[tokio::test]
async fn a_resumed_stream_carries_only_its_own_requests_answer() {
    let client = UpstreamHttp::new(reqwest::Client::new(), "s", None);
    let progress = json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": {} });
    // The POST stream of request 3 breaks after an event with an id.
    let post = futures::stream::iter([event(Some("e1"), progress.clone())]).boxed();
    let passed: Vec<_> = client
        .guard(post, Some(json!(3)), true, false, None)
        .collect()
        .await;
    assert_eq!(passed.len(), 1);
    // A GET resuming from that event continues request 3's stream; a GET from nowhere
    // carries no answer at all.
    assert_eq!(client.resumed(Some("e1")), Some(json!(3)));
    assert_eq!(client.resumed(Some("e9")), None);
    let answers = || {
        futures::stream::iter([
            event(None, json!({ "jsonrpc": "2.0", "id": 4, "result": {} })),
            event(
                Some("e2"),
                json!({ "jsonrpc": "2.0", "id": 3, "result": {} }),
            ),
        ])
        .boxed()
    };
    let resumed: Vec<_> = client
        .guard(answers(), client.resumed(Some("e1")), true, true, None)
        .collect()
        .await;
    assert_eq!(resumed.len(), 1);
    let data = resumed[0].as_ref().unwrap().data.clone().unwrap();
    assert!(data.contains("\"id\":3"), "{data}");
    // The answer passed: nothing is left to resume.
    assert_eq!(client.resumed(Some("e1")), None);
    let unrelated: Vec<_> = client
        .guard(answers(), None, false, false, None)
        .collect()
        .await;
    assert!(unrelated.is_empty());
}

fn exchange_client(issuer: &str) -> UpstreamHttp {
    let client = registry::OAuthClient {
        // Nothing listens here: a mint that was tried would fail, not hang.
        endpoint: registry::TokenEndpoint::Url("http://127.0.0.1:9/token".into()),
        issuer: Some(issuer.into()),
        client_id: "gw".into(),
        auth: registry::ClientAuth::Secret(registry::SecretRef::Env("PORTCULLIS_TEST_NONE".into())),
        audience: Some("api".into()),
        resource: None,
        scope: vec!["read".into()],
        timeout: std::time::Duration::from_millis(500),
    };
    let secrets = Arc::new(crate::secrets::Secrets::new(None).unwrap());
    let own = OwnCredential {
        minter: Arc::new(crate::credentials::Minter::new(secrets)),
        client,
        exchange: true,
    };
    UpstreamHttp::new(reqwest::Client::new(), "s", Some(own))
}

fn message(method: &str) -> ClientJsonRpcMessage {
    let m = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": { "name": "x", "uri": "u://x", "ref": { "type": "ref/prompt", "name": "p" }, "argument": { "name": "a", "value": "v" } } });
    serde_json::from_value(m).unwrap()
}

#[tokio::test]
async fn a_callers_request_to_an_exchange_server_never_goes_without_the_callers_token() {
    let http = exchange_client("https://idp.example.com");
    // Fault injected: the call's minted token is missing. Refused, whatever the method, and
    // the gateway's own token is never put in its place.
    for method in FOR_A_CALLER {
        let refused = http.bearer(Some(&message(method)), None).await;
        assert!(refused.is_err(), "{method}");
    }
    // With the call's token, that token goes, and nothing else.
    let mut m = message("tools/call");
    if let ClientJsonRpcMessage::Request(r) = &mut m {
        r.request
            .extensions_mut()
            .insert(CallCredential(Arc::from("minted-for-the-caller")));
    }
    let sent = http.bearer(Some(&m), Some("given".into())).await.unwrap();
    assert_eq!(sent.as_deref(), Some("minted-for-the-caller"));
    // The connection's own traffic asks for the gateway's token; an authorization server that
    // cannot be reached leaves it unsent (an error), never sent without a credential.
    assert!(
        http.bearer(Some(&message("tools/list")), None)
            .await
            .is_err()
    );
    assert!(http.bearer(None, None).await.is_err());
}
