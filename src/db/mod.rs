//! The data layer: one API over SQLite (embedded default) and PostgreSQL (scale-out).
//!
//! Both backends run the *same* SQL through sqlx's `Any` driver, so the two cannot
//! drift apart: only the migrations (`migrations/sqlite`, `migrations/postgres`) and a
//! handful of statements that must differ (transaction start, change-feed locking)
//! are backend specific, and those are chosen by [`Backend`]. Queries use `$N`
//! placeholders, which both engines understand. Values are limited to the portable
//! types: `i64` (ids, counters, booleans as 0/1, timestamps as micros), `f64`,
//! `String` (JSON documents as text).
//!
//! One exception, for speed: on a SQLite file the full sync's page reads and the API's
//! hot reads ([`Db::read`]) run the same SQL through rusqlite on a blocking thread
//! (`db/lite_read.rs`); rows of both drivers are read through [`DbRow`], so each row
//! mapping is written once.
#![warn(missing_docs)]

mod annotations;
mod changes;
mod files;
mod import;
mod leases;
mod lite_read;
mod local_paths;
mod notify;
mod projects;
mod rows;
mod sessions;
mod storages;
mod tasks;
mod users;
mod wal;
mod write_tx;

pub use annotations::*;
pub use changes::*;
pub use import::*;
pub use leases::*;
pub use local_paths::PathClaim;
pub use notify::WORK_CHANNEL;
pub use projects::*;
pub use storages::*;
pub use tasks::*;
pub use users::*;
pub use write_tx::{WriteQueueTimedOut, WriteTransaction, WriteTx};

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row};
use std::sync::Arc;
use std::time::Duration;

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row asked for does not exist (or belongs to another organization).
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write.
    #[error("already exists")]
    Conflict,
    /// Anything else: connection loss, a bug, a full disk.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => DbError::NotFound,
            sqlx::Error::Database(ref d) if d.is_unique_violation() => DbError::Conflict,
            e => DbError::Other(e.into()),
        }
    }
}

/// Whether `e` says that the database is busy with another writer and the statement
/// may succeed if tried again later: SQLite's `SQLITE_BUSY` / `SQLITE_LOCKED` (after
/// [`BUSY_TIMEOUT`] of waiting), no turn to write in this process within that time
/// ([`WriteQueueTimedOut`]), PostgreSQL's lock timeout, deadlock or serialization
/// failure ([`pg_code_is_busy`]), or no pooled connection becoming free in time.
/// SQLite's codes count from either driver: sqlx's, or rusqlite's ([`Db::read`]).
pub fn is_busy(e: &anyhow::Error) -> bool {
    if e.chain().any(|cause| cause.is::<WriteQueueTimedOut>()) {
        return true;
    }
    if e.chain().filter_map(|cause| cause.downcast_ref::<rusqlite::Error>()).any(lite_read::is_lock_wait) {
        return true;
    }
    e.chain().filter_map(|cause| cause.downcast_ref::<sqlx::Error>()).any(|e| match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => {
            if let Some(sqlite) = d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // Extended result codes keep the primary code in the low byte.
                let code = sqlx::error::DatabaseError::code(sqlite).and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
                matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
            } else {
                d.code().is_some_and(|code| pg_code_is_busy(&code))
            }
        }
        _ => false,
    })
}

const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// PostgreSQL errors after which the same request succeeds when retried: a lock not
/// available in time (`55P03`), and a transaction the server aborted to break a lock
/// cycle (`40P01`, e.g. a project deleted while its annotations are written) or a
/// serialization conflict (`40001`). Answered 503 with `Retry-After`, not 500.
fn pg_code_is_busy(code: &str) -> bool {
    matches!(code, "55P03" | "40P01" | "40001")
}

/// How long a SQLite statement waits for another connection's write lock before it
/// fails with `SQLITE_BUSY` (answered 503 with `Retry-After`), and a writer for its
/// turn among this process's writers (see [`WriteTx`]). Writers hold the lock
/// for short transactions only (a large import stages its rows first, see
/// [`Db::import_tasks`]), so a wait this long means the database is overloaded.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a query waits for a pool connection (including connecting) before it
/// fails. Short, so that while the database is unreachable a request answers 503
/// within seconds instead of hanging (docs/RELIABILITY.md); a healthy pool hands
/// out connections in microseconds.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Result alias of the data layer.
pub type DbResult<T> = Result<T, DbError>;

/// Which database engine sits behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (one process, WAL mode).
    Sqlite,
    /// PostgreSQL, shareable by several labelport processes.
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// The sync engine's bookkeeping writes ([`Db::bookkeeping_tx`]): on PostgreSQL
    /// connections whose commits do not wait for the WAL flush; on SQLite `pool`.
    bookkeeping: AnyPool,
    backend: Backend,
    /// Seals the legacy tokens stored in `users` (see [`Db::with_secrets`]).
    secrets: Option<crate::secrets::SecretBox>,
    /// The URL connected to (holds the password: never log it); the new-work
    /// listener opens its own connection with it.
    url: Arc<str>,
    /// This process's writers wait here for their turn (see [`WriteTx`]).
    writers: write_tx::WriterQueues,
    /// SQLite (a database file): rusqlite connections to the same file for the full
    /// sync's page reads ([`Db::export_page`]), see [`lite_read`].
    lite_reads: Option<Arc<lite_read::LiteReader>>,
    /// SQLite: checkpoints the WAL while any clone of this `Db` lives ([`wal`]).
    _checkpoints: Option<Arc<wal::Checkpointer>>,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if
    /// missing, and runs the migrations of that backend.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        use anyhow::Context;
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://");
        };
        let (url, max) = match backend {
            Backend::Sqlite => {
                files::restrict_sqlite_files(url).context("Failed to make the database files private (0600)")?;
                let sep = if url.contains('?') { '&' } else { '?' };
                let url = if url.contains("mode=") { url.to_owned() } else { format!("{url}{sep}mode=rwc") };
                (url, 8)
            }
            Backend::Postgres => (url.to_owned(), 16),
        };
        let sqlite_file = files::sqlite_path(&url).filter(|_| backend == Backend::Sqlite);
        let pool = pool_options(backend, max, Commits::Durable, sqlite_file.is_some())
            .connect(&url)
            .await
            .context("Failed to connect to the database")?;
        let checkpoints = match &sqlite_file {
            Some(path) => Some(wal::Checkpointer::start(path.clone()).context("Failed to open the database")?),
            None => None,
        };
        let bookkeeping = match backend {
            Backend::Sqlite => pool.clone(),
            Backend::Postgres => pool_options(backend, (max / 4).max(2), Commits::Bookkeeping, false)
                .connect(&url)
                .await
                .context("Failed to connect to the database")?,
        };
        let mut db = Db {
            pool,
            bookkeeping,
            backend,
            secrets: None,
            url: url.as_str().into(),
            writers: write_tx::WriterQueues::new(backend, max),
            lite_reads: None,
            _checkpoints: checkpoints,
        };
        db.migrate().await.context("Failed to run database migrations")?;
        if let Some(path) = sqlite_file {
            db.lite_reads = Some(lite_read::LiteReader::open(path).context("Failed to open the database")?);
        }
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// A subquery yielding the ids of a JSON array bound as parameter `$n`, for
    /// `IN (…)`: one statement text whatever the number of ids, so it is prepared
    /// once per connection instead of parsed anew with every list.
    pub(crate) fn id_list_param(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Backend::Postgres => format!("SELECT jsonb_array_elements_text(${n}::jsonb)::bigint"),
        }
    }

    /// Migrations of this build not (successfully) applied to the database.
    pub async fn pending_migrations(&self) -> DbResult<usize> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(&self.pool).await?;
        Ok(migrator.iter().filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version)).count())
    }

    /// Pending change-feed entries summed per storage type (what auto-export or the
    /// next sync still has to apply).
    pub async fn change_backlog_by_type(&self) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.storage_type, CAST(SUM(t.pending) AS BIGINT) AS pending FROM \
               (SELECT s.type AS storage_type, (SELECT COUNT(*) FROM annotation_changes c \
                  WHERE c.project_id = s.project_id AND c.seq > s.cursor_seq) AS pending \
                FROM export_storages s) t \
             GROUP BY t.storage_type ORDER BY t.storage_type",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("storage_type"), r.try_get::<i64, _>("pending").unwrap_or(0))).collect())
    }

    /// This handle with the key that seals legacy tokens at rest: needed to create
    /// users, reset tokens and read a user's token back ([`Db::legacy_token`] is
    /// empty without it).
    pub fn with_secrets(mut self, secrets: crate::secrets::SecretBox) -> Db {
        self.secrets = Some(secrets);
        self
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for reads that need no transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The rows of the read-only statement `sql` with `args`, each mapped by
    /// [`FromDbRow`]. On a SQLite file they are read through rusqlite ([`lite_read`]):
    /// inside a request on the thread answering it, elsewhere in one hand-off to a
    /// blocking thread, where the pool hands the statement to its connection's thread,
    /// its rows back one by one, and pings the connection on its return (the API's
    /// reads beside a full sync wait for a core at each hand-off). Elsewhere through
    /// the pool.
    pub(crate) async fn read<T: FromDbRow + Send + 'static>(&self, sql: String, args: Vec<Arg>) -> DbResult<Vec<T>> {
        use futures::TryStreamExt;
        if let Some(reads) = &self.lite_reads {
            return reads.rows(sql, args, |row| T::from_row(row)).await;
        }
        let mut query = sqlx::query(&sql);
        for arg in args {
            query = match arg {
                Arg::Int(i) => query.bind(i),
                Arg::Text(s) => query.bind(s),
                Arg::OptText(s) => query.bind(s),
            };
        }
        // Each row is converted as it arrives and dropped at once: rows held until the
        // result is complete cost the allocator three times as much to free (callgrind).
        Ok(query.fetch(&self.pool).map_ok(|row| T::from_row(&row)).try_collect().await?)
    }

    /// Three independent reads ([`Db::read`]), each a statement and its arguments: on
    /// a SQLite file one after another on one connection (in one hand-off outside a
    /// request), elsewhere at once on three pool connections.
    pub(crate) async fn read3<A, B, C>(
        &self,
        a: (String, Vec<Arg>),
        b: (String, Vec<Arg>),
        c: (String, Vec<Arg>),
    ) -> DbResult<(Vec<A>, Vec<B>, Vec<C>)>
    where
        A: FromDbRow + Send + 'static,
        B: FromDbRow + Send + 'static,
        C: FromDbRow + Send + 'static,
    {
        if let Some(reads) = &self.lite_reads {
            return reads
                .run(move |conn| {
                    Ok((
                        lite_read::rows(conn, &a.0, &a.1, |row| A::from_row(row))?,
                        lite_read::rows(conn, &b.0, &b.1, |row| B::from_row(row))?,
                        lite_read::rows(conn, &c.0, &c.1, |row| C::from_row(row))?,
                    ))
                })
                .await;
        }
        tokio::try_join!(self.read(a.0, a.1), self.read(b.0, b.1), self.read(c.0, c.1))
    }

    /// The first row of [`Db::read`]; `NotFound` without one.
    pub(crate) async fn read_one<T: FromDbRow + Send + 'static>(&self, sql: String, args: Vec<Arg>) -> DbResult<T> {
        self.read(sql, args).await?.into_iter().next().ok_or(DbError::NotFound)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.bookkeeping.close().await;
    }
}

/// What a pool's commits wait for on PostgreSQL.
#[derive(Clone, Copy, PartialEq)]
enum Commits {
    /// The WAL flush: a commit the caller was told about survives a crash of the
    /// database server or of its machine. Everything but [`Commits::Bookkeeping`].
    Durable,
    /// Nothing (`synchronous_commit = off`): the sync engine's own records of work it
    /// did (links, checkpoints, cursors, lease renewals and releases), whose loss in a
    /// crash of the database server only makes that work be done again. See
    /// [`Db::bookkeeping_tx`].
    Bookkeeping,
}

/// The options of a pool of `max` connections to `backend`.
/// `wal_thread`: a [`wal::Checkpointer`] checkpoints the SQLite file, so its
/// connections do not.
fn pool_options(backend: Backend, max: u32, commits: Commits, wal_thread: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // sqlx pings a connection when it goes back to the pool, and by default again
        // when it is taken out: a round trip to PostgreSQL (a hand-off to the worker
        // thread on SQLite) before every statement outside a transaction, 9 % of the
        // server's CPU on a task page. The ping at release stays; a connection that
        // broke while idle (the database restarted) fails its next statement, which
        // answers 503 (RELIABILITY.md) and closes it, and the pool connects anew.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; PRAGMA wal_autocheckpoint = {};",
                            BUSY_TIMEOUT.as_millis(),
                            // The checkpoint thread does it instead ([`wal`]).
                            if wal_thread { 0 } else { 1000 }
                        );
                        conn.execute(pragmas.as_str()).await?;
                    }
                    // Our transactions never wait on anything but the database. One left
                    // open by a process that froze (SIGSTOP, a paused VM) would hold its row
                    // locks, e.g. a storage's lease, and keep every other process from
                    // taking over: PostgreSQL ends such a session.
                    Backend::Postgres => {
                        conn.execute("SET idle_in_transaction_session_timeout = '10s'").await?;
                        if commits == Commits::Bookkeeping {
                            conn.execute("SET synchronous_commit = off").await?;
                        }
                    }
                }
                Ok(())
            })
        })
}

/// Typed reads of a result row from any of the drivers: the portable `Any` pool's, or
/// rusqlite's, through which export pages are read on SQLite ([`Db::export_page`]), so
/// that the row mappings are written once.
pub trait DbRow {
    /// An integer column (ids, counters, 0/1 flags, timestamps).
    fn int(&self, col: &str) -> i64;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Option<i64>;
    /// A nullable floating-point column.
    fn opt_float(&self, col: &str) -> Option<f64>;
    /// A text column.
    fn text(&self, col: &str) -> String;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Option<String>;
}

impl<R: Row> DbRow for R
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, col: &str) -> i64 {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> Option<i64> {
        self.get(col)
    }
    fn opt_float(&self, col: &str) -> Option<f64> {
        self.get(col)
    }
    fn text(&self, col: &str) -> String {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> Option<String> {
        self.get(col)
    }
}

/// A value read from one result row of [`Db::read`], by column name.
pub(crate) trait FromDbRow: Sized {
    /// Maps `row`.
    fn from_row(row: &impl DbRow) -> Self;
}

/// A parameter of a statement run by [`Db::read`].
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
    /// A text or `NULL`.
    OptText(Option<String>),
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Int(i) => i.to_sql(),
            Arg::Text(s) => s.to_sql(),
            Arg::OptText(s) => s.to_sql(),
        }
    }
}

/// Reads a 0/1 integer column as a bool.
pub(crate) fn flag(row: &impl DbRow, col: &str) -> bool {
    row.int(col) != 0
}

/// How a JSON column is held once read: parsed into a [`serde_json::Value`] where the
/// API looks inside it, or kept as its stored text ([`JsonText`]) where it is only
/// written out again, as in export documents.
pub trait JsonColumn: Sized + Send + 'static {
    /// Reads column `col` of `row`.
    fn read(row: &impl DbRow, col: &str) -> Self;
    /// The JSON text (as stored, or serialised from the value).
    fn json_text(&self) -> std::borrow::Cow<'_, str>;
    /// The value (parsed from stored text, `null` for anything unparsable).
    fn to_value(&self) -> serde_json::Value;
}

impl JsonColumn for serde_json::Value {
    fn read(row: &impl DbRow, col: &str) -> Self {
        json_col(row, col)
    }
    fn json_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(self.to_string())
    }
    fn to_value(&self) -> serde_json::Value {
        self.clone()
    }
}

/// A JSON column's stored text, for export documents, which copy it into their own
/// style without building a tree (`crate::restyle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(pub String);

impl JsonColumn for JsonText {
    fn read(row: &impl DbRow, col: &str) -> Self {
        JsonText(row.text(col))
    }
    fn json_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.0)
    }
    fn to_value(&self) -> serde_json::Value {
        parse_or_null(&self.0)
    }
}

/// Reads a JSON text column, falling back to `null` for anything unparsable.
pub(crate) fn json_col(row: &impl DbRow, col: &str) -> serde_json::Value {
    parse_or_null(&row.text(col))
}

/// Stored JSON text as a value, `null` for anything unparsable.
fn parse_or_null(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// A nullable `f64` parameter. sqlx 0.8's `Any` driver sends a NULL `f64` to
/// PostgreSQL as a `float4` NULL, so a cached statement first run with NULL then
/// rejects real `f64` values ("incorrect binary data format"). Its NULL of `f32`
/// maps to `float8`, which matches the column; bind nullable doubles through this.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NullableF64(pub Option<f64>);

impl sqlx::Type<Any> for NullableF64 {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <f64 as sqlx::Type<Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, Any> for NullableF64 {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self.0 {
            Some(v) => <f64 as sqlx::Encode<'q, Any>>::encode_by_ref(&v, buf),
            None => <Option<f32> as sqlx::Encode<'q, Any>>::encode_by_ref(&None, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_busy, pg_code_is_busy, WriteQueueTimedOut};
    use anyhow::Context;

    #[test]
    fn postgres_lock_timeouts_deadlocks_and_serialization_failures_are_busy_and_other_errors_are_not() {
        for code in ["55P03", "40P01", "40001"] {
            assert!(pg_code_is_busy(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "57014"] {
            assert!(!pg_code_is_busy(code), "{code}");
        }
    }

    #[test]
    fn a_pool_timeout_is_busy_even_under_context_and_a_missing_row_is_not() {
        let timed_out: anyhow::Result<()> = Err(sqlx::Error::PoolTimedOut.into());
        assert!(is_busy(&timed_out.context("Failed to create a project").unwrap_err()));
        let no_turn: anyhow::Result<()> = Err(WriteQueueTimedOut.into());
        assert!(is_busy(&no_turn.context("Failed to create a project").unwrap_err()));
        assert!(!is_busy(&sqlx::Error::RowNotFound.into()));
        assert!(!is_busy(&anyhow::anyhow!("database is locked, said someone")));
    }

    /// A read through rusqlite that found SQLite busy or locked is busy too (503 with
    /// `Retry-After`, as through sqlx), and its other failures are not.
    #[test]
    fn a_busy_or_locked_rusqlite_read_is_busy_and_its_other_failures_are_not() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        let read: anyhow::Result<()> = Err(failure(5).into());
        assert!(is_busy(&read.context("Failed to read a task").unwrap_err()));
        // SQLITE_LOCKED_SHAREDCACHE: an extended code of SQLITE_LOCKED.
        assert!(is_busy(&failure(6 | (1 << 8)).into()));
        assert!(!is_busy(&failure(1).into()));
        assert!(!is_busy(&rusqlite::Error::QueryReturnedNoRows.into()));
    }

    /// Two values of one row, for [`reads_bind_numbered_parameters_by_number_through_either_driver`].
    #[derive(Debug, PartialEq)]
    struct Pair(i64, Option<String>);

    impl super::FromDbRow for Pair {
        fn from_row(row: &impl super::DbRow) -> Pair {
            Pair(row.int("n"), row.opt_text("label"))
        }
    }

    /// `$3` before `$2` in the text still takes the third argument: SQLite itself
    /// would number them in order of appearance (rusqlite's path), sqlx by their
    /// numbers (the pool's path, here an in-memory database).
    #[tokio::test]
    async fn reads_bind_numbered_parameters_by_number_through_either_driver() {
        use super::Arg;
        let dir = tempfile::tempdir().unwrap();
        let file = super::Db::connect(&format!("sqlite://{}", dir.path().join("r.db").display())).await.unwrap();
        let memory = super::Db::connect("sqlite::memory:").await.unwrap();
        assert!(file.lite_reads.is_some() && memory.lite_reads.is_none(), "one of each path");
        let sql = "SELECT $3 - $2 AS n, CASE WHEN $4 IS NULL THEN NULL ELSE $4 || '!' END AS label \
                   WHERE $1 = 1 UNION ALL SELECT $2, $4 WHERE $1 = 1";
        for db in [&file, &memory] {
            let read = |label: Option<&str>| {
                let args = vec![Arg::Int(1), Arg::Int(10), Arg::Int(25), Arg::OptText(label.map(str::to_owned))];
                db.read::<Pair>(sql.to_owned(), args)
            };
            assert_eq!(read(Some("x")).await.unwrap(), [Pair(15, Some("x!".into())), Pair(10, Some("x".into()))]);
            assert_eq!(read(None).await.unwrap(), [Pair(15, None), Pair(10, None)]);
            let missing = db.read_one::<Pair>("SELECT 1 AS n, NULL AS label WHERE $1 = 0".into(), vec![Arg::Int(1)]);
            assert!(matches!(missing.await, Err(super::DbError::NotFound)));
        }
    }

    /// A burst of reads larger than the reader's connections waits for them: every
    /// read answers, and the connections opened stay few enough to all be kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reads_shares_a_bounded_set_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::Db::connect(&format!("sqlite://{}", dir.path().join("r.db").display())).await.unwrap();
        // Each read steps through a few thousand rows, long enough for the burst to overlap.
        let sql = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 20000) \
                   SELECT MAX(n) + $1 AS n, NULL AS label FROM c";
        let reads = (0..64).map(|i| {
            let db = db.clone();
            tokio::spawn(async move { db.read_one::<Pair>(sql.to_owned(), vec![super::Arg::Int(i)]).await.unwrap() })
        });
        let answers: Vec<Pair> = futures::future::join_all(reads).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, (0..64).map(|i| Pair(20000 + i, None)).collect::<Vec<_>>());
        let kept = db.lite_reads.as_ref().unwrap().idle_connections();
        assert!((1..=super::lite_read::MAX_CONNECTIONS).contains(&kept), "{kept} connections kept");
    }

    /// The commit mode a transaction of the given kind runs with on PostgreSQL.
    async fn synchronous_commit(tx: &mut super::WriteTx) -> String {
        sqlx::query_scalar("SELECT current_setting('synchronous_commit')").fetch_one(&mut **tx).await.unwrap()
    }

    /// On PostgreSQL the sync engine's bookkeeping commits without waiting for the WAL
    /// flush, and every other write (what users save) waits for it.
    #[tokio::test]
    async fn postgres_bookkeeping_commits_do_not_wait_for_the_disk_and_other_writes_do() {
        use sqlx::Connection;
        // Arrange: a database of its own on the test server.
        let admin =
            std::env::var("LABELPORT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("labelport_unit_{}", uuid::Uuid::new_v4().simple());
        let mut conn =
            sqlx::PgConnection::connect(&format!("{admin}/postgres")).await.expect("PostgreSQL for the tests");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let db = super::Db::connect(&format!("{admin}/{name}")).await.unwrap();

        // Act
        let mut bookkeeping = db.bookkeeping_tx().await.unwrap();
        let mut durable = db.write_tx().await.unwrap();
        let mut project = db.project_write_tx().await.unwrap();
        let modes = [
            synchronous_commit(&mut bookkeeping).await,
            synchronous_commit(&mut durable).await,
            synchronous_commit(&mut project).await,
        ];

        // Assert
        assert_eq!(modes, ["off", "on", "on"]);
        drop((bookkeeping, durable, project));
        db.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    }
}
