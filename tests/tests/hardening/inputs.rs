//! What an approver is shown, and arguments past a tool's limits.

use super::*;

#[tokio::test]
async fn an_approver_sees_the_whole_call_with_hidden_characters_shown_and_passwords_hidden() {
    let s = setup_with("approvals: { required_from: read, hold: 0s }\n", "");
    let c = client(&s.gw, &s.gw.key).await;
    let text = format!("{} ; ALSO-DELETE-ALL-BACKUPS", "harmless words ".repeat(30));
    let r = call(
        &c,
        "echo",
        json!({ "arguments": {
            "text": text,
            "file": "report\u{202E}fdp.exe",
            "note": "connect with Password=hunter2;Database=prod, pwd=hunter3",
            "pass": "hunter4",
        } }),
    )
    .await;
    assert_eq!(r["error"]["data"]["reason"], "approval_pending", "{r}");
    let approver = s.gw.operator_key("approver", None).unwrap();
    let list = admin_get(&s.gw, &approver, "/admin/approvals?status=pending").await;
    let preview = list["approvals"][0]["preview"].as_str().unwrap();
    assert!(preview.contains("ALSO-DELETE-ALL-BACKUPS"), "{preview}");
    assert!(!preview.contains('\u{202E}'), "{preview}");
    assert!(preview.contains("report\\u202Efdp.exe"), "{preview}");
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!preview.contains(secret), "{secret} in {preview}");
    }
    assert!(preview.contains("Database=prod"), "{preview}");
    // The web page shows the same complete text.
    let page = reqwest::Client::new()
        .get(format!("{}/ui/", s.gw.admin))
        .bearer_auth(&approver)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains('\u{202E}'));
    // Nor do the passwords reach the audit log.
    let log = std::fs::read_to_string(s.gw.audit_file()).unwrap();
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!log.contains(secret), "{secret} in the audit log");
    }
}

#[tokio::test]
async fn arguments_past_the_tools_limits_never_reach_the_upstream() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let wide: serde_json::Map<String, Value> =
        (0..100_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let r = call(&c, "echo", json!({ "arguments": wide })).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(r.to_string().contains("larger than 65536 bytes"), "{r}");
    let many = vec![Value::Null; 5000];
    let r = call(
        &c,
        "echo",
        json!({ "arguments": { "text": "hi", "many": many } }),
    )
    .await;
    assert!(r.to_string().contains("more than 4096 values"), "{r}");
    let mut deep = json!("x");
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    let r = call(
        &c,
        "echo",
        json!({ "arguments": { "text": "hi", "d": deep } }),
    )
    .await;
    assert!(r.to_string().contains("deeper than 32"), "{r}");
    assert_eq!(s.hostile.calls("echo").await, 0);
}

/// A raw connection to `addr` from `from` (another loopback address is another peer).
async fn connect_from(from: &str, addr: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(addr.parse().unwrap()).await.unwrap()
}

/// Whether the server closed `stream` within `within` (EOF or reset), reading whatever it sent.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn slow_and_numerous_connections_lock_out_neither_callers_nor_operators() {
    use tokio::io::AsyncWriteExt as _;
    let s = setup_with(
        "http: { header_timeout: 1s, body_timeout: 1s, max_connections: 40, max_connections_per_peer: 10 }\n",
        "",
    );
    let addr = s.gw.base.trim_start_matches("http://").to_string();
    // An unauthenticated peer opens 100 connections and trickles a request head on each.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut st = connect_from("127.0.0.2", &addr).await;
        let _ = st.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(st);
    }
    // Meanwhile a caller and an operator are served.
    let c = client(&s.gw, &s.gw.key).await;
    let r = call(&c, "echo", json!({ "arguments": { "text": "still here" } })).await;
    assert_eq!(text(&r), "still here", "{r}");
    let op = s.gw.operator_key("admin", None).unwrap();
    let status = reqwest::Client::new()
        .get(format!("{}/admin/kill-switch", s.gw.admin))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // Past its per-peer cap the peer's connections were closed on arrival, and the rest are
    // closed once the head deadline passes.
    let started = Instant::now();
    for st in &mut slow {
        assert!(
            closed_within(st, Duration::from_secs(4)).await.is_some(),
            "a trickling connection stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let metrics = metrics(&s.gw).await;
    assert!(
        metrics.contains("portcullis_connections_refused_total{listener=\"mcp\",cap=\"peer\"} 90"),
        "{metrics}"
    );

    // A body trickled a byte at a time is cut off with 408, on both listeners.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n{{",
        s.gw.key
    );
    assert!(trickled(&addr, &head).await.starts_with("HTTP/1.1 408"));
    let admin = s.gw.admin.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /admin/kill-switch HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{"
    );
    assert!(trickled(&admin, &head).await.starts_with("HTTP/1.1 408"));
}

/// Send `head`, then a byte every 300 ms for the first 900 ms (the deadline is 1 s; writing
/// after the server has answered and closed would reset the connection under the answer), while
/// reading; what the server answered.
async fn trickled(addr: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let st = connect_from("127.0.0.3", addr).await;
    let (mut rd, mut wr) = st.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    // The write half is kept open after the last byte: closing it would end the body.
    let writer = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(wr);
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    let answer = String::from_utf8_lossy(&seen).into_owned();
    eprintln!("{answer}");
    answer
}

/// A gateway in front of the hostile upstream with its `poison` tool, in `profile`.
fn poisoned(top: &str) -> (Hostile, Gateway, tempfile::TempDir) {
    let hostile = Hostile::start(true).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let gw = Gateway::start_with(top, &hostile.server("hostile", &token, "")).unwrap();
    (hostile, gw, secrets)
}

#[tokio::test]
async fn a_poisoned_description_is_neither_pinned_nor_served_until_an_operator_confirms_it() {
    let (hostile, gw, _secrets) = poisoned("");
    // The harness pinned the upstream as an operator would: the finding is shown, not pinned.
    let shown = portcullis_tests::pin(&gw.config()).unwrap();
    assert!(
        shown.contains("instruction-like text") && shown.contains("--confirm hostile/poison"),
        "{shown}"
    );
    assert!(
        shown.contains("~/.ssh/id_rsa"),
        "the operator reads the text: {shown}"
    );
    let config = std::fs::read_to_string(gw.config()).unwrap();
    assert!(!config.contains("poison: \"sha256:"), "{config}");
    let c = client(&gw, &gw.key).await;
    let names = c.tool_names().await;
    assert!(names.contains(&"hostile__echo".to_string()), "{names:?}");
    assert!(!names.contains(&"hostile__poison".to_string()), "{names:?}");
    let r = call(&c, "poison", json!({ "arguments": {} })).await;
    assert_eq!(r["error"]["data"]["reason"], "quarantined", "{r}");
    assert_eq!(hostile.calls("poison").await, 0);

    // Confirmed after review: pinned, served on the next reload, and reported by the self-audit.
    let out = std::process::Command::new(bin("portcullis"))
        .args(["pin", "--confirm", "hostile/poison", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let names = c
        .until_tools(|n| n.contains(&"hostile__poison".to_string()))
        .await;
    assert!(names.contains(&"hostile__poison".to_string()), "{names:?}");
    let admin = gw.operator_key("auditor", None).unwrap();
    let report = portcullis_tests::self_audit(&gw.admin, &admin).await;
    let text = report.to_string();
    assert!(
        text.contains("Tools whose text addresses the model are served on: hostile"),
        "{text}"
    );
}

#[tokio::test]
async fn a_poisoned_description_is_not_served_first_seen_in_development() {
    let (hostile, gw, _secrets) = poisoned("profile: development\n");
    let c = client(&gw, &gw.key).await;
    let names = c.tool_names().await;
    assert!(names.contains(&"hostile__echo".to_string()), "{names:?}");
    assert!(!names.contains(&"hostile__poison".to_string()), "{names:?}");
    let r = call(&c, "poison", json!({ "arguments": {} })).await;
    assert_eq!(r["error"]["data"]["reason"], "quarantined", "{r}");
    assert_eq!(hostile.calls("poison").await, 0);
}

/// An upstream that lists `echo` twice, with two definitions: `pin` will not pin it, and the
/// gateway serves neither definition, pinned (production) or first seen (development); its other
/// tools are served, and the quarantine event says why.
#[tokio::test]
async fn a_tool_listed_twice_with_two_definitions_is_neither_pinned_nor_served() {
    for top in ["", "profile: development\n"] {
        let hostile = Hostile::start_with(&["--twice"]).unwrap();
        let secrets = tempfile::tempdir().unwrap();
        let token = secrets.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let gw = Gateway::start_with(top, &hostile.server("hostile", &token, "")).unwrap();
        if top.is_empty() {
            let shown = portcullis_tests::pin(&gw.config()).unwrap();
            assert!(
                shown.contains(
                    "echo: not pinned: the upstream lists it more than once, with different definitions"
                ),
                "{shown}"
            );
            let config = std::fs::read_to_string(gw.config()).unwrap();
            assert!(!config.contains("echo: \"sha256:"), "{config}");
            assert!(config.contains("hold: \"sha256:"), "{config}");
        }
        let c = client(&gw, &gw.key).await;
        let names = c.tool_names().await;
        assert!(
            names.contains(&"hostile__hold".to_string()),
            "{top}{names:?}"
        );
        assert!(
            !names.contains(&"hostile__echo".to_string()),
            "{top}{names:?}"
        );
        let r = call(&c, "echo", json!({ "arguments": { "text": "hi" } })).await;
        assert_eq!(r["error"]["data"]["reason"], "quarantined", "{top}{r}");
        assert_eq!(hostile.calls("echo").await, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let event = loop {
            let log = std::fs::read_to_string(gw.audit_file()).unwrap_or_default();
            let found = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| e["kind"] == "tool.quarantine" && e["tool"] == "echo");
            if let Some(e) = found {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "{top}: no quarantine event for echo"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            event["reason"], "the upstream lists it more than once, with different definitions",
            "{event}"
        );
        // Both definitions' digests, in order.
        let seen = event["detail"]["seen"].as_str().unwrap_or_default();
        let digests: Vec<&str> = seen.split(' ').collect();
        assert_eq!(digests.len(), 2, "{event}");
        assert!(digests[0] < digests[1], "{event}");
    }
}

/// Read `stream` for up to `within` or until `until` arrives, returning what arrived.
async fn heard<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    within: Duration,
    until: &str,
) -> String {
    use futures::StreamExt as _;
    let mut buf = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(chunk)) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(chunk.as_ref()));
            if buf.contains(until) {
                return;
            }
        }
    })
    .await;
    buf
}

/// Open the session's GET stream.
async fn get_stream(c: &Raw) -> reqwest::Response {
    c.http
        .get(&c.url)
        .bearer_auth(&c.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_sharing_an_upstream_connection_cannot_disturb_each_other() {
    let fx = Fixture::start("legacy").unwrap();
    let other = Fixture::start("legacy").unwrap();
    let servers = format!(
        "{}{}",
        fixture_server("fixture", &fx.url),
        fixture_server("other", &other.url)
    );
    let gw = Gateway::start(&servers).unwrap();
    let a = client(&gw, &gw.key).await;
    let b = client(&gw, &gw.key).await;
    let sub = |method: &str| {
        req(
            1,
            method,
            json!({ "uri": "fixture+test://watched-resource" }),
        )
    };

    // One session's unsubscribe does not end another's subscription.
    assert_eq!(
        a.call(sub("resources/subscribe")).await.1["result"],
        json!({})
    );
    assert_eq!(
        b.call(sub("resources/subscribe")).await.1["result"],
        json!({})
    );
    assert_eq!(
        b.call(sub("resources/unsubscribe")).await.1["result"],
        json!({})
    );
    let mut sa = get_stream(&a).await.bytes_stream();
    let touch = json!({ "name": "fixture__touch_watched", "arguments": {} });
    let (_, r) = b.call(req(2, "tools/call", touch)).await;
    assert_eq!(r["result"]["content"][0]["text"], "touched", "{r}");
    let got = heard(&mut sa, Duration::from_secs(5), "resources/updated").await;
    assert!(got.contains("fixture+test://watched-resource"), "{got}");

    // List changes on a server a session cannot see do not reach it.
    let narrow_key = create_key_with(&gw.config(), "narrow", &["fixture/*".into()], &[]).unwrap();
    let narrow = client(&gw, &narrow_key).await;
    let mut sn = get_stream(&narrow).await.bytes_stream();
    let mut sa = get_stream(&a).await.bytes_stream();
    let add = json!({ "name": "other__add_tool", "arguments": {} });
    let (_, r) = a.call(req(3, "tools/call", add)).await;
    assert!(r["result"].is_object(), "{r}");
    let seen = heard(&mut sa, Duration::from_secs(5), "tools/list_changed").await;
    assert!(
        seen.contains("tools/list_changed"),
        "the control session heard nothing: {seen}"
    );
    let quiet = heard(&mut sn, Duration::from_millis(700), "tools/list_changed").await;
    assert!(!quiet.contains("list_changed"), "{quiet}");

    // One session cannot make the shared connection quieter for the others.
    let level = |l: &str| req(4, "logging/setLevel", json!({ "level": l }));
    assert_eq!(a.call(level("debug")).await.1["result"], json!({}));
    assert_eq!(b.call(level("error")).await.1["result"], json!({}));
    assert_eq!(fx.levels(), ["debug"]);
}

#[tokio::test]
async fn a_kill_switch_on_a_parent_key_voids_the_approvals_its_children_wait_for() {
    let s = setup_with("approvals: { required_from: read, hold: 0s }\n", "");
    let cfg = s.gw.config();
    let parent = create_key_with(&cfg, "parent", &["hostile/*".into()], &[]).unwrap();
    let pid = parent.split('_').nth(1).unwrap().to_string();
    let child =
        create_key_with(&cfg, "child", &["hostile/echo".into()], &["--parent", &pid]).unwrap();
    let c = client(&s.gw, &child).await;
    let r = call(&c, "echo", json!({ "arguments": { "text": "later" } })).await;
    assert_eq!(r["error"]["data"]["reason"], "approval_pending", "{r}");
    let id = r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let op = s.gw.operator_key("admin", None).unwrap();
    let engaged = reqwest::Client::new()
        .post(format!("{}/admin/kill-switch", s.gw.admin))
        .bearer_auth(&op)
        .json(&json!({ "scope": "key", "target": pid, "engaged": true, "reason": "parent leaked" }))
        .send()
        .await
        .unwrap();
    let v: Value = engaged.json().await.unwrap();
    assert_eq!(v["voided_approvals"], 1, "{v}");
    let rec = admin_get(&s.gw, &op, &format!("/admin/approvals/{id}")).await;
    assert_eq!(rec["status"], "voided", "{rec}");
    assert_eq!(s.hostile.calls("echo").await, 0);
}
