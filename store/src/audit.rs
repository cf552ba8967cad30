//! The store's audit sink: one row per event, the event's own JSON line kept verbatim so the
//! hash chain can be checked from an export.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{Store, StoreError};

/// One event as the writer hands it to the store.
pub struct AuditRow<'a> {
    pub chain: &'a str,
    pub seq: i64,
    pub at_ms: i64,
    pub session: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub line: &'a str,
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
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
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at_ms)")
        .execute(pool)
        .await?;
    sqlx::query("CREATE INDEX IF NOT EXISTS audit_events_session ON audit_events (session)")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS audit_key (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            key BLOB NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The audit sink's connection. SQLite runs on the calling thread (the sink's own), so an
/// append costs no hop to another thread; sqlx would run it on a worker of its own.
pub struct AuditWriter {
    conn: rusqlite::Connection,
}

impl AuditWriter {
    pub(super) fn open(path: &std::path::Path) -> Result<AuditWriter, StoreError> {
        // The store exists and has its schema: the pool opened it first.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(AuditWriter { conn })
    }

    /// Append a batch of events: all of them or none.
    pub fn append(&mut self, rows: &[AuditRow<'_>]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit_events (chain, seq, at_ms, session, trace_id, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in rows {
                insert.execute(rusqlite::params![
                    r.chain, r.seq, r.at_ms, r.session, r.trace_id, r.line
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// The newest event's line, if any.
    pub async fn last_audit_line(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT line FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("line")?),
            None => None,
        })
    }

    /// Event lines in write order: at or after `since_ms`, optionally of one session or trace,
    /// after row `after` (for paging), at most `limit`. Returns (row id, line) pairs.
    pub async fn audit_lines(
        &self,
        since_ms: i64,
        session: Option<&str>,
        trace_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, line FROM audit_events
             WHERE at_ms >= ? AND id > ?
               AND (? IS NULL OR session = ?)
               AND (? IS NULL OR trace_id = ?)
             ORDER BY id LIMIT ?",
        )
        .bind(since_ms)
        .bind(after)
        .bind(session)
        .bind(session)
        .bind(trace_id)
        .bind(trace_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("line")?)))
            .collect()
    }

    /// The redaction key kept in the store, made on first use. Every process sharing the store
    /// uses the same key, so equal secrets correlate across them and across restarts.
    pub async fn audit_key(&self) -> Result<Vec<u8>, StoreError> {
        let fresh = rand::random::<[u8; 32]>().to_vec();
        sqlx::query("INSERT INTO audit_key (id, key) VALUES (1, ?) ON CONFLICT (id) DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT key FROM audit_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("key")?)
    }
}
