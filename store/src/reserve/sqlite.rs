//! SQLite's reservation thread: one write transaction per group of calls, on the store's
//! writing connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Answer, Ask, Charge, GROUP, now_ms};
use crate::db::{SharedWriter, immediate};

/// Serve reservations from `rx` until every sender has gone (the store was dropped); once
/// `closed`, refuse them.
pub(super) fn run(
    writer: &SharedWriter,
    rx: &std::sync::mpsc::Receiver<Ask>,
    groups: &AtomicU64,
    closed: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
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
        if closed.load(Ordering::Acquire) {
            for ask in group {
                let _ = ask.reply.send(Err("the store was closed".into()));
            }
            continue;
        }
        // The group goes to `serve` once the connection is open; if it could not be, its calls
        // are told why here.
        let mut pending = Some(group);
        if let Err(e) = writer.with(|c| match pending.take() {
            Some(group) => serve(c, group),
            None => Ok(()),
        }) && let Some(group) = pending
        {
            let why = e.to_string();
            for ask in group {
                let _ = ask.reply.send(Err(why.clone()));
            }
        }
    }
}

/// Reserve a group and answer its calls; an error (the connection is then dropped) when the
/// store failed them all.
fn serve(conn: &mut Connection, mut group: Vec<Ask>) -> Result<(), rusqlite::Error> {
    // Taken from the asks, not copied: a call's charges go back to it with its verdict.
    let mut charges: Vec<Vec<Charge>> = group
        .iter_mut()
        .map(|a| std::mem::take(&mut a.charges))
        .collect();
    match reserve_group(conn, &mut charges) {
        Ok(verdicts) => {
            for ((ask, verdict), done) in group.into_iter().zip(verdicts).zip(charges) {
                answer(conn, ask, Ok((verdict, done)));
            }
            Ok(())
        }
        // Nothing was spent. One call's failure must not refuse the others: each is tried
        // again on its own (a store that is down fails them all again).
        Err(e) if group.len() > 1 => {
            tracing::warn!(error = %e, calls = group.len(), "a budget reservation group failed; reserving its calls one by one");
            let group_error = e.to_string();
            let mut same_again: Option<String> = None;
            let mut first = true;
            for (ask, charges) in group.into_iter().zip(charges) {
                if ask.reply.is_closed() {
                    continue;
                }
                // The store itself is failing (the first call tried alone fails the same way):
                // the rest are answered at once rather than each waiting its turn.
                if let Some(why) = &same_again {
                    let _ = ask.reply.send(Err(why.clone()));
                    continue;
                }
                let mut one = [charges];
                let reply = match reserve_group(conn, &mut one) {
                    Ok(v) => {
                        let [done] = one;
                        Ok((v.into_iter().next().flatten(), done))
                    }
                    Err(e) => {
                        let why = e.to_string();
                        if first && why == group_error {
                            same_again = Some(why.clone());
                        }
                        Err(why)
                    }
                };
                first = false;
                answer(conn, ask, reply);
            }
            same_again.map_or(Ok(()), |_| Err(e))
        }
        Err(e) => {
            let why = e.to_string();
            for ask in group {
                let _ = ask.reply.send(Err(why.clone()));
            }
            Err(e)
        }
    }
}

/// Tell a call what it got; a call that stopped waiting meanwhile gets its units back.
fn answer(conn: &Connection, ask: Ask, reply: Answer) {
    let spent = matches!(reply, Ok((None, _)));
    if let Err(Ok((_, done))) = ask.reply.send(reply)
        && spent
    {
        for c in &done {
            if let Err(e) = refund(conn, c) {
                tracing::error!(budget = %c.budget, error = %e, "units of a call nobody waited for not given back");
            }
        }
    }
}

/// One transaction for every call's charges, in order; each call's verdict. `BEGIN IMMEDIATE`
/// takes the write lock first, so processes sharing the store take turns.
fn reserve_group(
    conn: &Connection,
    calls: &mut [Vec<Charge>],
) -> Result<Vec<Option<usize>>, rusqlite::Error> {
    immediate(conn, |tx| {
        let at = now_ms();
        let mut verdicts = Vec::with_capacity(calls.len());
        for charges in calls.iter_mut() {
            let several = charges.len() > 1;
            if several {
                tx.prepare_cached("SAVEPOINT call")?.execute([])?;
            }
            let mut refused = None;
            for (i, c) in charges.iter_mut().enumerate() {
                match spend(tx, c, at)? {
                    Some(epoch) => c.epoch = epoch,
                    None => {
                        refused = Some(i);
                        break;
                    }
                }
            }
            if several {
                if refused.is_some() {
                    tx.prepare_cached("ROLLBACK TO SAVEPOINT call")?
                        .execute([])?;
                }
                tx.prepare_cached("RELEASE SAVEPOINT call")?.execute([])?;
            }
            verdicts.push(refused);
        }
        Ok(verdicts)
    })
}

/// Add `c.cost` to its window while it fits: the window's epoch when spent, `None` when not.
///
/// The window is read, then charged by its row id or created: three plain statements where
/// PostgreSQL has one upsert. Under the write lock (`BEGIN IMMEDIATE`) nothing comes between
/// them, so the outcome is the upsert's: an existing window is charged if the cost fits in its
/// units plus any raise; a missing one is created if the cost fits in the units. No statement
/// here has a `RETURNING` clause (SQLite gathers its rows in a temporary table, opened and
/// closed on every call) or an `INSERT … SELECT` that reads its own table (which copies the
/// selected row into a temporary table first).
fn spend(conn: &Connection, c: &Charge, at: i64) -> Result<Option<i64>, rusqlite::Error> {
    let window = conn
        .prepare_cached(
            "SELECT rowid, used, extra, epoch FROM budget_usage
             WHERE budget = ?1 AND principal = ?2 AND \"window\" = ?3",
        )?
        .query_row(params![c.budget, c.principal, c.window], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    match window {
        Some((row, used, extra, epoch)) => {
            // A sum the row cannot hold does not fit; the room saturates (a raise past the
            // largest count leaves no limit, not a negative one).
            let room = c.units.saturating_add(extra);
            let fits = used.checked_add(c.cost).is_some_and(|after| after <= room);
            if !fits {
                return Ok(None);
            }
            conn.prepare_cached(
                "UPDATE budget_usage SET used = used + ?1, updated_at = ?2 WHERE rowid = ?3",
            )?
            .execute(params![c.cost, at, row])?;
            Ok(Some(epoch))
        }
        None if c.cost <= c.units => {
            conn.prepare_cached(
                "INSERT INTO budget_usage (budget, principal, \"window\", used, extra, updated_at, epoch)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, 0)",
            )?
            .execute(params![c.budget, c.principal, c.window, c.cost, at])?;
            Ok(Some(0))
        }
        None => Ok(None),
    }
}

/// Give `c`'s units back, if its window was not reset since (its epoch). Never below zero.
fn refund(conn: &Connection, c: &Charge) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "UPDATE budget_usage SET used = CASE WHEN used > ?1 THEN used - ?1 ELSE 0 END, updated_at = ?2
         WHERE budget = ?3 AND principal = ?4 AND \"window\" = ?5 AND epoch = ?6",
    )?
    .execute(params![c.cost, now_ms(), c.budget, c.principal, c.window, c.epoch])?;
    Ok(())
}
