//! Export pages read straight from the SQLite file with rusqlite.
//!
//! A full sync reads every annotation once. Through sqlx, each value of each row is
//! first copied by sqlx's SQLite worker (`sqlite3_value_dup`), handed to the async
//! side, looked up by name and copied again into our types; here a blocking thread
//! steps the statement itself and copies each text once, from SQLite's own buffer.
//! It only reads: WAL lets it read beside the writers of the `Any` pool.

use super::{DbError, DbResult, DbRow};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Connections to one SQLite file for export pages; opened as needed, kept when idle.
pub(super) struct ExportReader {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl ExportReader {
    /// A reader of the database file at `path`, checked by opening one connection.
    pub(super) fn open(path: PathBuf) -> anyhow::Result<Arc<ExportReader>> {
        let reader = ExportReader { path, idle: Mutex::new(Vec::new()) };
        let first = reader.connect()?;
        reader.idle.lock().expect("never poisoned: no panics while held").push(first);
        Ok(Arc::new(reader))
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        open_rw(&self.path)
    }

    /// Runs `sql` with `params` on a blocking thread, mapping each row with `map` as it
    /// is stepped (rows are never held by the driver).
    pub(super) async fn rows<T: Send + 'static, const N: usize>(
        self: &Arc<Self>,
        sql: String,
        params: [i64; N],
        map: fn(&LiteRow<'_, '_>) -> T,
    ) -> DbResult<Vec<T>> {
        let reader = self.clone();
        crate::background::join(crate::background::spawn_blocking(move || reader.rows_blocking(&sql, params, map)))
            .await
            .map_err(|e| DbError::Other(e.into()))?
            .map_err(|e| DbError::Other(e.into()))
    }

    fn rows_blocking<T, const N: usize>(
        &self,
        sql: &str,
        params: [i64; N],
        map: fn(&LiteRow<'_, '_>) -> T,
    ) -> rusqlite::Result<Vec<T>> {
        let idle = self.idle.lock().expect("never poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = (|| {
            let mut statement = conn.prepare_cached(sql)?;
            let names: Vec<String> = statement.column_names().into_iter().map(str::to_owned).collect();
            let mut rows = statement.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(map(&LiteRow { row, names: &names, next: Cell::new(0) }));
            }
            Ok(out)
        })();
        self.idle.lock().expect("never poisoned").push(conn);
        result
    }
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
