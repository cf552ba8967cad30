//! Budget reservations, committed in groups: calls that ask while a reservation transaction runs
//! are served together by the next one, as the audit sinks batch their writes.
//!
//! On SQLite, one thread per store (`reserve/sqlite.rs`), writing through the store's one
//! writing connection (shared with the audit store sink, `db::SharedWriter`), takes
//! every waiting call (up to [`GROUP`]) and reserves their charges in one write transaction,
//! call by call in arrival order, so no interleaving can spend more than a budget holds. A
//! call's charges are spent all or none: a call with several charges runs under a savepoint that
//! is rolled back when one does not fit (a single charge's conditional statements either spend
//! or change nothing). Each call is answered after the commit. If anything in the transaction
//! fails, nothing in it is spent and each of its calls is tried again on its own: only a call
//! that fails then is refused (upstream, as `limits_unavailable`).
//!
//! Grouping turns one transaction per call into one per group: one `BEGIN IMMEDIATE` (the turn
//! taken among processes sharing a SQLite store) and one commit for everything that queued. The
//! thread runs the statements itself, so a group costs each caller one hand-over each way, not
//! one per statement as a pool's worker thread would. PostgreSQL locks rows, not the database:
//! there each call reserves in its own transaction, side by side (two replicas' groups could
//! take the same rows in opposite orders and deadlock). On SQLite a caller that stops waiting
//! (its deadline passed) is left out of the next group, or, if its group already ran, has its
//! units given back; on PostgreSQL a commit already sent when the caller gives up stays spent
//! (never overspent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sqlx::AnyPool;
use tokio::sync::oneshot;

use super::budgets::Charge;
use super::db::SharedWriter;
use super::{StoreError, now_ms};

mod sqlite;

/// Calls reserved in one transaction at most.
const GROUP: usize = 64;

/// What a call is told: `Ok(None)` when all its charges fit (their epochs set), `Ok(Some(i))`
/// when `charges[i]` did not (nothing spent); an error when the transaction failed.
type Answer = Result<(Option<usize>, Vec<Charge>), String>;

struct Ask {
    charges: Vec<Charge>,
    reply: oneshot::Sender<Answer>,
}

/// The queue to a SQLite store's reservation thread, started on first use (and again if it
/// stopped), or nothing on PostgreSQL.
#[derive(Default)]
pub(crate) struct Reserver {
    /// The thread's queue, and which thread it is (a caller that finds it stopped clears only
    /// that one).
    queue: Mutex<Option<(u64, std::sync::mpsc::Sender<Ask>)>>,
    started: AtomicU64,
    /// The store was closed: nothing more is reserved (its thread refuses what it still gets).
    closed: std::sync::Arc<AtomicBool>,
    /// Transactions run so far (each serving one group of calls).
    pub(crate) groups: std::sync::Arc<AtomicU64>,
}

impl std::fmt::Debug for Reserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reserver")
    }
}

impl Reserver {
    /// Reserve `charges` in the next group; see [`Answer`].
    pub(crate) async fn reserve(
        &self,
        pool: &AnyPool,
        writer: Option<&std::sync::Arc<SharedWriter>>,
        charges: &mut [Charge],
    ) -> Result<Option<usize>, StoreError> {
        let writer = match writer {
            Some(w) => w,
            None => {
                // Row locks let calls reserve side by side: no queue, a transaction per call.
                let mut calls = [charges.to_vec()];
                let verdict = reserve_group(pool, &mut calls).await?;
                for (c, d) in charges.iter_mut().zip(calls.into_iter().flatten()) {
                    c.epoch = d.epoch;
                }
                return Ok(verdict.into_iter().next().flatten());
            }
        };
        let (reply, answer) = oneshot::channel();
        let mut ask = Ask {
            charges: charges.to_vec(),
            reply,
        };
        // A queue whose thread has stopped takes nothing: start another.
        for _ in 0..2 {
            let (thread, queue) = {
                // Nothing under the lock panics; a poisoned one holds a whole `Option`.
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                // Read under the lock: after `close` no thread starts and no queue is handed out.
                if self.closed.load(Ordering::Acquire) {
                    return Err(StoreError::Config(
                        "store unavailable: it was closed".into(),
                    ));
                }
                match q.as_ref() {
                    Some((thread, s)) => (*thread, s.clone()),
                    None => {
                        let (tx, rx) = std::sync::mpsc::channel();
                        let thread = self.started.fetch_add(1, Ordering::Relaxed);
                        let (writer, groups) = (writer.clone(), self.groups.clone());
                        let closed = self.closed.clone();
                        std::thread::Builder::new()
                            .name("budget-reserver".into())
                            .spawn(move || sqlite::run(&writer, &rx, &groups, &closed))
                            .map_err(|e| {
                                StoreError::Config(format!(
                                    "store unavailable: budget reservations could not start: {e}"
                                ))
                            })?;
                        *q = Some((thread, tx.clone()));
                        (thread, tx)
                    }
                }
            };
            match queue.send(ask) {
                Ok(()) => {
                    return match answer.await {
                        Ok(Ok((verdict, done))) => {
                            for (c, d) in charges.iter_mut().zip(done) {
                                c.epoch = d.epoch;
                            }
                            Ok(verdict)
                        }
                        Ok(Err(e)) => Err(StoreError::Config(format!("store unavailable: {e}"))),
                        Err(_) => Err(StoreError::Config(
                            "store unavailable: the budget reservation was not answered".into(),
                        )),
                    };
                }
                Err(std::sync::mpsc::SendError(back)) => {
                    ask = back;
                    let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if q.as_ref().is_some_and(|(t, _)| *t == thread) {
                        *q = None;
                    }
                }
            }
        }
        Err(StoreError::Config(
            "store unavailable: budget reservations could not start".into(),
        ))
    }

    /// Reserve nothing more: later callers are refused, and the thread refuses what callers
    /// already queued (it ends once the last handle to the store is dropped).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn close(&self) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        *q = None;
    }
}

/// PostgreSQL: one transaction for every call's charges, in order; each call's verdict. Each
/// statement locks its row, and a call's charges come in one order, so two calls cannot wait on
/// each other (here a "group" is always one call).
async fn reserve_group(
    pool: &AnyPool,
    calls: &mut [Vec<Charge>],
) -> Result<Vec<Option<usize>>, StoreError> {
    let mut tx = pool.begin().await?;
    let at = now_ms();
    let mut verdicts = Vec::with_capacity(calls.len());
    for charges in calls.iter_mut() {
        let several = charges.len() > 1;
        if several {
            sqlx::query("SAVEPOINT call").execute(&mut *tx).await?;
        }
        let mut refused = None;
        for (i, c) in charges.iter_mut().enumerate() {
            match spend(&mut tx, c, at).await? {
                Some(epoch) => c.epoch = epoch,
                None => {
                    refused = Some(i);
                    break;
                }
            }
        }
        if several {
            if refused.is_some() {
                sqlx::query("ROLLBACK TO SAVEPOINT call")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT call")
                .execute(&mut *tx)
                .await?;
        }
        verdicts.push(refused);
    }
    tx.commit().await?;
    Ok(verdicts)
}

/// Add `c.cost` to its window while it fits: the window's epoch when spent, `None` when not.
async fn spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &Charge,
    at: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO budget_usage (budget, principal, \"window\", used, extra, updated_at)
         SELECT $1, $2, $3, $4, 0, $6 WHERE $4 <= $5 + COALESCE((SELECT extra
            FROM budget_usage WHERE budget = $1 AND principal = $2 AND \"window\" = $3), 0)
         ON CONFLICT (budget, principal, \"window\") DO UPDATE SET
            used = budget_usage.used + excluded.used, updated_at = excluded.updated_at
         WHERE budget_usage.used + excluded.used <= $5 + budget_usage.extra
         RETURNING epoch",
    )
    .bind(&c.budget)
    .bind(&c.principal)
    .bind(&c.window)
    .bind(c.cost)
    .bind(c.units)
    .bind(at)
    .fetch_optional(&mut **tx)
    .await?)
}
