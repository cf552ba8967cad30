use crate::testing::problems;
use crate::{ServerSource, load_str};
use std::time::Duration;

#[test]
fn minimal_config_loads() {
    let r = load_str(
        "t.yaml",
        "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search: { class: read }\n",
    )
    .unwrap();
    assert_eq!(r.servers.len(), 1);
    assert_eq!(
        r.servers[0].source,
        ServerSource::Http {
            url: "https://notes.example.com/mcp".into(),
            endpoints: vec![crate::Endpoint {
                url: "https://notes.example.com/mcp".into(),
                weight: 1
            }],
        }
    );
    assert_eq!(r.settings.max_body, 4 * 1024 * 1024);
    assert_eq!(r.settings.public_url, None);
}

#[test]
fn missing_allowlist_names_the_server_line() {
    let p = problems("servers:\n  notes:\n    url: https://notes.example.com/mcp\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(
            "t.yaml:2:3: `servers.notes.tools`: server `notes` has no `tools` allowlist"
        ),
        "{}",
        p[0]
    );
    assert!(p[0].contains("fix:"));
}

#[test]
fn unknown_key_points_at_the_key() {
    let p = problems("servers:\n  notes:\n    url: http://x/mcp\n    tols: {}\n");
    assert!(
        p[0].starts_with("t.yaml:4:5: `servers.notes.tols`: unknown key `tols`"),
        "{}",
        p[0]
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let p = problems(
        "listen: 127.0.0.1:1\nservers:\n  a:\n    url: http://x/mcp\n    tools:\n      t: { class: 7 }\n",
    );
    assert!(
        p[0].starts_with("t.yaml:6:19: `servers.a.tools.t.class`"),
        "{}",
        p[0]
    );
}

#[test]
fn bad_class_and_bad_name_are_both_reported() {
    let p = problems(
        "servers:\n  Bad_Name:\n    url: http://x/mcp\n    tools:\n      t: { class: writ }\n",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("server name `Bad_Name` is not allowed"));
    assert!(
        p[1].starts_with("t.yaml:5:19:") && p[1].contains("unknown tool class `writ`"),
        "{}",
        p[1]
    );
}

#[test]
fn yaml_syntax_error_has_a_location() {
    let p = problems("servers:\n  a: [1, 2\n");
    assert!(p[0].starts_with("t.yaml:"), "{}", p[0]);
    assert!(p[0].contains("YAML syntax error"));
}

#[test]
fn duplicate_keys_are_refused() {
    let p = problems("servers: {}\nservers: {}\n");
    assert!(p[0].contains("YAML syntax error"), "{}", p[0]);
}

#[test]
fn exactly_one_source() {
    let p = problems("servers:\n  a:\n    url: http://x/mcp\n    builtin: notes\n    tools: {}\n");
    assert!(p[0].contains("exactly one of"), "{}", p[0]);
}

#[test]
fn literal_env_is_refused() {
    let p = problems(
        "servers:\n  a:\n    command: { program: /bin/x, integrity: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\", env: { TOKEN: abc } }\n    tools: {}\n",
    );
    assert!(p[0].contains("is a literal"), "{}", p[0]);
}

#[test]
fn sizes_and_durations() {
    let r = load_str(
        "t.yaml",
        "http: { max_body: 512KiB, session_idle: 10m }\nservers:\n  a:\n    builtin: notes\n    timeout: 250ms\n    tools: {}\n",
    )
    .unwrap();
    assert_eq!(r.settings.max_body, 512 * 1024);
    assert_eq!(r.servers[0].timeout.as_millis(), 250);
    let p = problems("http: { max_body: lots }\nservers: {}\n");
    assert!(p[0].starts_with("t.yaml:1:19:"), "{}", p[0]);
}

#[test]
fn an_answers_write_deadline_defaults_to_half_a_minute_and_is_bounded() {
    let servers = "servers:\n  a:\n    builtin: notes\n    tools: {}\n";
    let r = load_str("t.yaml", servers).unwrap();
    assert_eq!(r.settings.write_timeout.as_secs(), 30);
    let r = load_str(
        "t.yaml",
        &format!("http: {{ write_timeout: 5s }}\n{servers}"),
    )
    .unwrap();
    assert_eq!(r.settings.write_timeout.as_secs(), 5);
    for (value, says) in [("0s", "not a duration"), ("2h", "longer than an hour")] {
        let p = problems(&format!("http: {{ write_timeout: {value} }}\n{servers}"));
        assert!(
            p.iter()
                .any(|p| p.contains("http.write_timeout") && p.contains(says)),
            "{value}: {p:?}"
        );
    }
    // A process setting: a reload that changes it is refused.
    let other = load_str(
        "t.yaml",
        &format!("http: {{ write_timeout: 5s }}\n{servers}"),
    )
    .unwrap();
    assert_eq!(
        load_str("t.yaml", servers)
            .unwrap()
            .restart_only_changes(&other),
        vec!["http.write_timeout"]
    );
}

#[test]
fn an_in_memory_or_foreign_store_is_refused_with_the_fix() {
    for store in [
        "sqlite::memory:",
        "sqlite://file:x?mode=memory&cache=shared",
    ] {
        let p = problems(&format!("store: \"{store}\"\nservers: {{}}\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("t.yaml:1:8: `store`:"), "{}", p[0]);
        assert!(
            p[0].contains("in-memory") && p[0].contains("sqlite://PATH"),
            "{}",
            p[0]
        );
    }
    let p = problems("store: mysql://db/portcullis\nservers: {}\n");
    assert!(p[0].contains("unsupported store"), "{}", p[0]);
    load_str("t.yaml", "store: sqlite://memory.db\nservers: {}\n").unwrap();
}

#[test]
fn a_postgres_store_takes_its_password_by_reference_only() {
    let r = load_str(
        "t.yaml",
        "store: postgres://portcullis@db:5432/portcullis?sslmode=verify-full\nstore_password: env:PGPASS\nservers: {}\n",
    )
    .unwrap();
    assert_eq!(
        r.settings.store_password,
        Some(crate::SecretRef::Env("PGPASS".into()))
    );
    for (text, key, says) in [
        (
            "store: postgres://portcullis:hunter2@db/p\n",
            "store",
            "carries a password",
        ),
        (
            "store: postgres://portcullis@db/p?password=hunter2\n",
            "store",
            "carries a password",
        ),
        (
            "store: postgres://portcullis@db/p\nstore_password: hunter2\n",
            "store_password",
            "by reference",
        ),
        (
            "store: sqlite://x.db\nstore_password: env:PGPASS\n",
            "store_password",
            "no password",
        ),
    ] {
        let p = problems(&format!("{text}servers: {{}}\n"));
        // A password in a URL is also caught by the scan for inline secrets; never repeated.
        assert!(
            p.iter()
                .all(|p| !p.contains("hunter2") || key == "store_password"),
            "{p:?}"
        );
        assert!(!p.is_empty() && p.len() <= 2, "{text}: {p:?}");
        assert!(
            p[0].contains(&format!("`{key}`")) && p[0].contains(says),
            "{}",
            p[0]
        );
    }
}

const NOTES: &str =
    "servers:\n  notes:\n    builtin: notes\n    tools: { search_notes: { class: read } }\n";

#[test]
fn operator_levers_load_with_defaults_and_overrides() {
    let r = load_str("t.yaml", NOTES).unwrap();
    assert_eq!(r.settings.mode, crate::Mode::Enforce);
    assert_eq!(r.settings.kill_switch.poll, Duration::from_millis(250));
    assert_eq!(r.settings.kill_switch.lease, Duration::from_secs(5));
    assert_eq!(r.access.approvals.hold, Duration::from_secs(30));
    assert_eq!(r.access.approvals.ttl, Duration::from_secs(900));
    let r = load_str(
        "t.yaml",
        &format!("mode: shadow\nkill_switch: {{ poll: 100ms, lease: 2s }}\napprovals: {{ ttl: 5m, hold: 0s, target_arguments: [path] }}\n{NOTES}"),
    )
    .unwrap();
    assert_eq!(r.settings.mode, crate::Mode::Shadow);
    assert_eq!(r.settings.kill_switch.lease, Duration::from_secs(2));
    assert_eq!(r.access.approvals.hold, Duration::ZERO);
    assert_eq!(r.access.approvals.target_arguments, ["path"]);
}

#[test]
fn unsafe_lever_settings_are_refused_with_the_fix() {
    let p = problems(&format!("mode: loud\n{NOTES}"));
    assert!(
        p[0].contains("t.yaml:1:7") && p[0].contains("enforce"),
        "{p:?}"
    );
    let p = problems(&format!("kill_switch: {{ poll: 5s }}\n{NOTES}"));
    assert!(
        p.iter()
            .any(|p| p.contains("kill_switch.poll") && p.contains("1s or less")),
        "{p:?}"
    );
    // On PostgreSQL changes are announced: the poll is a fallback and may be up to 5 s.
    let pg = "store: postgres://p@127.0.0.1/p\n";
    load_str(
        "t.yaml",
        &format!("{pg}kill_switch: {{ poll: 5s, lease: 20s }}\n{NOTES}"),
    )
    .unwrap();
    let p = problems(&format!(
        "{pg}kill_switch: {{ poll: 6s, lease: 20s }}\n{NOTES}"
    ));
    assert!(
        p.iter()
            .any(|p| p.contains("kill_switch.poll") && p.contains("5s or less")),
        "{p:?}"
    );
    let p = problems(&format!("kill_switch: {{ poll: 1s, lease: 1s }}\n{NOTES}"));
    assert!(
        p.iter()
            .any(|p| p.contains("kill_switch.lease") && p.contains("twice")),
        "{p:?}"
    );
    let p = problems(&format!("kill_switch: {{ lease: 1h }}\n{NOTES}"));
    assert!(p.iter().any(|p| p.contains("60s or less")), "{p:?}");
    let p = problems(&format!("approvals: {{ ttl: 10s, hold: 1m }}\n{NOTES}"));
    assert!(p.iter().any(|p| p.contains("approvals.hold")), "{p:?}");
    let p = problems(&format!(
        "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n{NOTES}"
    ));
    assert!(
        p.iter()
            .any(|p| p.contains("t.yaml:2:") && p.contains("its own port")),
        "{p:?}"
    );
}

#[test]
fn a_reload_may_change_servers_and_grants_but_not_process_settings() {
    let base = "listen: 127.0.0.1:7000\nservers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search: { class: read }\ngrants:\n  org:*: [\"notes/*\"]\n";
    let load = |t: &str| load_str("t.yaml", t).unwrap();
    let running = load(base);
    // Servers, tools and grants: nothing needs a restart.
    let wider = base
        .replace(
            "      search: { class: read }\n",
            "      search: { class: read }\n      write: { class: write, rate: 5/min }\n",
        )
        .replace("\"notes/*\"", "\"notes/search\"");
    assert!(running.restart_only_changes(&load(&wider)).is_empty());
    // Process settings: each is named.
    let moved = format!(
        "{}mode: read_only\naudit: {{ sinks: [{{ type: file, path: other.jsonl }}] }}\n",
        base.replace("7000", "7001")
    );
    assert_eq!(
        running.restart_only_changes(&load(&moved)),
        vec!["listen", "mode", "audit"]
    );
    let oidc = format!(
        "{base}identity:\n  oidc:\n    - issuer: https://idp.example.com\n      claims: {{ user: sub }}\n"
    );
    assert_eq!(
        running.restart_only_changes(&load(&oidc)),
        vec!["identity.oidc"]
    );
}

#[test]
fn a_connection_is_kept_only_for_the_same_source_credentials_and_address_rule() {
    let base = "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search: { class: read }\n";
    let load = |t: &str| load_str("t.yaml", t).unwrap().servers.remove(0);
    let running = load(base);
    let more_tools = load(&base.replace(
        "      search: { class: read }\n",
        "      search: { class: read }\n      get: { class: read }\n",
    ));
    assert!(running.same_connection(&more_tools));
    assert_ne!(running, more_tools);
    let other_url = load(&base.replace("notes.example.com", "notes2.example.com"));
    assert!(!running.same_connection(&other_url));
    let private = load(&base.replace("    tools:\n", "    allow_private: true\n    tools:\n"));
    assert!(!running.same_connection(&private));
    let credential = load(&base.replace(
        "    tools:\n",
        "    credentials: { bearer: env:NOTES_TOKEN }\n    tools:\n",
    ));
    assert!(!running.same_connection(&credential));
    let per_session =
        load(&base.replace("    tools:\n", "    connection: per_session\n    tools:\n"));
    assert_eq!(per_session.connection, crate::Connection::PerSession);
    assert_eq!(running.connection, crate::Connection::Shared);
    assert!(!running.same_connection(&per_session));
}

#[test]
fn per_session_connections_need_a_url_server() {
    let p = problems(
        "servers:\n  notes:\n    builtin: notes\n    connection: per_session\n    tools:\n      search_notes: { class: read }\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.yaml:4:17: `servers.notes.connection`: `connection: per_session` needs a server reached by `url`"),
        "{}",
        p[0]
    );
    let p = problems(
        "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    connection: per_user\n    tools: {}\n",
    );
    assert!(
        p[0].starts_with("t.yaml:4:17: `servers.notes.connection`"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("per_session"), "{}", p[0]);
}

#[test]
fn a_package_spec_is_not_mistaken_for_a_secret_but_a_random_argument_is() {
    let cfg = |args: &str| {
        format!(
            "servers:\n  memory:\n    command:\n      package: \"npm:@modelcontextprotocol/server-memory@2026.8.31\"\n      integrity: \"sha512-ljj/3S4aGjxdNSQWw6gucKKGnTLdBPWxzapyY/MT2tOVyZwvxChvevXSLPwx59nKJAlVpUVW+cOlnVRXRwiqMQ==\"\n      args: [{args}]\n    tools:\n      read_graph: {{ class: read }}\n"
        )
    };
    assert!(load_str("t.yaml", &cfg("\"--quiet\"")).is_ok());
    let p = problems(&cfg("\"q8Zr3LmX0vT9wKp2YbN7cHs4JdF6gUe1\""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("args[0]") && p[0].contains("a long random string"),
        "{}",
        p[0]
    );
    // A token pasted as a package name is still a long random string.
    let p = problems(&cfg("\"--quiet\"").replace(
        "npm:@modelcontextprotocol/server-memory@2026.8.31",
        "pypi:q8Zr3LmX0vT9wKp2YbN7cHs4JdF6gUe1==1.0",
    ));
    assert!(
        p.iter().any(|p| p.contains("a long random string")),
        "{p:?}"
    );
    // A key's well-known shape is refused even where a package spec belongs.
    let p = problems(&cfg("\"--quiet\"").replace(
        "npm:@modelcontextprotocol/server-memory@2026.8.31",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    ));
    assert!(p.iter().any(|p| p.contains("well-known shape")), "{p:?}");
}

#[test]
fn resource_patterns_match_only_uris_in_normal_form() {
    let cfg = "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    resources: [\"note://pub/*\", \"note://exact/1\"]\n    tools: {}\n";
    let reg = load_str("t.yaml", cfg).unwrap();
    let notes = reg.servers.iter().find(|s| s.name == "notes").unwrap();
    assert!(notes.allows_resource("note://pub/1"));
    assert!(notes.allows_resource("note://pub/a%20b"));
    assert!(notes.allows_resource("note://exact/1"));
    for escape in [
        "note://pub/../secret/1",
        "note://pub/%2e%2e/secret/1",
        "note://pub/%2E%2E/secret/1",
        "note://pub/..%2fsecret/1",
        "note://pub/..%2Fsecret",
        "note://pub/%252e%252e/secret",
        "note://pub/./x",
        "note://pub/..\\secret",
        "note://pub/%zz",
        "note://pub/%2",
        "note://pub/a\u{0}b",
    ] {
        assert!(!notes.allows_resource(escape), "{escape}");
    }
}

mod properties {
    use proptest::prelude::*;

    use crate::secret::secret_spans_unskipped;
    use crate::{normal_uri, secret_spans};

    fn escape() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just(".."),
            Just("."),
            Just("%2e%2e"),
            Just("%2E."),
            Just("..%2f"),
            Just("a%2Fb"),
            Just("%252e%252e"),
            Just("..\\x"),
        ]
    }

    proptest! {
        /// Wherever a dot segment or an encoded separator stands in a URI, it is not in normal
        /// form, so no prefix pattern can match it.
        #[test]
        fn a_dot_segment_or_encoded_separator_is_never_normal(
            scheme in "[a-z]{1,8}",
            segments in proptest::collection::vec("[a-z0-9]{1,6}", 0..4),
            at in 0usize..5,
            bad in escape(),
        ) {
            let mut parts = segments.clone();
            parts.insert(at.min(parts.len()), bad.to_string());
            let uri = format!("{scheme}://{}", parts.join("/"));
            prop_assert!(!normal_uri(&uri), "{}", uri);
            let plain = format!("{scheme}://{}", segments.join("/"));
            prop_assert!(normal_uri(&plain), "{}", plain);
        }

        /// A value assigned to a password in text is covered by a secret span, whatever the
        /// words around it, the name's case, or the separator.
        #[test]
        fn an_assigned_password_is_always_covered(
            before in "[a-z ]{0,20}",
            after in "[a-z ]{0,20}",
            name in prop_oneof![Just("password"), Just("Pwd"), Just("PASS"), Just("client_secret")],
            sep in prop_oneof![Just("="), Just(": "), Just(" = ")],
            value in "[A-Za-z0-9!#%]{1,24}",
        ) {
            let text = format!("{before} {name}{sep}{value} {after}");
            let at = text.find(&format!("{sep}{value}")).unwrap() + sep.len();
            let spans = secret_spans(&text);
            prop_assert!(
                spans.iter().any(|r| r.start <= at && r.end >= at + value.len()),
                "{} {:?}", text, spans
            );
        }

        /// Text without a space (a query string, a connection string) still has its assigned
        /// secrets covered, and a `Bearer` token needs only the space after the scheme.
        #[test]
        fn secrets_in_text_without_spaces_are_covered(
            before in "([a-z]{1,8}[&;])?",
            name in prop_oneof![Just("token"), Just("api_key"), Just("Password"), Just("sig")],
            sep in prop_oneof![Just("="), Just(":")],
            value in "[A-Za-z0-9]{1,24}",
            bearer in "[A-Za-z0-9]{8,24}",
        ) {
            let text = format!("{before}{name}{sep}{value}");
            let at = before.len() + name.len() + sep.len();
            let spans = secret_spans(&text);
            prop_assert_eq!(spans, vec![at..at + value.len()], "{}", text);
            let text = format!("Bearer {bearer}");
            prop_assert_eq!(secret_spans(&text), vec![7..7 + bearer.len()], "{}", text);
        }

        /// Skipping the searches a value cannot match (no space, no `=` or `:`) finds the same
        /// spans as running them all, whatever the text.
        #[test]
        fn skipped_searches_find_nothing_the_full_search_would(
            pieces in proptest::collection::vec(prop_oneof![
                prop::sample::select(vec![
                    "Bearer ", "basic ", "bEaReR", " ", "\t", "password", "Pwd", "client_secret",
                    "api_key", "=", ":", "\"", "'", "&", ";", "://", "@", "-----BEGIN ",
                    "\u{a0}", "\u{130}",
                ])
                .prop_map(String::from),
                "[A-Za-z0-9+/_-]{1,40}",
                any::<String>().prop_map(|s| s.chars().take(6).collect::<String>()),
            ], 0..12),
        ) {
            let text = pieces.concat();
            prop_assert_eq!(secret_spans(&text), secret_spans_unskipped(&text), "{:?}", text);
        }
    }
}
