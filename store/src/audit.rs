//! The store's audit sink: one row per event, the event's own JSON line kept verbatim so the
//! hash chain can be checked from an export.

use sqlx::Row;

use std::sync::Arc;

use super::db::{SharedWriter, Target, immediate};
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

/// The audit sink's connection, used on the sink's own thread. On SQLite, the store's one
/// writing connection ([`SharedWriter`], shared with the budget reservations), run on that
/// thread, so an append costs no hop to another thread (sqlx would run it on a worker of its
/// own). PostgreSQL is reached through a connection driven by a small runtime of the thread's own.
pub struct AuditWriter(Writer);

enum Writer {
    Sqlite(Arc<SharedWriter>),
    Postgres(Box<PgWriter>),
}

/// The PostgreSQL audit writer: a runtime made on the sink's thread at its first write, and
/// one connection, opened again after a failure.
struct PgWriter {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    conn: Option<sqlx::AnyConnection>,
}

/// Longest a batch may take to reach PostgreSQL (connecting included); past it the
/// connection is dropped and the batch failed, so a hung database cannot hold the sink.
const PG_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl AuditWriter {
    pub(super) fn open(
        target: &Target,
        writer: Option<&Arc<SharedWriter>>,
    ) -> Result<AuditWriter, StoreError> {
        match (target, writer) {
            (Target::Sqlite(_), Some(w)) => Ok(AuditWriter(Writer::Sqlite(w.clone()))),
            (Target::Sqlite(_), None) => Err(StoreError::Config(
                "the SQLite store has no writing connection".into(),
            )),
            (Target::Postgres(_), _) => Ok(AuditWriter(Writer::Postgres(Box::new(PgWriter {
                runtime: None,
                url: target.connect_url(),
                conn: None,
            })))),
        }
    }

    /// Append a batch of events: all of them or none.
    pub fn append(&mut self, rows: &[AuditRow<'_>]) -> Result<(), StoreError> {
        match &mut self.0 {
            Writer::Sqlite(writer) => Ok(writer.with(|conn| {
                immediate(conn, |tx| {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO audit_events (chain, seq, at_ms, session, trace_id, line)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for r in rows {
                        insert.execute(rusqlite::params![
                            r.chain, r.seq, r.at_ms, r.session, r.trace_id, r.line
                        ])?;
                    }
                    Ok(())
                })
            })?),
            Writer::Postgres(w) => {
                let PgWriter { runtime, url, conn } = &mut **w;
                let runtime = match runtime {
                    Some(r) => r,
                    None => runtime.insert(
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| {
                                StoreError::Config(format!("audit writer runtime: {e}"))
                            })?,
                    ),
                };
                let done = runtime
                    .block_on(async {
                        tokio::time::timeout(PG_BATCH_TIMEOUT, pg_append(url, conn, rows)).await
                    })
                    .unwrap_or_else(|_| {
                        Err(StoreError::Config(
                            "audit store sink: the batch timed out".into(),
                        ))
                    });
                if done.is_err() {
                    // A connection that failed mid-batch is not trusted again.
                    *conn = None;
                }
                done
            }
        }
    }
}

async fn pg_append(
    url: &str,
    conn: &mut Option<sqlx::AnyConnection>,
    rows: &[AuditRow<'_>],
) -> Result<(), StoreError> {
    use sqlx::{Connection as _, Executor as _};
    let c = match conn {
        Some(c) => c,
        None => {
            let mut fresh = sqlx::AnyConnection::connect(url).await?;
            fresh.execute(super::db::POSTGRES_SESSION).await?;
            conn.insert(fresh)
        }
    };
    let mut tx = c.begin().await?;
    for r in rows {
        tx.execute(
            sqlx::query(
                "INSERT INTO audit_events (chain, seq, at_ms, session, trace_id, line)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(r.chain)
            .bind(r.seq)
            .bind(r.at_ms)
            .bind(r.session)
            .bind(r.trace_id)
            .bind(r.line),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Rows one pruning statement deletes at most: short transactions, so writers never wait long.
const PRUNE_CHUNK: i64 = 5_000;

impl Store {
    /// Delete the events written before the first one stamped at or after `before_ms`
    /// (`audit.retention`), in short chunks; how many went. What goes is a prefix of the table
    /// in write order, so a prefix of every chain: an event stamped early but written after a
    /// newer one (stamps are taken before the writer orders events) stays with its neighbours,
    /// and what is left verifies with `--continued`. Several replicas pruning at once only share
    /// the work.
    pub async fn prune_audit_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        // The cut, read once: the first event stamped at or after `before_ms`, else past the end.
        let cut: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(
               (SELECT id FROM audit_events WHERE at_ms >= $1 ORDER BY id LIMIT 1),
               (SELECT MAX(id) + 1 FROM audit_events))",
        )
        .bind(before_ms)
        .fetch_one(&self.pool)
        .await?;
        let Some(cut) = cut else {
            return Ok(0);
        };
        let mut total = 0u64;
        loop {
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE id IN
                   (SELECT id FROM audit_events WHERE id < $1 ORDER BY id LIMIT $2)",
            )
            .bind(cut)
            .bind(PRUNE_CHUNK)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += done;
            if done < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

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

    /// The line of one chain's event, if the store holds it (a lookup by the chain's key).
    pub async fn audit_event_line(
        &self,
        chain: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT line FROM audit_events WHERE chain = $1 AND seq = $2")
            .bind(chain)
            .bind(seq)
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
             WHERE at_ms >= $1 AND id > $2
               AND ($3 IS NULL OR session = $4)
               AND ($5 IS NULL OR trace_id = $6)
             ORDER BY id LIMIT $7",
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
        sqlx::query("INSERT INTO audit_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT key FROM audit_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("key")?)
    }
}
