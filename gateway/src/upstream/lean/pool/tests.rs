//! The connection stack against a local HTTP/1.1 endpoint that counts the connections it was
//! given and closes, and answers with the request's `Host` and target.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use super::super::{LeanHttp, tls};
use super::{IDLE, Kept};

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// An endpoint on 127.0.0.1 answering `host target`, the head at once and the body after
/// `delay`, or 300 ms for `/slow` (the connection is busy meanwhile), or nothing with a length of
/// 0 for `/empty` (an accepted notification's answer), or at once with its length for `/fixed`
/// (as a JSON answer comes); with `close_idle`, it closes
/// each connection that far after its first answer (an upstream's idle timeout).
async fn endpoint(delay: Duration, close_idle: Option<Duration>) -> (SocketAddr, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.opened.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(move |req: http::Request<_>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    if req.uri().path() == "/empty" {
                        return Ok(http::Response::new(Full::new(Bytes::new()).boxed()));
                    }
                    let text = format!("{host} {}", req.uri());
                    if req.uri().path() == "/fixed" {
                        return Ok(http::Response::new(Full::new(Bytes::from(text)).boxed()));
                    }
                    let delay = match req.uri().path() {
                        "/slow" => Duration::from_millis(300),
                        _ => delay,
                    };
                    let body = futures::stream::once(async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(text)))
                    });
                    Ok::<_, Infallible>(http::Response::new(
                        http_body_util::StreamBody::new(body).boxed(),
                    ))
                });
                let serving = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), answer);
                match close_idle {
                    Some(after) => {
                        let _ = tokio::time::timeout(after, serving).await;
                    }
                    None => {
                        let _ = serving.await;
                    }
                }
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn client(addr: SocketAddr) -> LeanHttp {
    LeanHttp::new(vec![addr], http::HeaderMap::new(), tls(false).unwrap()).unwrap()
}

async fn get(lean: &LeanHttp, url: &str) -> String {
    let response = sent(lean, http::Method::GET, url, b"").await;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A request of `method` to `url` with `body`, sent on `lean`: its response, the body unread.
async fn sent(
    lean: &LeanHttp,
    method: http::Method,
    url: &str,
    body: &'static [u8],
) -> http::Response<super::Body> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    lean.send(req).await.unwrap_or_else(|e| panic!("{}", e.why))
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection_sent_in_origin_form_with_the_host() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/mcp?x=1", addr.port());
    for _ in 0..5 {
        assert_eq!(
            get(&lean, &url).await,
            format!("127.0.0.1:{} /mcp?x=1", addr.port())
        );
    }
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    assert_eq!(lean.pool.kept(), 1);
    // A name and a default port: the name alone (the connection still goes to the address).
    let named = client(addr);
    let req = http::Request::get("http://upstream.example/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(named.host(req.uri()).unwrap(), "upstream.example");
}

#[tokio::test]
async fn calls_at_once_open_a_connection_each_and_the_next_ones_reuse_them() {
    let (addr, counts) = endpoint(Duration::from_millis(100), None).await;
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/", addr.port());
    for _ in 0..2 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (lean, url) = (lean.clone(), url.clone());
                tokio::spawn(async move { get(&lean, &url).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
    }
    assert_eq!(counts.opened.load(Ordering::SeqCst), 4);
    assert_eq!(lean.pool.kept(), 4);
}

#[tokio::test]
async fn a_connection_free_for_longer_than_the_idle_time_is_closed() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/", addr.port());
    get(&lean, &url).await;
    // Not yet idle long enough: kept.
    lean.pool.reap(Instant::now() + IDLE / 2);
    assert_eq!(lean.pool.kept(), 1);
    lean.pool
        .reap(Instant::now() + IDLE + Duration::from_secs(1));
    assert_eq!(lean.pool.kept(), 0);
    until("the idle connection was never closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    // The next call makes a new one.
    get(&lean, &url).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_is_kept_once_its_answer_has_ended_and_is_idle_from_then() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/slow", addr.port());
    // The head came; the body takes 300 ms: the connection is not on the stack meanwhile.
    let response = sent(&lean, http::Method::GET, &url, b"").await;
    assert_eq!(
        lean.pool.kept(),
        0,
        "a connection was kept while its answer was read"
    );
    drop(response.into_body().collect().await.unwrap());
    assert_eq!(lean.pool.kept(), 1);
    // Idle since the body's end, not since the head: 300 ms more would reap it counted from there.
    lean.pool
        .reap(Instant::now() + IDLE - Duration::from_millis(100));
    assert_eq!(lean.pool.kept(), 1, "reaped before it was idle for IDLE");
    get(&lean, &format!("http://127.0.0.1:{}/", addr.port())).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_whose_answer_was_dropped_unread_is_closed() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", addr.port());
    let response = sent(&lean, http::Method::GET, &at("/slow"), b"").await;
    drop(response);
    assert_eq!(lean.pool.kept(), 0);
    get(&lean, &at("/")).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
    until("the abandoned connection was never closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(lean.pool.kept(), 1);
}

#[tokio::test]
async fn a_connection_whose_empty_answer_nobody_read_is_kept() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", addr.port());
    let response = sent(&lean, http::Method::POST, &at("/empty"), b"{}").await;
    drop(response);
    assert_eq!(
        lean.pool.kept(),
        1,
        "the connection of an empty answer was given up"
    );
    get(&lean, &at("/")).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_whose_answer_of_known_length_was_read_to_its_last_byte_is_kept() {
    use hyper::body::Body as _;
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", addr.port());
    let response = sent(&lean, http::Method::GET, &at("/fixed"), b"").await;
    let mut body = response.into_body();
    let length = body.size_hint().exact().unwrap();
    let mut read = 0;
    while read < length {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.into_data().unwrap().len() as u64;
    }
    // Dropped without the poll that would say it ended.
    drop(body);
    assert_eq!(
        lean.pool.kept(),
        1,
        "the connection of a finished answer was given up"
    );
    get(&lean, &at("/")).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

/// An HTTP/1.1 endpoint on a thread of its own, whose connections each answer one request with
/// keep-alive and are then closed when `close` says so (`closed` answers once it is). Its
/// address, and the requests each connection read.
fn closing_endpoint(
    close: std::sync::mpsc::Receiver<()>,
    closed: std::sync::mpsc::Sender<()>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<usize>>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = read.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            seen.lock().unwrap().push(0);
            // One request head (the requests here have no body), answered.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            if let Some(n) = seen.lock().unwrap().last_mut() {
                *n += 1;
            }
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            if close.recv().is_err() {
                return;
            }
            drop(tcp);
            let _ = closed.send(());
        }
    });
    (addr, read)
}

/// The upstream closed a kept connection: the reaper hears of it and closes it at once, long
/// before it would be idle too long; one the reaper could not see (off the stack meanwhile) is
/// seen closed by the call that takes it, before sending. A connection has no task of its own:
/// only the reaper is spawned.
#[tokio::test(flavor = "current_thread")]
async fn a_kept_connection_the_upstream_closed_is_closed_at_once_and_never_sent_on() {
    let (close, closing) = std::sync::mpsc::channel();
    let (closed, was_closed) = std::sync::mpsc::channel();
    let (addr, read) = closing_endpoint(closing, closed);
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/", addr.port());
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    assert_eq!(get(&lean, &url).await, "ok");
    assert_eq!(tasks(), before + 1, "tasks besides the reaper");
    let close_upstream = || {
        close.send(()).unwrap();
        was_closed.recv().unwrap();
    };
    close_upstream();
    until("the reaper never closed the connection", || {
        lean.pool.kept() == 0
    })
    .await;
    assert_eq!(get(&lean, &url).await, "ok");
    assert_eq!(
        *read.lock().unwrap(),
        vec![1, 1],
        "requests read per connection"
    );
    // Off the stack while the upstream closes it and the runtime turns its I/O driver once
    // (which runs nothing else on this one worker), then back on it.
    let kept = lean.pool.inner.lock().pop().unwrap();
    close_upstream();
    std::thread::sleep(Duration::from_millis(50));
    tokio::task::yield_now().await;
    lean.pool.inner.lock().push(kept);
    assert_eq!(get(&lean, &url).await, "ok");
    assert_eq!(*read.lock().unwrap(), vec![1, 1, 1]);
    assert_eq!(lean.pool.kept(), 1);
    assert_eq!(tasks(), before + 1);
}

/// A connection on the stack that hyper is not yet ready to send on (put there by hand while
/// its answer's body is unread) is passed over, not closed, and a call goes on another.
#[tokio::test]
async fn a_call_passes_over_a_connection_not_yet_free() {
    let (addr, counts) = endpoint(Duration::ZERO, None).await;
    let lean = client(addr);
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", addr.port());
    let mut slow = sent(&lean, http::Method::GET, &at("/slow"), b"")
        .await
        .into_body();
    let (pool, conn) = slow.conn.take().unwrap();
    pool.inner.lock().push(Kept {
        conn,
        since: Instant::now(),
    });
    get(&lean, &at("/")).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
    assert_eq!(
        lean.pool.kept(),
        2,
        "the connection not yet free was given up"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0);
}

/// A connection that has seen its close before a request is handed to it gives the request
/// back unsent (what `LeanHttp::send` then sends on another connection): nothing was written.
#[tokio::test(flavor = "current_thread")]
async fn a_request_a_closed_connection_could_not_take_comes_back_unsent() {
    let (close, closing) = std::sync::mpsc::channel();
    let (closed, was_closed) = std::sync::mpsc::channel();
    let (addr, read) = closing_endpoint(closing, closed);
    let lean = client(addr);
    let url = format!("http://127.0.0.1:{}/", addr.port());
    assert_eq!(get(&lean, &url).await, "ok");
    // Taken off the stack without the look `take` gives it.
    let mut conn = lean.pool.inner.lock().pop().unwrap().conn;
    close.send(()).unwrap();
    was_closed.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tokio::task::yield_now().await;
    let req = http::Request::get("/")
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap();
    let mut e = conn.exchange(req).await.unwrap_err();
    assert!(e.take_message().is_some(), "sent: {}", e.error());
    assert_eq!(*read.lock().unwrap(), vec![1]);
}
