//! Budget reservations, committed in groups: calls that ask while a reservation transaction runs
//! are served together by the next one, as the audit sinks batch their writes.
//!
//! One task per store takes every waiting call (up to [`GROUP`]) and reserves their charges in
//! one write transaction, call by call in arrival order, so no interleaving can spend more than a
//! budget holds. A call's charges are spent all or none: a call with several charges runs under a
//! savepoint that is rolled back when one does not fit (a single charge's conditional statement
//! either spends or changes nothing). Each call is answered after the commit. If anything in the
//! transaction fails, nothing in it is spent and each of its calls is tried again on its own:
//! only a call that fails then is refused (upstream, as `limits_unavailable`).
//!
//! Grouping turns one transaction per call into one per group: one `BEGIN IMMEDIATE` (the turn
//! taken among processes sharing a SQLite store) and one commit for everything that queued.
//! PostgreSQL locks rows, not the database: there each call reserves in its own task and
//! transaction, side by side, as before (two replicas' groups could take the same rows in
//! opposite orders and deadlock). On SQLite a caller that stops waiting (its deadline passed) is
//! left out of the next group, or, if its group already ran, has its units given back; on
//! PostgreSQL a commit already sent when the caller gives up stays spent (never overspent).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::budgets::Charge;
use super::{Backend, StoreError, now_ms};

/// Calls reserved in one transaction at most.
const GROUP: usize = 64;

/// What a call is told: `Ok(None)` when all its charges fit (their epochs set), `Ok(Some(i))`
/// when `charges[i]` did not (nothing spent); an error when the transaction failed.
type Answer = Result<(Option<usize>, Vec<Charge>), String>;

struct Ask {
    charges: Vec<Charge>,
    reply: oneshot::Sender<Answer>,
}

/// The queue to a store's reservation task, started on first use (and again if the runtime it
/// ran on has gone, as between tests).
#[derive(Default)]
pub(crate) struct Reserver {
    queue: Mutex<Option<mpsc::UnboundedSender<Ask>>>,
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
        backend: Backend,
        charges: &mut [Charge],
    ) -> Result<Option<usize>, StoreError> {
        if backend == Backend::Postgres {
            // Row locks let calls reserve side by side: no queue, a transaction per call.
            let mut calls = [charges.to_vec()];
            let verdict = reserve_group(pool, backend, &mut calls).await?;
            for (c, d) in charges.iter_mut().zip(calls.into_iter().flatten()) {
                c.epoch = d.epoch;
            }
            return Ok(verdict.into_iter().next().flatten());
        }
        let (reply, answer) = oneshot::channel();
        let mut ask = Ask {
            charges: charges.to_vec(),
            reply,
        };
        // A queue whose task has gone (its runtime shut down) takes nothing: start another.
        for _ in 0..2 {
            let queue = {
                let mut q = self
                    .queue
                    .lock()
                    .map_err(|_| StoreError::Config("budget reservations unavailable".into()))?;
                match q.as_ref().filter(|s| !s.is_closed()) {
                    Some(s) => s.clone(),
                    None => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(run(pool.clone(), backend, rx, self.groups.clone()));
                        *q = Some(tx.clone());
                        tx
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
                Err(mpsc::error::SendError(back)) => ask = back,
            }
        }
        Err(StoreError::Config(
            "store unavailable: budget reservations could not start".into(),
        ))
    }
}

async fn run(
    pool: AnyPool,
    backend: Backend,
    mut rx: mpsc::UnboundedReceiver<Ask>,
    groups: std::sync::Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        groups.fetch_add(1, Ordering::Relaxed);
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(a) => group.push(a),
                Err(_) => break,
            }
        }
        // A caller that stopped waiting (its deadline passed, its client went away) has been
        // refused: spend nothing for it.
        group.retain(|a| !a.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let mut charges: Vec<Vec<Charge>> = group.iter().map(|a| a.charges.clone()).collect();
        match reserve_group(&pool, backend, &mut charges).await {
            Ok(verdicts) => {
                for ((ask, verdict), done) in group.into_iter().zip(verdicts).zip(charges) {
                    let spent = verdict.is_none();
                    if let Err(Ok((_, done))) = ask.reply.send(Ok((verdict, done)))
                        && spent
                    {
                        give_back(&pool, &done).await;
                    }
                }
            }
            // Nothing was spent. One call's failure must not refuse the others: each is tried
            // again on its own (a store that is down fails them all again).
            Err(e) if group.len() > 1 => {
                tracing::warn!(error = %e, calls = group.len(), "a budget reservation group failed; reserving its calls one by one");
                let group_error = e.to_string();
                let mut same_again: Option<String> = None;
                for ask in group {
                    if ask.reply.is_closed() {
                        continue;
                    }
                    // The store itself is failing (the first call alone fails the same way):
                    // the rest are answered at once rather than each waiting its turn.
                    if let Some(why) = &same_again {
                        let _ = ask.reply.send(Err(why.clone()));
                        continue;
                    }
                    let mut one = [ask.charges.clone()];
                    let answer = match reserve_group(&pool, backend, &mut one).await {
                        Ok(v) => {
                            let [done] = one;
                            Ok((v.into_iter().next().flatten(), done))
                        }
                        Err(e) => {
                            let why = e.to_string();
                            if why == group_error {
                                same_again = Some(why.clone());
                            }
                            Err(why)
                        }
                    };
                    let spent = matches!(answer, Ok((None, _)));
                    if let Err(Ok((_, done))) = ask.reply.send(answer)
                        && spent
                    {
                        give_back(&pool, &done).await;
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                for ask in group {
                    let _ = ask.reply.send(Err(why.clone()));
                }
            }
        }
    }
}

/// A call stopped waiting while its units were reserved: give them back.
async fn give_back(pool: &AnyPool, done: &[Charge]) {
    for c in done {
        if let Err(e) = super::budgets::refund_on(pool, c).await {
            tracing::error!(budget = %c.budget, error = %e, "units of a call nobody waited for not given back");
        }
    }
}

/// One transaction for every call's charges, in order; each call's verdict.
async fn reserve_group(
    pool: &AnyPool,
    backend: Backend,
    calls: &mut [Vec<Charge>],
) -> Result<Vec<Option<usize>>, StoreError> {
    // SQLite: take the write lock first, so processes take turns. PostgreSQL: each statement
    // locks its row, and a call's charges come in one order, so two calls cannot wait on each
    // other (there a "group" is always one call).
    let mut tx = match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    };
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
