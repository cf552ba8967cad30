//! `portcullis keys`: issue, list and revoke API keys in the store a config names.

use std::process::ExitCode;
use store::KeyRole;

use std::path::PathBuf;

use clap::Subcommand;

use crate::command::{EX_CONFIG, EX_UNAVAILABLE, cli_audit, cli_operator, load, open_store};

#[derive(Subcommand)]
pub(crate) enum KeysAction {
    /// Issue a key; the secret is printed once and never stored.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// A name for the key, for logs and listings.
        #[arg(long)]
        name: String,
        /// `client` keys call MCP; `admin`, `approver` and `auditor` keys work on the admin
        /// listener.
        #[arg(long, default_value = "client")]
        role: String,
        /// A grant the key carries, `server/tool` or `server/*` (repeat for several).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// The org the key belongs to.
        #[arg(long)]
        org: Option<String>,
        /// The team the key belongs to.
        #[arg(long)]
        team: Option<String>,
        /// The agent the key is for.
        #[arg(long)]
        agent: Option<String>,
        /// The person the key belongs to (a client key's user level; an operator key's holder,
        /// who may not approve their own calls).
        #[arg(long)]
        user: Option<String>,
        /// A service key may name the end user of each request (`Portcullis-End-User`).
        #[arg(long)]
        service: bool,
        /// Mint under this key: the new key can be no wider than it.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke a key by id.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        id: String,
    },
}

/// `portcullis keys create|list|revoke`.
pub(crate) async fn run(action: KeysAction) -> ExitCode {
    let config = match &action {
        KeysAction::Create { config, .. }
        | KeysAction::List { config }
        | KeysAction::Revoke { config, .. } => config,
    };
    let reg = match load(config) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let store = match open_store(&reg).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    match action {
        KeysAction::Create {
            name,
            role,
            grants,
            org,
            team,
            agent,
            user,
            service,
            parent,
            ..
        } => {
            let Some(role) = KeyRole::parse(&role) else {
                eprintln!(
                    "portcullis: unknown role `{role}`; use client, admin, approver or auditor"
                );
                return ExitCode::from(EX_CONFIG);
            };
            let request = crate::keys::MintRequest {
                name,
                role,
                scope: store::KeyScope {
                    org,
                    team,
                    agent,
                    user,
                    grants,
                    service,
                    parent,
                },
            };
            let audit = match cli_audit(&reg, &store).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match crate::keys::mint(&store, &reg, request).await {
                Ok(k) => {
                    let mut e = audit::Event::new("key.issue");
                    e.identity = Some(cli_operator());
                    e.detail = Some(serde_json::json!({
                        "id": k.record.id,
                        "role": role.as_str(),
                        "name": k.record.name,
                    }));
                    if let Err(why) = audit.record(e).await {
                        // An unrecorded key must not stay usable.
                        match store.revoke_key(&k.record.id).await {
                            Ok(_) => eprintln!(
                                "portcullis: key not issued: the audit log cannot record it ({why}); it was revoked at once"
                            ),
                            Err(e) => eprintln!(
                                "portcullis: the audit log cannot record key {} ({why}) and revoking it failed ({e}): revoke it with `portcullis keys revoke {}`",
                                k.record.id, k.record.id
                            ),
                        }
                        return ExitCode::from(EX_UNAVAILABLE);
                    }
                    if let Err(e) = audit.close().await {
                        eprintln!("portcullis: the audit log could not be closed cleanly: {e}");
                    }
                    println!(
                        "id: {}\nrole: {}\nkey: {}",
                        k.record.id,
                        role.as_str(),
                        k.secret
                    );
                    eprintln!("portcullis: the key is shown once; store it now");
                    ExitCode::SUCCESS
                }
                Err(crate::keys::MintError::Refused(why)) => {
                    eprintln!("portcullis: key not issued: {why}");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
        KeysAction::List { .. } => match store.list_keys().await {
            Ok(keys) => {
                println!(
                    "{:<16}  {:<8}  {:<7}  {:<10}  {:<24}  name",
                    "id", "role", "state", "created", "scope"
                );
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    let scope = k.scope.labels();
                    println!(
                        "{:<16}  {:<8}  {:<7}  {:<10}  {:<24}  {}",
                        k.id,
                        k.role.as_str(),
                        state,
                        k.created_at,
                        scope.join(" "),
                        k.name
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        },
        KeysAction::Revoke { id, .. } => match store.revoke_key(&id).await {
            Ok(true) => {
                println!("revoked {id}");
                // Revocation is never held back by the audit log; a failure to record it is
                // reported and makes the command fail.
                let mut e = audit::Event::new("key.revoke");
                e.identity = Some(cli_operator());
                e.detail = Some(serde_json::json!({ "id": id }));
                let recorded = match cli_audit(&reg, &store).await {
                    Ok(audit) => match audit.record(e).await {
                        Ok(()) => audit.close().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(_) => Err("the audit log cannot be opened".to_string()),
                };
                if let Err(why) = recorded {
                    eprintln!(
                        "portcullis: the key is revoked, but the audit log did not record it: {why}"
                    );
                    return ExitCode::from(EX_UNAVAILABLE);
                }
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("portcullis: no active key `{id}`");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        },
    }
}
