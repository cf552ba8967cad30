//! Tasks: held calls a client follows by id (MCP tasks), kept so that any process sharing the
//! store answers for them, across restarts.
//!
//! A task belongs to one caller on one endpoint and ends at its expiry. While it waits it keeps
//! the call it holds (name and arguments, sealed by the gateway), because the call runs later;
//! once it ends, only its outcome is kept. `working` → (`running`, claimed by exactly one
//! process) → `completed`, `failed` or `cancelled`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// Waiting for its approval.
    Working,
    /// Its call was claimed by one process and is running.
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<TaskStatus> {
        Some(match s {
            "working" => TaskStatus::Working,
            "running" => TaskStatus::Running,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    /// True once the task can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// A task to record.
pub struct NewTask<'a> {
    pub subject: &'a str,
    /// The endpoint it was created on (`/mcp` or `/mcp/<server>`).
    pub endpoint: &'a str,
    /// The approval request the call waits on.
    pub approval: &'a str,
    /// The call it holds (`{"name", "arguments"}`), as the gateway sealed it.
    pub call: &'a str,
    pub ttl_ms: i64,
    pub message: &'a str,
}

/// A task as stored.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub id: String,
    pub subject: String,
    pub endpoint: String,
    pub approval: String,
    /// The held call; gone once the task ended.
    pub call: Option<String>,
    pub status: TaskStatus,
    pub message: Option<String>,
    /// How it ended, as JSON text (`{"result": …}` or `{"error": …}`).
    pub outcome: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub expires_ms: i64,
    pub ttl_ms: i64,
}

const COLUMNS: &str = "id, subject, endpoint, approval, call, status, message, outcome, created_ms, updated_ms, expires_ms, ttl_ms";

fn record(r: &AnyRow) -> Result<TaskRecord, StoreError> {
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    let Some(status) = TaskStatus::parse(&status) else {
        return Err(StoreError::Corrupt(format!(
            "task {id} has status {status:?}"
        )));
    };
    Ok(TaskRecord {
        subject: r.try_get("subject")?,
        endpoint: r.try_get("endpoint")?,
        approval: r.try_get("approval")?,
        call: r.try_get("call")?,
        status,
        message: r.try_get("message")?,
        outcome: r.try_get("outcome")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        ttl_ms: r.try_get("ttl_ms")?,
        id,
    })
}

impl Store {
    /// Record a new task, `working`; expired tasks are deleted on the way.
    pub async fn create_task(&self, new: &NewTask<'_>) -> Result<TaskRecord, StoreError> {
        let id = format!("task_{}", hex::encode(rand::random::<[u8; 16]>()));
        let now = now_ms();
        sqlx::query("DELETE FROM tasks WHERE expires_ms < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO tasks (id, subject, endpoint, approval, call, status, message, outcome,
                created_ms, updated_ms, expires_ms, ttl_ms)
             VALUES ($1, $2, $3, $4, $5, 'working', $6, NULL, $7, $7, $8, $9)",
        )
        .bind(&id)
        .bind(new.subject)
        .bind(new.endpoint)
        .bind(new.approval)
        .bind(new.call)
        .bind(new.message)
        .bind(now)
        .bind(now.saturating_add(new.ttl_ms))
        .bind(new.ttl_ms)
        .execute(&self.pool)
        .await?;
        self.task(&id, new.subject, new.endpoint)
            .await?
            .ok_or(StoreError::Corrupt(id))
    }

    /// Task `id` if it belongs to `subject` on `endpoint` and has not expired.
    pub async fn task(
        &self,
        id: &str,
        subject: &str,
        endpoint: &str,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE id = $1 AND subject = $2 AND endpoint = $3 AND expires_ms >= $4"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(subject)
            .bind(endpoint)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// `subject`'s unexpired tasks on `endpoint`, newest first, after the one created at
    /// `after` (its `created_ms` and id) when given.
    pub async fn tasks(
        &self,
        subject: &str,
        endpoint: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let (at, id) = after.unwrap_or((i64::MAX, ""));
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE subject = $1 AND endpoint = $2 AND expires_ms >= $3
               AND (created_ms < $4 OR (created_ms = $4 AND id < $5))
             ORDER BY created_ms DESC, id DESC LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(subject)
            .bind(endpoint)
            .bind(now_ms())
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Claim a waiting task's call for this process to run: true for exactly one claimant.
    pub async fn claim_task(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tasks SET status = 'running', message = $1, updated_ms = $2
             WHERE id = $3 AND status = 'working'",
        )
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Give a claimed task back (its call could not start yet): it waits again.
    pub async fn release_task(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tasks SET status = 'working', message = $1, updated_ms = $2
             WHERE id = $3 AND status = 'running'",
        )
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// End a task that is `from` (waiting, or running its call), keeping `outcome` and
    /// dropping the call it held. False if it was not `from` any more.
    pub async fn finish_task(
        &self,
        id: &str,
        from: TaskStatus,
        status: TaskStatus,
        message: &str,
        outcome: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tasks SET status = $1, message = $2, outcome = $3, call = NULL, updated_ms = $4
             WHERE id = $5 AND status = $6",
        )
        .bind(status.as_str())
        .bind(message)
        .bind(outcome)
        .bind(now_ms())
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A running task's call is still running (its heartbeat); false if the task no longer
    /// runs.
    pub async fn touch_task(&self, id: &str) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE tasks SET updated_ms = $1 WHERE id = $2 AND status = 'running'")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// End a running task whose heartbeat stopped, as it was seen (last heartbeat at
    /// `seen_ms`): a task claimed again since is left alone.
    pub async fn end_lost_task(
        &self,
        id: &str,
        seen_ms: i64,
        message: &str,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tasks SET status = 'failed', message = $1, outcome = $2, call = NULL,
                updated_ms = $3
             WHERE id = $4 AND status = 'running' AND updated_ms = $5",
        )
        .bind(message)
        .bind(outcome)
        .bind(now_ms())
        .bind(id)
        .bind(seen_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Delete the tasks past their expiry (with whatever call they still held); how many.
    pub async fn prune_tasks(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM tasks WHERE expires_ms < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Cancel a task whose call has not started, keeping `outcome`: false if it is running
    /// or has ended.
    pub async fn cancel_task(
        &self,
        id: &str,
        message: &str,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tasks SET status = 'cancelled', message = $1, outcome = $2, call = NULL,
                updated_ms = $3
             WHERE id = $4 AND status = 'working'",
        )
        .bind(message)
        .bind(outcome)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests;
