//! The official MCP Python SDK against the gateway, in both protocol eras, against upstreams of
//! each era.

use std::process::Command;

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, audit_events, fixture_server, python, workspace};
use serde_json::json;

fn run_client(gw: &Gateway, mode: &str) {
    run_script(gw, "client_e2e.py", mode);
}

/// Run `tests/python/<script> URL KEY MODE`; it must exit 0.
fn run_script(gw: &Gateway, script: &str, mode: &str) {
    let script = workspace().join("tests/python").join(script);
    let out = Command::new(python())
        .arg(&script)
        .arg(gw.mcp())
        .arg(&gw.key)
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} ({mode}) failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn initialize_era_client_through_legacy_and_modern_upstreams() {
    for era in ["legacy", "modern"] {
        let fx = Fixture::start(era).unwrap();
        let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
        run_client(&gw, "legacy");
    }
}

#[test]
fn discover_era_client_through_legacy_and_modern_upstreams() {
    for era in ["legacy", "modern"] {
        let fx = Fixture::start(era).unwrap();
        let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
        run_client(&gw, "2026-07-28");
    }
}

fn run_relay(gw: &Gateway, mode: &str) {
    run_script(gw, "session_relay.py", mode);
}

fn per_session(server: &str) -> String {
    server.replace(
        "    allow_private: true\n",
        "    allow_private: true\n    connection: per_session\n",
    )
}

/// Per-session upstream connections: log messages, sampling and elicitation reach the session
/// that caused them, never another; each request to a client is audited with its session.
#[test]
fn per_session_upstreams_reach_only_their_own_client() {
    let fx = Fixture::start("legacy").unwrap();
    let gw = Gateway::start(&per_session(&fixture_server("fixture", &fx.url))).unwrap();
    assert_eq!(fx.sessions(), 1, "the shared connection's session");
    run_relay(&gw, "per_session");
    // Both clients ended their sessions; the gateway ended the upstream sessions it opened for
    // them, and only the shared connection's remains.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.sessions() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} upstream sessions still open",
            fx.sessions()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Refusals and ends are queued for the log, not waited for, and the file may be behind
    // the store: wait until all of them are in the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while audit_events(&gw.audit_file(), "upstream.request").len() < 4
        || audit_events(&gw.audit_file(), "upstream.answer").len() < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "relay events missing from the audit file"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let events = audit_events(&gw.audit_file(), "upstream.request");
    let relayed: Vec<_> = events
        .iter()
        .filter(|e| e["outcome"] == "relayed")
        .collect();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .collect();
    // Sampling, elicitation, and the sampling request the client refused.
    assert_eq!(relayed.len(), 3, "{events:#?}");
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(
        refused[0]["reason"], "the client did not declare `sampling`",
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(e["server"], "fixture");
        assert!(
            e["session"]
                .as_str()
                .is_some_and(|s| s.starts_with("s:") && s.len() == 26),
            "{e}"
        );
        assert!(e["identity"]["subject"].as_str().is_some(), "{e}");
    }
    // How each relayed request ended: two answered, one refused by the client.
    let ended = audit_events(&gw.audit_file(), "upstream.answer");
    let outcomes: Vec<_> = ended.iter().map(|e| e["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        ["answered", "answered", "client_error"],
        "{ended:#?}"
    );
    assert_eq!(ended[2]["reason"], "User rejected sampling request");
    for (asked, answered) in relayed.iter().zip(&ended) {
        assert_eq!(
            asked["detail"]["client_request_id"],
            answered["detail"]["client_request_id"]
        );
    }
    // The refusal came from a different session than the relayed requests.
    assert_ne!(refused[0]["session"], relayed[0]["session"]);
    let methods: Vec<_> = relayed.iter().map(|e| e["method"].clone()).collect();
    assert_eq!(
        methods,
        [
            "sampling/createMessage",
            "elicitation/create",
            "sampling/createMessage"
        ]
    );
}

/// The default shared connection never hands an upstream's messages to a guessed client.
#[test]
fn shared_upstreams_never_reach_a_client() {
    let fx = Fixture::start("legacy").unwrap();
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
    run_relay(&gw, "shared");
    assert!(audit_events(&gw.audit_file(), "upstream.request").is_empty());
}

/// Fault injection: a per-session connection cannot be opened (the upstream speaks only the
/// stateless revision). Calls fail with an error naming the server; nothing runs on the shared
/// connection instead.
#[test]
fn a_per_session_upstream_that_cannot_be_opened_refuses_the_call() {
    let fx = Fixture::start("modern").unwrap();
    let gw = Gateway::start(&per_session(&fixture_server("fixture", &fx.url))).unwrap();
    let before = fx.calls();
    run_relay(&gw, "unreachable");
    assert_eq!(fx.calls(), before, "a call reached the upstream");
}

/// The Python SDK upstream over HTTPS (`bench_upstream.py --tls`), its certificate signed by a
/// certificate authority made for the test; the upstream process and its URL.
fn https_upstream(certs: &std::path::Path) -> (Upstream, String) {
    use std::io::BufRead as _;
    let mut child = Command::new(python())
        .arg(workspace().join("tests/python/bench_upstream.py"))
        .arg("--tls")
        .arg(certs)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("https://localhost:"), "{line}");
    (Upstream(child), url)
}

struct Upstream(std::process::Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway that trusts the upstream's certificate authority (through `SSL_CERT_FILE`, which
/// the platform's verifier reads) reaches it over HTTPS on both legs: rmcp's client for the
/// handshake, listing and pinning, the lean leg for the call. One that does not trust it never
/// connects (the name resolves to the address checked, and the certificate is refused), and the
/// call is refused.
#[tokio::test]
async fn an_https_upstream_is_reached_only_when_its_certificate_is_trusted() {
    let certs = tempfile::tempdir().unwrap();
    let (_up, url) = https_upstream(certs.path());
    let servers = format!(
        "  py:\n    url: {url}\n    allow_private: true\n    timeout: 5s\n    tools:\n      echo: {{ class: read }}\n"
    );
    let ca = certs.path().join("ca.pem");
    let call = req(
        2,
        "tools/call",
        json!({ "name": "py__echo", "arguments": { "text": "over tls" } }),
    );

    let trusting = Gateway::start_with_env(
        "",
        &servers,
        true,
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    )
    .unwrap();
    let mut c = Raw::new(trusting.mcp(), &trusting.key);
    c.init().await;
    let (status, r) = c.call(call.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(r["result"]["content"][0]["text"], "over tls", "{r}");

    let wary = Gateway::start_with_env("", &servers, false, &[]).unwrap();
    let mut c = Raw::new(wary.mcp(), &wary.key);
    c.init().await;
    let (_, r) = c.call(call).await;
    assert!(r["result"].is_null() && r["error"].is_object(), "{r}");
    let log = std::fs::read_to_string(wary.log_file()).unwrap();
    assert!(log.contains("UnknownIssuer"), "{log}");
}

/// With no certificate authority to trust at all (`SSL_CERT_FILE` naming no file and
/// `SSL_CERT_DIR` an empty directory, as on a machine without CA roots), an `http` upstream is
/// still reached, and an `https` one is not.
#[tokio::test]
async fn without_ca_roots_an_http_upstream_is_reached_and_an_https_one_is_not() {
    let certs = tempfile::tempdir().unwrap();
    let (_up, url) = https_upstream(certs.path());
    let fx = Fixture::start("both").unwrap();
    let servers = format!(
        "{}  py:\n    url: {url}\n    allow_private: true\n    timeout: 5s\n    tools:\n      echo: {{ class: read }}\n",
        fixture_server("fixture", &fx.url)
    );
    let none = certs.path().join("none.pem");
    let empty = certs.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let gw = Gateway::start_with_env(
        "",
        &servers,
        false,
        &[
            ("SSL_CERT_FILE", none.to_str().unwrap()),
            ("SSL_CERT_DIR", empty.to_str().unwrap()),
        ],
    )
    .unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let names = c
        .until_tools(|n| n.iter().any(|t| t == "fixture__echo"))
        .await;
    assert!(names.iter().any(|t| t == "fixture__echo"), "{names:?}");
    let echo = |name: &str, id: u64| {
        req(
            id,
            "tools/call",
            json!({ "name": name, "arguments": { "text": "no roots" } }),
        )
    };
    let (status, r) = c.call(echo("fixture__echo", 2)).await;
    assert_eq!(status, 200);
    assert_eq!(r["result"]["content"][0]["text"], "no roots", "{r}");
    let (_, r) = c.call(echo("py__echo", 3)).await;
    assert!(r["result"].is_null() && r["error"].is_object(), "{r}");
    let log = std::fs::read_to_string(gw.log_file()).unwrap();
    assert!(log.contains("No CA certificates"), "{log}");
}
