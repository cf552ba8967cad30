//! The operator record: every admin action and approval change, with who did it.
//!
//! Each event is one row with a JSON detail. It is what the web UI's tail shows and what an
//! operator exports; tool-call decisions are not written here.

use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One recorded event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventRecord {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub detail: Value,
}

impl Store {
    /// Append an event.
    pub async fn record_event(
        &self,
        kind: &str,
        actor: &str,
        detail: &Value,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO operator_events (at, kind, actor, detail) VALUES ($1, $2, $3, $4) RETURNING seq",
        )
        .bind(now_ms())
        .bind(kind)
        .bind(actor)
        .bind(detail.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// Events after `since` (a sequence number), oldest first, at most `limit`.
    pub async fn events_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, actor, detail FROM operator_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event).collect()
    }

    /// The newest `limit` events, newest first.
    pub async fn events_tail(&self, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, actor, detail FROM operator_events ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event).collect()
    }
}

fn event(r: &sqlx::any::AnyRow) -> Result<EventRecord, StoreError> {
    let seq: i64 = r.try_get("seq")?;
    let detail: String = r.try_get("detail")?;
    Ok(EventRecord {
        seq,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        actor: r.try_get("actor")?,
        detail: serde_json::from_str(&detail)
            .map_err(|_| StoreError::Corrupt(format!("event {seq}")))?,
    })
}
