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
        .guard(post, Some(json!(3)), true, false)
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
        .guard(answers(), client.resumed(Some("e1")), true, true)
        .collect()
        .await;
    assert_eq!(resumed.len(), 1);
    let data = resumed[0].as_ref().unwrap().data.clone().unwrap();
    assert!(data.contains("\"id\":3"), "{data}");
    // The answer passed: nothing is left to resume.
    assert_eq!(client.resumed(Some("e1")), None);
    let unrelated: Vec<_> = client.guard(answers(), None, false, false).collect().await;
    assert!(unrelated.is_empty());
}
