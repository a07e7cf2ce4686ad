//! SQLite's WAL checkpoints, off the request path.
//!
//! In WAL mode with `synchronous = NORMAL` a commit does not wait for the disk, but the
//! commit that takes the WAL past `wal_autocheckpoint` pages (1,000 by default) then
//! copies the WAL into the database file and syncs both, inside its writer's turn: tens
//! of milliseconds on a disk, paid by whichever request committed at that moment and by
//! every writer queued behind it. A full sync fills the WAL with link rows every few
//! hundred milliseconds, so annotation saves kept paying for it (issue #11). So the
//! pool's connections never checkpoint (`wal_autocheckpoint = 0`), and a thread of its
//! own does, every [`CHECKPOINT_EVERY`], with `PASSIVE` checkpoints: they copy what no
//! reader still needs and never wait for, or block, readers and writers.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the WAL is checkpointed: the autocheckpoint's pace during a sync.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Keeps the checkpoint thread of one database file running while held.
pub(super) struct Checkpointer(());

impl Checkpointer {
    /// Starts checkpointing the database at `path` until the returned value is dropped.
    pub(super) fn start(path: PathBuf) -> anyhow::Result<Arc<Checkpointer>> {
        let conn = super::lite_read::open_rw(&path)?;
        let alive = Arc::new(Checkpointer(()));
        let held = Arc::downgrade(&alive);
        std::thread::Builder::new().name("labelport-wal".into()).spawn(move || run(conn, held))?;
        Ok(alive)
    }
}

fn run(conn: rusqlite::Connection, held: Weak<Checkpointer>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if held.upgrade().is_none() {
            return;
        }
        // A `PASSIVE` checkpoint answers one row (busy, WAL frames, frames copied).
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error.message = %e, "a WAL checkpoint failed; the next one retries");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// Saves commit without checkpointing, and the thread copies what they wrote into
    /// the database file within moments. (Without the thread nothing would: the WAL
    /// would only grow.)
    #[tokio::test]
    async fn the_pool_does_not_checkpoint_and_the_thread_does() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wal.db");
        let db = super::super::Db::connect(&format!("sqlite://{}", file.display())).await.unwrap();
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&db.pool).await.unwrap();
        sqlx::query("CREATE TABLE scratch (body BLOB)").execute(&db.pool).await.unwrap();
        tokio::time::sleep(super::CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&file).unwrap().len();

        // Act: 2 MB in one commit, half the default autocheckpoint's 1,000 pages.
        sqlx::query("INSERT INTO scratch VALUES (zeroblob(2000000))").execute(&db.pool).await.unwrap();

        // Assert
        assert_eq!(autocheckpoint, 0, "the pool's connections leave checkpoints to the thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        // (Pages the migrations freed take part of it.)
        while std::fs::metadata(&file).unwrap().len() < before + 1_500_000 {
            assert!(Instant::now() < deadline, "nothing checkpointed the WAL into the database file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db.close().await;
    }

    /// The thread ends with the last handle of its database.
    #[tokio::test]
    async fn the_thread_stops_when_the_database_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wal.db");
        let db = super::super::Db::connect(&format!("sqlite://{}", file.display())).await.unwrap();
        let held = std::sync::Arc::downgrade(db._checkpoints.as_ref().unwrap());
        db.close().await;
        drop(db);
        assert!(held.upgrade().is_none(), "no handle keeps the checkpointer alive");
    }
}
