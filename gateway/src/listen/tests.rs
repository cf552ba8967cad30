use super::*;

#[test]
fn the_open_file_limit_is_read_from_proc() {
    let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
    assert_eq!(open_files_limit(text), Some(1024));
    assert_eq!(
        open_files_limit("Max open files unlimited unlimited files"),
        None
    );
}

#[tokio::test]
async fn a_body_is_read_within_its_limit_and_deadline() {
    use axum::body::Body;
    let ok = read_body(Body::from("abc"), 3, Duration::from_secs(1)).await;
    assert_eq!(ok.unwrap().as_ref(), b"abc");
    let big = read_body(Body::from("abcd"), 3, Duration::from_secs(1)).await;
    assert_eq!(big, Err(BodyError::TooLarge));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let slow = read_body(Body::from_stream(stream), 3, Duration::from_millis(100));
    let _sender = tx;
    assert_eq!(slow.await, Err(BodyError::Slow));
}

#[test]
fn a_peer_holds_at_most_its_cap_and_frees_it_on_close() {
    let peers = Arc::new(Peers::default());
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let a = peers.admit(ip, 2).unwrap();
    let _b = peers.admit(ip, 2).unwrap();
    assert!(peers.admit(ip, 2).is_none());
    assert!(peers.admit("127.0.0.1".parse().unwrap(), 2).is_some());
    drop(a);
    assert!(peers.admit(ip, 2).is_some());
}

/// Whether `path` on `addr` answers 200 on a connection of its own (one the server closes at
/// once, over a cap, does not).
async fn answered(addr: SocketAddr, path: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    matches!(read, Ok(Ok(_))) && got.starts_with(b"HTTP/1.1 200")
}

/// Polls `answered(addr, "/small")` until it reads `want`, for up to 10 s: when it did.
async fn until_answered(addr: SocketAddr, want: bool) -> Option<std::time::Instant> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if answered(addr, "/small").await == want {
            return Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

// One thread: the probe's connection has closed, and given back the peer's place, before the
// next connection is accepted.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_that_stops_reading_loses_its_connection_and_its_place_under_the_cap() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const BIG: usize = 64 << 20; // far more than both ends' socket buffers hold
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
    let big = axum::body::Bytes::from(vec![b'x'; BIG]);
    let app = Router::new()
        .route(
            "/big",
            axum::routing::get(move || std::future::ready(big.clone())),
        )
        .route("/small", axum::routing::get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bounds = Bounds {
        max_connections: 8,
        per_peer: 1,
        header_timeout: Duration::from_secs(30),
        write_timeout: WRITE_TIMEOUT,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, bounds, "test", async {
        let _ = stopped.await;
    }));
    assert!(answered(addr, "/small").await);

    // A caller with a small receive buffer asks for the big answer and reads none of it: the
    // connection holds the peer's one place while the write waits...
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    until_answered(addr, false)
        .await
        .expect("the peer's place is held");
    // ...and once the write has made no progress for the timeout, the connection ends and the
    // place is free again.
    let freed = until_answered(addr, true)
        .await
        .expect("the place came back");
    assert!(freed - asked >= WRITE_TIMEOUT, "{:?}", freed - asked);
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!(
        got.len() < BIG,
        "the answer was cut off: {} bytes",
        got.len()
    );
    let _ = stop.send(());
    server.await.unwrap();
}
