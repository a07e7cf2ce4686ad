//! Write transactions, and the queue in which this process's SQLite writers take
//! their turn.
//!
//! SQLite lets one connection write at a time. A writer that finds the write lock
//! taken waits in SQLite's busy handler, which sleeps between retries (1, 2, 5, 10 …
//! up to 100 ms), so the lock is handed on late, and the writer holds a pool
//! connection all the while, one that readers then lack (issue #11). So on SQLite
//! the writers of this process first wait for their **turn**, a permit of a fair
//! (FIFO) async semaphore, before they take a connection, and keep it until their
//! transaction ends: `BEGIN IMMEDIATE` then finds the lock free, unless another
//! process on the same file (a CLI command) holds it, which SQLite's busy timeout
//! still covers. The wait for a turn is bounded by [`BUSY_TIMEOUT`] too, and ends in
//! [`WriteQueueTimedOut`], which [`is_busy`](super::is_busy) counts as busy.
//!
//! A task that holds a write transaction must not start another one (or wait for
//! one): it would wait for its own turn. No code in `db` does.
//!
//! PostgreSQL has no queue: its writers conflict only where they take the same row
//! locks or the change-feed lock, and wait there.

use super::{Backend, Db, DbError, DbResult, BUSY_TIMEOUT};
use sqlx::{Any, AnyConnection, Connection, Transaction};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A write transaction on a pool connection of its own.
pub type WriteTx = WriteTransaction<'static>;

/// A write transaction on a connection borrowed for `'c`. On SQLite it is started
/// with `BEGIN IMMEDIATE`, so that two writers never deadlock on a read-to-write lock
/// upgrade, and holds this process's turn to write until it is committed, rolled
/// back or dropped. It dereferences to its connection: run statements on `&mut *tx`.
pub struct WriteTransaction<'c> {
    // Declared first so that it is dropped first: a transaction dropped unfinished
    // starts its rollback before the next writer gets the turn.
    tx: Transaction<'c, Any>,
    _turn: Option<OwnedSemaphorePermit>,
}

impl WriteTransaction<'_> {
    /// Commits the transaction, then gives up the turn.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls the transaction back, then gives up the turn.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTransaction<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTransaction<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// No turn to write came within [`BUSY_TIMEOUT`]: the other writers of this process
/// kept the database busy that long.
#[derive(Debug, thiserror::Error)]
#[error("database busy: no turn to write within {BUSY_TIMEOUT:?}")]
pub struct WriteQueueTimedOut;

/// The queue of this process's SQLite writers (see the module documentation); none
/// on PostgreSQL.
pub(super) fn writer_queue(backend: Backend) -> Option<Arc<Semaphore>> {
    (backend == Backend::Sqlite).then(|| Arc::new(Semaphore::new(1)))
}

impl Db {
    /// Starts a write transaction on a pool connection, after waiting for this
    /// process's turn to write (SQLite).
    pub async fn write_tx(&self) -> DbResult<WriteTx> {
        let turn = self.turn_to_write().await?;
        let tx = self.pool.begin_with(self.begin_write()).await?;
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// Starts a write transaction on `conn`, as [`Db::write_tx`] does on the pool.
    pub(super) async fn write_tx_on<'c>(&self, conn: &'c mut AnyConnection) -> DbResult<WriteTransaction<'c>> {
        let turn = self.turn_to_write().await?;
        let tx = conn.begin_with(self.begin_write()).await?;
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// The statement that opens a write transaction on this backend.
    fn begin_write(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Waits for this process's turn to write, if it has a queue of writers.
    async fn turn_to_write(&self) -> DbResult<Option<OwnedSemaphorePermit>> {
        let Some(queue) = &self.writers else { return Ok(None) };
        match tokio::time::timeout(BUSY_TIMEOUT, queue.clone().acquire_owned()).await {
            Ok(turn) => Ok(Some(turn.map_err(|e| DbError::Other(e.into()))?)),
            Err(_) => Err(DbError::Other(WriteQueueTimedOut.into())),
        }
    }
}
