//! Write transactions, and the queues in which this process's writers take their turn.
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
//! PostgreSQL writers conflict only where they take the same row locks or the
//! change-feed lock, and wait there, on a pool connection. Most never meet, but every
//! transaction that changes a project's kept totals or the change feed (annotation
//! writes, task creation and deletion, imports: [`Db::project_write_tx`]) waits for
//! the one before it on the same project's row, and for every other one on the feed
//! lock, until that one commits. Under a stream of annotation saves those waiting
//! writers took every connection of the pool, and reads waited behind them (issue
//! #11). So on PostgreSQL these writers take a turn as well, from a queue that lets a
//! quarter of the pool in at once ([`PROJECT_WRITERS_SHARE`]): enough for the next
//! writers to run their statements up to the hot locks while one holds them, and the
//! rest of the pool stays free for reads and the other writes. The queue only bounds
//! this process's waiting writers; what orders writers, in this process or among
//! several sharing the database, is still PostgreSQL's locks, so it changes no
//! guarantee, and other processes' writers simply wait in PostgreSQL as before.
//!
//! A task that holds a write transaction must not start another one (or wait for
//! one): it would wait for its own turn. No code in `db` does.

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

/// On PostgreSQL, the share of the pool's connections that the writers of project
/// totals and of the change feed may hold at once (see the module documentation).
pub(super) const PROJECT_WRITERS_SHARE: u32 = 4;

/// The queues in which this process's writers wait for their turn (see the module
/// documentation).
#[derive(Debug, Clone)]
pub(super) struct WriterQueues {
    /// Every writer's (SQLite: one at a time).
    all: Option<Arc<Semaphore>>,
    /// The writers of project totals and the change feed (PostgreSQL).
    project: Option<Arc<Semaphore>>,
}

impl WriterQueues {
    /// The queues for `backend` with a pool of `pool_size` connections.
    pub(super) fn new(backend: Backend, pool_size: u32) -> WriterQueues {
        match backend {
            Backend::Sqlite => WriterQueues { all: Some(Arc::new(Semaphore::new(1))), project: None },
            Backend::Postgres => {
                let permits = (pool_size / PROJECT_WRITERS_SHARE).max(2) as usize;
                WriterQueues { all: None, project: Some(Arc::new(Semaphore::new(permits))) }
            }
        }
    }
}

impl Db {
    /// Runs one write statement as a transaction of its own: on PostgreSQL without the
    /// round trips of an explicit `BEGIN` and `COMMIT`, on SQLite in a write
    /// transaction after this process's turn.
    pub(crate) async fn write_one<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> DbResult<sqlx::any::AnyQueryResult> {
        self.write_one_on(&self.pool, query).await
    }

    /// [`write_one`](Self::write_one) for the sync engine's bookkeeping, whose commit
    /// does not wait for the WAL flush on PostgreSQL (see [`Db::bookkeeping_tx`]).
    pub(crate) async fn write_one_bookkeeping<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> DbResult<sqlx::any::AnyQueryResult> {
        self.write_one_on(&self.bookkeeping, query).await
    }

    async fn write_one_on<'q>(
        &self,
        pool: &sqlx::AnyPool,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> DbResult<sqlx::any::AnyQueryResult> {
        if self.backend == Backend::Postgres {
            return Ok(query.execute(pool).await?);
        }
        let mut tx = self.write_tx_on(pool).await?;
        let done = query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Starts a write transaction on a pool connection, after waiting for this
    /// process's turn to write (SQLite).
    pub async fn write_tx(&self) -> DbResult<WriteTx> {
        self.write_tx_on(&self.pool).await
    }

    /// Starts a write transaction for the sync engine's records of work it did: links
    /// of written documents, job checkpoints, cursor advances, lease renewals. On
    /// PostgreSQL its commit does not wait for the WAL flush (`synchronous_commit =
    /// off`), a disk flush of several milliseconds on an ordinary disk, paid per page of
    /// a full sync and several times per auto-export round. A crash of the database
    /// server (not of labelport) can lose the last such commits, and only those: the
    /// WAL is written in order, so every durable commit made after them keeps them,
    /// and what is lost is a suffix of the history, as if labelport had stopped
    /// there. The engine then does that work again, as after a kill -9 (a document
    /// without its link is written again, a link of a deleted document is cleaned up
    /// again): docs/RELIABILITY.md. Nothing a user saved goes through here, and the
    /// lease claim does not either. SQLite already commits this way (`synchronous =
    /// NORMAL` in WAL mode), every write.
    pub(crate) async fn bookkeeping_tx(&self) -> DbResult<WriteTx> {
        self.write_tx_on(&self.bookkeeping).await
    }

    /// A write transaction on a connection of `pool`, after this process's turn.
    async fn write_tx_on(&self, pool: &sqlx::AnyPool) -> DbResult<WriteTx> {
        let turn = self.turn_to_write(false).await?;
        let tx = pool.begin_with(self.begin_write()).await?;
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// Starts a write transaction that will change a project's kept totals, its inner
    /// ids or the change feed ([`record_change`](super::changes::record_change),
    /// [`add_to_totals`](super::projects::add_to_totals)), after waiting for its turn
    /// among this process's writers of those (PostgreSQL) or all its writers (SQLite).
    pub(crate) async fn project_write_tx(&self) -> DbResult<WriteTx> {
        let turn = self.turn_to_write(true).await?;
        let tx = self.pool.begin_with(self.begin_write()).await?;
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// Starts a write transaction on `conn`, as [`Db::project_write_tx`] does on the pool.
    pub(super) async fn project_write_tx_on<'c>(&self, conn: &'c mut AnyConnection) -> DbResult<WriteTransaction<'c>> {
        let turn = self.turn_to_write(true).await?;
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

    /// Waits for this process's turn to write, if its writers of this kind queue.
    async fn turn_to_write(&self, project: bool) -> DbResult<Option<OwnedSemaphorePermit>> {
        let queue = if project {
            self.writers.project.as_ref().or(self.writers.all.as_ref())
        } else {
            self.writers.all.as_ref()
        };
        let Some(queue) = queue else { return Ok(None) };
        match tokio::time::timeout(BUSY_TIMEOUT, queue.clone().acquire_owned()).await {
            Ok(turn) => Ok(Some(turn.map_err(|e| DbError::Other(e.into()))?)),
            Err(_) => Err(DbError::Other(WriteQueueTimedOut.into())),
        }
    }
}
