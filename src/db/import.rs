//! Bulk task import that never holds the write lock for long.
//!
//! SQLite has one write lock for the whole database, so an import written in one
//! transaction would keep every other organization's writes waiting for as long as
//! it takes to bind and insert every row (42 s for 300k tasks). An import therefore
//! runs in two phases on one dedicated connection:
//!
//! 1. **Stage**: the rows are written, in statements of a few hundred parameters,
//!    into `TEMPORARY` tables of that connection. Temporary tables belong to the
//!    connection alone (on SQLite they are a separate database file), so staging
//!    takes no lock other writers wait for, and nobody else sees the rows.
//! 2. **Publish**: one short write transaction copies the staged rows into `tasks`,
//!    `predictions` and `annotations` with `INSERT … SELECT` (the database copies
//!    them without a round trip per row), records the change-feed entries and
//!    returns the new task ids.
//!
//! The import stays all or nothing: until the publish transaction commits, no task,
//! annotation or change-feed entry of it exists outside the staging tables, so the
//! sync engine can never export part of an import. The connection is closed rather
//! than returned to the pool when the import ends, whether it succeeded, failed or
//! its request was dropped halfway (a timeout, a client gone): closing it drops the
//! staging tables, so a half-done import leaves nothing behind.

use super::changes::{lock_change_feed, ChangeOp};
use super::projects::{add_to_totals, Totals};
use super::rows::insert_rows;
use super::tasks::{keep_page_order, next_inner_ids};
use super::{Backend, Db, DbResult, NullableF64};
use crate::time::now_micros;
use sqlx::{AnyConnection, Row};

/// A task to import, with its annotations and predictions. JSON values are kept as
/// compact JSON text, the form they are stored in, so that an import never holds a
/// JSON tree (issue #12: a tree takes up to ~70× the size of its text).
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Data object, as JSON text.
    pub data: String,
    /// Metadata object, as JSON text.
    pub meta: String,
    /// Annotations to create with it.
    pub annotations: Vec<ImportedAnnotation>,
    /// Predictions to create with it.
    pub predictions: Vec<ImportedPrediction>,
}

impl NewTask {
    /// Its skipped (cancelled) annotations.
    fn cancelled(&self) -> i64 {
        self.annotations.iter().filter(|a| a.was_cancelled).count() as i64
    }

    /// Its completed (not cancelled) annotations; one labels a new task (`overlap` 1).
    fn completed(&self) -> i64 {
        self.annotations.len() as i64 - self.cancelled()
    }
}

/// An annotation of an imported task (`last_action` "imported", `bulk_created`).
#[derive(Debug, Clone)]
pub struct ImportedAnnotation {
    /// Regions, as the JSON text of a list.
    pub result: String,
    /// Skipped.
    pub was_cancelled: bool,
    /// Ground truth.
    pub ground_truth: bool,
    /// Seconds spent.
    pub lead_time: Option<f64>,
    /// Author; the importing user when `None`.
    pub completed_by: Option<i64>,
}

/// A prediction of an imported task.
#[derive(Debug, Clone)]
pub struct ImportedPrediction {
    /// Regions, as the JSON text of a list.
    pub result: String,
    /// Model score.
    pub score: Option<f64>,
    /// Model version.
    pub model_version: String,
}

/// Counts of an import.
#[derive(Debug, Default)]
pub struct ImportSummary {
    /// Ids of created tasks, in input order.
    pub task_ids: Vec<i64>,
    /// Annotations created.
    pub annotation_count: i64,
    /// Predictions created.
    pub prediction_count: i64,
}

/// Staging tables of one connection. `n` is a task's 0-based position in the import
/// (its `inner_id` is the first reserved one plus `n`); `seq` keeps input order.
const STAGING_TABLES: [&str; 3] = [
    "CREATE TEMPORARY TABLE import_tasks (n BIGINT PRIMARY KEY, data TEXT NOT NULL, meta TEXT NOT NULL, \
     is_labeled BIGINT NOT NULL, total_annotations BIGINT NOT NULL, cancelled_annotations BIGINT NOT NULL, \
     total_predictions BIGINT NOT NULL)",
    "CREATE TEMPORARY TABLE import_predictions (seq BIGINT PRIMARY KEY, n BIGINT NOT NULL, result TEXT NOT NULL, \
     score DOUBLE PRECISION, model_version TEXT NOT NULL)",
    "CREATE TEMPORARY TABLE import_annotations (seq BIGINT PRIMARY KEY, n BIGINT NOT NULL, result TEXT NOT NULL, \
     was_cancelled BIGINT NOT NULL, ground_truth BIGINT NOT NULL, lead_time DOUBLE PRECISION, \
     completed_by BIGINT)",
];

/// Writes the import into the staging tables.
async fn stage_import(backend: Backend, conn: &mut AnyConnection, user_id: i64, tasks: &[NewTask]) -> DbResult<()> {
    for sql in STAGING_TABLES {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    let numbered: Vec<(i64, &NewTask)> = (0..).zip(tasks).collect();
    let cols = "import_tasks (n, data, meta, is_labeled, total_annotations, cancelled_annotations, total_predictions)";
    insert_rows(backend, conn, cols, "", 7, &numbered, |q, (n, t)| {
        let total = t.completed();
        q.bind(*n)
            .bind(t.data.as_str())
            .bind(t.meta.as_str())
            .bind((total >= 1) as i64)
            .bind(total)
            .bind(t.cancelled())
            .bind(t.predictions.len() as i64)
    })
    .await?;
    let predictions: Vec<(i64, i64, &ImportedPrediction)> = numbered
        .iter()
        .flat_map(|(n, t)| t.predictions.iter().map(move |p| (*n, p)))
        .zip(0..)
        .map(|((n, p), seq)| (seq, n, p))
        .collect();
    insert_rows(
        backend,
        conn,
        "import_predictions (seq, n, result, score, model_version)",
        "",
        5,
        &predictions,
        |q, (seq, n, p)| {
            q.bind(*seq).bind(*n).bind(p.result.as_str()).bind(NullableF64(p.score)).bind(&p.model_version)
        },
    )
    .await?;
    let annotations: Vec<(i64, i64, &ImportedAnnotation)> = numbered
        .iter()
        .flat_map(|(n, t)| t.annotations.iter().map(move |a| (*n, a)))
        .zip(0..)
        .map(|((n, a), seq)| (seq, n, a))
        .collect();
    let cols = "import_annotations (seq, n, result, was_cancelled, ground_truth, lead_time, completed_by)";
    insert_rows(backend, conn, cols, "", 7, &annotations, |q, (seq, n, a)| {
        q.bind(*seq)
            .bind(*n)
            .bind(a.result.as_str())
            .bind(a.was_cancelled as i64)
            .bind(a.ground_truth as i64)
            .bind(NullableF64(a.lead_time))
            .bind(a.completed_by.unwrap_or(user_id))
    })
    .await?;
    Ok(())
}

/// Imports of at least this many tasks refresh PostgreSQL's planner statistics.
const ANALYZE_AFTER_TASKS: i64 = 1000;

/// After a bulk import on PostgreSQL, re-reads the statistics its planner uses for the
/// tables an import fills, when the import added at least a tenth of `tasks` (or the
/// table was never analysed). Without them the planner takes a project's 100k rows for
/// a few dozen: a full sync's page (`export_page`, before its query was made to read
/// in order whatever the statistics) then read and sorted every later annotation with
/// its task to keep 1,000 (228 ms per page at 50k of 100k, against 3.5 ms with
/// statistics, issue #11); other reads still plan with them. Autovacuum would analyse
/// them too, but only after its next round, and not at all where it is turned off.
/// Takes ~0.1–0.6 s for 100k rows and blocks no reads or writes; a failure is only
/// logged, as the import itself has committed.
async fn refresh_planner_statistics(conn: &mut AnyConnection, count: i64) {
    if count < ANALYZE_AFTER_TASKS {
        return;
    }
    let analyze = async {
        let known: f64 = sqlx::query_scalar(
            "SELECT CAST(reltuples AS DOUBLE PRECISION) FROM pg_class WHERE oid = 'tasks'::regclass",
        )
        .fetch_one(&mut *conn)
        .await?;
        if known < 0.0 || count as f64 * 10.0 >= known {
            sqlx::query("ANALYZE tasks, annotations, predictions, annotation_changes").execute(&mut *conn).await?;
        }
        Ok::<_, sqlx::Error>(())
    };
    if let Err(e) = analyze.await {
        tracing::warn!(error.message = %e, "Failed to refresh the planner statistics after an import");
    }
}

impl Db {
    /// Imports tasks with their annotations and predictions, all or nothing, holding
    /// the write lock only for one short `INSERT … SELECT` transaction (see the
    /// module documentation). Every annotation is recorded in the change feed.
    pub async fn import_tasks(&self, project_id: i64, user_id: i64, tasks: &[NewTask]) -> DbResult<ImportSummary> {
        let mut conn = self.pool.acquire().await?;
        // Closing the connection drops its staging tables, however the import ends.
        conn.close_on_drop();
        stage_import(self.backend, &mut conn, user_id, tasks).await?;
        let count = tasks.len() as i64;
        let now = now_micros();
        // Only now, staged, does the import wait for its turn to write.
        let mut tx = self.project_write_tx_on(&mut conn).await?;
        let first = next_inner_ids(&mut tx, project_id, count).await?;
        let last = first + count - 1;
        sqlx::query(
            "INSERT INTO tasks (project_id, data, meta, inner_id, is_labeled, total_annotations, \
             cancelled_annotations, total_predictions, created_at, updated_at) \
             SELECT $1, s.data, s.meta, $2 + s.n, s.is_labeled, s.total_annotations, s.cancelled_annotations, \
             s.total_predictions, $3, $3 FROM import_tasks s ORDER BY s.n",
        )
        .bind(project_id)
        .bind(first)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        keep_page_order(&mut tx, project_id, first, last).await?;
        // The new tasks are found by their range of inner ids: joined on `$2 + s.n`
        // alone, PostgreSQL's planner hashed every task of the project (its statistics
        // had not seen the new rows), so each import cost time in the project's size.
        let predictions = sqlx::query(
            "INSERT INTO predictions (task_id, project_id, result, score, model_version, created_at, updated_at) \
             SELECT t.id, $1, s.result, s.score, s.model_version, $3, $3 FROM import_predictions s \
             JOIN tasks t ON t.project_id = $1 AND t.inner_id BETWEEN $2 AND $4 AND t.inner_id = $2 + s.n \
             ORDER BY s.seq",
        )
        .bind(project_id)
        .bind(first)
        .bind(now)
        .bind(last)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let annotations = sqlx::query(
            "INSERT INTO annotations (task_id, project_id, result, was_cancelled, ground_truth, lead_time, \
             completed_by, updated_by, import_id, last_action, bulk_created, parent_prediction, parent_annotation, \
             draft_created_at, created_at, updated_at) \
             SELECT t.id, $1, s.result, s.was_cancelled, s.ground_truth, s.lead_time, s.completed_by, $4, \
             CAST(NULL AS BIGINT), 'imported', 1, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), \
             CAST(NULL AS BIGINT), $3, $3 \
             FROM import_annotations s \
             JOIN tasks t ON t.project_id = $1 AND t.inner_id BETWEEN $2 AND $5 AND t.inner_id = $2 + s.n \
             ORDER BY s.seq",
        )
        .bind(project_id)
        .bind(first)
        .bind(now)
        .bind(user_id)
        .bind(last)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A new task is labeled exactly when it has a completed annotation (as staged).
        let annotated = tasks.iter().filter(|t| t.completed() >= 1).count() as i64;
        let totals = Totals {
            tasks: count,
            annotations: annotations as i64,
            cancelled: tasks.iter().map(NewTask::cancelled).sum(),
            predictions: predictions as i64,
            annotated_tasks: annotated,
            labeled_tasks: annotated,
        };
        add_to_totals(&mut tx, project_id, totals).await?;
        if annotations > 0 {
            // Last, so that PostgreSQL's change-feed lock is held only until the commit.
            lock_change_feed(self.backend, &mut tx).await?;
            sqlx::query(
                "INSERT INTO annotation_changes (project_id, task_id, annotation_id, op, created_at) \
                 SELECT $1, a.task_id, a.id, $4, $5 FROM annotations a JOIN tasks t ON t.id = a.task_id \
                 WHERE t.project_id = $1 AND t.inner_id BETWEEN $2 AND $3 ORDER BY a.id",
            )
            .bind(project_id)
            .bind(first)
            .bind(last)
            .bind(ChangeOp::Upsert.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // Read after the commit, to keep the lock short (reading 100k rows through
        // sqlx takes longer than writing them).
        let task_ids: Vec<i64> =
            sqlx::query("SELECT id FROM tasks WHERE project_id = $1 AND inner_id BETWEEN $2 AND $3 ORDER BY inner_id")
                .bind(project_id)
                .bind(first)
                .bind(last)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.get("id"))
                .collect();
        if self.backend == Backend::Postgres {
            refresh_planner_statistics(&mut conn, count).await;
        }
        Ok(ImportSummary { task_ids, annotation_count: annotations as i64, prediction_count: predictions as i64 })
    }
}
