//! Reads straight from the SQLite file with rusqlite: the full sync's export pages and
//! the API's hot reads ([`Db::read`](super::Db::read)).
//!
//! A full sync reads every annotation once. Through sqlx, each value of each row is
//! first copied by sqlx's SQLite worker (`sqlite3_value_dup`), handed to the async
//! side, looked up by name and copied again into our types; here a blocking thread
//! steps the statement itself and copies each text once, from SQLite's own buffer.
//! A request's read is one hand-off to a blocking thread instead of a pool
//! connection's two (the statement to its worker thread, the ping when it goes back),
//! and leaves the pool's connections to the writers.
//! It only reads: WAL lets it read beside the writers of the `Any` pool.

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

    /// Runs `read` on a blocking thread with one of the connections: the statements of
    /// one answer in one hand-off.
    pub(super) async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> DbResult<R> {
        let reader = self.clone();
        let permit = self.permits.clone().acquire_owned().await.map_err(|e| DbError::Other(e.into()))?;
        let blocking = move || {
            let result = reader.with_connection(read);
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
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let idle = self.idle.lock().expect("never poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn);
        self.idle.lock().expect("never poisoned").push(conn);
        result
    }
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
