use super::*;

fn id(r: &Replay, stream: u64, n: u64) -> String {
    format!("{:x}-{stream}-{n}", r.nonce)
}

async fn read(s: impl Stream<Item = Sent>) -> Vec<String> {
    s.map(|(id, d)| format!("{id}={d}")).collect().await
}

#[tokio::test]
async fn a_resumed_stream_gets_what_followed_its_last_event_then_the_rest() {
    let r = Arc::new(Replay::default());
    let s = r.open();
    r.push(s, "a".into(), false);
    r.push(s, "b".into(), false);
    assert_eq!(r.resumes(&id(&r, s, 0)), Some((s, 0)));
    assert_eq!(r.resumes(&id(&r, 9, 0)), None);
    assert_eq!(r.resumes("junk"), None);
    // Another holder of the session (a replica, or after a release) has another nonce.
    let other = Replay::default();
    assert_eq!(other.resumes(&id(&r, s, 0)), None);
    let reader = tokio::spawn(read(r.follow(s, Some(0))));
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
    let reader = tokio::spawn(read(r.follow(s, None)));
    // Many answers later, the first is the oldest, but it still runs: it is not let go.
    for _ in 0..STREAMS + 4 {
        let t = r.open();
        r.push(t, "done".into(), true);
    }
    assert!(r.resumes(&id(&r, s, 0)).is_some());
    r.push(s, "response".into(), true);
    let got = reader.await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].ends_with("=response"));
    // Ended, it is the oldest and goes first; a reader from before still has it all.
    let late = read(r.follow(s, None));
    for _ in 0..STREAMS {
        let t = r.open();
        r.push(t, "done".into(), true);
    }
    assert_eq!(r.resumes(&id(&r, s, 0)), None, "no longer kept");
    assert_eq!(late.await.len(), 2);
}

#[tokio::test]
async fn an_answer_over_the_bytes_loses_interim_messages_never_its_response() {
    let r = Replay::default();
    let s = r.open();
    let big = "x".repeat(BYTES / 2 + 1);
    // A reader from the start that reads nothing until the end.
    let reader = read(r.follow(s, None));
    r.push(s, big.clone(), false);
    r.push(s, big.clone(), false);
    r.push(s, big.clone(), true);
    // Too large to keep once it ended: not resumable, but its reader skips what went and
    // gets the rest, response included.
    assert_eq!(r.resumes(&id(&r, s, 1)), None);
    let got = reader.await;
    assert_eq!(got.len(), 2, "the first interim message went");
    assert!(got[0].starts_with(&format!("{}=", id(&r, s, 1))));
    assert!(got[1].starts_with(&format!("{}=", id(&r, s, 2))));
}
