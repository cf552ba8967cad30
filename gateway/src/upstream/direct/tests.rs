//! The lean leg against a scripted HTTP upstream on loopback (an axum server written here, so
//! every byte of its answers is under the test's control).

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::broadcast;

use super::read::{Event, classify, still_open};

const MAX_ANSWER: usize = registry::DEFAULT_MAX_RESPONSE;
use super::*;

type Reply = Arc<dyn Fn(u64) -> Response + Send + Sync>;

#[derive(Default)]
struct Seen {
    requests: Vec<(HeaderMap, Value)>,
    /// `Last-Event-ID` of each GET.
    resumed: Vec<String>,
}

/// An upstream answering every POST with `reply(id of the request)`, recording what it got.
async fn upstream(reply: Reply) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let resumed = seen.clone();
    let again = reply.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (log, reply) = (log.clone(), reply.clone());
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap();
                let id = body["id"].as_u64().filter(|_| body.get("method").is_some());
                log.lock().unwrap().requests.push((headers, body));
                match id {
                    Some(id) => reply(id),
                    // A notification, or an answer to the upstream's own request.
                    None => Response::builder().status(202).body(Body::empty()).unwrap(),
                }
            }
        })
        // A GET resumes the last request's stream: `reply` is asked with the id's complement.
        .get(move |headers: HeaderMap| {
            let (log, reply) = (resumed.clone(), again.clone());
            async move {
                let mut log = log.lock().unwrap();
                let last = headers["last-event-id"].to_str().unwrap().to_string();
                log.resumed.push(last);
                let id = log.requests.last().unwrap().1["id"].as_u64().unwrap();
                reply(!id)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

fn json_reply(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// An SSE answer of `body` as it is.
fn sse_text(body: String) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

/// An SSE answer of `events` (each a JSON-RPC message), `gap` apart; `forever` keeps it open.
fn sse_reply(events: Vec<Value>, gap: Duration, dropped: Option<Arc<AtomicBool>>) -> Response {
    struct OnDrop(Option<Arc<AtomicBool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(f) = &self.0 {
                f.store(true, Ordering::SeqCst);
            }
        }
    }
    let guard = OnDrop(dropped);
    let stream = futures::stream::unfold((0usize, guard), move |(n, guard)| {
        let events = events.clone();
        async move {
            if n > 0 {
                tokio::time::sleep(gap).await;
            }
            let event = match events.get(n) {
                Some(e) => format!("data: {e}\n\n"),
                // Past the scripted events: a comment now and then, never an end.
                None if guard.0.is_some() => ": waiting\n\n".to_string(),
                None => return None,
            };
            Some((Ok::<_, std::io::Error>(Bytes::from(event)), (n + 1, guard)))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

struct Leg {
    direct: Direct,
    refresh: mpsc::UnboundedReceiver<()>,
}

fn leg(url: &str) -> Leg {
    leg_of(url, false)
}

/// The lean leg of an `initialize`-era connection, in session `sess-1`.
fn legacy_leg(url: &str) -> Leg {
    leg_of(url, true)
}

fn leg_of(url: &str, legacy: bool) -> Leg {
    let (refresh, refreshed) = mpsc::unbounded_channel();
    let handler = super::super::handler::UpstreamHandler {
        server: "up".into(),
        progress: Arc::default(),
        events: broadcast::channel(8).0,
        refresh,
        relay: None,
        secrets: Arc::default(),
        pinning: false,
    };
    let http = UpstreamHttp::new(reqwest::Client::new(), "up", None);
    if legacy {
        http.saw_session(Some(&Arc::from("sess-1")));
    }
    let lean = crate::upstream::lean::LeanHttp::new(
        Vec::new(),
        http::HeaderMap::new(),
        crate::upstream::lean::tls(false).unwrap(),
    )
    .unwrap();
    let direct = Direct::new(
        http,
        lean,
        handler,
        url,
        if legacy { "2025-11-25" } else { "2026-07-28" },
        json!({ "name": "portcullis", "version": "1" }),
        json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } }),
        legacy,
    );
    Leg {
        direct,
        refresh: refreshed,
    }
}

fn call(timeout: Duration, max: Duration) -> (Request<'static>, mpsc::UnboundedReceiver<Value>) {
    let (sink, progress) = mpsc::unbounded_channel();
    let request = Request {
        id: None,
        method: "tools/call",
        params: json!({
            "name": "zoé",
            "arguments": { "region": "eu" },
            "_meta": { "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
        }),
        capabilities: Some(json!({ "sampling": {} })),
        credential: Some(Arc::from("minted-token")),
        progress: Some((json!("caller-token"), sink)),
        param_headers: vec![(
            http::HeaderName::from_static("mcp-param-region"),
            "eu".into(),
        )],
        cancel: CancellationToken::new(),
        timeout,
        max_timeout: max,
        max_response: MAX_ANSWER,
        max_depth: registry::DEFAULT_MAX_RESPONSE_DEPTH,
        wake: Arc::default(),
    };
    (request, progress)
}

fn result(id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [] } })
}

#[tokio::test]
async fn a_request_carries_what_rmcps_client_sends_and_its_json_answer_is_read() {
    let (url, seen) = upstream(Arc::new(|id| json_reply(200, result(id)))).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_secs(5), Duration::from_secs(5));
    let answer = leg.direct.send(request, "up", &[]).await.unwrap();
    assert_eq!(answer, json!({ "content": [] }));
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen.requests[0];
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    assert_eq!(header("mcp-protocol-version"), "2026-07-28");
    assert_eq!(header("mcp-method"), "tools/call");
    // Not visible ASCII: sent as Base64.
    assert_eq!(header("mcp-name"), "=?base64?em/DqQ==?=");
    assert_eq!(header("mcp-param-region"), "eu");
    assert_eq!(header("authorization"), "Bearer minted-token");
    assert!(header("accept").contains("text/event-stream"));
    assert!(header("traceparent").starts_with("00-0af7651916cd43dd"));
    let meta = &body["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"]["name"],
        "portcullis"
    );
    // The request's own capabilities replace the connection's.
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        json!({ "sampling": {} })
    );
    assert_eq!(meta["progressToken"], body["id"]);
    assert_eq!(body["params"]["arguments"], json!({ "region": "eu" }));
}

#[tokio::test]
async fn a_stream_relays_its_own_progress_acts_on_list_changes_and_drops_foreign_answers() {
    let reply: Reply = Arc::new(|id| {
        let progress = |token: u64| {
            json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                    "params": { "progressToken": token, "progress": 1, "message": "half" } })
        };
        sse_reply(
            vec![
                progress(id),
                // Another request's progress and answer: not this caller's.
                progress(id + 7),
                json!({ "jsonrpc": "2.0", "id": id + 7, "result": { "content": [{ "type": "text", "text": "not yours" }] } }),
                json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed" }),
                json!({ "jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {} }),
                result(id),
            ],
            Duration::from_millis(5),
            None,
        )
    });
    let (url, _) = upstream(reply).await;
    let mut leg = leg(&url);
    let (request, mut progress) = call(Duration::from_secs(5), Duration::from_secs(5));
    let answer = leg.direct.send(request, "up", &[]).await.unwrap();
    assert_eq!(answer, json!({ "content": [] }));
    let relayed = progress.try_recv().unwrap();
    assert_eq!(relayed["method"], "notifications/progress");
    assert_eq!(relayed["params"]["progressToken"], "caller-token");
    assert_eq!(relayed["params"]["message"], "half");
    assert!(
        progress.try_recv().is_err(),
        "another request's progress was relayed"
    );
    assert!(
        leg.refresh.try_recv().is_ok(),
        "the list change was not acted on"
    );
}

#[tokio::test]
async fn http_errors_keep_their_status_unless_they_carry_the_requests_error() {
    let reply: Reply = Arc::new(|id| match id % 5 {
        0 => json_reply(
            400,
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32020, "message": "header mismatch" } }),
        ),
        // Not this request's: the HTTP error.
        1 => json_reply(
            400,
            json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32600, "message": "bad" } }),
        ),
        // An authorization failure keeps its status, whatever its body says.
        2 => json_reply(
            401,
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32001, "message": "who?" } }),
        ),
        3 => json_reply(200, result(id + 1)),
        _ => json_reply(200, json!([id, null, { "content": [] }])),
    });
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    for _ in 0..5 {
        let (request, _) = call(Duration::from_secs(5), Duration::from_secs(5));
        let id = leg.direct.next.load(Ordering::Relaxed);
        let outcome = leg.direct.send(request, "up", &[]).await.unwrap_err();
        match id % 5 {
            0 => assert!(
                matches!(&outcome, Failure::Rpc(e) if e["code"] == -32020),
                "{outcome:?}"
            ),
            1 => assert!(matches!(outcome, Failure::Status(400)), "{outcome:?}"),
            2 => assert!(matches!(outcome, Failure::Status(401)), "{outcome:?}"),
            _ => assert!(matches!(outcome, Failure::Unreadable(_)), "{outcome:?}"),
        }
    }
}

#[tokio::test]
async fn a_broken_stream_is_resumed_from_its_last_event_and_members_no_request_has_stay_here() {
    // The POST's stream gives an event with an id, then breaks; the GET gives the answer.
    let reply: Reply = Arc::new(|id| {
        let body = match id > u64::MAX / 2 {
            false => format!(
                "id: ev-1\ndata: {}\n\n",
                json!({ "jsonrpc": "2.0", "method": "notifications/message", "params": {} })
            ),
            true => format!("id: ev-2\ndata: {}\n\n", result(!id)),
        };
        sse_text(body)
    });
    let (url, seen) = upstream(reply).await;
    let leg = leg(&url);
    let (mut request, _) = call(Duration::from_secs(5), Duration::from_secs(5));
    request.params["sneaky"] = json!("not in any request");
    let answer = leg.direct.send(request, "up", &[]).await.unwrap();
    assert_eq!(answer, json!({ "content": [] }));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.resumed, ["ev-1"]);
    assert!(seen.requests[0].1["params"].get("sneaky").is_none());
}

#[tokio::test]
async fn progress_extends_the_deadline_only_up_to_the_maximum() {
    let reply: Reply = Arc::new(|id| {
        let progress = json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                               "params": { "progressToken": id, "progress": 1 } });
        sse_reply(
            vec![progress; 100],
            Duration::from_millis(100),
            Some(Arc::default()),
        )
    });
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    let started = std::time::Instant::now();
    let (request, _) = call(Duration::from_millis(400), Duration::from_millis(1200));
    let failed = leg.direct.send(request, "up", &[]).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(failed, Failure::Timeout(_)), "{failed:?}");
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // Without an extension, the timeout is the deadline.
    let started = std::time::Instant::now();
    let (request, _) = call(Duration::from_millis(400), Duration::from_millis(400));
    assert!(matches!(
        leg.direct.send(request, "up", &[]).await,
        Err(Failure::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn a_cancelled_call_closes_its_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let reply: Reply =
        Arc::new(move |_| sse_reply(Vec::new(), Duration::from_millis(50), Some(flag.clone())));
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_secs(30), Duration::from_secs(30));
    let cancel = request.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let failed = leg.direct.send(request, "up", &[]).await.unwrap_err();
    assert!(matches!(failed, Failure::Cancelled), "{failed:?}");
    // Closing the stream is how the upstream learns of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream's stream stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_answer_past_the_bound_is_refused() {
    let reply: Reply = Arc::new(|id| {
        let big = "x".repeat(MAX_ANSWER);
        json_reply(
            200,
            json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": big }] } }),
        )
    });
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
    let failed = leg.direct.send(request, "up", &[]).await.unwrap_err();
    assert!(
        matches!(&failed, Failure::Exceeded(why) if why.contains("over 16777216 bytes")),
        "{failed:?}"
    );
}

#[tokio::test]
async fn in_the_initialize_era_a_request_goes_in_the_session_and_the_upstreams_requests_are_answered()
 {
    let reply: Reply = Arc::new(|id| {
        sse_reply(
            vec![
                json!({ "jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {} }),
                json!({ "jsonrpc": "2.0", "id": "s2", "method": "roots/list" }),
                result(id),
            ],
            Duration::from_millis(20),
            None,
        )
    });
    let (url, seen) = upstream(reply).await;
    let leg = legacy_leg(&url);
    let (request, _) = call(Duration::from_secs(5), Duration::from_secs(5));
    leg.direct.send(request, "up", &[]).await.unwrap();
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen.requests[0];
    assert_eq!(headers["mcp-session-id"], "sess-1");
    assert_eq!(headers["mcp-protocol-version"], "2025-11-25");
    assert!(headers.get("mcp-method").is_none() && headers.get("mcp-param-region").is_none());
    let meta = body["params"]["_meta"].as_object().unwrap();
    assert!(!meta.contains_key("io.modelcontextprotocol/clientCapabilities"));
    assert_eq!(meta["progressToken"], body["id"]);
    // The upstream's requests were answered in the session: sampling refused, no roots.
    let answers: Vec<&Value> = seen.requests[1..].iter().map(|(_, b)| b).collect();
    let to = |id: &str| answers.iter().find(|a| a["id"] == id).copied().unwrap();
    assert_eq!(to("s1")["error"]["code"], -32601);
    assert_eq!(to("s2")["result"], json!({ "roots": [] }));
    assert!(
        seen.requests[1..]
            .iter()
            .all(|(h, _)| h["mcp-session-id"] == "sess-1")
    );
}

#[tokio::test]
async fn in_the_initialize_era_a_cancelled_call_is_told_and_a_forgotten_session_is_named() {
    let reply: Reply = Arc::new(|id| match id % 2 {
        0 => Response::builder().status(404).body(Body::empty()).unwrap(),
        _ => sse_reply(Vec::new(), Duration::from_millis(50), Some(Arc::default())),
    });
    let (url, seen) = upstream(reply).await;
    let leg = legacy_leg(&url);
    for _ in 0..2 {
        let id = leg.direct.next.load(Ordering::Relaxed);
        let (request, _) = call(Duration::from_secs(30), Duration::from_secs(30));
        let cancel = request.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let outcome = leg.direct.send(request, "up", &[]).await.unwrap_err();
        match id % 2 {
            0 => assert!(matches!(outcome, Failure::SessionExpired), "{outcome:?}"),
            _ => {
                assert!(matches!(outcome, Failure::Cancelled), "{outcome:?}");
                // Told on its own, moments later.
                let deadline = std::time::Instant::now() + Duration::from_secs(3);
                loop {
                    let told = seen.lock().unwrap().requests.last().map(|(_, b)| b.clone());
                    if let Some(told) = told.filter(|t| t["method"] == "notifications/cancelled") {
                        assert_eq!(told["params"]["requestId"], id);
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the upstream was not told"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_stream_that_keeps_breaking_but_delivers_is_resumed_each_time() {
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = gets.clone();
    let reply: Reply = Arc::new(move |id| {
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/message", "params": {} });
        let body = match id > u64::MAX / 2 {
            false => format!("retry: 10\nid: ev-0\ndata: {note}\n\n"),
            true => match count.fetch_add(1, Ordering::SeqCst) {
                // More breaks than a count that never started again would allow.
                n if n < 8 => format!("id: ev-{}\ndata: {note}\n\n", n + 1),
                _ => format!("id: ev-last\ndata: {}\n\n", result(!id)),
            },
        };
        sse_text(body)
    });
    let (url, seen) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
    leg.direct.send(request, "up", &[]).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.resumed.len(), 9);
    assert_eq!(seen.resumed[..3], ["ev-0", "ev-1", "ev-2"]);
}

#[tokio::test]
async fn an_event_past_the_bound_ends_the_call_without_resuming() {
    let reply: Reply = Arc::new(|_| {
        let big = "x".repeat(MAX_ANSWER + (1 << 20));
        let body = format!("id: ev-1\ndata: {{}}\n\ndata: {big}\n\n");
        sse_text(body)
    });
    let (url, seen) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_secs(10), Duration::from_secs(10));
    let failed = leg.direct.send(request, "up", &[]).await.unwrap_err();
    assert!(matches!(failed, Failure::Exceeded(_)), "{failed:?}");
    assert!(seen.lock().unwrap().resumed.is_empty());
}

#[tokio::test]
async fn progress_that_comes_elsewhere_extends_the_deadline_too() {
    let reply: Reply =
        Arc::new(|_| sse_reply(Vec::new(), Duration::from_millis(50), Some(Arc::default())));
    let (url, _) = upstream(reply).await;
    let leg = leg(&url);
    let (request, _) = call(Duration::from_millis(400), Duration::from_millis(1200));
    let wake = request.wake.clone();
    let ticking = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.notify_one();
        }
    });
    let started = std::time::Instant::now();
    let failed = leg.direct.send(request, "up", &[]).await.unwrap_err();
    ticking.abort();
    assert!(matches!(failed, Failure::Timeout(_)), "{failed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
}

mod bounds;
mod kept;
mod reading;
