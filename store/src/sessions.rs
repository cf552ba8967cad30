//! What replicas share about client sessions: the key that seals session ids when the config
//! names none, the sessions a client ended, so no replica takes their ids back, and each
//! session's resource subscriptions, so the replica holding its stream can take them up.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

impl Store {
    /// The session-sealing key kept in the store, made on first use; every process sharing
    /// the store uses the same one.
    pub async fn session_key(&self) -> Result<Vec<u8>, StoreError> {
        let fresh = rand::random::<[u8; 32]>().to_vec();
        sqlx::query("INSERT INTO session_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT key FROM session_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("key")?)
    }

    /// Record that session `id` ended; its id would have been valid until `until_ms`. Rows
    /// past that are pruned, as the id could not be used anyway.
    pub async fn end_session(&self, id: &str, until_ms: i64) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO ended_sessions (id, until_ms, ended_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(until_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM session_subscriptions WHERE session = $1 OR until_ms < $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM ended_sessions WHERE until_ms < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether session `id` was ended.
    pub async fn session_ended(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS ended FROM ended_sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Sessions ended at or after `since_ms`, for replicas that hold them to let go.
    pub async fn sessions_ended_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM ended_sessions WHERE ended_ms >= $1")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }
}

impl Store {
    /// Record that session `session` subscribed to `uri` (as its client names it); kept until
    /// `until_ms`, when the session's id expires.
    pub async fn add_subscription(
        &self,
        session: &str,
        uri: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO session_subscriptions (session, uri, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (session, uri) DO NOTHING",
        )
        .bind(session)
        .bind(uri)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Record that session `session` unsubscribed from `uri`.
    pub async fn remove_subscription(&self, session: &str, uri: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM session_subscriptions WHERE session = $1 AND uri = $2")
            .bind(session)
            .bind(uri)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The URIs session `session` is subscribed to, in name order.
    pub async fn subscriptions(&self, session: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT uri FROM session_subscriptions WHERE session = $1 AND until_ms > $2 ORDER BY uri",
        )
        .bind(session)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("uri").map_err(StoreError::from))
            .collect()
    }
}

impl Store {
    /// Forget session records past their ids' expiry (ended ids, subscriptions); how many.
    pub async fn prune_session_records(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut gone = 0;
        for sql in [
            "DELETE FROM ended_sessions WHERE until_ms < $1",
            "DELETE FROM session_subscriptions WHERE until_ms < $1",
        ] {
            gone += sqlx::query(sql)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(gone)
    }
}
