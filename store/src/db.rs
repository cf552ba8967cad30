//! Where the store lives: SQLite for one process, PostgreSQL for several replicas. Both are
//! reached through sqlx's `Any` driver, so every query is written once (`$N` parameters, quoted
//! `"user"` and `"window"`, booleans kept as integers); only the schema differs, and it branches
//! on [`Backend`]. On SQLite the two writes made on every call (audit events, budget
//! reservations) run instead on one rusqlite connection ([`SharedWriter`]) taken in turn by their
//! own threads (`audit.rs`, `reserve/sqlite.rs`), which branch on [`Target`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::StoreError;

/// Every PostgreSQL connection's bounds: no statement, lock wait or open transaction holds a
/// call (or the audit sink) for long; an error is a refusal, which the caller may retry.
pub(crate) const POSTGRES_SESSION: &str = "SET statement_timeout = '5s'; SET lock_timeout = '5s'; SET idle_in_transaction_session_timeout = '10s'";

/// The database behind a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What a store URL names, checked before anything connects.
#[derive(Clone)]
pub(crate) enum Target {
    /// The database file.
    Sqlite(PathBuf),
    /// The URL to connect with, the password (read by reference) in it.
    Postgres(url::Url),
}

/// Why a store URL cannot be used; the message names the fix.
pub fn check_url(url: &str) -> Result<Backend, String> {
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err("an in-memory database: keys, approvals and the audit log would vanish when the gateway stops, and `portcullis keys` and the audit sink could not reach it".into());
        }
        return SqliteConnectOptions::from_str(url)
            .map(|_| Backend::Sqlite)
            .map_err(|e| format!("not a SQLite URL: {e}"));
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "not a store URL: use `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`".into(),
        );
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    let in_query = parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if parsed.password().is_some() || in_query {
        return Err("the URL carries a password: a credential in the config file leaks with it; give it by reference in `store_password` (`env:NAME`, `file:/path` or `vault:mount/path#key`)".into());
    }
    PgConnectOptions::from_str(url)
        .map(|_| Backend::Postgres)
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))
}

/// Shown without the password, whatever prints it.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Target::Postgres(url) => {
                let mut shown = url.clone();
                if shown.password().is_some() {
                    let _ = shown.set_password(Some("redacted"));
                }
                f.debug_tuple("Postgres").field(&shown.as_str()).finish()
            }
        }
    }
}

impl Target {
    /// Parse a store URL (checked by [`check_url`]) with the password read for it.
    pub(crate) fn parse(url: &str, password: Option<&str>) -> Result<Target, StoreError> {
        let fault = |e: String| StoreError::Config(e);
        match check_url(url).map_err(fault)? {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?;
                Ok(Target::Sqlite(opts.get_filename().to_path_buf()))
            }
            Backend::Postgres => {
                let mut parsed = url::Url::parse(url).map_err(|e| fault(e.to_string()))?;
                if let Some(p) = password {
                    parsed
                        .set_password(Some(p))
                        .map_err(|()| fault("the URL cannot carry a password".into()))?;
                }
                Ok(Target::Postgres(parsed))
            }
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL sqlx connects with. SQLite's file is created when missing.
    pub(crate) fn connect_url(&self) -> String {
        match self {
            Target::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Target::Postgres(url) => url.to_string(),
        }
    }

    /// The pools of a store: the main one, and budget usage's (its own SQLite connections
    /// that commit without waiting for the disk; the same pool on PostgreSQL).
    pub(crate) async fn pools(&self, lazy: bool) -> Result<(AnyPool, AnyPool), StoreError> {
        sqlx::any::install_default_drivers();
        let url = self.connect_url();
        let options = |synchronous: &'static str| {
            AnyPoolOptions::new()
                .max_connections(match self {
                    Target::Sqlite(_) => 4,
                    Target::Postgres(_) => 8,
                })
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if conn.backend_name() == "SQLite" {
                            // WAL lets readers run beside the writer; a writer waits for
                            // another process's lock for up to five seconds.
                            let pragmas = format!(
                                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = {synchronous}"
                            );
                            sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(pragmas)).await?;
                        } else {
                            sqlx::Executor::execute(conn, POSTGRES_SESSION).await?;
                        }
                        Ok(())
                    })
                })
        };
        if lazy {
            let pool = options("FULL").connect_lazy(&url)?;
            return Ok((pool.clone(), pool));
        }
        let pool = options("FULL").connect(&url).await?;
        let budgets = match self {
            Target::Sqlite(_) => options("NORMAL").connect_lazy(&url)?,
            Target::Postgres(_) => pool.clone(),
        };
        Ok((pool, budgets))
    }
}

/// WAL pages after which a writer thread's commit checkpoints (SQLite's default, kept by the
/// pools, is 1,000). The writers commit on every call, and each commit appends the same few hot
/// pages again (the B-trees' right edges and roots); a checkpoint copies each page once however
/// often it was appended, so fewer, larger checkpoints copy less. Between checkpoints the WAL
/// grows to about 16 MiB (more while a reader keeps a checkpoint from finishing); the file keeps
/// its largest size, to be written over.
const WRITER_CHECKPOINT: i64 = 4_000;

impl Target {
    /// A SQLite store's writing connection (opened at its first use); none on PostgreSQL.
    pub(crate) fn shared_writer(&self) -> Option<std::sync::Arc<SharedWriter>> {
        match self {
            Target::Sqlite(path) => Some(std::sync::Arc::new(SharedWriter::new(path.clone()))),
            Target::Postgres(_) => None,
        }
    }
}

/// The one connection through which a SQLite store's threads that write on every call (the
/// audit store sink and the budget reservations) write, each taking it in turn.
///
/// One connection rather than one per thread: SQLite drops a connection's page cache whenever
/// another connection committed since its last transaction, so two writers taking turns each read
/// every page they touch again, and one finding the write lock taken sleeps in SQLite's busy
/// handler (a millisecond at least) where this lock wakes it as soon as the other is done.
/// A transaction that fails drops the connection; the next user opens another.
#[derive(Debug)]
pub(crate) struct SharedWriter {
    path: PathBuf,
    conn: std::sync::Mutex<Option<rusqlite::Connection>>,
}

impl SharedWriter {
    pub(crate) fn new(path: PathBuf) -> SharedWriter {
        SharedWriter {
            path,
            conn: std::sync::Mutex::new(None),
        }
    }

    /// Run `work` on the connection, opened first if there is none. Blocking: call it from a
    /// thread of its own, never from a runtime's worker.
    pub(crate) fn with<R>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<R, rusqlite::Error>,
    ) -> Result<R, rusqlite::Error> {
        // A panic under the lock leaves at worst a connection mid-transaction, which rusqlite
        // rolls back when it is dropped: drop it.
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                *g = None;
                self.conn.clear_poison();
                g
            }
        };
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(writer_connection(&self.path)?),
        };
        let done = work(conn);
        if done.is_err() {
            // A connection that failed is not trusted again.
            *guard = None;
        }
        done
    }
}

/// A connection of its own to a SQLite store's file, for the threads that write on every call
/// ([`SharedWriter`]). The file exists with its schema: the pool opened it first. Its commits
/// survive a crash of the process without waiting for the disk; another process's write lock is
/// waited for up to five seconds, as the pool's connections do.
fn writer_connection(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT)?;
    Ok(conn)
}

/// Run `work` in a write transaction that takes the write lock first (`BEGIN IMMEDIATE`, the
/// turn among processes sharing the file): committed when `work` succeeds, rolled back when
/// anything fails. Unlike rusqlite's `Transaction`, which parses its `BEGIN` and `COMMIT` on
/// every use, the statements come from the connection's cache.
pub(crate) fn immediate<R>(
    conn: &rusqlite::Connection,
    work: impl FnOnce(&rusqlite::Connection) -> Result<R, rusqlite::Error>,
) -> Result<R, rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    // Rolls back unless the commit went through, also when `work` panics (the write lock is then
    // not kept until the connection's next use).
    let open = Open(conn);
    let done = work(conn).and_then(|r| conn.prepare_cached("COMMIT")?.execute([]).map(|_| r));
    drop(open);
    done
}

/// A transaction begun on the connection: rolled back when dropped, if still open. The error
/// of a failed rollback is not what the caller hears (its own error is); the writer drops a
/// connection that failed.
struct Open<'a>(&'a rusqlite::Connection);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self
                .0
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
        }
    }
}
