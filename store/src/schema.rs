//! The store's tables, on each backend, and how an older store is brought up to date.
//!
//! SQLite stores are brought up to date in place: tables are created when missing, columns
//! added since the first release are added when absent, and indexes no longer kept are dropped. PostgreSQL stores carry a schema
//! version (`portcullis_schema`) and run each missing migration in a transaction under an
//! advisory lock, so replicas starting together migrate once.

use sqlx::AnyPool;
use sqlx::Row;

use super::{StoreError, now_ms};

/// The PostgreSQL migrations, in order; a store at version N has run the first N. Released
/// migrations never change: a new table or column is a new entry. Each only adds, so an older
/// build keeps working on a newer schema.
const POSTGRES: &[&[&str]] = &[
    &[
        "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT,
        org TEXT,
        team TEXT,
        agent TEXT,
        grants TEXT NOT NULL DEFAULT '[]',
        service BIGINT NOT NULL DEFAULT 0,
        parent TEXT,
        \"user\" TEXT
    )",
        "CREATE TABLE kill_switches (
        scope TEXT NOT NULL,
        target TEXT NOT NULL,
        engaged BIGINT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        changed_at BIGINT NOT NULL,
        PRIMARY KEY (scope, target)
    )",
        "CREATE TABLE runtime_mode (
        id BIGINT PRIMARY KEY CHECK (id = 1),
        mode TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        changed_at BIGINT NOT NULL
    )",
        "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        requester TEXT NOT NULL,
        principals TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        class TEXT NOT NULL,
        arguments_digest TEXT NOT NULL,
        tool_fingerprint TEXT NOT NULL,
        preview TEXT NOT NULL,
        target TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        decided_by TEXT,
        decided_at BIGINT,
        reason TEXT,
        used_at BIGINT
    )",
        "CREATE INDEX approvals_by_call ON approvals (requester, server, tool, arguments_digest, status)",
        "CREATE TABLE operator_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    )",
        "CREATE TABLE audit_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        chain TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        session TEXT,
        trace_id TEXT,
        line TEXT NOT NULL,
        UNIQUE (chain, seq)
    )",
        "CREATE INDEX audit_events_at ON audit_events (at_ms)",
        "CREATE INDEX audit_events_session ON audit_events (session)",
        "CREATE TABLE audit_key (
        id BIGINT PRIMARY KEY CHECK (id = 1),
        key BYTEA NOT NULL
    )",
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_ms BIGINT NOT NULL,
        seen_ms BIGINT NOT NULL
    )",
        "CREATE TABLE budget_usage (
        budget TEXT NOT NULL,
        principal TEXT NOT NULL,
        \"window\" TEXT NOT NULL,
        used BIGINT NOT NULL,
        extra BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        epoch BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (budget, principal, \"window\")
    )",
    ],
    &[
        "CREATE TABLE session_key (
        id BIGINT PRIMARY KEY CHECK (id = 1),
        key BYTEA NOT NULL
    )",
        "CREATE TABLE ended_sessions (
        id TEXT PRIMARY KEY,
        until_ms BIGINT NOT NULL,
        ended_ms BIGINT NOT NULL
    )",
        "CREATE INDEX ended_sessions_at ON ended_sessions (ended_ms)",
        "CREATE TABLE session_subscriptions (
        session TEXT NOT NULL,
        uri TEXT NOT NULL,
        until_ms BIGINT NOT NULL,
        PRIMARY KEY (session, uri)
    )",
    ],
    &[
        "CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        approval TEXT NOT NULL,
        call TEXT,
        status TEXT NOT NULL,
        message TEXT,
        outcome TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        ttl_ms BIGINT NOT NULL
    )",
        "CREATE INDEX tasks_by_owner ON tasks (subject, endpoint, created_ms)",
        "CREATE INDEX tasks_expiry ON tasks (expires_ms)",
    ],
];

/// The schema version this build writes and reads.
pub const VERSION: i64 = POSTGRES.len() as i64;

/// The version a PostgreSQL store is at, read without writing (0: no schema yet).
async fn postgres_version(pool: &AnyPool) -> Result<i64, StoreError> {
    let exists: Option<String> =
        sqlx::query("SELECT CAST(to_regclass('portcullis_schema') AS TEXT) AS t")
            .fetch_one(pool)
            .await?
            .try_get("t")?;
    if exists.is_none() {
        return Ok(0);
    }
    Ok(
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM portcullis_schema")
            .fetch_one(pool)
            .await?
            .try_get("v")?,
    )
}

/// Bring a PostgreSQL store up to date; the version it is at afterwards. A store already at
/// this build's version (or later: migrations only add tables and columns, so an older build
/// runs on a newer schema, as during a rolling upgrade) is only read, so replicas may run as
/// a role without the right to create tables once `portcullis migrate` ran as the owner.
pub(crate) async fn postgres(pool: &AnyPool) -> Result<i64, StoreError> {
    let current = postgres_version(pool).await?;
    if current >= VERSION {
        return Ok(current);
    }
    let mut tx = pool.begin().await?;
    // Any fixed number: every replica takes the same lock, so one migrates and the rest wait.
    sqlx::query("SELECT pg_advisory_xact_lock(7034260187)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS portcullis_schema (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let at: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM portcullis_schema")
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
    let pending = POSTGRES
        .iter()
        .zip(1..)
        .skip(usize::try_from(at).unwrap_or(0));
    for (statements, version) in pending {
        for statement in *statements {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO portcullis_schema (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(VERSION.max(at))
}

/// Bring a SQLite store up to date in place; the version it then matches.
pub(crate) async fn sqlite(pool: &AnyPool) -> Result<i64, StoreError> {
    for statement in SQLITE_TABLES {
        sqlx::query(*statement).execute(pool).await?;
    }
    // Columns added after the first release; older stores gain them in place.
    for (table, column, statement) in SQLITE_COLUMNS {
        // Both names are constants of this file.
        let has: Option<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 AS present FROM pragma_table_info('{table}') WHERE name = '{column}'"
        )))
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get("present"))
        .transpose()?;
        if has.is_none() {
            sqlx::query(*statement).execute(pool).await?;
        }
    }
    Ok(VERSION)
}

const SQLITE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    )",
    "CREATE TABLE IF NOT EXISTS kill_switches (
        scope TEXT NOT NULL,
        target TEXT NOT NULL,
        engaged INTEGER NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        PRIMARY KEY (scope, target)
    )",
    "CREATE TABLE IF NOT EXISTS runtime_mode (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        mode TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        changed_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        requester TEXT NOT NULL,
        principals TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        class TEXT NOT NULL,
        arguments_digest TEXT NOT NULL,
        tool_fingerprint TEXT NOT NULL,
        preview TEXT NOT NULL,
        target TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        decided_by TEXT,
        decided_at INTEGER,
        reason TEXT,
        used_at INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS approvals_by_call
        ON approvals (requester, server, tool, arguments_digest, status)",
    "CREATE TABLE IF NOT EXISTS operator_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chain TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        session TEXT,
        trace_id TEXT,
        line TEXT NOT NULL,
        UNIQUE (chain, seq)
    )",
    // No secondary index on a SQLite store's events: each cost every event an insert (the
    // session's, with its long keys spread over the open sessions, most of a row's own cost)
    // and bought nothing. The export's optional filters (`$3 IS NULL OR session = $4`) cannot
    // use one; retention's cut (`WHERE at_ms >= $1 ORDER BY id LIMIT 1`) took the time index
    // and then sorted every recent row by id, where reading the oldest rows in id order stops
    // at the same row (SQLite 3.51's plans). Stores made before lose them here: the drop holds
    // the write lock while it frees the index pages, once; an older build opening the store
    // builds them again.
    "DROP INDEX IF EXISTS audit_events_at",
    "DROP INDEX IF EXISTS audit_events_session",
    "CREATE TABLE IF NOT EXISTS audit_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key BLOB NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        seen_ms INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS budget_usage (
        budget TEXT NOT NULL,
        principal TEXT NOT NULL,
        window TEXT NOT NULL,
        used INTEGER NOT NULL,
        extra INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (budget, principal, window)
    )",
    "CREATE TABLE IF NOT EXISTS session_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key BLOB NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS ended_sessions (
        id TEXT PRIMARY KEY,
        until_ms INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ended_sessions_at ON ended_sessions (ended_ms)",
    "CREATE TABLE IF NOT EXISTS session_subscriptions (
        session TEXT NOT NULL,
        uri TEXT NOT NULL,
        until_ms INTEGER NOT NULL,
        PRIMARY KEY (session, uri)
    )",
    "CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        approval TEXT NOT NULL,
        call TEXT,
        status TEXT NOT NULL,
        message TEXT,
        outcome TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        ttl_ms INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (subject, endpoint, created_ms)",
    "CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_ms)",
];

const SQLITE_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "api_keys",
        "org",
        "ALTER TABLE api_keys ADD COLUMN org TEXT",
    ),
    (
        "api_keys",
        "team",
        "ALTER TABLE api_keys ADD COLUMN team TEXT",
    ),
    (
        "api_keys",
        "agent",
        "ALTER TABLE api_keys ADD COLUMN agent TEXT",
    ),
    (
        "api_keys",
        "grants",
        "ALTER TABLE api_keys ADD COLUMN grants TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        "api_keys",
        "service",
        "ALTER TABLE api_keys ADD COLUMN service INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "api_keys",
        "parent",
        "ALTER TABLE api_keys ADD COLUMN parent TEXT",
    ),
    (
        "api_keys",
        "user",
        "ALTER TABLE api_keys ADD COLUMN user TEXT",
    ),
    (
        "budget_usage",
        "epoch",
        "ALTER TABLE budget_usage ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
    ),
];
