//! Authentication on the MCP listener: every request carries a key, or it is refused.
//!
//! There is no anonymous path. A key is verified against the store; a store error is a refusal
//! (503), never a pass. Verified keys are cached briefly so the per-call cost is a hash and a map
//! lookup; revocation through this process clears the cache at once, and a revocation from another
//! process is seen within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::{KeyRole, Store, StoreError};

/// How long a verified key is trusted without asking the store again.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Upper bound on cached keys; past it the cache is cleared rather than grown.
const CACHE_MAX: usize = 10_000;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The key's id (never its secret).
    pub(crate) key_id: String,
    /// The key's name, for logs.
    pub(crate) key_name: String,
}

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("no bearer credential")]
    Missing,
    #[error("credential not recognised")]
    Invalid,
    #[error("an admin key cannot call MCP")]
    WrongRole,
    #[error("credential could not be checked: {0}")]
    Unavailable(#[from] StoreError),
}

/// Verifies keys, with a short positive cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl Authenticator {
    pub(crate) fn new(store: Store) -> Authenticator {
        Authenticator {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticate an `Authorization` header value for the MCP listener.
    pub(crate) async fn client(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = self.cached(&digest) {
            return Ok(id);
        }
        let record = self
            .store
            .verify_key(token)
            .await?
            .ok_or(AuthError::Invalid)?;
        if record.role != KeyRole::Client {
            return Err(AuthError::WrongRole);
        }
        let identity = Identity {
            key_id: record.id,
            key_name: record.name,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(digest, (identity.clone(), Instant::now()));
        }
        Ok(identity)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Identity> {
        // A poisoned lock only loses the cache: fall through to the store.
        let cache = self.cache.lock().ok()?;
        let (id, at) = cache.get(digest)?;
        (at.elapsed() < CACHE_TTL).then(|| id.clone())
    }
}

#[cfg(test)]
mod tests;
