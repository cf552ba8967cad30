use super::*;

fn p(s: &str) -> Pattern {
    s.parse().unwrap()
}

#[test]
fn patterns_parse_and_print() {
    assert_eq!(p("notes/*"), Pattern::Server("notes".into()));
    assert_eq!(
        p("notes/search"),
        Pattern::Tool("notes".into(), "search".into())
    );
    for bad in [
        "notes",
        "/x",
        "notes/",
        "notes/se*",
        "*/x",
        "no tes/x",
        "notes/a\u{200b}",
    ] {
        assert!(bad.parse::<Pattern>().is_err(), "{bad} parsed");
    }
    assert_eq!(p("notes/search").to_string(), "notes/search");
}

#[test]
fn coverage_for_minting() {
    assert!(p("notes/*").covers(&p("notes/x")));
    assert!(p("notes/*").covers(&p("notes/*")));
    assert!(!p("notes/x").covers(&p("notes/*")));
    assert!(!p("notes/x").covers(&p("notes/y")));
    let mut rules = Rules::granting([p("notes/*")]);
    assert!(rules.covers(&p("notes/x")));
    rules.deny(p("notes/x"));
    assert!(
        !rules.covers(&p("notes/x")),
        "a denied tool cannot be delegated"
    );
    assert!(!rules.covers(&p("notes/*")), "nor the server containing it");
    assert!(!rules.covers(&p("files/x")));
}

#[test]
fn deny_wins_and_server_target_needs_wildcard() {
    let mut rules = Rules::granting([p("notes/*"), p("files/read")]);
    rules.deny(p("notes/delete"));
    assert_eq!(
        rules.verdict("notes", Target::Tool("search")),
        Verdict::Granted
    );
    assert_eq!(
        rules.verdict("notes", Target::Tool("delete")),
        Verdict::Denied
    );
    assert_eq!(rules.verdict("notes", Target::Server), Verdict::Granted);
    assert_eq!(rules.verdict("files", Target::Server), Verdict::NotGranted);
    assert_eq!(
        rules.verdict("files", Target::Tool("Read")),
        Verdict::NotGranted
    );
    assert_eq!(
        rules.verdict("other", Target::Tool("read")),
        Verdict::NotGranted
    );
    assert!(!rules.grants_nothing());
    let mut only_deny = Rules::default();
    only_deny.deny(p("notes/*"));
    assert!(only_deny.grants_nothing());
}

#[test]
fn table_default_applies_to_unnamed_principals_only() {
    let mut table = GrantTable::new();
    table.rules_mut(Level::User, "*").allow(p("notes/search"));
    table.rules_mut(Level::User, "alice").allow(p("notes/*"));
    assert_eq!(
        table.rules(Level::User, "bob").unwrap().granted(),
        vec![p("notes/search")]
    );
    assert_eq!(
        table.rules(Level::User, "alice").unwrap().granted(),
        vec![p("notes/*")]
    );
    assert!(table.rules(Level::Team, "bob").is_none());
    assert_eq!(table.len(), 2);
}
