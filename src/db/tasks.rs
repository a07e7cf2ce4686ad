//! Tasks and predictions, scoped to an organization through their project.

use super::projects::{add_to_totals, Totals};
use super::{
    flag, json_col, record_change, Annotation, Arg, ChangeOp, Db, DbError, DbResult, DbRow, FromDbRow, JsonColumn,
    JsonText, WriteTx, ANNOTATION_COLUMNS,
};
use crate::time::{now_micros, Micros};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

/// A task row; `J` is how its JSON is held (see [`JsonColumn`]).
#[derive(Debug, Clone)]
pub struct Task<J = Value> {
    /// Task id.
    pub id: i64,
    /// Project id.
    pub project_id: i64,
    /// The task's data object.
    pub data: J,
    /// Free-form metadata.
    pub meta: J,
    /// 1-based counter within the project.
    pub inner_id: i64,
    /// Annotations wanted for this task.
    pub overlap: i64,
    /// Whether enough annotations exist.
    pub is_labeled: bool,
    /// Non-cancelled annotations.
    pub total_annotations: i64,
    /// Cancelled annotations.
    pub cancelled_annotations: i64,
    /// Predictions.
    pub total_predictions: i64,
    /// Last user who changed the task or its annotations.
    pub updated_by: Option<i64>,
    /// Creation time.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
}

impl FromDbRow for TaskTotals {
    fn from_row(row: &impl DbRow) -> TaskTotals {
        TaskTotals {
            tasks: row.int("task_count"),
            annotations: row.int("annotations"),
            predictions: row.int("prediction_count"),
            pages_by_inner_id: flag(row, "pages_by_inner_id"),
        }
    }
}

/// [`TaskTotals`] of project `$1` if it is organization `$2`'s.
const TOTALS_SQL: &str = "SELECT task_count, annotation_count - cancelled_annotation_count AS annotations, \
     prediction_count, CASE WHEN tasks_in_inner_id_order = 1 AND task_count = next_inner_id - 1 THEN 1 ELSE 0 END \
     AS pages_by_inner_id FROM projects WHERE id = $1 AND organization_id = $2";

/// The tasks `t` of project `$1` at offsets `$3..$3 + $2`, while its pages are ranges
/// of inner ids ([`TaskTotals::pages_by_inner_id`]).
const PAGE_BY_INNER_ID: &str = "t.project_id = $1 AND t.inner_id > $3 AND t.inner_id <= $3 + $2";

/// A task `$1` of organization `$2`.
fn task_sql() -> String {
    format!("SELECT {TASK_COLUMNS} FROM tasks t JOIN projects p ON p.id = t.project_id WHERE t.id = $1 AND p.organization_id = $2")
}

/// The columns of a [`Prediction`].
const PREDICTION_COLUMNS: &str = "id, task_id, project_id, result, score, model_version, created_at, updated_at";

/// A project's totals as the task list shows them ([`Db::task_totals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskTotals {
    /// Tasks.
    pub tasks: i64,
    /// Non-cancelled annotations.
    pub annotations: i64,
    /// Predictions.
    pub predictions: i64,
    /// The project's tasks, in id order, have the inner ids 1, 2, … `tasks`, so the
    /// tasks at offsets `o..o + n` are those with inner ids `o + 1..=o + n`: none was
    /// deleted and each insert came after the earlier ones (migration 0010).
    pub pages_by_inner_id: bool,
}

/// A prediction row.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Prediction id.
    pub id: i64,
    /// Task id.
    pub task_id: i64,
    /// Project id.
    pub project_id: i64,
    /// Regions.
    pub result: Value,
    /// Model score.
    pub score: Option<f64>,
    /// Model version.
    pub model_version: String,
    /// Creation time.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
}

/// A prediction to insert.
#[derive(Debug, Clone)]
pub struct NewPrediction {
    /// Regions (a JSON list).
    pub result: Value,
    /// Model score.
    pub score: Option<f64>,
    /// Model version.
    pub model_version: String,
}

pub(crate) const TASK_COLUMNS: &str = "t.id, t.project_id, t.data, t.meta, t.inner_id, t.overlap, t.is_labeled, \
     t.total_annotations, t.cancelled_annotations, t.total_predictions, t.updated_by, t.created_at, t.updated_at";

impl<J: JsonColumn> FromDbRow for Task<J> {
    fn from_row(row: &impl DbRow) -> Task<J> {
        Task {
            id: row.int("id"),
            project_id: row.int("project_id"),
            data: J::read(row, "data"),
            meta: J::read(row, "meta"),
            inner_id: row.int("inner_id"),
            overlap: row.int("overlap"),
            is_labeled: flag(row, "is_labeled"),
            total_annotations: row.int("total_annotations"),
            cancelled_annotations: row.int("cancelled_annotations"),
            total_predictions: row.int("total_predictions"),
            updated_by: row.opt_int("updated_by"),
            created_at: row.int("created_at"),
            updated_at: row.int("updated_at"),
        }
    }
}

impl FromDbRow for Prediction {
    fn from_row(row: &impl DbRow) -> Prediction {
        Prediction {
            id: row.int("id"),
            task_id: row.int("task_id"),
            project_id: row.int("project_id"),
            result: json_col(row, "result"),
            score: row.opt_float("score"),
            model_version: row.text("model_version"),
            created_at: row.int("created_at"),
            updated_at: row.int("updated_at"),
        }
    }
}

/// `SET` list recomputing a task's counters from its annotations and predictions.
const COUNTERS_SET: &str =
    "total_annotations = (SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id AND a.was_cancelled = 0), \
     cancelled_annotations = (SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id AND a.was_cancelled = 1), \
     total_predictions = (SELECT COUNT(*) FROM predictions r WHERE r.task_id = tasks.id)";

/// `RETURNING` list of a task's part of its project's [`Totals`] (see [`task_totals_of`]).
const TOTALS_RETURNING: &str =
    "RETURNING project_id, total_annotations, cancelled_annotations, total_predictions, is_labeled";

/// `SET` clause deriving `is_labeled` from the task's non-cancelled annotations, in the
/// same `UPDATE` as [`COUNTERS_SET`] (whose new values a `SET` cannot read: it sees the
/// row as it was, hence the count again).
const IS_LABELED_SET: &str = "is_labeled = CASE WHEN (SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id \
     AND a.was_cancelled = 0) >= overlap THEN 1 ELSE 0 END";

/// A task's project and its part of that project's totals, from a [`TOTALS_RETURNING`] row.
fn task_totals_of(row: &AnyRow) -> (i64, Totals) {
    let cancelled: i64 = row.get("cancelled_annotations");
    let completed: i64 = row.get("total_annotations");
    let totals = Totals {
        tasks: 1,
        annotations: completed + cancelled,
        cancelled,
        predictions: row.get("total_predictions"),
        annotated_tasks: (completed > 0) as i64,
        labeled_tasks: row.get("is_labeled"),
    };
    (row.get("project_id"), totals)
}

/// The counters of a task whose annotations a transaction is about to change, read
/// under the task's row lock; hand them to [`refresh_task_counters`] after the change.
#[derive(Debug)]
pub(crate) struct LockedTask {
    id: i64,
    project_id: i64,
    before: Totals,
}

/// Locks a task's row and reads its counters: the first statement on the task of a
/// transaction that changes its annotations. On PostgreSQL a concurrent change to the
/// same task then commits before this one counts, so the counters' difference is this
/// transaction's own (see [`add_to_totals`] for the lock order).
pub(crate) async fn lock_task(tx: &mut WriteTx, task_id: i64) -> DbResult<LockedTask> {
    let row = sqlx::query(&format!("UPDATE tasks SET updated_at = updated_at WHERE id = $1 {TOTALS_RETURNING}"))
        .bind(task_id)
        .fetch_one(&mut **tx)
        .await?;
    let (project_id, before) = task_totals_of(&row);
    Ok(LockedTask { id: task_id, project_id, before })
}

/// Recomputes a task's counters after its annotations changed, and returns their change,
/// which the caller adds to its project's totals last ([`record_change`] or
/// [`add_to_totals`]), so that the project's row stays unlocked until then.
pub(crate) async fn refresh_task_counters(
    tx: &mut WriteTx,
    task: &LockedTask,
    updated_by: Option<i64>,
) -> DbResult<Totals> {
    let row = sqlx::query(&format!(
        "UPDATE tasks SET {COUNTERS_SET}, {IS_LABELED_SET}, updated_by = COALESCE($2, updated_by), updated_at = $3 \
         WHERE id = $1 {TOTALS_RETURNING}"
    ))
    .bind(task.id)
    .bind(updated_by)
    .bind(now_micros())
    .fetch_one(&mut **tx)
    .await?;
    let (_, after) = task_totals_of(&row);
    Ok(after - task.before)
}

/// Clears a project's `tasks_in_inner_id_order` (migration 0010) if the tasks just
/// inserted with inner ids `first..=last` (the project's newest) break it: unless they
/// are the project's tasks with the largest ids, and their ids increase with their
/// inner ids. Run in the inserting transaction, after [`next_inner_ids`] locked the
/// project's row, so no other insert into the project runs in between. Both checks
/// walk the new tasks in an index (newest ids first, then by inner id), never the
/// project: a single task costs two index probes.
pub(crate) async fn keep_page_order(conn: &mut AnyConnection, project_id: i64, first: i64, last: i64) -> DbResult<()> {
    sqlx::query(
        "UPDATE projects SET tasks_in_inner_id_order = 0 WHERE id = $1 AND tasks_in_inner_id_order = 1 AND ( \
           (SELECT MIN(x.inner_id) FROM (SELECT o.inner_id FROM tasks o WHERE o.project_id = $1 \
             ORDER BY o.id DESC LIMIT $3 - $2 + 1) x) <> $2 \
           OR EXISTS (SELECT 1 FROM (SELECT t.id, LAG(t.id) OVER (ORDER BY t.inner_id) AS previous FROM tasks t \
             WHERE t.project_id = $1 AND t.inner_id BETWEEN $2 AND $3) x WHERE x.previous >= x.id))",
    )
    .bind(project_id)
    .bind(first)
    .bind(last)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reserves `n` consecutive `inner_id`s of a project; returns the first.
pub(crate) async fn next_inner_ids(conn: &mut AnyConnection, project_id: i64, n: i64) -> DbResult<i64> {
    let first: i64 = sqlx::query_scalar(
        "UPDATE projects SET next_inner_id = next_inner_id + $2 WHERE id = $1 RETURNING next_inner_id - $2",
    )
    .bind(project_id)
    .bind(n)
    .fetch_one(conn)
    .await?;
    Ok(first)
}

impl Db {
    /// Creates one task in a project of the organization.
    pub async fn create_task(
        &self,
        organization_id: i64,
        project_id: i64,
        data: &Value,
        meta: &Value,
    ) -> DbResult<Task> {
        if !self.project_exists(organization_id, project_id).await? {
            return Err(DbError::NotFound);
        }
        let now = now_micros();
        let mut tx = self.project_write_tx().await?;
        let inner_id = next_inner_ids(&mut tx, project_id, 1).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (project_id, data, meta, inner_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(project_id)
        .bind(data.to_string())
        .bind(meta.to_string())
        .bind(inner_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        keep_page_order(&mut tx, project_id, inner_id, inner_id).await?;
        add_to_totals(&mut tx, project_id, Totals { tasks: 1, ..Totals::default() }).await?;
        tx.commit().await?;
        self.task(organization_id, id).await
    }

    /// A task of the organization.
    pub async fn task(&self, organization_id: i64, id: i64) -> DbResult<Task> {
        self.read_one(task_sql(), vec![Arg::Int(id), Arg::Int(organization_id)]).await
    }

    /// A task of the organization with all its annotations (cancelled ones too) and
    /// predictions, read in one hand-off on SQLite.
    pub async fn task_in_full(
        &self,
        organization_id: i64,
        id: i64,
    ) -> DbResult<(Task, Vec<Annotation<JsonText>>, Vec<Prediction>)> {
        let (task, annotations, predictions) = self
            .read3(
                (task_sql(), vec![Arg::Int(id), Arg::Int(organization_id)]),
                (
                    format!("SELECT {ANNOTATION_COLUMNS} FROM annotations a WHERE a.task_id = $1 ORDER BY a.id"),
                    vec![Arg::Int(id)],
                ),
                (
                    format!("SELECT {PREDICTION_COLUMNS} FROM predictions WHERE task_id = $1 ORDER BY id"),
                    vec![Arg::Int(id)],
                ),
            )
            .await?;
        // Another organization's task: what was read of it is dropped unseen.
        let task = task.into_iter().next().ok_or(DbError::NotFound)?;
        Ok((task, annotations, predictions))
    }

    /// Task count, non-cancelled annotation count and prediction count of a project of
    /// the organization (`NotFound` for any other), and how its pages are found: one
    /// row read, whatever the project's size (see [`Totals`]).
    pub async fn task_totals(&self, organization_id: i64, project_id: i64) -> DbResult<TaskTotals> {
        self.read_one(TOTALS_SQL.to_owned(), vec![Arg::Int(project_id), Arg::Int(organization_id)]).await
    }

    /// [`Db::task_totals`] and, on a SQLite file, read in the same hand-off, the tasks
    /// at offsets `offset..offset + limit` of `window` with their annotations
    /// (cancelled ones too) if the project's pages are ranges of inner ids
    /// ([`TaskTotals::pages_by_inner_id`]); `None` if they are not, without a window or
    /// on PostgreSQL, for [`Db::list_tasks`] to find the page. (On PostgreSQL the three
    /// reads at once cost more of its CPU than they save: 439 → 518 µs per page.)
    pub async fn task_totals_and_page(
        &self,
        organization_id: i64,
        project_id: i64,
        window: Option<(i64, i64)>,
    ) -> DbResult<(TaskTotals, Option<(Vec<Task<JsonText>>, Vec<Annotation<JsonText>>)>)> {
        // Past the last possible task nothing is read (and `$3 + $2` cannot overflow).
        let window = window.filter(|_| self.lite_reads.is_some());
        let Some((offset, limit)) = window.filter(|&(offset, limit)| offset <= i64::from(i32::MAX) - limit) else {
            return Ok((self.task_totals(organization_id, project_id).await?, None));
        };
        let window = vec![Arg::Int(project_id), Arg::Int(limit), Arg::Int(offset)];
        let (totals, tasks, annotations) = self
            .read3(
                (TOTALS_SQL.to_owned(), vec![Arg::Int(project_id), Arg::Int(organization_id)]),
                (format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE {PAGE_BY_INNER_ID} ORDER BY t.id"), window.clone()),
                (
                    format!(
                        "SELECT {ANNOTATION_COLUMNS} FROM annotations a WHERE a.task_id IN \
                         (SELECT t.id FROM tasks t WHERE {PAGE_BY_INNER_ID}) ORDER BY a.task_id, a.id"
                    ),
                    window,
                ),
            )
            .await?;
        // Without the project (or not the organization's), the page read is dropped unseen.
        let totals: TaskTotals = totals.into_iter().next().ok_or(DbError::NotFound)?;
        Ok((totals, totals.pages_by_inner_id.then_some((tasks, annotations))))
    }

    /// One page of a project's tasks, by id, with `totals` read by [`Db::task_totals`]
    /// just before. While the project's inner ids are 1..n in id order, the page is a
    /// range of inner ids, found in the `(project_id, inner_id)` index: its cost does
    /// not grow with the page number. Otherwise the page's ids are found by `OFFSET` in
    /// the `(project_id, id)` index, which walks every earlier entry (on PostgreSQL, and
    /// visits their rows until the table is vacuumed).
    pub async fn list_tasks<J: JsonColumn>(
        &self,
        project_id: i64,
        totals: &TaskTotals,
        offset: i64,
        limit: i64,
    ) -> DbResult<Vec<Task<J>>> {
        let sql = if totals.pages_by_inner_id {
            format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE {PAGE_BY_INNER_ID} ORDER BY t.id")
        } else {
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id IN \
                 (SELECT id FROM tasks WHERE project_id = $1 ORDER BY id LIMIT $2 OFFSET $3) ORDER BY t.id"
            )
        };
        self.read(sql, vec![Arg::Int(project_id), Arg::Int(limit), Arg::Int(offset)]).await
    }

    /// Updates a task's data, meta and overlap.
    pub async fn update_task(
        &self,
        organization_id: i64,
        id: i64,
        data: &Value,
        meta: &Value,
        overlap: i64,
        updated_by: i64,
    ) -> DbResult<Task> {
        let task = self.task(organization_id, id).await?;
        let mut tx = self.project_write_tx().await?;
        let locked = lock_task(&mut tx, task.id).await?;
        sqlx::query(
            "UPDATE tasks SET data = $1, meta = $2, overlap = $3, updated_by = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(data.to_string())
        .bind(meta.to_string())
        .bind(overlap)
        .bind(updated_by)
        .bind(now_micros())
        .bind(task.id)
        .execute(&mut *tx)
        .await?;
        let delta = refresh_task_counters(&mut tx, &locked, None).await?;
        add_to_totals(&mut tx, locked.project_id, delta).await?;
        tx.commit().await?;
        self.task(organization_id, id).await
    }

    /// Deletes a task and its annotations, recording a `delete` change for each
    /// annotation so that export storages can remove their files.
    pub async fn delete_task(&self, organization_id: i64, id: i64) -> DbResult<()> {
        let task = self.task(organization_id, id).await?;
        let mut tx = self.project_write_tx().await?;
        // Locked first, so that on PostgreSQL no annotation is added to it unseen.
        let locked = lock_task(&mut tx, task.id).await?;
        let annotation_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM annotations WHERE task_id = $1 ORDER BY id")
            .bind(task.id)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tasks WHERE id = $1").bind(task.id).execute(&mut *tx).await?;
        // Its annotations and predictions went by cascade, so its counters leave the totals.
        let mut delta = Totals::default() - locked.before;
        if annotation_ids.is_empty() {
            add_to_totals(&mut tx, locked.project_id, delta).await?;
        }
        for annotation_id in annotation_ids {
            let op = ChangeOp::Delete;
            record_change(self.backend, &mut tx, task.project_id, task.id, annotation_id, op, delta).await?;
            delta = Totals::default();
        }
        tx.commit().await?;
        Ok(())
    }

    /// Predictions of the given tasks, by task then id.
    pub async fn predictions_for_tasks(&self, task_ids: &[i64]) -> DbResult<Vec<Prediction>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        // The ids as one parameter, as for the annotations: one statement text.
        let sql = format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE task_id IN ({}) ORDER BY task_id, id",
            self.id_list_param(1)
        );
        let ids = serde_json::to_string(task_ids).map_err(|e| DbError::Other(e.into()))?;
        self.read(sql, vec![Arg::Text(ids)]).await
    }
}
