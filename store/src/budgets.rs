//! Budget usage: the units each principal spent under each budget, per calendar window.
//!
//! A call's budgets are reserved before it runs, all of them in one write transaction
//! (`BEGIN IMMEDIATE`, so processes sharing the store take turns; calls asking together share
//! it, see `reserve.rs`), each by a conditional statement that adds the cost only while it fits:
//! no interleaving of calls, in one process or several, can spend more than the budget. An operator can reset a window's usage or raise its
//! allowance; the raise lives on the window's row and ends with it.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One budget a call spends from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The budget's name (its entry's principal, server, tool and period).
    pub budget: String,
    /// The principal it is counted for (`team:research`).
    pub principal: String,
    /// The calendar window (`2026-12-05`).
    pub window: String,
    /// Units the call spends.
    pub cost: i64,
    /// Units allowed in the window, before any raise.
    pub units: i64,
    /// The window's resets when the units were reserved (set by the reservation): a refund
    /// after a reset gives back nothing, as the reset already did.
    pub epoch: i64,
}

/// A window's usage, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub budget: String,
    pub principal: String,
    pub window: String,
    pub used: i64,
    /// Units an operator added for this window.
    pub extra: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

impl Store {
    /// Spend every charge, or none: `Ok(None)` when all fit (each charge's `epoch` is then
    /// set), `Ok(Some(i))` when `charges[i]` does not (nothing is spent then). Calls asking
    /// together share one transaction (`reserve.rs`).
    pub async fn reserve_budgets(
        &self,
        charges: &mut [Charge],
    ) -> Result<Option<usize>, StoreError> {
        if charges.is_empty() {
            return Ok(None);
        }
        self.reserver
            .reserve(&self.budgets, self.writer.as_ref(), charges)
            .await
    }

    /// Reservation transactions run by this handle so far: fewer than the calls reserved when
    /// calls shared them.
    pub fn reservation_groups(&self) -> u64 {
        self.reserver
            .groups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Give a charge's units back (a call that the upstream could not answer, where the budget
    /// says so). Never below zero.
    pub async fn refund_budget(&self, c: &Charge) -> Result<(), StoreError> {
        refund_on(&self.budgets, c).await
    }

    /// Usage in the given windows (by `window` label), every budget and principal.
    pub async fn budget_usage(&self, windows: &[String]) -> Result<Vec<UsageRow>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        // Only placeholders are written into the text; the labels are bound.
        let marks: Vec<String> = (1..=windows.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT budget, principal, \"window\", used, extra, updated_at FROM budget_usage
             WHERE \"window\" IN ({}) ORDER BY budget, principal",
            marks.join(", ")
        );
        let query = windows
            .iter()
            .fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |q, w| q.bind(w));
        let rows = query.fetch_all(&self.budgets).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    budget: r.try_get("budget")?,
                    principal: r.try_get("principal")?,
                    window: r.try_get("window")?,
                    used: r.try_get("used")?,
                    extra: r.try_get("extra")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Forget usage rows not changed since `before_ms` (windows long over); how many went.
    pub async fn prune_budgets(&self, before_ms: i64) -> Result<u64, StoreError> {
        let gone = sqlx::query("DELETE FROM budget_usage WHERE updated_at < $1")
            .bind(before_ms)
            .execute(&self.budgets)
            .await?
            .rows_affected();
        Ok(gone)
    }

    /// Set a window's usage back to zero (`reset`) and/or add to its allowance (`raise`);
    /// the row after the change.
    pub async fn adjust_budget(
        &self,
        budget: &str,
        principal: &str,
        window: &str,
        reset: bool,
        raise: i64,
    ) -> Result<UsageRow, StoreError> {
        let at = now_ms();
        sqlx::query(
            "INSERT INTO budget_usage (budget, principal, \"window\", used, extra, updated_at)
             VALUES ($1, $2, $3, 0, $4, $5)
             ON CONFLICT (budget, principal, \"window\") DO UPDATE SET
                used = CASE WHEN $6 THEN 0 ELSE budget_usage.used END,
                epoch = budget_usage.epoch + CASE WHEN $6 THEN 1 ELSE 0 END,
                extra = budget_usage.extra + $4, updated_at = $5",
        )
        .bind(budget)
        .bind(principal)
        .bind(window)
        .bind(raise)
        .bind(at)
        .bind(reset)
        .execute(&self.budgets)
        .await?;
        let row = sqlx::query(
            "SELECT used, extra FROM budget_usage WHERE budget = $1 AND principal = $2 AND \"window\" = $3",
        )
        .bind(budget)
        .bind(principal)
        .bind(window)
        .fetch_one(&self.budgets)
        .await?;
        Ok(UsageRow {
            budget: budget.to_string(),
            principal: principal.to_string(),
            window: window.to_string(),
            used: row.try_get("used")?,
            extra: row.try_get("extra")?,
            updated_at: at,
        })
    }
}

/// Give `c`'s units back on `pool`, if its window was not reset since (its epoch). Never below
/// zero.
pub(crate) async fn refund_on(pool: &sqlx::AnyPool, c: &Charge) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE budget_usage SET used = CASE WHEN used > $1 THEN used - $1 ELSE 0 END, updated_at = $2
         WHERE budget = $3 AND principal = $4 AND \"window\" = $5 AND epoch = $6",
    )
    .bind(c.cost)
    .bind(now_ms())
    .bind(&c.budget)
    .bind(&c.principal)
    .bind(&c.window)
    .bind(c.epoch)
    .execute(pool)
    .await?;
    Ok(())
}
