//! The gateway under test: its processes, config, store and keys.

use super::*;

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

impl Replica {
    /// Stop this process with SIGKILL.
    pub fn kill(&mut self) {
        self._proc.kill();
    }
}
