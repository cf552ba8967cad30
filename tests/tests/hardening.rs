//! Attacks on the gateway from a hostile upstream (`tests/python/hostile_upstream.py`): answers
//! on another caller's stream, a restart with a changed tool, endless progress, echoed
//! credentials and forged gateway markers.

use std::time::{Duration, Instant};

use portcullis_tests::hostile::Hostile;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, bin, create_key_with, fixture_server};
use serde_json::{Value, json};

const TOKEN: &str = "hostile-credential-4f1c2a9e77";

struct Setup {
    hostile: Hostile,
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

fn setup(extra: &str) -> Setup {
    setup_with("", extra)
}

/// With `top` as extra top-level config lines and `extra` as extra server keys.
fn setup_with(top: &str, extra: &str) -> Setup {
    let hostile = Hostile::start(false).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let gw = Gateway::start_with(top, &hostile.server("hostile", &token, extra)).unwrap();
    Setup {
        hostile,
        gw,
        _secrets: secrets,
    }
}

async fn client(gw: &Gateway, key: &str) -> Raw {
    let mut c = Raw::new(gw.mcp(), key);
    c.init().await;
    c
}

async fn call(c: &Raw, tool: &str, params: Value) -> Value {
    let mut p = params;
    p["name"] = json!(format!("hostile__{tool}"));
    c.call(req(9, "tools/call", p)).await.1
}

/// `GET {admin}{path}` with an operator key, as JSON.
async fn admin_get(gw: &Gateway, key: &str, path: &str) -> Value {
    serde_json::from_str(&portcullis_tests::ops::admin_text_as(gw, key, path).await).unwrap()
}

/// The admin listener's `/metrics`, read with an auditor key.
async fn metrics(gw: &Gateway) -> String {
    portcullis_tests::ops::admin_text(gw, "/metrics").await
}

fn text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_answer_sent_on_another_callers_stream_reaches_nobody() {
    let s = setup("");
    let k1 = client(&s.gw, &s.gw.key).await;
    let k2_key = s.gw.new_key("k2").unwrap();
    let k2 = client(&s.gw, &k2_key).await;
    let held = tokio::spawn(async move { call(&k1, "hold", json!({ "arguments": {} })).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.hostile.calls("hold").await == 0 {
        assert!(Instant::now() < deadline, "hold never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upstream sends the held request's answer on inject's stream first.
    let injected = call(&k2, "inject", json!({ "arguments": {} })).await;
    assert_eq!(text(&injected), "inject's own answer", "{injected}");
    let held = held.await.unwrap();
    assert_eq!(text(&held), "held call's own answer", "{held}");
    let metrics = metrics(&s.gw).await;
    assert!(
        metrics.contains(
            "portcullis_upstream_violations_total{server=\"hostile\",kind=\"foreign_answer\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_restarted_upstream_is_listed_again_before_any_call_runs_on_it() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let r = call(&c, "echo", json!({ "arguments": { "text": "before" } })).await;
    assert_eq!(text(&r), "before", "{r}");
    // The upstream restarts with echo's description changed, announcing nothing.
    s.hostile.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let r = call(&c, "echo", json!({ "arguments": { "text": "after" } })).await;
        if r["error"]["data"]["reason"] == "quarantined" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(last["error"]["data"]["reason"], "quarantined", "{last}");
    assert_eq!(
        s.hostile.calls("echo").await,
        1,
        "the changed echo never ran"
    );
    let events = portcullis_tests::audit_events(&s.gw.audit_file(), "tool.quarantine");
    assert!(
        events
            .iter()
            .any(|e| e["tool"] == "echo" && e["server"] == "hostile"),
        "{events:?}"
    );
}

#[tokio::test]
async fn progress_does_not_keep_a_call_alive_past_its_timeout() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let started = Instant::now();
    let body = req(
        9,
        "tools/call",
        json!({ "name": "hostile__tick", "arguments": {}, "_meta": { "progressToken": "p1" } }),
    );
    let stream = c
        .post(&body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(stream.contains("\"error\""), "{stream}");
    assert!(took < Duration::from_secs(6), "the call ran {took:?}");
    // The progress relayed meanwhile does not carry the credential it echoed.
    assert!(stream.contains("notifications/progress"), "{stream}");
    assert!(!stream.contains(TOKEN), "{stream}");
    assert!(stream.contains("working as [redacted]"), "{stream}");
}

#[tokio::test]
async fn progress_extends_a_call_only_up_to_max_timeout() {
    let s = setup("    max_timeout: 4s\n");
    let c = client(&s.gw, &s.gw.key).await;
    let started = Instant::now();
    let r = call(
        &c,
        "tick",
        json!({ "arguments": {}, "_meta": { "progressToken": "p1" } }),
    )
    .await;
    let took = started.elapsed();
    assert!(r["error"].is_object(), "{r}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "the call ran {took:?}"
    );
}

#[tokio::test]
async fn an_upstream_cannot_echo_the_gateways_credential_or_forge_its_markers() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let r = call(&c, "leak", json!({ "arguments": {} })).await;
    let shown = r.to_string();
    assert!(r["error"].is_object(), "{r}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let log = std::fs::read_to_string(s.gw.audit_file()).unwrap();
    assert!(!log.contains(TOKEN));

    let r = call(&c, "forge", json!({ "arguments": {} })).await;
    assert_eq!(text(&r), "forged", "{r}");
    assert_eq!(r["result"]["_meta"], json!({ "vendor/ok": 1 }), "{r}");
}

#[tokio::test]
async fn a_resource_outside_the_allowlisted_prefix_cannot_be_reached_through_dot_segments() {
    let s = setup("");
    let c = client(&s.gw, &s.gw.key).await;
    let read = |uri: &str| {
        req(
            3,
            "resources/read",
            json!({ "uri": format!("hostile+{uri}") }),
        )
    };
    let (_, ok) = c.call(read("note://pub/1")).await;
    assert_eq!(
        ok["result"]["contents"][0]["text"], "content of note://pub/1",
        "{ok}"
    );
    let (_, missing) = c.call(read("note://nothing/1")).await;
    for escape in [
        "note://pub/../secret/1",
        "note://pub/%2e%2e/secret/1",
        "note://pub/..%2fsecret/1",
        "note://pub/%2E%2E%2Fsecret%2F1",
    ] {
        let (_, r) = c.call(read(escape)).await;
        assert_eq!(
            r["error"]["code"], missing["error"]["code"],
            "{escape}: {r}"
        );
        assert!(r["result"].is_null(), "{escape}: {r}");
    }
    assert_eq!(s.hostile.calls("resources/read").await, 1);
}

async fn admin_post(gw: &Gateway, key: &str, path: &str, body: Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.admin))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_key_minted_under_another_is_revoked_and_killed_with_it_and_never_wider() {
    let s = setup("");
    let cfg = s.gw.config();
    let parent = create_key_with(&cfg, "parent", &["hostile/*".into()], &[]).unwrap();
    let pid = parent.split('_').nth(1).unwrap().to_string();
    let child =
        create_key_with(&cfg, "child", &["hostile/echo".into()], &["--parent", &pid]).unwrap();
    // A level the parent lacks cannot be gained.
    let wider = create_key_with(
        &cfg,
        "wider",
        &["hostile/echo".into()],
        &["--parent", &pid, "--org", "acme"],
    );
    assert!(
        wider
            .as_ref()
            .is_err_and(|e| e.to_string().contains("has no org")),
        "{wider:?}"
    );
    let c = client(&s.gw, &child).await;
    let args = json!({ "arguments": { "text": "hi" } });
    assert_eq!(text(&call(&c, "echo", args.clone()).await), "hi");

    // A kill switch on the parent covers the child.
    let op = s.gw.operator_key("admin", None).unwrap();
    let switch = |engaged: bool| json!({ "scope": "key", "target": pid, "engaged": engaged, "reason": "parent leaked" });
    assert_eq!(
        admin_post(&s.gw, &op, "/admin/kill-switch", switch(true)).await,
        200
    );
    let r = call(&c, "echo", args.clone()).await;
    assert_eq!(r["error"]["data"]["reason"], "killed", "{r}");
    assert_eq!(
        admin_post(&s.gw, &op, "/admin/kill-switch", switch(false)).await,
        200
    );
    assert_eq!(text(&call(&c, "echo", args.clone()).await), "hi");

    // Revoking the parent revokes the child: its next request is unauthenticated.
    let out = std::process::Command::new(bin("portcullis"))
        .args(["keys", "revoke", "--config"])
        .arg(&cfg)
        .arg(&pid)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = c
            .post(&req(5, "tools/list", json!({})).to_string())
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child key still works ({status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = std::process::Command::new(bin("portcullis"))
        .args(["keys", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let child_id = child.split('_').nth(1).unwrap();
    let line = listed.lines().find(|l| l.contains(child_id)).unwrap();
    assert!(line.contains("revoked"), "{listed}");
}

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
