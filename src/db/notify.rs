//! Telling the workers of other processes that there is new work.
//!
//! On PostgreSQL, every transaction that creates work (annotation changes for
//! auto-export, a queued sync job, a released lease) sends a `NOTIFY` on
//! [`WORK_CHANNEL`]; PostgreSQL delivers it at commit, to every listening
//! connection, and folds identical notifications of one transaction into one. Each
//! worker process listens ([`Db::listen_for_work_until_stopped`]) and wakes its
//! engine, which claims what it can. Polling stays as the fallback: a notification
//! may be lost while a listener reconnects (each reconnection is followed by one
//! catch-up poll), and lease expiry sends nothing. While the listener is connected
//! (`listening`), the engine polls less often. On SQLite there is one process,
//! whose API wakes its engine directly; nothing is sent.

use super::{Backend, Db, DbResult, WriteTx};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The `LISTEN`/`NOTIFY` channel of new work.
pub const WORK_CHANNEL: &str = "labelport_work";

/// Longest wait between two attempts to reconnect a lost listener.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);

impl Db {
    /// Sends the new-work notification inside `tx` (PostgreSQL only); it is
    /// delivered if and when `tx` commits.
    pub(crate) async fn notify_work(&self, tx: &mut WriteTx) -> DbResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// On PostgreSQL, listens for new-work notifications until `stop` and wakes
    /// `wake` at each one. A lost connection is re-established (with backoff while
    /// the database is unreachable) and followed by one wake-up, the catch-up poll
    /// for what was committed meanwhile. `listening` is true while a listening
    /// connection is up. Returns at once on SQLite.
    pub async fn listen_for_work_until_stopped(
        self,
        wake: Arc<Notify>,
        listening: Arc<AtomicBool>,
        stop: CancellationToken,
    ) {
        if self.backend != Backend::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let outcome = self.listen_once(&wake, &listening, &stop).await;
            listening.store(false, Ordering::SeqCst);
            match outcome {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error.cause_chain = ?e, error.message = %e, retry_in_ms = backoff.as_millis() as u64,
                        "listening for new work failed; polling meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.cancelled() => {},
                    }
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                }
            }
        }
    }

    /// One listening connection, until it is lost (`Ok`) or `stop`.
    async fn listen_once(&self, wake: &Notify, listening: &AtomicBool, stop: &CancellationToken) -> anyhow::Result<()> {
        use anyhow::Context;
        let mut listener =
            sqlx::postgres::PgListener::connect(&self.url).await.context("Failed to connect the new-work listener")?;
        // Reconnections are ours to make, so each one is followed by a catch-up poll.
        listener.eager_reconnect(false);
        listener.listen(WORK_CHANNEL).await.context("Failed to LISTEN for new work")?;
        tracing::debug!(channel = WORK_CHANNEL, "listening for new work");
        listening.store(true, Ordering::SeqCst);
        // Work committed before the LISTEN took effect sent no notification to us.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                received = listener.try_recv() => match received.context("Failed to receive a notification")? {
                    Some(_) => wake.notify_one(),
                    None => {
                        tracing::info!("the new-work listener lost its connection; reconnecting");
                        return Ok(());
                    }
                },
            }
        }
    }
}
