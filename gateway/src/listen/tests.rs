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
