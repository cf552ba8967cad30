//! A real OpenID Connect provider for the tests.

use super::*;

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
