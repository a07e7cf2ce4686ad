//! Reads straight from the SQLite file with rusqlite: the full sync's export pages and
//! the API's hot reads ([`Db::read`](super::Db::read)).
//!
//! A full sync reads every annotation once. Through sqlx, each value of each row is
//! first copied by sqlx's SQLite worker (`sqlite3_value_dup`), handed to the async
//! side, looked up by name and copied again into our types; here a blocking thread
//! steps the statement itself and copies each text once, from SQLite's own buffer.
//! A request's read runs on the thread that answers the request, where the pool would
//! hand the statement to its connection's worker thread and back and ping the
//! connection when it returns; and it leaves the pool's connections to the writers.
//! It only reads: WAL lets it read beside the writers of the `Any` pool.
//!
//! Why on the answering thread: each hand-off to another thread is a wake-up, and
//! beside a full sync every wake-up may wait for a core. With the reads handed to
//! blocking threads, the API's reads beside back-to-back full syncs had a p99 of
//! 4.5–7.0 ms; on the answering thread 3.2–4.8 ms, half the median, and more syncs
//! done in the same time (docs/BENCHMARKS.md, 15th session). A read of a page of a
//! request is as short as the work of turning it into JSON, which that thread does
//! anyway. The one wait a read may meet, a lock held by another connection, is not
//! waited for there: such a read goes to a blocking thread and waits there.

use super::{DbError, DbResult, DbRow};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Most reads at once, and so most connections: more than the cores can step, few
/// enough to keep them all open (a new connection parses the schema again).
pub(super) const MAX_CONNECTIONS: usize = 16;

/// Connections to one SQLite file; opened as needed, kept when idle.
pub(super) struct LiteReader {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// One per read in flight.
    permits: Arc<Semaphore>,
}

impl LiteReader {
    /// A reader of the database file at `path`, checked by opening one connection.
    pub(super) fn open(path: PathBuf) -> anyhow::Result<Arc<LiteReader>> {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let reader = LiteReader { path, idle: Mutex::new(Vec::new()), permits };
        let first = reader.connect()?;
        reader.idle.lock().expect("never poisoned: no panics while held").push(first);
        Ok(Arc::new(reader))
    }

    /// Connections open and not in use.
    #[cfg(test)]
    pub(super) fn idle_connections(&self) -> usize {
        self.idle.lock().expect("never poisoned").len()
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = open_rw(&self.path)?;
        // Every statement read through here stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `sql` with `params` on a blocking thread, mapping each row with `map` as it
    /// is stepped (rows are never held by the driver).
    pub(super) async fn rows<T: Send + 'static, A: rusqlite::ToSql + Send + 'static>(
        self: &Arc<Self>,
        sql: String,
        params: Vec<A>,
        map: fn(&LiteRow<'_, '_>) -> T,
    ) -> DbResult<Vec<T>> {
        self.run(move |conn| rows(conn, &sql, &params, map)).await
    }

    /// Runs `read` with one of the connections: the statements of one answer at once.
    /// Inside a request ([`crate::background::answer`]) right here, unless a lock held
    /// elsewhere would make it wait; otherwise, and then, on a blocking thread.
    pub(super) async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        read: impl Fn(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> DbResult<R> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|e| DbError::Other(e.into()))?;
        if crate::background::answering() {
            match self.with_connection(Wait::No, &read) {
                Err(e) if is_lock_wait(&e) => {}
                done => return done.map_err(|e| DbError::Other(e.into())),
            }
        }
        let reader = self.clone();
        let blocking = move || {
            let result = reader.with_connection(Wait::Yes, &read);
            drop(permit);
            result
        };
        crate::background::join(crate::background::spawn_blocking(blocking))
            .await
            .map_err(|e| DbError::Other(e.into()))?
            .map_err(|e| DbError::Other(e.into()))
    }

    fn with_connection<R>(
        &self,
        wait: Wait,
        read: &impl Fn(&rusqlite::Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let idle = self.idle.lock().expect("never poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let timeout = match wait {
            Wait::Yes => super::BUSY_TIMEOUT,
            Wait::No => std::time::Duration::ZERO,
        };
        let result = conn.busy_timeout(timeout).and_then(|()| read(&conn));
        self.idle.lock().expect("never poisoned").push(conn);
        result
    }
}

/// Whether a read may wait for a lock held by another connection.
#[derive(Clone, Copy)]
enum Wait {
    /// Up to [`BUSY_TIMEOUT`](super::BUSY_TIMEOUT).
    Yes,
    /// Not at all: the read fails with `SQLITE_BUSY` or `SQLITE_LOCKED` instead.
    No,
}

/// A read that failed because it would have had to wait for a lock (or waited in vain).
pub(super) fn is_lock_wait(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

/// The rows of `sql` with `params` on `conn`, each mapped by `map` as it is stepped.
pub(super) fn rows<T, A: rusqlite::ToSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[A],
    map: fn(&LiteRow<'_, '_>) -> T,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let names: Vec<String> = statement.column_names().into_iter().map(str::to_owned).collect();
    bind_numbered(&mut statement, params)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(&LiteRow { row, names: &names, next: Cell::new(0) }));
    }
    Ok(out)
}

/// Binds `$N` to `params[N - 1]`, as sqlx does: SQLite numbers a statement's named
/// parameters in the order they first appear, so in `… > $3 AND … <= $3 + $2` it
/// takes `$3` for the second parameter.
fn bind_numbered<A: rusqlite::ToSql>(statement: &mut rusqlite::Statement<'_>, params: &[A]) -> rusqlite::Result<()> {
    let count = statement.parameter_count();
    if count != params.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), count));
    }
    for index in 1..=count {
        let number = statement.parameter_name(index).and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok());
        let param = match number {
            Some(n) => params.get(n.wrapping_sub(1)).ok_or(rusqlite::Error::InvalidParameterCount(n, count))?,
            None => &params[index - 1],
        };
        statement.raw_bind_parameter(index, param)?;
    }
    Ok(())
}

/// A rusqlite connection to the existing database file at `path`, waiting up to
/// [`BUSY_TIMEOUT`](super::BUSY_TIMEOUT) for locks.
pub(super) fn open_rw(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    Ok(conn)
}

/// A rusqlite row read by column name. Columns are mostly read in the order they are
/// selected, so the column after the one found last is tried first.
pub(super) struct LiteRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
    next: Cell<usize>,
}

impl LiteRow<'_, '_> {
    fn index(&self, col: &str) -> usize {
        let next = self.next.get();
        let found = match self.names.get(next) {
            Some(name) if name == col => next,
            _ => (self.names.iter().position(|name| name == col))
                .unwrap_or_else(|| panic!("the export query selects column {col}")),
        };
        self.next.set(found + 1);
        found
    }

    fn value<T: rusqlite::types::FromSql>(&self, col: &str) -> T {
        self.row.get(self.index(col)).unwrap_or_else(|e| panic!("column {col}: {e}"))
    }
}

impl DbRow for LiteRow<'_, '_> {
    fn int(&self, col: &str) -> i64 {
        self.value(col)
    }
    fn opt_int(&self, col: &str) -> Option<i64> {
        self.value(col)
    }
    fn opt_float(&self, col: &str) -> Option<f64> {
        self.value(col)
    }
    fn text(&self, col: &str) -> String {
        self.value(col)
    }
    fn opt_text(&self, col: &str) -> Option<String> {
        self.value(col)
    }
}

#[cfg(test)]
mod tests {
    use super::LiteReader;
    use std::thread::ThreadId;
    use std::time::Duration;

    fn thread_of_read(conn: &rusqlite::Connection) -> rusqlite::Result<ThreadId> {
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(std::thread::current().id()))
    }

    /// A request's read runs on the thread answering it, other reads on a blocking
    /// thread; a request's read that meets a lock held elsewhere goes to a blocking
    /// thread too and waits there for the lock, instead of failing or blocking the
    /// thread that answers.
    #[tokio::test]
    async fn a_requests_read_runs_where_it_is_answered_unless_it_must_wait_for_a_lock() {
        // Arrange: a WAL database file whose lock another connection holds for a
        // moment (in exclusive locking mode, which keeps it after its commit).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
        locker.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(())).unwrap();
        locker.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);").unwrap();
        let reader = LiteReader::open(path.clone()).unwrap();
        let here = std::thread::current().id();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(locker);
        });

        // Act: a request's read while the lock is held.
        let waited = crate::background::answer(reader.run(thread_of_read)).await;
        release.join().unwrap();

        // Assert: it waited on a blocking thread for the lock and then read.
        assert_ne!(waited.unwrap(), here);

        // Act: reads without a lock in the way.
        let answered = crate::background::answer(reader.run(thread_of_read)).await.unwrap();
        let unanswered = reader.run(thread_of_read).await.unwrap();
        let bulk = crate::background::bulk(crate::background::answer(reader.run(thread_of_read))).await.unwrap();

        // Assert
        assert_eq!(answered, here, "a request's read runs on the thread answering it");
        assert_ne!(unanswered, here, "another read runs on a blocking thread");
        assert_ne!(bulk, here, "bulk work's reads run on the background threads");
    }
}
