//! Kill switches and the runtime mode, as stored: shared by every process on the same store.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

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

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS kill_switches (
            scope TEXT NOT NULL,
            target TEXT NOT NULL,
            engaged INTEGER NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            changed_at INTEGER NOT NULL,
            PRIMARY KEY (scope, target)
        )",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS runtime_mode (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            mode TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            changed_at INTEGER NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    Ok(())
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
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (scope, target) DO UPDATE SET
                engaged = excluded.engaged, reason = excluded.reason,
                actor = excluded.actor, changed_at = excluded.changed_at",
        )
        .bind(scope)
        .bind(target)
        .bind(engaged)
        .bind(reason)
        .bind(actor)
        .bind(changed_at)
        .execute(&self.pool)
        .await?;
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
                    engaged: r.try_get("engaged")?,
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
            "INSERT INTO runtime_mode (id, mode, reason, actor, changed_at) VALUES (1, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, reason = excluded.reason,
                actor = excluded.actor, changed_at = excluded.changed_at",
        )
        .bind(mode)
        .bind(reason)
        .bind(actor)
        .bind(changed_at)
        .execute(&self.pool)
        .await?;
        Ok(ModeRow {
            mode: mode.to_owned(),
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            changed_at,
        })
    }
}
