//! Which gateway processes use this store: each `serve` process writes a heartbeat, so the
//! self-audit can see several processes sharing one SQLite file (which SQLite does not support
//! as a shared store for replicas).

use sqlx::Row;

use super::{Store, StoreError};

/// A process that wrote a heartbeat.
#[derive(Clone, Debug)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_ms: i64,
    pub seen_ms: i64,
}

impl Store {
    /// Record that the process `row` describes is alive at `row.seen_ms`, and forget processes
    /// not seen for a day.
    pub async fn heartbeat(&self, row: &InstanceRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, started_ms, seen_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
        )
        .bind(&row.id)
        .bind(&row.host)
        .bind(row.pid)
        .bind(row.started_ms)
        .bind(row.seen_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM instances WHERE seen_ms < $1")
            .bind(row.seen_ms.saturating_sub(86_400_000))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remove a process's heartbeat (at a clean shutdown).
    pub async fn forget_instance(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Processes seen at or after `since_ms`, oldest start first.
    pub async fn instances_since(&self, since_ms: i64) -> Result<Vec<InstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_ms, seen_ms FROM instances
             WHERE seen_ms >= $1 ORDER BY started_ms, id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    started_ms: r.try_get("started_ms")?,
                    seen_ms: r.try_get("seen_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
