use super::*;

#[test]
fn a_peek_is_not_activity_and_an_idle_session_ends() {
    let sessions = Sessions::default();
    let (id, _) = sessions.open("secret".into()).unwrap();
    let idle_since = Instant::now().checked_sub(IDLE / 2).unwrap();
    sessions.map.lock().unwrap().get_mut(&id).unwrap().seen = idle_since;
    // The frame's polling leaves the idle clock where it was.
    assert!(sessions.peek(&id).is_some());
    assert_eq!(sessions.map.lock().unwrap()[&id].seen, idle_since);
    // The operator's own request restarts it.
    assert!(sessions.get(&id).is_some());
    assert!(sessions.map.lock().unwrap()[&id].seen > idle_since);
    // Idle past the limit: gone, for a peek too.
    let long_ago = Instant::now()
        .checked_sub(IDLE + Duration::from_secs(1))
        .unwrap();
    sessions.map.lock().unwrap().get_mut(&id).unwrap().seen = long_ago;
    assert!(sessions.peek(&id).is_none());
    assert!(sessions.get(&id).is_none());
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn dates_are_utc_calendar_dates() {
    assert_eq!(when(0), "1970-01-01 00:00:00Z");
    assert_eq!(when(951_782_400_000), "2000-02-29 00:00:00Z");
    assert_eq!(when(1_795_000_000_000), "2026-11-18 11:06:40Z");
}
