use super::*;

fn id(r: &Replay, stream: u64, n: u64) -> String {
    format!("{:x}-{stream}-{n}", r.nonce)
}

async fn collect(s: impl Stream<Item = Sent>) -> Vec<String> {
    s.map(|(id, d)| format!("{id}={d}")).collect().await
}

#[tokio::test]
async fn a_resumed_stream_gets_what_followed_its_last_event_then_the_rest() {
    let r = Arc::new(Replay::default());
    let s = r.open();
    r.push(s, "a".into(), false);
    r.push(s, "b".into(), false);
    assert!(r.resume(&id(&r, 9, 0)).is_none());
    assert!(r.resume("junk").is_none());
    // Another holder of the session (a replica, or after a release) has another nonce.
    let other = Replay::default();
    assert!(other.resume(&id(&r, s, 0)).is_none());
    let reader = tokio::spawn(collect(r.resume(&id(&r, s, 0)).unwrap()));
    tokio::task::yield_now().await;
    r.push(s, "c".into(), true);
    let got = reader.await.unwrap();
    assert_eq!(
        got,
        vec![format!("{}=b", id(&r, s, 1)), format!("{}=c", id(&r, s, 2))]
    );
}

#[tokio::test]
async fn a_reader_keeps_its_answer_when_the_session_lets_it_go() {
    let r = Arc::new(Replay::default());
    let s = r.open();
    r.push(s, "progress".into(), false);
    let reader = tokio::spawn(collect(r.follow(s, None)));
    // Many answers later, the first is the oldest, but it still runs: it is not let go.
    for _ in 0..STREAMS + 4 {
        let t = r.open();
        r.push(t, "done".into(), true);
    }
    assert!(r.resume(&id(&r, s, 0)).is_some());
    r.push(s, "response".into(), true);
    let got = reader.await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].ends_with("=response"));
    // Ended, it is the oldest and goes first; a reader from before still has it all.
    let late = collect(r.follow(s, None));
    for _ in 0..STREAMS {
        let t = r.open();
        r.push(t, "done".into(), true);
    }
    assert!(r.resume(&id(&r, s, 0)).is_none(), "no longer kept");
    assert_eq!(late.await.len(), 2);
}

#[tokio::test]
async fn an_answer_over_the_bytes_loses_interim_messages_never_its_response() {
    let r = Replay::default();
    let s = r.open();
    let big = "x".repeat(BYTES / 2 + 1);
    // A reader from the start that reads nothing until the end.
    let reader = collect(r.follow(s, None));
    r.push(s, big.clone(), false);
    r.push(s, big.clone(), false);
    r.push(s, big.clone(), true);
    // Too large to keep once it ended: not resumable, but its reader skips what went and
    // gets the rest, response included.
    assert!(r.resume(&id(&r, s, 1)).is_none());
    let got = reader.await;
    assert_eq!(got.len(), 2, "the first interim message went");
    assert!(got[0].starts_with(&format!("{}=", id(&r, s, 1))));
    assert!(got[1].starts_with(&format!("{}=", id(&r, s, 2))));
}

#[tokio::test]
async fn an_idle_session_lets_ended_answers_go_on_the_timer() {
    let r = Replay::default();
    let s = r.open();
    r.push(s, "response".into(), true);
    if let Some(log) = r.log(s)
        && let Ok(mut st) = log.state.lock()
    {
        st.ended = Instant::now().checked_sub(KEPT_FOR + Duration::from_secs(1));
    }
    assert!(r.resume(&id(&r, s, 0)).is_some());
    r.tidy();
    assert!(r.resume(&id(&r, s, 0)).is_none());
}

#[tokio::test]
async fn the_standalone_stream_keeps_its_newest_messages_for_a_client_that_reconnects() {
    let r = Arc::new(Replay::default());
    let first = r.standalone(None).unwrap();
    let (g, _reader) = (first.stream, first.reader);
    assert!(first.opened);
    let again = r.standalone(None).unwrap();
    assert_eq!((again.stream, again.opened), (g, false), "one per session");
    assert_eq!(r.last(g), None);
    r.push(g, "a".into(), false);
    r.push(g, "b".into(), false);
    assert_eq!(r.last(g), Some(1));
    // Its ids are told from an answer's, and from another holder's.
    assert_eq!(r.on_standalone(&id(&r, g, 0)), Some(0));
    let answer = r.open();
    assert_eq!(r.on_standalone(&id(&r, answer, 0)), None);
    assert_eq!(Replay::default().on_standalone(&id(&r, g, 0)), None);
    // A reconnect after `a` gets `b`, then what comes, and the stream does not end; one that
    // names no message of this log, or one not sent yet, reads from now.
    let named = r.standalone(Some(&id(&r, g, 0))).unwrap();
    assert_eq!(named.seen, Some(0));
    let answer_id = id(&r, answer, 0);
    for other in [
        None,
        Some(answer_id.as_str()),
        Some("junk"),
        Some(&id(&r, g, 99)),
    ] {
        assert_eq!(r.standalone(other).unwrap().seen, Some(1));
    }
    let mut s = std::pin::pin!(r.follow(g, named.seen));
    assert_eq!(s.next().await.unwrap().1.as_ref(), "b");
    r.push(g, "c".into(), false);
    assert_eq!(s.next().await.unwrap().1.as_ref(), "c");
    let more = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
    assert!(more.is_err(), "a standalone stream never ends by itself");
    // Bounded: a long absence loses the oldest messages, never the newest.
    let big = "x".repeat(64 << 10);
    for _ in 0..8 {
        r.push(g, big.clone(), false);
    }
    r.push(g, "newest".into(), false);
    let kept = r.log(g).unwrap();
    let bytes = kept.state.lock().unwrap().bytes;
    assert!(bytes <= STANDALONE_BYTES, "{bytes}");
    let mut s = std::pin::pin!(r.follow(g, Some(0)));
    let mut last = String::new();
    while let Ok(Some((_, d))) = tokio::time::timeout(Duration::from_millis(50), s.next()).await {
        last = d.to_string();
    }
    assert_eq!(last, "newest");
}

#[test]
fn an_unread_standalone_stream_is_let_go() {
    let r = Arc::new(Replay::default());
    let opened = r.standalone(None).unwrap();
    let (g, reader) = (opened.stream, opened.reader);
    r.push(g, "a".into(), false);
    // Read now: kept, whatever the wait.
    assert!(!r.let_go_if_unread(Duration::ZERO));
    let later = r.standalone(None).unwrap().reader;
    drop(reader);
    assert!(
        !r.let_go_if_unread(Duration::ZERO),
        "one GET still reads it"
    );
    drop(later);
    assert!(
        !r.let_go_if_unread(Duration::from_secs(60)),
        "not unread long enough"
    );
    assert!(r.let_go_if_unread(Duration::ZERO));
    assert!(r.log(g).is_none());
    assert_eq!(r.on_standalone(&id(&r, g, 0)), None);
    // A later GET opens a new one.
    let fresh = r.standalone(Some(&id(&r, g, 0))).unwrap();
    assert!(fresh.opened && fresh.stream != g);
    assert_eq!(
        fresh.seen, None,
        "an id of the log let go names nothing in the new one"
    );
}

#[tokio::test]
async fn each_reader_gets_the_server_a_message_concerns_to_filter_by() {
    let r = Arc::new(Replay::default());
    let g = r.standalone(None).unwrap();
    r.push_tagged(g.stream, "tools changed".into(), Some(Arc::from("fx")));
    r.push_tagged(g.stream, "for everyone".into(), None);
    let mut s = std::pin::pin!(r.follow_tagged(g.stream, None));
    let ((_, data), tag) = s.next().await.unwrap();
    assert_eq!(
        (data.as_ref(), tag.as_deref()),
        ("tools changed", Some("fx"))
    );
    let ((_, data), tag) = s.next().await.unwrap();
    assert_eq!((data.as_ref(), tag), ("for everyone", None));
}
