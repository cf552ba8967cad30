//! Resolving secret references: `env:`, `file:` and `vault:` (KV version 2 on Vault or OpenBao).
//!
//! Secrets are read when they are needed (an upstream connection, a child process, the audit
//! key), so a rotated secret takes effect at the next connection. The Vault token (itself an
//! `env:` or `file:` reference) is read again before each Vault read, so a token renewed in its
//! file (a Vault Agent sink, say) takes effect at once. A reference that cannot be read
//! is an error that names the reference, never a value; whatever needed it does not proceed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use registry::{SecretRef, VaultSettings};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// A secret's value. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([hidden])")
    }
}

/// Why a reference could not be read. The message names the reference only.
#[derive(Debug, thiserror::Error)]
#[error("cannot read secret `{reference}`: {why}")]
pub(crate) struct SecretError {
    reference: String,
    why: String,
}

/// What resolves references for this process.
pub(crate) struct Secrets {
    vault: Option<Vault>,
}

/// The Vault server, and a client for the token last read.
struct Vault {
    settings: VaultSettings,
    current: Mutex<(String, Arc<VaultClient>)>,
}

impl Vault {
    fn client_for(settings: &VaultSettings, token: &str) -> Result<VaultClient, String> {
        let mut b = VaultClientSettingsBuilder::default();
        b.address(&settings.address)
            .token(token)
            .timeout(Some(settings.timeout))
            .verify(true);
        if let Some(ns) = &settings.namespace {
            b.set_namespace(ns.clone());
        }
        let built = b.build().map_err(|e| format!("secrets.vault: {e}"))?;
        VaultClient::new(built).map_err(|e| format!("secrets.vault: {e}"))
    }

    /// A client for the token as it reads now: the same one while the token is unchanged. The
    /// reference is a local file or variable, so reading it costs no network round trip.
    fn client(&self) -> Result<Arc<VaultClient>, String> {
        let token = self
            .settings
            .token
            .resolve_local()
            .map_err(|e| format!("secrets.vault.token: {e}"))?;
        if token.trim().is_empty() {
            // A file caught mid-write, say: no token is not a new token.
            return Err("secrets.vault.token: the reference reads empty".to_string());
        }
        // What the lock guards is replaced whole, so a poisoned lock still holds a usable pair.
        let same =
            |current: &(String, Arc<VaultClient>)| (current.0 == token).then(|| current.1.clone());
        if let Some(client) = same(&self.current.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(client);
        }
        let client = Arc::new(Vault::client_for(&self.settings, &token)?);
        tracing::info!(address = %self.settings.address, "Vault token changed; using the new one");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (token, client.clone());
        Ok(client)
    }
}

impl Secrets {
    /// Build the resolver. The Vault token (an `env:` or `file:` reference) must be readable now.
    pub(crate) fn new(vault: Option<&VaultSettings>) -> Result<Secrets, String> {
        let Some(v) = vault else {
            return Ok(Secrets { vault: None });
        };
        let token = v
            .token
            .resolve_local()
            .map_err(|e| format!("secrets.vault.token: {e}"))?;
        reqwest::Url::parse(&v.address)
            .map_err(|_| format!("secrets.vault.address: `{}` is not a URL", v.address))?;
        let client = Arc::new(Vault::client_for(v, &token)?);
        Ok(Secrets {
            vault: Some(Vault {
                settings: v.clone(),
                current: Mutex::new((token, client)),
            }),
        })
    }

    /// Read one secret now.
    pub(crate) async fn resolve(&self, r: &SecretRef) -> Result<Secret, SecretError> {
        let fail = |why: String| SecretError {
            reference: r.to_string(),
            why,
        };
        match r {
            SecretRef::Env(_) | SecretRef::File(_) => r.resolve_local().map(Secret).map_err(fail),
            SecretRef::Vault { mount, path, key } => {
                let Some(vault) = &self.vault else {
                    return Err(fail("no Vault is configured".into()));
                };
                let client = vault.client().map_err(fail)?;
                let data: HashMap<String, serde_json::Value> =
                    vaultrs::kv2::read(&*client, mount, path)
                        .await
                        .map_err(|e| fail(vault_error(&e, &vault.settings.address)))?;
                match data.get(key) {
                    Some(serde_json::Value::String(s)) => Ok(Secret(s.clone())),
                    Some(_) => Err(fail(format!("the key `{key}` is not a string"))),
                    None => Err(fail(format!("the secret has no key `{key}`"))),
                }
            }
        }
    }

    /// Read every reference once at start, so a missing secret stops the gateway instead of
    /// surfacing at the first call.
    pub(crate) async fn check_all<'a>(
        &self,
        refs: impl IntoIterator<Item = (String, &'a SecretRef)>,
    ) -> Result<(), String> {
        for (at, r) in refs {
            self.resolve(r).await.map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(())
    }
}

/// A Vault error without the response body (which may echo request data).
fn vault_error(e: &vaultrs::error::ClientError, address: &str) -> String {
    use vaultrs::error::ClientError as E;
    match e {
        E::APIError { code, .. } => match code {
            403 => "Vault refused the token (403)".to_string(),
            404 => "no such secret (404)".to_string(),
            c => format!("Vault answered {c}"),
        },
        E::RestClientError { .. } => format!("Vault at {address} did not answer"),
        _ => "the Vault response could not be read".to_string(),
    }
}

/// Every secret reference a registry uses, with the key it is written under.
pub(crate) fn references(reg: &registry::Registry) -> Vec<(String, &SecretRef)> {
    let mut out = Vec::new();
    for s in &reg.servers {
        for c in &s.credentials {
            out.push((
                format!("servers.{}.credentials ({})", s.name, c.header),
                &c.secret,
            ));
        }
        if let Some(m) = &s.minted {
            let (what, r) = match &m.client().auth {
                registry::ClientAuth::Secret(r) => ("client_secret", r),
                registry::ClientAuth::PrivateKeyJwt { key, .. } => ("private_key_jwt.key", key),
            };
            out.push((format!("servers.{}.credentials ({what})", s.name), r));
        }
        if let registry::ServerSource::Command(cmd) = &s.source {
            for (k, r) in &cmd.env {
                out.push((format!("servers.{}.command.env.{k}", s.name), r));
            }
        }
    }
    if let Some(p) = &reg.settings.store_password {
        out.push(("store_password".to_string(), p));
    }
    if let Some(k) = &reg.settings.audit.redact_key {
        out.push(("audit.redact_key".to_string(), k));
    }
    out
}

/// Open the config's store, its password read by reference (never from the URL).
pub(crate) async fn open_store(
    reg: &registry::Registry,
    secrets: &Secrets,
) -> Result<store::Store, String> {
    let shown = &reg.settings.store;
    let password = match &reg.settings.store_password {
        Some(r) => Some(secrets.resolve(r).await.map_err(|e| e.to_string())?),
        None => None,
    };
    store::Store::connect(shown, password.as_ref().map(Secret::expose))
        .await
        .map_err(|e| format!("cannot open store `{shown}`: {e}"))
}
