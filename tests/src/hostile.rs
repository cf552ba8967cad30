//! The hostile upstream (`tests/python/hostile_upstream.py`): a Streamable HTTP server that
//! misbehaves on purpose, for the hardening tests.

use std::process::Command;

use anyhow::Result;

use crate::{Proc, python, spawn_until, workspace};

/// The hostile upstream, killed on drop.
pub struct Hostile {
    _proc: Proc,
    /// Its MCP endpoint.
    pub url: String,
}

impl Hostile {
    /// Start it; `poison` adds a tool whose description carries instruction-like markup.
    pub fn start(poison: bool) -> Result<Hostile> {
        Hostile::start_with(if poison { &["--poison"] } else { &[] })
    }

    /// Start it with its `flags` (`--poison`, `--twice`).
    pub fn start_with(flags: &[&str]) -> Result<Hostile> {
        let mut cmd = Command::new(python());
        cmd.arg(workspace().join("tests/python/hostile_upstream.py"));
        cmd.args(flags);
        let (proc, line) = spawn_until(cmd, "hostile listening on ")?;
        let url = line.rsplit(' ').next().unwrap_or_default().to_string();
        Ok(Hostile { _proc: proc, url })
    }

    fn control(&self) -> String {
        self.url.trim_end_matches("/mcp").to_string()
    }

    /// Forget every session and change `echo`'s description, as a restarted upstream would.
    pub async fn restart(&self) {
        let r = reqwest::Client::new()
            .post(format!("{}/control/restart", self.control()))
            .send()
            .await
            .expect("restart the hostile upstream");
        assert_eq!(r.status(), 204);
    }

    /// How many calls of `tool` reached it.
    pub async fn calls(&self, tool: &str) -> u64 {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/control/calls", self.control()))
            .send()
            .await
            .expect("ask the hostile upstream")
            .json()
            .await
            .expect("calls as JSON");
        v[tool].as_u64().unwrap_or(0)
    }

    /// Its server entry: every tool allowlisted as `read`, a bearer credential from `token`.
    pub fn server(&self, name: &str, token: &std::path::Path, extra: &str) -> String {
        let tools = ["echo", "hold", "inject", "tick", "leak", "forge", "poison"]
            .iter()
            .map(|t| format!("      {t}: {{ class: read }}\n"))
            .collect::<String>();
        format!(
            "  {name}:\n    url: {url}\n    allow_private: true\n    timeout: 2s\n{extra}    credentials: {{ bearer: \"file:{token}\" }}\n    resources: [\"note://pub/*\"]\n    tools:\n{tools}",
            url = self.url,
            token = token.display()
        )
    }
}
