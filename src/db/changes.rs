//! The annotation change feed.
//!
//! Every create, update or delete of an annotation appends one row to
//! `annotation_changes` inside the transaction that makes the change. Rows carry a
//! sequence number that is monotonic per database, and **commit order equals
//! sequence order**: SQLite serialises all writers anyway, and on PostgreSQL the
//! writer takes a transaction-scoped advisory lock before taking its number. A
//! consumer that remembers the last `seq` it processed can therefore read
//! `WHERE seq > cursor` and never miss an entry that commits later with a smaller
//! number. [`Db::prune_change_feed`] deletes what every storage has passed.

use super::projects::{add_to_totals, bind_totals, totals_set, Totals};
use super::{Backend, Db, DbError, DbResult, WriteTx};
use crate::time::{now_micros, Micros};
use sqlx::{AnyConnection, Row};
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// Advisory lock key that serialises change-feed writers on PostgreSQL.
const CHANGE_FEED_LOCK: i64 = 0x6c61_6265_6c70; // "labelp"

/// What happened to an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// Created or updated.
    Upsert,
    /// Deleted.
    Delete,
}

impl ChangeOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the feed.
    pub seq: i64,
    /// Project of the annotation.
    pub project_id: i64,
    /// Task of the annotation.
    pub task_id: i64,
    /// The annotation.
    pub annotation_id: i64,
    /// What happened.
    pub op: ChangeOp,
    /// When.
    pub created_at: Micros,
}

/// On PostgreSQL, takes the transaction-scoped lock that serialises change-feed
/// writers (held until commit; re-taking it in the same transaction is free) and, in
/// the same round trip, sends the new-work notification that wakes the workers of
/// other processes at commit. SQLite serialises all writers anyway.
pub(crate) async fn lock_change_feed(backend: Backend, conn: &mut AnyConnection) -> DbResult<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1), pg_notify($2, '')")
            .bind(CHANGE_FEED_LOCK)
            .bind(super::WORK_CHANNEL)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Records a change of an annotation and adds `totals` (the change's effect on the
/// project's kept totals, see [`add_to_totals`]) to its project: the **last statement
/// before the commit** of the transaction that makes the change, after every task and
/// annotation row lock of it.
///
/// On PostgreSQL the project's row and the change-feed lock are what every writer of the
/// project (and, for the feed lock, of the database) queues on until the holder commits
/// (issue #11), so they are taken in one statement, one round trip before the commit:
/// the project's `UPDATE` locks its row, then, for the row it returns, the advisory lock
/// is taken, and only then is the entry inserted and its `seq` drawn. Each step consumes
/// the previous one's row, so PostgreSQL cannot run them in another order: the lock order
/// (task, annotations, project, change feed) and "seq order is commit order" hold as
/// with separate statements. SQLite serialises all writers anyway.
pub(crate) async fn record_change(
    backend: Backend,
    tx: &mut WriteTx,
    project_id: i64,
    task_id: i64,
    annotation_id: i64,
    op: ChangeOp,
    totals: Totals,
) -> DbResult<()> {
    if backend == Backend::Sqlite {
        add_to_totals(tx, project_id, totals).await?;
        return insert_change(tx, project_id, task_id, annotation_id, op).await;
    }
    // The feed entry's parameters are $1-$7 in both statements; the totals follow.
    static WITH_TOTALS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH project AS (UPDATE projects SET {} WHERE id = $1 RETURNING id), \
             feed AS (SELECT pg_advisory_xact_lock($6), pg_notify($7, '') FROM project) \
             INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) \
             SELECT $1, $2, $3, $4, $5 FROM feed",
            totals_set(8)
        )
    });
    let sql = if totals == Totals::default() {
        "INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) \
         SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock($6), pg_notify($7, '')) feed"
    } else {
        WITH_TOTALS.as_str()
    };
    let entry = sqlx::query(sql)
        .bind(project_id)
        .bind(task_id)
        .bind(annotation_id)
        .bind(op.as_str())
        .bind(now_micros())
        .bind(CHANGE_FEED_LOCK)
        .bind(super::WORK_CHANNEL);
    let entry = if totals == Totals::default() { entry } else { bind_totals(entry, totals) };
    let done = entry.execute(&mut **tx).await?;
    // No row when the project's row is gone; its tasks would have gone with it, and the
    // task's row lock this transaction holds keeps that from happening, but do not lose
    // an entry silently.
    if done.rows_affected() != 1 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

async fn insert_change(
    conn: &mut AnyConnection,
    project_id: i64,
    task_id: i64,
    annotation_id: i64,
    op: ChangeOp,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(project_id)
    .bind(task_id)
    .bind(annotation_id)
    .bind(op.as_str())
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    /// Up to `limit` changes of a project after `after_seq`, in feed order.
    pub async fn changes_since(&self, project_id: i64, after_seq: i64, limit: i64) -> DbResult<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT seq, project_id, task_id, annotation_id, op, created_at FROM annotation_changes \
             WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(project_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| Change {
                seq: row.get("seq"),
                project_id: row.get("project_id"),
                task_id: row.get("task_id"),
                annotation_id: row.get("annotation_id"),
                op: if row.get::<String, _>("op") == "delete" { ChangeOp::Delete } else { ChangeOp::Upsert },
                created_at: row.get("created_at"),
            })
            .collect())
    }

    /// Asks for the current state of some documents to be exported again: appends to
    /// the feed of storage `storage_id`'s project an `upsert` entry for every annotation that still
    /// exists among `annotations` (annotation id, task id) and among the annotations
    /// of `task_ids`, and a `delete` entry for each of `annotations` that is gone
    /// (its document may have been written again after its deletion was exported).
    /// Not fenced by any lease: a worker that finds it may have published late (see
    /// `sync::fence`) uses it so that whoever holds the storage now repairs that.
    pub async fn request_reexport(
        &self,
        storage_id: i64,
        annotations: &[(i64, i64)],
        task_ids: &[i64],
    ) -> DbResult<u64> {
        if annotations.is_empty() && task_ids.is_empty() {
            return Ok(0);
        }
        let list = |ids: &[i64]| serde_json::to_string(ids).map_err(|e| DbError::Other(e.into()));
        let annotation_ids: Vec<i64> = annotations.iter().map(|(a, _)| *a).collect();
        let annotation_list = list(&annotation_ids)?;
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        lock_change_feed(self.backend, &mut tx).await?;
        let existing: BTreeSet<i64> =
            sqlx::query_scalar(&format!("SELECT id FROM annotations WHERE id IN ({})", self.id_list_param(1)))
                .bind(annotation_list.clone())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let mut added = sqlx::query(&format!(
            "INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) \
             SELECT a.project_id, a.task_id, a.id, 'upsert', $1 FROM annotations a \
             WHERE a.id IN ({}) OR a.task_id IN ({}) ORDER BY a.id",
            self.id_list_param(2),
            self.id_list_param(3)
        ))
        .bind(now)
        .bind(annotation_list)
        .bind(list(task_ids)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for (annotation_id, task_id) in annotations.iter().filter(|(a, _)| !existing.contains(a)) {
            added += sqlx::query(
                "INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) \
                 SELECT project_id, $2, $3, 'delete', $4 FROM export_storages WHERE id = $1",
            )
            .bind(storage_id)
            .bind(task_id)
            .bind(annotation_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// The newest sequence number of the whole feed (0 when empty).
    pub async fn latest_change_seq(&self) -> DbResult<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM annotation_changes").fetch_one(&self.pool).await?;
        Ok(seq.unwrap_or(0))
    }
}
