//! Sealed session ids: what a replica needs to continue a session it did not create, carried
//! in the id itself, encrypted and authenticated (AES-256-GCM), so any replica verifies it
//! without a lookup.
//!
//! An id is `ps1.` followed by base64url of: the key's 4-byte id, the 12-byte nonce, and the
//! sealed claims with their tag. The first key of the ring seals; every key opens, so a
//! rotation adds a key first and drops the old one once ids it sealed have expired. An id that
//! does not open (forged, altered, sealed with a dropped key, or not an id at all) is no
//! session.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Scope;

const PREFIX: &str = "ps1.";
const KID: usize = 4;
const NONCE: usize = 12;
/// Longest id this gateway opens; anything longer is refused before any work.
const MAX_ID: usize = 4096;
/// Client capabilities up to this size ride in the id whole; larger ones by their names only.
const MAX_CAPABILITIES: usize = 1024;

/// What a session id carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The subject the session is bound to.
    #[serde(rename = "s")]
    pub(crate) subject: String,
    /// The endpoint: `None` for `/mcp`, the server's name for `/mcp/<server>`.
    #[serde(rename = "e")]
    pub(crate) server: Option<String>,
    /// The negotiated revision.
    #[serde(rename = "v")]
    pub(crate) protocol_version: String,
    /// The capabilities the client declared at `initialize`.
    #[serde(rename = "c")]
    pub(crate) capabilities: Value,
    /// Unix milliseconds after which no replica accepts the id.
    #[serde(rename = "x")]
    pub(crate) expires_ms: i64,
}

impl Claims {
    pub(crate) fn scope(&self) -> Scope {
        match &self.server {
            None => Scope::Federated,
            Some(s) => Scope::Server(s.clone()),
        }
    }
}

/// The capabilities as they are kept in an id: whole when small, else by name.
pub(crate) fn capabilities_for_id(declared: &Value) -> Value {
    let small = serde_json::to_vec(declared).is_ok_and(|b| b.len() <= MAX_CAPABILITIES);
    match declared.as_object() {
        _ if small => declared.clone(),
        Some(map) => Value::Object(
            map.keys()
                .map(|k| (k.clone(), Value::Object(serde_json::Map::new())))
                .collect(),
        ),
        None => Value::Object(serde_json::Map::new()),
    }
}

struct Key {
    id: [u8; KID],
    key: RandomizedNonceKey,
}

/// The key ring that seals and opens session ids.
pub(crate) struct Sealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Sealer {
    /// A ring from secret material, first key sealing. Each secret is stretched to a key by
    /// SHA-256 under this purpose's label, so any long random string serves.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Result<Sealer, String> {
        let mut keys = Vec::new();
        for secret in secrets {
            if secret.len() < 32 {
                return Err(format!(
                    "a session key must be at least 32 bytes of random material (got {})",
                    secret.len()
                ));
            }
            let material = Sha256::new()
                .chain_update(b"portcullis session id key v1\0")
                .chain_update(secret)
                .finalize();
            let digest = Sha256::digest(material);
            let mut id = [0u8; KID];
            id.copy_from_slice(digest.get(..KID).unwrap_or(&[0; KID]));
            let key = RandomizedNonceKey::new(&AES_256_GCM, &material)
                .map_err(|_| "the session key was refused by the cipher".to_string())?;
            keys.push(Key { id, key });
        }
        if keys.is_empty() {
            return Err("no session key".into());
        }
        Ok(Sealer { keys })
    }

    /// A ring of one fresh random key: ids valid in this process only (tests).
    #[cfg(test)]
    pub(crate) fn ephemeral() -> Result<Sealer, String> {
        let secret = rand::random::<[u8; 32]>();
        Sealer::new([secret.as_slice()])
    }

    /// Seal `claims` into a session id (visible ASCII); `None` when it would be longer than
    /// any replica opens.
    pub(crate) fn seal(&self, claims: &Claims) -> Option<String> {
        let id = self.seal_bytes(PREFIX, &serde_json::to_vec(claims).ok()?)?;
        // One no replica would open is no id.
        (id.len() <= MAX_ID).then_some(id)
    }

    /// The claims of an id this ring sealed, unexpired at `now_ms`; `None` for anything else.
    pub(crate) fn open(&self, id: &str, now_ms: i64) -> Option<Claims> {
        if id.len() > MAX_ID {
            return None;
        }
        let plain = self.open_bytes(PREFIX, id)?;
        let claims: Claims = serde_json::from_slice(&plain).ok()?;
        (claims.expires_ms > now_ms).then_some(claims)
    }

    /// `data` sealed as `prefix` followed by base64url of key id, nonce, ciphertext and tag.
    /// The prefix is also the associated data: what one purpose sealed never opens as another's.
    pub(crate) fn seal_bytes(&self, prefix: &str, data: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let mut data = data.to_vec();
        let nonce = key
            .key
            .seal_in_place_append_tag(Aad::from(prefix.as_bytes()), &mut data)
            .ok()?;
        let mut raw = Vec::with_capacity(KID + NONCE + data.len());
        raw.extend_from_slice(&key.id);
        raw.extend_from_slice(nonce.as_ref());
        raw.extend_from_slice(&data);
        Some(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Whether `sealed` (as [`Sealer::seal_bytes`] writes under `prefix`) names a key of this
    /// ring: one that does not was sealed with another ring's key, or its key id was altered.
    pub(crate) fn has_key_of(&self, prefix: &str, sealed: &str) -> bool {
        let Some(raw) = sealed
            .strip_prefix(prefix)
            .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        else {
            return false;
        };
        raw.get(..KID)
            .is_some_and(|kid| self.keys.iter().any(|k| k.id == kid))
    }

    /// What [`Sealer::seal_bytes`] sealed under `prefix` with a key of this ring; `None` for
    /// anything forged, altered, sealed for another purpose or with a dropped key.
    pub(crate) fn open_bytes(&self, prefix: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(prefix)?).ok()?;
        let (kid, rest) = raw.split_at_checked(KID)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE)?;
        let key = self.keys.iter().find(|k| k.id == kid)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(prefix.as_bytes()), &mut sealed)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests;
