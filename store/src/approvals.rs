//! Approval requests, as stored. Every state change is one conditional `UPDATE`, so two
//! processes (or two identical calls) can never both use one approval.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

/// Where an approval request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for an approver.
    Pending,
    /// Approved and not yet used.
    Approved,
    /// Refused by an approver.
    Denied,
    /// Approved and used by the identical call, once.
    Used,
    /// Cancelled by a kill switch engaged over its scope.
    Voided,
    /// Not decided, or not used, before it expired.
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Voided => "voided",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "used" => ApprovalStatus::Used,
            "voided" => ApprovalStatus::Voided,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// What a held call asks for, exactly.
#[derive(Clone, Debug)]
pub struct ApprovalKey<'a> {
    /// The caller's subject (`key:<id>`, `oidc:<iss>#<sub>`, with `/user:<name>`).
    pub requester: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    /// Hex SHA-256 of the canonical arguments.
    pub arguments: &'a str,
    /// Hex SHA-256 of the tool's definition when the call was made.
    pub fingerprint: &'a str,
}

/// A new request's details besides its key.
#[derive(Clone, Debug)]
pub struct NewApproval<'a> {
    pub key: ApprovalKey<'a>,
    /// The requester's resolved principals (`level:name`), so kill switches can void it.
    pub principals: &'a [String],
    pub class: &'a str,
    /// Redacted argument preview.
    pub preview: &'a str,
    /// The resource the call acts on, from the configured argument names.
    pub target: Option<&'a str>,
    /// Lifetime in milliseconds.
    pub ttl_ms: i64,
}

/// A stored approval request.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub status: &'static str,
    pub requester: String,
    pub principals: Vec<String>,
    pub server: String,
    pub tool: String,
    pub class: String,
    pub arguments_digest: String,
    pub tool_fingerprint: String,
    pub preview: String,
    pub target: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub reason: Option<String>,
    pub used_at: Option<i64>,
}

impl ApprovalRecord {
    pub fn status(&self) -> ApprovalStatus {
        ApprovalStatus::parse(self.status).unwrap_or(ApprovalStatus::Expired)
    }
}

/// Why a decision on an approval was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval request `{0}`")]
    NotFound(String),
    #[error("approval request `{id}` is {status}, not pending")]
    NotPending { id: String, status: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn record(row: &AnyRow, now: i64) -> Result<ApprovalRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let mut status =
        ApprovalStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(id.clone()))?;
    let expires_at: i64 = row.try_get("expires_at")?;
    if matches!(status, ApprovalStatus::Pending | ApprovalStatus::Approved) && expires_at <= now {
        status = ApprovalStatus::Expired;
    }
    let principals: String = row.try_get("principals")?;
    Ok(ApprovalRecord {
        principals: serde_json::from_str(&principals)
            .map_err(|_| StoreError::Corrupt(id.clone()))?,
        id,
        status: status.as_str(),
        requester: row.try_get("requester")?,
        server: row.try_get("server")?,
        tool: row.try_get("tool")?,
        class: row.try_get("class")?,
        arguments_digest: row.try_get("arguments_digest")?,
        tool_fingerprint: row.try_get("tool_fingerprint")?,
        preview: row.try_get("preview")?,
        target: row.try_get("target")?,
        created_at: row.try_get("created_at")?,
        expires_at,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        reason: row.try_get("reason")?,
        used_at: row.try_get("used_at")?,
    })
}

impl Store {
    /// Use an approval granted for exactly this call, once. `Some(id)` when one was used.
    pub async fn use_approval(&self, key: &ApprovalKey<'_>) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE approvals SET status = 'used', used_at = $1
             WHERE id = (SELECT id FROM approvals
                         WHERE requester = $2 AND server = $3 AND tool = $4
                           AND arguments_digest = $5 AND tool_fingerprint = $6
                           AND status = 'approved' AND expires_at > $1
                         ORDER BY decided_at LIMIT 1)
               AND status = 'approved' AND expires_at > $1
             RETURNING id",
        )
        .bind(now)
        .bind(key.requester)
        .bind(key.server)
        .bind(key.tool)
        .bind(key.arguments)
        .bind(key.fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Use one approval by id, if it is approved, unexpired and unused.
    pub async fn use_approval_id(&self, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE approvals SET status = 'used', used_at = $1
             WHERE id = $2 AND status = 'approved' AND expires_at > $1",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A pending, unexpired request for exactly this call, if one exists.
    pub async fn pending_approval(
        &self,
        key: &ApprovalKey<'_>,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let now = now_ms();
        let sql = "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
            tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
            FROM approvals
            WHERE requester = $1 AND server = $2 AND tool = $3 AND arguments_digest = $4
              AND tool_fingerprint = $5 AND status = 'pending' AND expires_at > $6
            ORDER BY created_at LIMIT 1";
        let row = sqlx::query(sql)
            .bind(key.requester)
            .bind(key.server)
            .bind(key.tool)
            .bind(key.arguments)
            .bind(key.fingerprint)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record(&r, now)).transpose()
    }

    /// Record a new pending request.
    pub async fn create_approval(
        &self,
        new: &NewApproval<'_>,
    ) -> Result<ApprovalRecord, StoreError> {
        let id = format!("apr_{}", hex::encode(rand::random::<[u8; 10]>()));
        let now = now_ms();
        let principals =
            serde_json::to_string(new.principals).map_err(|_| StoreError::Corrupt(id.clone()))?;
        sqlx::query(
            "INSERT INTO approvals (id, status, requester, principals, server, tool, class,
                arguments_digest, tool_fingerprint, preview, target, created_at, expires_at)
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(new.key.requester)
        .bind(&principals)
        .bind(new.key.server)
        .bind(new.key.tool)
        .bind(new.class)
        .bind(new.key.arguments)
        .bind(new.key.fingerprint)
        .bind(new.preview)
        .bind(new.target)
        .bind(now)
        .bind(now.saturating_add(new.ttl_ms))
        .execute(&self.pool)
        .await?;
        self.approval(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(id.clone()))
    }

    /// One request by id.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let now = now_ms();
        let sql = "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
            tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
            FROM approvals WHERE id = $1";
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| record(&r, now)).transpose()
    }

    /// Requests, newest first; `status` filters on the effective status (expiry applied).
    pub async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let now = now_ms();
        let limit = i64::from(limit);
        let query = match status {
            None => sqlx::query(
                "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
                tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
                FROM approvals WHERE $2 = $2 AND $3 = $3 ORDER BY created_at DESC LIMIT $1",
            ),
            Some(ApprovalStatus::Pending | ApprovalStatus::Approved) => sqlx::query(
                "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
                tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
                FROM approvals WHERE status = $3 AND expires_at > $2 ORDER BY created_at DESC LIMIT $1",
            ),
            Some(ApprovalStatus::Expired) => sqlx::query(
                "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
                tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
                FROM approvals WHERE status = 'expired'
                   OR (status IN ('pending', 'approved') AND expires_at <= $2 AND $3 = $3)
                ORDER BY created_at DESC LIMIT $1",
            ),
            Some(_) => sqlx::query(
                "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
                tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
                FROM approvals WHERE status = $3 AND $2 = $2 ORDER BY created_at DESC LIMIT $1",
            ),
        };
        let rows = query
            .bind(limit)
            .bind(now)
            .bind(status.map_or("", ApprovalStatus::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| record(r, now)).collect()
    }

    /// Requests that could still let a call run: pending, or approved and unused, unexpired.
    pub async fn open_approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, status, requester, principals, server, tool, class, arguments_digest,
            tool_fingerprint, preview, target, created_at, expires_at, decided_by, decided_at, reason, used_at
            FROM approvals WHERE status IN ('pending', 'approved') AND expires_at > $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| record(r, now)).collect()
    }

    /// Approve or deny a pending request. An approval stays usable for `ttl_ms` from now.
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: &str,
        ttl_ms: i64,
    ) -> Result<ApprovalRecord, DecideError> {
        let now = now_ms();
        let status = if approve { "approved" } else { "denied" };
        let r = sqlx::query(
            "UPDATE approvals SET status = $1, decided_by = $2, decided_at = $3, reason = $4,
                expires_at = CASE WHEN $1 = 'approved' THEN $5 ELSE expires_at END
             WHERE id = $6 AND status = 'pending' AND expires_at > $3",
        )
        .bind(status)
        .bind(by)
        .bind(now)
        .bind(reason)
        .bind(now.saturating_add(ttl_ms))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from)?;
        let current = self
            .approval(id)
            .await?
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if r.rows_affected() == 1 {
            Ok(current)
        } else {
            Err(DecideError::NotPending {
                id: id.to_owned(),
                status: current.status,
            })
        }
    }

    /// Void requests (pending, or approved and unused) by id.
    pub async fn void_approvals(
        &self,
        ids: &[String],
        by: &str,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in ids {
            let r = sqlx::query(
                "UPDATE approvals SET status = 'voided', decided_by = COALESCE(decided_by, $1),
                    decided_at = COALESCE(decided_at, $2), reason = $3
                 WHERE id = $4 AND status IN ('pending', 'approved')",
            )
            .bind(by)
            .bind(now_ms())
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
            n += r.rows_affected();
        }
        Ok(n)
    }
}
