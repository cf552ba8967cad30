//! `portcullis quickstart`: a working gateway in the current directory, with nothing left half
//! done when it cannot start.
//!
//! The order matters: the ports are bound first, then the config is validated in memory, and only
//! then is anything written (the config, the store, the keys). A port that is taken stops the
//! quickstart before it leaves a file behind.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use store::{KeyRole, KeyScope, Store};

use crate::command::{EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE, open_store};

/// The first line of every config the quickstart writes; a re-run may edit only such a file.
const MARKER: &str = "# Written by `portcullis quickstart`.";
/// The port used when neither `--port` nor an existing config names one.
const DEFAULT_PORT: u16 = 8080;
/// Names of the keys the quickstart issues; a re-run revokes the previous ones.
const CLIENT_KEY: &str = "quickstart-client";
const ADMIN_KEY: &str = "quickstart-admin";
/// The team the quickstart's client key belongs to; the config grants it the notes tools.
const TEAM: &str = "quickstart";

/// The config `quickstart` writes: the built-in notes upstream with every tool class, granted
/// to the quickstart team in the config itself so that `portcullis check` passes on it.
fn config_text(port: u16) -> String {
    format!(
        "{MARKER} Edit it, then run:\n\
         #   portcullis serve --config portcullis.yaml\n\
         profile: development\n\
         listen: 127.0.0.1:{port}\n\
         admin_listen: 127.0.0.1:{admin}\n\
         store: sqlite://portcullis.db\n\
         servers:\n  \
           notes:\n    \
             builtin: notes\n    \
             tools:\n      \
               search_notes: {{ class: read }}\n      \
               get_note: {{ class: read }}\n      \
               create_note: {{ class: write, rate: 30/min }}\n      \
               delete_note: {{ class: destructive, rate: 10/min }}\n    \
             resources: [\"note://*\"]\n    \
             prompts: [summarize_notes]\n\
         # Who may call what. A call is allowed only when every level of the caller grants it; the\n\
         # quickstart's client key belongs to team `{TEAM}` and carries `notes/*` itself.\n\
         grants:\n  \
           team:{TEAM}: [\"notes/*\"]\n\
         # create_note and delete_note wait for a human: approve them at the admin URL.\n\
         approvals: {{ ttl: 15m, hold: 30s, target_arguments: [id, title] }}\n\
         mode: enforce\n\
         # Every decision is written here before the call runs; `portcullis audit verify audit.jsonl`\n\
         # checks the hash chain. Values at these paths (and anything that looks like a secret) are\n\
         # replaced by a keyed digest.\n\
         audit:\n  \
           sinks:\n    \
             - {{ type: file, path: audit.jsonl }}\n    \
             - {{ type: store }}\n  \
           redact: [\"$.arguments.password\"]\n",
        admin = port.saturating_add(1)
    )
}

/// The quickstart's text with its two listen lines moved to `port` and `port + 1`.
fn with_port(text: &str, port: u16) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("listen:") {
            out.push_str(&format!("listen: 127.0.0.1:{port}"));
        } else if line.starts_with("admin_listen:") {
            out.push_str(&format!(
                "admin_listen: 127.0.0.1:{}",
                port.saturating_add(1)
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Two adjacent free loopback ports, to suggest when the asked-for ones are taken.
fn free_pair() -> Option<u16> {
    (0..50).find_map(|_| {
        let first = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = first.local_addr().ok()?.port();
        let next = port.checked_add(1)?;
        TcpListener::bind(("127.0.0.1", next)).ok().map(|_| port)
    })
}

/// Bind both listeners, or say which address is taken and what to do.
fn bind_both(
    listen: SocketAddr,
    admin: SocketAddr,
    asked: Option<u16>,
) -> Result<(TcpListener, TcpListener), String> {
    let bind = |addr: SocketAddr, what: &str| {
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
    };
    match (bind(listen, "listen"), bind(admin, "admin_listen")) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(why), _) | (_, Err(why)) => {
            let hint = match (asked, free_pair()) {
                (None, Some(p)) => format!(
                    "\n  fix: another program holds the port; run `portcullis quickstart --port {p}` (ports {p} and {} are free now)",
                    p.saturating_add(1)
                ),
                (Some(_), Some(p)) => format!(
                    "\n  fix: choose other ports, e.g. `--port {p}` ({p} and {} are free now)",
                    p.saturating_add(1)
                ),
                (_, None) => "\n  fix: free the port, or choose another with `--port`".to_owned(),
            };
            Err(format!("{why}{hint}\n  nothing was written or issued"))
        }
    }
}

/// Revoke the keys an earlier quickstart in this directory issued; their secrets were shown
/// once and cannot be shown again, so the new run issues fresh ones in their place.
async fn revoke_previous(store: &Store, audit: &audit::Audit) -> Result<Vec<String>, String> {
    let mut revoked = Vec::new();
    let keys = store.list_keys().await.map_err(|e| e.to_string())?;
    for key in keys {
        if key.revoked_at.is_none()
            && (key.name == CLIENT_KEY || key.name == ADMIN_KEY)
            && store.revoke_key(&key.id).await.map_err(|e| e.to_string())?
        {
            // Revocation is never held back by the audit log; an unrecorded one stops here.
            let mut e = audit::Event::new("key.revoke");
            e.identity = Some(crate::command::cli_operator());
            e.detail = Some(
                serde_json::json!({ "id": key.id, "reason": "replaced by a new quickstart run" }),
            );
            audit.record(e).await.map_err(|why| {
                format!(
                    "key {} is revoked, but the audit log did not record it: {why}",
                    key.id
                )
            })?;
            revoked.push(format!("{} ({})", key.name, key.id));
        }
    }
    Ok(revoked)
}

/// The Node.js major version on PATH, if any.
fn node_major() -> Option<u32> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The lines telling the user how to approve held calls, or nothing when no tool is held.
fn approvals_help(reg: &registry::Registry, config: &Path) -> String {
    let threshold = match reg.access.policy.approval() {
        policy::Approval::Never => return String::new(),
        policy::Approval::From(class) => class,
    };
    let held: Vec<String> = reg
        .servers
        .iter()
        .flat_map(|s| {
            s.tools
                .iter()
                .filter(|(_, e)| e.class >= threshold)
                .map(|(t, e)| format!("{}__{t} ({})", s.name, e.class))
        })
        .collect();
    if held.is_empty() {
        return String::new();
    }
    format!(
        "Held for a human's approval: {}.\n  \
         Approve on the admin page (Approvals), or from a shell:\n  \
         PORTCULLIS_ADMIN_KEY=<admin key> portcullis approvals list --config {config}\n  \
         PORTCULLIS_ADMIN_KEY=<admin key> portcullis approvals approve --config {config} <id> --reason \"...\"\n\n",
        held.join(", "),
        config = config.display(),
    )
}

/// How to try the gateway: the MCP Inspector when Node.js 22+ is present, and curl otherwise.
fn try_it(url: &str, client: &str) -> String {
    let inspector = format!(
        "npx -y @modelcontextprotocol/inspector --cli {url} --transport http \\\n    \
         --header \"Authorization: Bearer {client}\" --method tools/list\n"
    );
    match node_major() {
        Some(v) if v >= 22 => format!("Try it with the MCP Inspector:\n  {inspector}"),
        found => {
            let have = found.map_or_else(
                || "Node.js was not found".to_owned(),
                |v| format!("this machine has Node.js {v}"),
            );
            format!(
                "Try it with curl (the MCP Inspector needs Node.js 22 or newer; {have}):\n  \
                 curl -sS {url} -H \"Authorization: Bearer {client}\" -H \"Content-Type: application/json\" \\\n    \
                 -H \"Accept: application/json, text/event-stream\" -H \"MCP-Protocol-Version: 2026-07-28\" -H \"Mcp-Method: tools/list\" \\\n    \
                 -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{{\"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{{}}}}}}}}'\n\n\
                 With Node.js 22 or newer, the MCP Inspector:\n  {inspector}"
            )
        }
    }
}

/// `portcullis quickstart`: write (or reuse) `./portcullis.yaml`, issue keys, run.
pub(crate) async fn quickstart(port: Option<u16>) -> ExitCode {
    let path = Path::new("portcullis.yaml");
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("portcullis: cannot read ./portcullis.yaml: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    // A config someone else wrote is theirs: the quickstart neither edits it nor issues keys in
    // its store.
    if existing.as_ref().is_some_and(|t| !t.starts_with(MARKER)) {
        eprintln!(
            "portcullis: ./portcullis.yaml was not written by the quickstart, so the quickstart leaves it and its store alone\n  \
             fix: serve it with `portcullis serve --config portcullis.yaml`, or run the quickstart in an empty directory"
        );
        return ExitCode::from(EX_CONFIG);
    }
    // The text to run with: a fresh config, or the existing one with `--port` applied.
    let (text, write) = match (&existing, port) {
        (None, p) => (config_text(p.unwrap_or(DEFAULT_PORT)), true),
        (Some(t), Some(p)) => {
            let moved = with_port(t, p);
            let changed = moved != *t;
            (moved, changed)
        }
        (Some(t), None) => (t.clone(), false),
    };
    let reg = match registry::load_str("portcullis.yaml", &text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let listeners = match bind_both(reg.settings.listen, reg.settings.admin_listen, port) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("portcullis: {why}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if write {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("portcullis: cannot write ./portcullis.yaml: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
        if existing.is_some() {
            crate::serve::say(&format!(
                "portcullis: ./portcullis.yaml now listens on {} (admin {})",
                reg.settings.listen, reg.settings.admin_listen
            ));
        }
    } else if existing.is_some() {
        crate::serve::say("portcullis: using the existing ./portcullis.yaml");
    }
    // Loaded again from the file so relative paths resolve exactly as `serve` resolves them.
    let reg = match crate::command::load(path) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let store = match open_store(&reg).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    // Keys are issued and revoked on the record, as `portcullis keys` does; no audit log, no keys.
    let audit =
        match audit::Audit::open(&reg.settings.audit, &store, "quickstart", &reg.digest).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("portcullis: {e}\n  nothing was issued");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
    match revoke_previous(&store, &audit).await {
        Ok(gone) if !gone.is_empty() => crate::serve::say(&format!(
            "portcullis: revoked the keys of the previous quickstart: {}",
            gone.join(", ")
        )),
        Ok(_) => {}
        Err(e) => {
            eprintln!("portcullis: cannot revoke the keys of a previous quickstart: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    }
    let client = store
        .create_key(
            CLIENT_KEY,
            KeyRole::Client,
            KeyScope {
                team: Some(TEAM.to_owned()),
                grants: vec!["notes/*".to_owned()],
                ..KeyScope::default()
            },
        )
        .await;
    // The person at this terminal: they approve the quickstart client's calls.
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && !u.chars().any(char::is_control))
        .unwrap_or_else(|| "operator".to_owned());
    let admin = store
        .create_key(
            ADMIN_KEY,
            KeyRole::Admin,
            KeyScope {
                user: Some(user),
                ..KeyScope::default()
            },
        )
        .await;
    let (client, admin) = match (client, admin) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("portcullis: cannot issue keys: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    for key in [&client, &admin] {
        let mut e = audit::Event::new("key.issue");
        e.identity = Some(crate::command::cli_operator());
        e.detail = Some(serde_json::json!({
            "id": key.record.id,
            "role": key.record.role.as_str(),
            "name": key.record.name,
        }));
        if let Err(why) = audit.record(e).await {
            // An unrecorded key must not stay usable.
            let _ = store.revoke_key(&client.record.id).await;
            let _ = store.revoke_key(&admin.record.id).await;
            eprintln!("portcullis: keys not issued: the audit log cannot record them ({why})");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    }
    // `serve` opens the log again for itself.
    if let Err(e) = audit.close().await {
        eprintln!("portcullis: the audit log could not be closed cleanly: {e}");
        return ExitCode::from(EX_UNAVAILABLE);
    }
    let base = reg
        .settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", reg.settings.listen));
    let url = format!("{base}/mcp");
    let banner = format!(
        "\nPortcullis is running.\n\n  \
         MCP URL:     {url}\n  \
         Admin URL:   {{admin_url}}  (sign in with the admin key)\n  \
         Client key:  {client}\n  \
         Admin key:   {admin}   (shown once)\n  \
         Config:      ./portcullis.yaml  (then: portcullis serve --config portcullis.yaml)\n\n\
         {approvals}{try_it}",
        client = client.secret,
        admin = admin.secret,
        approvals = approvals_help(&reg, path),
        try_it = try_it(&url, &client.secret),
    );
    crate::serve::run(reg, path, Some(banner), Some(listeners)).await
}

#[cfg(test)]
mod tests;
