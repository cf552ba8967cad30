use super::*;
use http::HeaderValue;

#[test]
fn context_comes_from_headers_then_meta_and_goes_into_meta() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(tp));
    let cx = extract(&h, None);
    assert_eq!(
        cx.span().span_context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let params = serde_json::json!({ "_meta": { "traceparent": tp } });
    let cx = extract(&HeaderMap::new(), Some(&params));
    assert!(cx.span().span_context().is_remote());
    let server = server_span(
        &cx,
        "tools/call",
        Some(&serde_json::json!({"name": "fx__echo"})),
        &serde_json::json!(1),
        None,
        "2025-11-25",
    );
    assert_eq!(trace_id(&server), "4bf92f3577b34da6a3ce929d0e0e4736");
    let _guard = server.clone().attach();
    let mut p = Some(serde_json::json!({ "name": "echo" }));
    let client = client_span("fx", Some(("127.0.0.1", 9)), "tools/call", &mut p);
    let sent = p.unwrap()["_meta"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert_eq!(trace_id(&client), "4bf92f3577b34da6a3ce929d0e0e4736");
    // A malformed header starts a new trace rather than failing the request.
    let mut bad = HeaderMap::new();
    bad.insert("traceparent", HeaderValue::from_static("00-zz-00-01"));
    assert!(!extract(&bad, None).span().span_context().is_valid());
}
