//! Storage leases and their fencing.
//!
//! A worker may write to a storage only while it holds the storage's lease
//! (`lease_owner`, `lease_expires_at`), taken with a compare-and-set UPDATE that both
//! databases execute atomically. It renews the lease as it makes progress; a lease
//! that expires (the worker died, or was paused) can be taken by any other worker,
//! which resumes the storage's job from its checkpoint.
//!
//! **Fencing**: every claim increments `lease_generation`, and a [`Lease`] names the
//! generation it claimed. Every write a worker makes under its lease (checkpoint,
//! job state, cursor, links) checks owner *and* generation in the same statement (or,
//! for a transaction of several statements, first updates the storage row with that
//! check, which on PostgreSQL locks the row until commit, so no claim can slip in
//! between). A worker that lost its lease, e.g. paused past its expiry and woken
//! after another took over, has every such write refused and stops: it can never
//! move a cursor or checkpoint back, nor mark a job done that another worker runs.

use super::{Db, DbResult, WriteTx};
use crate::time::{now_micros, Micros};
use std::sync::LazyLock;
use std::time::Duration;

/// A claim on one storage: the fencing token every write under it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The storage claimed.
    pub storage_id: i64,
    /// The worker holding it.
    pub owner: String,
    /// Which claim of the storage this is (incremented at each claim).
    pub generation: i64,
}

/// SQL condition on a storage's row: the lease bound as `$1`-`$3` by [`bind_held`] is
/// still its current one (same worker, same claim). The statements using it build their
/// text once (`LazyLock`): most run at every save's export or every page of a sync.
pub(super) const HELD: &str = "id = $1 AND lease_owner = $2 AND lease_generation = $3";

/// Binds `held` as the `$1`-`$3` of [`HELD`].
pub(super) fn bind_held<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    held: &'q Lease,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query.bind(held.storage_id).bind(held.owner.as_str()).bind(held.generation)
}

/// SQL condition: storage `s` has work (an active job, or changes past its cursor).
/// The project's last change is read from the end of its `(project_id, seq)` index,
/// one entry whatever the feed's length. (`EXISTS (… c.seq > s.cursor_seq)` let
/// PostgreSQL's planner pick a sequential scan that it expected to stop at an early
/// match; with the cursor at the end there is none, so every claim and idle poll read
/// the whole feed: 2,300 scans of 20,000 entries in 8 s of 200 saves/s, most of the
/// database's CPU.)
const HAS_WORK: &str =
    "(EXISTS (SELECT 1 FROM sync_jobs j WHERE j.storage_id = s.id AND j.state IN ('queued', 'running')) \
     OR (SELECT c.seq FROM annotation_changes c WHERE c.project_id = s.project_id ORDER BY c.seq DESC LIMIT 1) \
        > s.cursor_seq)";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

impl Db {
    /// Takes the lease of a storage that has work (an active job, or changes past
    /// its cursor), if any is free, for `lease`.
    pub async fn claim_storage(&self, owner: &str, lease: Duration) -> DbResult<Option<Lease>> {
        let now = now_micros();
        let expires = now + micros(lease);
        if self.backend == super::Backend::Postgres {
            // One statement: the first free storage with work, its row locked as it is
            // found. A row locked by another transaction is skipped, not waited for: its
            // lease is being renewed or its job checkpointed (it is not free), or the
            // session holding it froze mid-transaction, which PostgreSQL ends after
            // `idle_in_transaction_session_timeout`; this loop tries again later either
            // way. Waiting would hold this loop and a pool connection for that long, and
            // the claim would then be judged by a `now` taken before the wait, which can
            // let a second claimer take the lease the first just got. Its own
            // transaction, durable (not bookkeeping): a claim lost in a crash of the
            // database would hand the same generation out again.
            let claimed: Option<(i64, i64)> = sqlx::query_as(&format!(
                "UPDATE export_storages SET lease_owner = $1, lease_expires_at = $2, \
                 lease_generation = lease_generation + 1 \
                 WHERE id = (SELECT s.id FROM export_storages s \
                   WHERE (s.lease_owner IS NULL OR s.lease_expires_at < $3) AND {HAS_WORK} \
                   ORDER BY COALESCE(s.lease_expires_at, 0), s.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, lease_generation"
            ))
            .bind(owner)
            .bind(expires)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(claimed.map(|(storage_id, generation)| Lease {
                storage_id,
                owner: owner.to_owned(),
                generation,
            }));
        }
        // SQLite: candidates first, then each claimed in a write transaction of its own
        // (this process's writers take turns), re-checked there.
        let candidates: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT s.id FROM export_storages s WHERE (s.lease_owner IS NULL OR s.lease_expires_at < $1) AND {HAS_WORK} \
             ORDER BY COALESCE(s.lease_expires_at, 0), s.id LIMIT 8"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let claim = "UPDATE export_storages SET lease_owner = $1, lease_expires_at = $2, \
                     lease_generation = lease_generation + 1 \
                     WHERE id = $3 AND (lease_owner IS NULL OR lease_expires_at < $4) RETURNING lease_generation";
        for id in candidates {
            let mut tx = self.write_tx().await?;
            let generation: Option<i64> =
                sqlx::query_scalar(claim).bind(owner).bind(expires).bind(id).bind(now).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            if let Some(generation) = generation {
                return Ok(Some(Lease { storage_id: id, owner: owner.to_owned(), generation }));
            }
        }
        Ok(None)
    }

    /// Extends a held lease by `lease` from now; `false` if it was lost (taken by
    /// another claim, released, or the storage is gone).
    pub async fn renew_lease(&self, held: &Lease, lease: Duration) -> DbResult<bool> {
        let mut tx = self.bookkeeping_tx().await?;
        let held_still = fence(&mut tx, held, Some(lease)).await?;
        tx.commit().await?;
        Ok(held_still)
    }

    /// Gives a lease back (a no-op when it was lost), and tells idle workers of
    /// other processes that the storage may be claimed.
    pub async fn release_lease(&self, held: &Lease) -> DbResult<()> {
        if self.backend == super::Backend::Postgres {
            // One statement, its own transaction: work left behind (a job stopped by a
            // shutdown, changes that came in meanwhile) is announced to whoever is idle now.
            static ANNOUNCED: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "WITH s AS (UPDATE export_storages SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE {HELD} RETURNING id, project_id, cursor_seq) \
                     SELECT pg_notify($4, '') FROM s WHERE {HAS_WORK}"
                )
            });
            bind_held(sqlx::query(&ANNOUNCED), held).bind(super::WORK_CHANNEL).execute(&self.bookkeeping).await?;
            return Ok(());
        }
        static RELEASE: LazyLock<String> = LazyLock::new(|| {
            format!("UPDATE export_storages SET lease_owner = NULL, lease_expires_at = NULL WHERE {HELD}")
        });
        self.write_one_bookkeeping(bind_held(sqlx::query(&RELEASE), held)).await?;
        Ok(())
    }

    /// Drops every lease. Only for the embedded SQLite database, which one process owns:
    /// leases found at start belong to a process that is gone.
    pub async fn release_all_leases(&self) -> DbResult<u64> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE export_storages SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// When the first lease still held expires after `now` (`None` when there is
    /// none): an idle worker wakes then to take over the work of a worker that died.
    pub async fn next_lease_expiry(&self, now: Micros) -> DbResult<Option<Micros>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(lease_expires_at) FROM export_storages WHERE lease_owner IS NOT NULL AND lease_expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Checks, inside `tx`, that `held` is still the storage's current lease, and with
/// `renew` extends it. On PostgreSQL the row stays locked until `tx` ends, so the
/// writes that follow in `tx` are fenced as if they were one statement.
pub(super) async fn fence(tx: &mut WriteTx, held: &Lease, renew: Option<Duration>) -> DbResult<bool> {
    static FENCE: LazyLock<String> = LazyLock::new(|| {
        format!("UPDATE export_storages SET lease_expires_at = COALESCE($4, lease_expires_at) WHERE {HELD}")
    });
    let done =
        bind_held(sqlx::query(&FENCE), held).bind(renew.map(|d| now_micros() + micros(d))).execute(&mut **tx).await?;
    Ok(done.rows_affected() == 1)
}
