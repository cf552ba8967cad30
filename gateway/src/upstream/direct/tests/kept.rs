//! The leg's connection is kept across calls: given back when the answer's body ends, also when
//! the stream goes on after the answer and is read to its end in the background.

use super::*;

#[tokio::test]
async fn a_json_answer_read_whole_leaves_its_connection_for_the_next_call() {
    let (url, _) = upstream(Arc::new(|id| json_reply(200, result(id)))).await;
    let leg = leg(&url);
    for _ in 0..3 {
        let (request, _progress) = call(Duration::from_secs(5), Duration::from_secs(5));
        leg.direct.send(request, "up", &[]).await.unwrap();
        assert_eq!(leg.direct.lean.kept(), 1);
    }
}

#[tokio::test]
async fn a_stream_going_on_after_its_answer_leaves_its_connection_once_it_ends() {
    let reply: Reply = Arc::new(|id| {
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/message",
                           "params": { "level": "info", "data": "after" } });
        sse_reply(vec![result(id), note], Duration::from_millis(50), None)
    });
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _progress) = call(Duration::from_secs(5), Duration::from_secs(5));
    leg.direct.send(request, "up", &[]).await.unwrap();
    // The answer came first; the stream's end, 50 ms later, is read in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while leg.direct.lean.kept() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection never came back after its stream ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (request, _progress) = call(Duration::from_secs(5), Duration::from_secs(5));
    leg.direct.send(request, "up", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(leg.direct.lean.kept(), 1, "the next call did not reuse it");
}
