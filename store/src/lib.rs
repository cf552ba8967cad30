//! The store: runtime state that is not config: issued API keys, kill switches, the runtime
//! mode, approval requests, budget usage, the operator record, the audit sink's rows and process
//! heartbeats.
//!
//! A crate of its own, below the gateway: it imports nothing of the gateway (no policy, no
//! protocol, no HTTP), so another backend can sit beside SQLite here.
//!
//! SQLite through sqlx with runtime-checked queries. Keys are stored as a SHA-256 of their secret
//! part; the full key is shown once, when it is created, and never again. Several gateway
//! processes may share one store: every state change is a single conditional statement.

mod approvals;
mod audit;
mod budgets;
mod db;
mod events;
mod instances;
mod levers;
mod reserve;
mod schema;
mod sessions;
mod tasks;

pub use approvals::{ApprovalKey, ApprovalRecord, ApprovalStatus, DecideError, NewApproval};
pub use audit::{AuditRow, AuditWriter};
pub use budgets::{Charge, UsageRow};
pub use db::{Backend, check_url};
pub use instances::InstanceRow;
pub use levers::{LeverWatch, ModeRow, SwitchRow};
pub use schema::VERSION as SCHEMA_VERSION;
pub use tasks::{NewTask, TaskRecord, TaskStatus};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt as _;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Prefix of every key this gateway issues, so leaked keys are recognisable by scanners.
const KEY_PREFIX: &str = "pcl";

/// What a key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Calls MCP on the main listener.
    Client,
    /// Operates the gateway on the admin listener: every admin action, approvals included.
    Admin,
    /// Approves or denies held calls on the admin listener, and reads what an auditor reads.
    Approver,
    /// Reads state, approvals and the operator record on the admin listener; changes nothing.
    Auditor,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Client => "client",
            KeyRole::Admin => "admin",
            KeyRole::Approver => "approver",
            KeyRole::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<KeyRole> {
        match s {
            "client" => Some(KeyRole::Client),
            "admin" => Some(KeyRole::Admin),
            "approver" => Some(KeyRole::Approver),
            "auditor" => Some(KeyRole::Auditor),
            _ => None,
        }
    }

    /// True for the roles that work on the admin listener.
    pub fn is_operator(self) -> bool {
        self != KeyRole::Client
    }
}

/// A stored key, without its secret.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: KeyRole,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub scope: KeyScope,
}

/// Where a key sits in the identity model, and what it was issued with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyScope {
    /// The org the key belongs to.
    pub org: Option<String>,
    /// The team the key belongs to.
    pub team: Option<String>,
    /// The agent label, when the key is an agent's.
    pub agent: Option<String>,
    /// The person the key belongs to: the user level of a client key, the named operator of an
    /// admin, approver or auditor key (who may not approve their own calls).
    pub user: Option<String>,
    /// The key's own grant patterns, exactly as stored (parsed when the key is used, so a
    /// corrupt value is a fault at that moment, never a grant).
    pub grants: Vec<String>,
    /// A service key may name the end user of each request (which only narrows access).
    pub service: bool,
    /// The key that minted this one, if a key did.
    pub parent: Option<String>,
}

impl KeyScope {
    /// The scope as operators read it: `org:…`, `team:…`, `agent:…`, `user:…`, `service`, then
    /// the key's own grants.
    pub fn labels(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            ("org", &self.org),
            ("team", &self.team),
            ("agent", &self.agent),
            ("user", &self.user),
        ]
        .into_iter()
        .filter_map(|(level, v)| v.as_ref().map(|v| format!("{level}:{v}")))
        .collect();
        if self.service {
            out.push("service".to_owned());
        }
        out.extend(self.grants.iter().cloned());
        out
    }
}

/// A freshly issued key: the only time the secret exists outside the caller's hands.
pub struct IssuedKey {
    pub record: KeyRecord,
    pub secret: String,
}

/// Why the store failed. Every caller on the request path turns this into a refusal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store unavailable: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record `{0}` is corrupt")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

/// Handle to the store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Budget usage's connections. On SQLite, connections of their own whose commits survive a
    /// crash of the process without waiting for the disk (`synchronous = NORMAL` in WAL mode),
    /// as one is made on every call with a budget; a power loss may take back the last
    /// reservations (the units come back). On PostgreSQL, the main pool.
    budgets: AnyPool,
    /// Budget reservations, committed in groups (`reserve.rs`).
    reserver: Arc<reserve::Reserver>,
    /// On SQLite, the connection the audit store sink and the reservations write through.
    writer: Option<Arc<db::SharedWriter>>,
    target: Arc<db::Target>,
}

/// Longest chain of keys minting keys that authenticates.
pub const MAX_LINEAGE: usize = 8;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SHA-256 of a key's secret part, hex-encoded.
fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Split `pcl_<id>_<secret>` into id and secret.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32;
    ok.then_some((id, secret))
}

// === impl Store ===

impl Store {
    /// Run one statement, for fault injection in tests.
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn execute_for_test(&self, sql: &'static str) -> Result<(), StoreError> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// The audit store sink's writer, used on the sink's thread. On SQLite it writes through the
    /// store's one writing connection, shared with the budget reservations (`db::SharedWriter`),
    /// whose commits survive a crash of the process without waiting for the disk (WAL with
    /// `synchronous = NORMAL`); power-loss durability is the file sink's `fsync`.
    pub fn audit_writer(&self) -> Result<audit::AuditWriter, StoreError> {
        audit::AuditWriter::open(&self.target, self.writer.as_ref())
    }

    /// A store whose every query fails, as an unreachable database does: the self-audit runs
    /// the real credential check against it to show that a store error is a refusal.
    pub fn unreachable() -> Result<Store, StoreError> {
        let target = db::Target::Sqlite("/nonexistent/portcullis-probe/unreachable.db".into());
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect_lazy("sqlite:///nonexistent/portcullis-probe/unreachable.db?mode=rw")?;
        Ok(Store {
            budgets: pool.clone(),
            pool,
            reserver: Arc::default(),
            writer: target.shared_writer(),
            target: Arc::new(target),
        })
    }

    /// Open (creating if needed) the SQLite store at a `sqlite://` URL and bring its schema
    /// up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::connect(url, None).await
    }

    /// Open the store at a `sqlite://` or `postgres://` URL, with the PostgreSQL password read
    /// by reference (never in the URL), and bring its schema up to date.
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Store, StoreError> {
        let target = db::Target::parse(url, password)?;
        let (pool, budgets) = target.pools(false).await?;
        match target.backend() {
            Backend::Sqlite => schema::sqlite(&pool).await?,
            Backend::Postgres => schema::postgres(&pool).await?,
        };
        Ok(Store {
            pool,
            budgets,
            reserver: Arc::default(),
            writer: target.shared_writer(),
            target: Arc::new(target),
        })
    }

    /// The database this store is on.
    pub fn backend(&self) -> Backend {
        self.target.backend()
    }

    /// One round trip to the database: whether it answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Issue a new key. The returned secret is not stored anywhere.
    pub async fn create_key(
        &self,
        name: &str,
        role: KeyRole,
        scope: KeyScope,
    ) -> Result<IssuedKey, StoreError> {
        let (id, raw) = {
            let mut rng = rand::rng();
            (
                hex::encode(rng.random::<[u8; 8]>()),
                rng.random::<[u8; 32]>(),
            )
        };
        let secret_part =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
                .replace(['-', '_'], "x");
        let created_at = now();
        let grants =
            serde_json::to_string(&scope.grants).map_err(|_| StoreError::Corrupt(id.clone()))?;
        sqlx::query(
            "INSERT INTO api_keys (id, hash, name, role, created_at, org, team, agent, grants, service, parent, \"user\")
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(hash_secret(&secret_part))
        .bind(name)
        .bind(role.as_str())
        .bind(created_at)
        .bind(&scope.org)
        .bind(&scope.team)
        .bind(&scope.agent)
        .bind(grants)
        .bind(i64::from(scope.service))
        .bind(&scope.parent)
        .bind(&scope.user)
        .execute(&self.pool)
        .await?;
        Ok(IssuedKey {
            secret: format!("{KEY_PREFIX}_{id}_{secret_part}"),
            record: KeyRecord {
                id,
                name: name.to_string(),
                role,
                created_at,
                revoked_at: None,
                scope,
            },
        })
    }

    /// Find the live key that `presented` is, if any. Revoked keys and wrong secrets are `None`.
    pub async fn verify_key(&self, presented: &str) -> Result<Option<KeyRecord>, StoreError> {
        let Some((id, secret)) = parse_key(presented) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT id, hash, name, role, created_at, revoked_at, org, team, agent, grants, service, parent, \"user\"
             FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("hash")?;
        if !constant_time_eq(stored.as_bytes(), hash_secret(secret).as_bytes()) {
            return Ok(None);
        }
        let record = record_from(&row)?;
        Ok(record.revoked_at.is_none().then_some(record))
    }

    /// All keys, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at, org, team, agent, grants, service, parent, \"user\"
             FROM api_keys ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from).collect()
    }

    /// Close every connection: later queries fail. Fault injection for tests.
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn close(&self) {
        self.reserver.close();
        self.pool.close().await;
        self.budgets.close().await;
    }

    /// A key by id, live or not.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at, org, team, agent, grants, service, parent, \"user\"
             FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from).transpose()
    }

    /// Overwrite a key's stored grants with raw text. Fault injection for tests.
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn corrupt_grants(&self, id: &str, raw: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET grants = $1 WHERE id = $2")
            .bind(raw)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoke a key and every key minted under it, in one statement; true when a live key was
    /// revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "WITH RECURSIVE tree(id) AS (
                SELECT $1 UNION SELECT k.id FROM api_keys k JOIN tree t ON k.parent = t.id
             )
             UPDATE api_keys SET revoked_at = $2 WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() >= 1)
    }

    /// The keys that minted `record`, nearest first; `None` when any of them is gone, revoked,
    /// not a client key, or narrower than `record` on a level (it has no org, team, agent or
    /// user where `record` has one, or another one), or the chain is longer than
    /// [`MAX_LINEAGE`]. A key whose lineage is `None` does not authenticate.
    pub async fn lineage(&self, record: &KeyRecord) -> Result<Option<Vec<String>>, StoreError> {
        let mut lineage = Vec::new();
        let mut next = record.scope.parent.clone();
        while let Some(id) = next {
            if lineage.len() >= MAX_LINEAGE || lineage.contains(&id) || id == record.id {
                return Ok(None);
            }
            let Some(parent) = self.key(&id).await? else {
                return Ok(None);
            };
            let within = |child: &Option<String>, parent: &Option<String>| {
                child.is_none() || child == parent
            };
            let (c, p) = (&record.scope, &parent.scope);
            if parent.revoked_at.is_some()
                || parent.role != KeyRole::Client
                || !within(&c.org, &p.org)
                || !within(&c.team, &p.team)
                || !within(&c.agent, &p.agent)
                || !within(&c.user, &p.user)
            {
                return Ok(None);
            }
            next = parent.scope.parent.clone();
            lineage.push(id);
        }
        Ok(Some(lineage))
    }
}

fn record_from(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    let role = KeyRole::parse(&role).ok_or_else(|| StoreError::Corrupt(id.clone()))?;
    let grants: String = row.try_get("grants")?;
    // Grants that are not a list of strings are kept as one unparseable pattern: the key level
    // then faults when the key is used, which denies, and listings still show the key.
    let grants = serde_json::from_str::<Vec<String>>(&grants).unwrap_or_else(|_| vec![grants]);
    let scope = KeyScope {
        org: row.try_get("org")?,
        team: row.try_get("team")?,
        agent: row.try_get("agent")?,
        user: row.try_get("user")?,
        grants,
        service: row.try_get::<i64, _>("service")? != 0,
        parent: row.try_get("parent")?,
    };
    Ok(KeyRecord {
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        role,
        id,
        scope,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
