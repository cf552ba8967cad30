//! The server's own bounds on an answer (its size and its nesting), and a request that never
//! left.

use super::*;

#[tokio::test]
async fn the_servers_own_bounds_hold_for_json_and_sse_answers() {
    let deep = |id: u64| {
        let mut nested = json!("bottom");
        for _ in 0..10 {
            nested = json!([nested]);
        }
        json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [], "structuredContent": { "n": nested } } })
    };
    let bounded = |mut r: Request<'static>| {
        r.max_response = 4096;
        r.max_depth = 8;
        r
    };
    // Nested past the bound: as a JSON body, and as an SSE event.
    let json_deep: Reply = Arc::new(move |id| json_reply(200, deep(id)));
    let sse_deep: Reply = Arc::new(move |id| sse_reply(vec![deep(id)], Duration::ZERO, None));
    for reply in [json_deep, sse_deep] {
        let (url, _) = upstream(reply).await;
        let up = leg(&url);
        let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
        let failed = up
            .direct
            .send(bounded(request), "up", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&failed, Failure::Exceeded(why) if why.contains("nested deeper than 8")),
            "{failed:?}"
        );
    }
    // Larger than the server's `max_response`, though far under the default.
    let big: Reply = Arc::new(|id| {
        json_reply(
            200,
            json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": "x".repeat(5000) }] } }),
        )
    });
    let (url, _) = upstream(big).await;
    let up = leg(&url);
    let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
    let failed = up
        .direct
        .send(bounded(request), "up", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, Failure::Exceeded(why) if why.contains("over 4096 bytes")),
        "{failed:?}"
    );
    // Within both bounds, the same leg answers.
    let (url, _) = upstream(Arc::new(|id| json_reply(200, result(id)))).await;
    let up = leg(&url);
    let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
    up.direct.send(bounded(request), "up", &[]).await.unwrap();
}

#[tokio::test]
async fn a_request_no_connection_could_be_made_for_is_told_apart() {
    // Nothing listens there: the request never left, so it may go elsewhere, write or not.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", closed.local_addr().unwrap());
    drop(closed);
    let up = leg(&url);
    let (request, _) = call(Duration::from_secs(5), Duration::from_secs(5));
    let failed = up.direct.send(request, "up", &[]).await.unwrap_err();
    assert!(matches!(failed, Failure::Unreached(_)), "{failed:?}");
}
