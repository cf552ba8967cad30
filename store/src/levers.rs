//! Kill switches and the runtime mode, as stored: shared by every process on the same store.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One kill-switch row. Released switches are kept, so the last change stays on record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchRow {
    pub scope: String,
    pub target: String,
    pub engaged: bool,
    pub reason: String,
    pub actor: String,
    /// Unix milliseconds.
    pub changed_at: i64,
}

/// The mode an operator set at runtime, which outranks the config's until changed again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeRow {
    pub mode: String,
    pub reason: String,
    pub actor: String,
    pub changed_at: i64,
}

impl Store {
    /// Engage or release one switch.
    pub async fn set_switch(
        &self,
        scope: &str,
        target: &str,
        engaged: bool,
        reason: &str,
        actor: &str,
    ) -> Result<SwitchRow, StoreError> {
        let changed_at = now_ms();
        sqlx::query(
            "INSERT INTO kill_switches (scope, target, engaged, reason, actor, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (scope, target) DO UPDATE SET
                engaged = excluded.engaged, reason = excluded.reason,
                actor = excluded.actor, changed_at = excluded.changed_at",
        )
        .bind(scope)
        .bind(target)
        .bind(i64::from(engaged))
        .bind(reason)
        .bind(actor)
        .bind(changed_at)
        .execute(&self.pool)
        .await?;
        self.announce().await;
        Ok(SwitchRow {
            scope: scope.to_owned(),
            target: target.to_owned(),
            engaged,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            changed_at,
        })
    }

    /// Every switch ever set, engaged first.
    pub async fn switches(&self) -> Result<Vec<SwitchRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, target, engaged, reason, actor, changed_at FROM kill_switches
             ORDER BY engaged DESC, changed_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SwitchRow {
                    scope: r.try_get("scope")?,
                    target: r.try_get("target")?,
                    engaged: r.try_get::<i64, _>("engaged")? != 0,
                    reason: r.try_get("reason")?,
                    actor: r.try_get("actor")?,
                    changed_at: r.try_get("changed_at")?,
                })
            })
            .collect()
    }

    /// The runtime mode, if an operator has set one.
    pub async fn mode(&self) -> Result<Option<ModeRow>, StoreError> {
        let row =
            sqlx::query("SELECT mode, reason, actor, changed_at FROM runtime_mode WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(ModeRow {
                mode: r.try_get("mode")?,
                reason: r.try_get("reason")?,
                actor: r.try_get("actor")?,
                changed_at: r.try_get("changed_at")?,
            })
        })
        .transpose()
    }

    /// Set the runtime mode.
    pub async fn set_mode(
        &self,
        mode: &str,
        reason: &str,
        actor: &str,
    ) -> Result<ModeRow, StoreError> {
        let changed_at = now_ms();
        sqlx::query(
            "INSERT INTO runtime_mode (id, mode, reason, actor, changed_at) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, reason = excluded.reason,
                actor = excluded.actor, changed_at = excluded.changed_at",
        )
        .bind(mode)
        .bind(reason)
        .bind(actor)
        .bind(changed_at)
        .execute(&self.pool)
        .await?;
        self.announce().await;
        Ok(ModeRow {
            mode: mode.to_owned(),
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            changed_at,
        })
    }
}

/// The channel a lever change is announced on (PostgreSQL's `NOTIFY`).
const CHANNEL: &str = "portcullis_levers";

/// Wake-ups sent when any process changes a kill switch or the mode: PostgreSQL's `LISTEN`
/// on a connection of its own. A wake-up carries nothing; the state is read from the store.
pub struct LeverWatch {
    listener: sqlx::postgres::PgListener,
}

impl LeverWatch {
    /// Wait for the next change anywhere. An error means the connection is gone; the caller
    /// keeps polling and watches again.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        self.listener.recv().await?;
        Ok(())
    }
}

impl Store {
    /// Announce a lever change to every process watching (PostgreSQL); nothing on SQLite,
    /// where processes poll. The change is already stored: a lost announcement only leaves the
    /// other processes to see it at their next poll.
    async fn announce(&self) {
        if self.backend() == super::Backend::Postgres {
            let _ = sqlx::raw_sql("NOTIFY portcullis_levers")
                .execute(&self.pool)
                .await;
        }
    }

    /// Watch for lever changes made by any process: `None` on SQLite (polling only).
    pub async fn watch_levers(&self) -> Result<Option<LeverWatch>, StoreError> {
        let super::db::Target::Postgres(url) = &*self.target else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url.as_str()).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(LeverWatch { listener }))
    }
}
