//! `portcullis kill|approvals|mode`: operator commands that go through the admin API, so they
//! are checked, recorded and take effect exactly as the same action in the web UI would.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use std::path::PathBuf;

use clap::Subcommand;

use crate::command::{EX_CONFIG, EX_UNAVAILABLE};

/// Where the admin API is and which operator key to use. The key is read from
/// `PORTCULLIS_ADMIN_KEY` or `--key-file`, never from the command line (it would show in `ps`).
#[derive(clap::Args, Clone)]
pub(crate) struct AdminTarget {
    /// The admin listener's URL, e.g. `http://127.0.0.1:8081` (or set PORTCULLIS_ADMIN_URL).
    #[arg(long)]
    pub(crate) admin_url: Option<String>,
    /// Derive the admin URL from this config's `admin_listen`.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// A file holding the operator key (otherwise PORTCULLIS_ADMIN_KEY).
    #[arg(long)]
    pub(crate) key_file: Option<PathBuf>,
}

/// Which switch, and why.
#[derive(clap::Args)]
pub(crate) struct SwitchArgs {
    #[command(flatten)]
    pub(crate) admin: AdminTarget,
    /// global, server, tool, key, team, org, user or agent.
    #[arg(long)]
    pub(crate) scope: String,
    /// What the scope names: a server, `server/tool`, a key id, a team, an org…
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Why (kept in the record).
    #[arg(long)]
    pub(crate) reason: String,
}

#[derive(Subcommand)]
pub(crate) enum KillAction {
    /// Engage a switch: matching calls are refused within a second on every process.
    Engage(SwitchArgs),
    /// Release a switch.
    Release(SwitchArgs),
    /// Show every switch.
    Status {
        #[command(flatten)]
        admin: AdminTarget,
    },
}

#[derive(Subcommand)]
pub(crate) enum ApprovalsAction {
    /// List requests (pending by default).
    List {
        #[command(flatten)]
        admin: AdminTarget,
        /// pending, approved, denied, used, voided, expired or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Show one request in full.
    Show {
        #[command(flatten)]
        admin: AdminTarget,
        id: String,
    },
    /// Approve a request: the identical call may then run once.
    Approve {
        #[command(flatten)]
        admin: AdminTarget,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Deny a request.
    Deny {
        #[command(flatten)]
        admin: AdminTarget,
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ModeAction {
    /// Show the mode in force and who set it.
    Show {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Switch the mode.
    Set {
        #[command(flatten)]
        admin: AdminTarget,
        /// enforce, read_only or shadow.
        mode: String,
        #[arg(long)]
        reason: String,
    },
}

/// A refused or failed admin call.
const EX_REFUSED: u8 = 1;

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

fn setup(t: &AdminTarget) -> Result<Client, ExitCode> {
    let base = match (&t.admin_url, &t.config) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(path)) => {
            let reg = crate::command::load(path)?;
            let a = reg.settings.admin_listen;
            if a.port() == 0 {
                eprintln!("portcullis: the config's admin_listen has port 0; pass --admin-url");
                return Err(ExitCode::from(EX_CONFIG));
            }
            let host = match a.ip().is_unspecified() {
                true => format!("127.0.0.1:{}", a.port()),
                false => a.to_string(),
            };
            format!("http://{host}")
        }
        (None, None) => match std::env::var("PORTCULLIS_ADMIN_URL") {
            Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_owned(),
            _ => {
                eprintln!(
                    "portcullis: say where the admin API is: --admin-url URL, --config FILE or PORTCULLIS_ADMIN_URL"
                );
                return Err(ExitCode::from(EX_CONFIG));
            }
        },
    };
    let key = match &t.key_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            eprintln!("portcullis: cannot read {}: {e}", p.display());
            ExitCode::from(EX_CONFIG)
        })?,
        None => std::env::var("PORTCULLIS_ADMIN_KEY").map_err(|_| {
            eprintln!("portcullis: set PORTCULLIS_ADMIN_KEY (or --key-file) to an admin, approver or auditor key");
            ExitCode::from(EX_CONFIG)
        })?,
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| {
            eprintln!("portcullis: cannot build an HTTP client: {e}");
            ExitCode::from(crate::command::EX_SOFTWARE)
        })?;
    Ok(Client {
        http,
        base,
        key: key.trim().to_owned(),
    })
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ExitCode> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| {
            eprintln!(
                "portcullis: cannot reach the admin API at {}: {e}",
                self.base
            );
            ExitCode::from(EX_UNAVAILABLE)
        })?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        eprintln!("portcullis: refused ({status}): {msg}");
        Err(ExitCode::from(match status.as_u16() {
            503 => EX_UNAVAILABLE,
            _ => EX_REFUSED,
        }))
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn done(r: Result<(), ExitCode>) -> ExitCode {
    r.err().unwrap_or(ExitCode::SUCCESS)
}

async fn set_switch(args: SwitchArgs, engaged: bool) -> Result<(), ExitCode> {
    let SwitchArgs {
        admin,
        scope,
        target,
        reason,
    } = args;
    let c = setup(&admin)?;
    let body = json!({ "scope": scope, "target": target, "engaged": engaged, "reason": reason });
    let v = c
        .call(reqwest::Method::POST, "/admin/kill-switch", Some(body))
        .await?;
    let sw = v.get("switch").cloned().unwrap_or(Value::Null);
    let what = match s(&sw, "target") {
        "" => s(&sw, "scope").to_owned(),
        t => format!("{} `{t}`", s(&sw, "scope")),
    };
    if engaged {
        let voided = v
            .get("voided_approvals")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        println!("engaged: {what} ({voided} pending approval(s) voided)");
    } else {
        println!("released: {what}");
    }
    Ok(())
}

pub(crate) async fn kill(action: KillAction) -> ExitCode {
    done(
        async {
            match action {
                KillAction::Engage(args) => set_switch(args, true).await,
                KillAction::Release(args) => set_switch(args, false).await,
                KillAction::Status { admin } => {
                    let c = setup(&admin)?;
                    let v = c
                        .call(reqwest::Method::GET, "/admin/kill-switch", None)
                        .await?;
                    let rows = v
                        .get("switches")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if rows.is_empty() {
                        println!("no kill switch has ever been engaged");
                    }
                    for r in rows {
                        let state = match r.get("engaged").and_then(Value::as_bool) {
                            Some(true) => "ENGAGED",
                            _ => "released",
                        };
                        println!(
                            "{state:<9} {:<7} {:<24} by {}: {}",
                            s(&r, "scope"),
                            s(&r, "target"),
                            s(&r, "actor"),
                            s(&r, "reason")
                        );
                    }
                    Ok(())
                }
            }
        }
        .await,
    )
}

fn print_approval(a: &Value) {
    println!(
        "{}  {:<9} {}/{} ({})  requested by {}",
        s(a, "id"),
        s(a, "status"),
        s(a, "server"),
        s(a, "tool"),
        s(a, "class"),
        s(a, "requester"),
    );
}

pub(crate) async fn approvals(action: ApprovalsAction) -> ExitCode {
    done(
        async {
            match action {
                ApprovalsAction::List { admin, status } => {
                    let c = setup(&admin)?;
                    let path = format!("/admin/approvals?status={}", urlencode(&status));
                    let v = c.call(reqwest::Method::GET, &path, None).await?;
                    let list = v
                        .get("approvals")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if list.is_empty() {
                        println!("no {status} approval requests");
                    }
                    for a in &list {
                        print_approval(a);
                    }
                    Ok(())
                }
                ApprovalsAction::Show { admin, id } => {
                    let c = setup(&admin)?;
                    let path = format!("/admin/approvals/{}", urlencode(&id));
                    let v = c.call(reqwest::Method::GET, &path, None).await?;
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    Ok(())
                }
                ApprovalsAction::Approve { admin, id, reason } => {
                    verdict(admin, &id, "approve", reason).await
                }
                ApprovalsAction::Deny { admin, id, reason } => {
                    verdict(admin, &id, "deny", reason).await
                }
            }
        }
        .await,
    )
}

async fn verdict(
    admin: AdminTarget,
    id: &str,
    verdict: &str,
    reason: String,
) -> Result<(), ExitCode> {
    let c = setup(&admin)?;
    let path = format!("/admin/approvals/{}/{verdict}", urlencode(id));
    let v = c
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({ "reason": reason })),
        )
        .await?;
    print_approval(&v);
    Ok(())
}

pub(crate) async fn mode(action: ModeAction) -> ExitCode {
    done(
        async {
            let v = match action {
                ModeAction::Show { admin } => {
                    setup(&admin)?
                        .call(reqwest::Method::GET, "/admin/mode", None)
                        .await?
                }
                ModeAction::Set {
                    admin,
                    mode,
                    reason,
                } => {
                    setup(&admin)?
                        .call(
                            reqwest::Method::POST,
                            "/admin/mode",
                            Some(json!({ "mode": mode, "reason": reason })),
                        )
                        .await?
                }
            };
            match s(&v, "source") {
                "operator" => println!(
                    "{} (set by {}: {})",
                    s(&v, "mode"),
                    s(&v, "set_by"),
                    s(&v, "reason")
                ),
                _ => println!("{} (from the config)", s(&v, "mode")),
            }
            Ok(())
        }
        .await,
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
