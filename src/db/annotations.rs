//! Annotations. Every create, update and delete writes a change-feed entry in the
//! same transaction (see [`super::changes`]).

use super::tasks::{lock_task, refresh_task_counters};
use super::{flag, record_change, Arg, ChangeOp, Db, DbError, DbResult, DbRow, FromDbRow, JsonColumn, Task, WriteTx};
use crate::time::{now_micros, Micros};
use serde_json::Value;
use std::sync::LazyLock;

/// An annotation row; `J` is how its JSON is held (see [`JsonColumn`]).
#[derive(Debug, Clone)]
pub struct Annotation<J = Value> {
    /// Annotation id.
    pub id: i64,
    /// Task id.
    pub task_id: i64,
    /// Project id.
    pub project_id: i64,
    /// Regions (a JSON list).
    pub result: J,
    /// Skipped.
    pub was_cancelled: bool,
    /// Marked as ground truth.
    pub ground_truth: bool,
    /// Seconds spent.
    pub lead_time: Option<f64>,
    /// Author.
    pub completed_by: Option<i64>,
    /// Last editor.
    pub updated_by: Option<i64>,
    /// Import batch.
    pub import_id: Option<i64>,
    /// Last action (LS enum).
    pub last_action: Option<String>,
    /// Created by an import.
    pub bulk_created: bool,
    /// Prediction it started from.
    pub parent_prediction: Option<i64>,
    /// Annotation it started from.
    pub parent_annotation: Option<i64>,
    /// Last creator.
    pub last_created_by: Option<i64>,
    /// When its draft was created.
    pub draft_created_at: Option<Micros>,
    /// Creation time.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
}

/// The writable fields of an annotation.
#[derive(Debug, Clone, Default)]
pub struct NewAnnotation {
    /// Regions (a JSON list).
    pub result: Value,
    /// Skipped.
    pub was_cancelled: bool,
    /// Ground truth.
    pub ground_truth: bool,
    /// Seconds spent.
    pub lead_time: Option<f64>,
    /// Author; the caller when `None`.
    pub completed_by: Option<i64>,
    /// Import batch.
    pub import_id: Option<i64>,
    /// Last action.
    pub last_action: Option<String>,
    /// Created by an import.
    pub bulk_created: bool,
    /// Prediction it started from.
    pub parent_prediction: Option<i64>,
    /// Annotation it started from.
    pub parent_annotation: Option<i64>,
    /// When its draft was created.
    pub draft_created_at: Option<Micros>,
}

pub(crate) const ANNOTATION_COLUMNS: &str = "a.id, a.task_id, a.project_id, a.result, a.was_cancelled, \
     a.ground_truth, a.lead_time, a.completed_by, a.updated_by, a.import_id, a.last_action, a.bulk_created, \
     a.parent_prediction, a.parent_annotation, a.last_created_by, a.draft_created_at, a.created_at, a.updated_at";

impl<J: JsonColumn> FromDbRow for Annotation<J> {
    fn from_row(row: &impl DbRow) -> Annotation<J> {
        Annotation {
            id: row.int("id"),
            task_id: row.int("task_id"),
            project_id: row.int("project_id"),
            result: J::read(row, "result"),
            was_cancelled: flag(row, "was_cancelled"),
            ground_truth: flag(row, "ground_truth"),
            lead_time: row.opt_float("lead_time"),
            completed_by: row.opt_int("completed_by"),
            updated_by: row.opt_int("updated_by"),
            import_id: row.opt_int("import_id"),
            last_action: row.opt_text("last_action"),
            bulk_created: flag(row, "bulk_created"),
            parent_prediction: row.opt_int("parent_prediction"),
            parent_annotation: row.opt_int("parent_annotation"),
            last_created_by: row.opt_int("last_created_by"),
            draft_created_at: row.opt_int("draft_created_at"),
            created_at: row.int("created_at"),
            updated_at: row.int("updated_at"),
        }
    }
}

impl Annotation {
    /// The writable part, for read-modify-write updates.
    pub fn to_new(&self) -> NewAnnotation {
        NewAnnotation {
            result: self.result.clone(),
            was_cancelled: self.was_cancelled,
            ground_truth: self.ground_truth,
            lead_time: self.lead_time,
            completed_by: self.completed_by,
            import_id: self.import_id,
            last_action: self.last_action.clone(),
            bulk_created: self.bulk_created,
            parent_prediction: self.parent_prediction,
            parent_annotation: self.parent_annotation,
            draft_created_at: self.draft_created_at,
        }
    }
}

/// Inserts an annotation and returns it as stored (the columns of [`ANNOTATION_COLUMNS`],
/// so that no read after the commit is needed to answer with it).
pub(crate) async fn insert_annotation(
    tx: &mut WriteTx,
    project_id: i64,
    task_id: i64,
    user_id: i64,
    a: &NewAnnotation,
    now: Micros,
) -> DbResult<Annotation> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO annotations (task_id, project_id, result, was_cancelled, ground_truth, lead_time, \
             completed_by, updated_by, import_id, last_action, bulk_created, parent_prediction, parent_annotation, \
             draft_created_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING {}",
            ANNOTATION_COLUMNS.replace("a.", "")
        )
    });
    let query = sqlx::query(SQL.as_str()).bind(task_id).bind(project_id);
    let row =
        bind_fields(query, a, Some(a.completed_by.unwrap_or(user_id)), user_id).bind(now).fetch_one(&mut **tx).await?;
    Ok(Annotation::from_row(&row))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds an annotation's written fields as the next twelve parameters, in the order
/// the insert and the update list their columns: `result`, `was_cancelled`,
/// `ground_truth`, `lead_time`, `completed_by`, `updated_by`, `import_id`,
/// `last_action`, `bulk_created`, `parent_prediction`, `parent_annotation`,
/// `draft_created_at`.
fn bind_fields<'q>(
    query: AnyQuery<'q>,
    a: &'q NewAnnotation,
    completed_by: Option<i64>,
    updated_by: i64,
) -> AnyQuery<'q> {
    query
        .bind(a.result.to_string())
        .bind(a.was_cancelled as i64)
        .bind(a.ground_truth as i64)
        .bind(super::NullableF64(a.lead_time))
        .bind(completed_by)
        .bind(updated_by)
        .bind(a.import_id)
        .bind(a.last_action.as_deref())
        .bind(a.bulk_created as i64)
        .bind(a.parent_prediction)
        .bind(a.parent_annotation)
        .bind(a.draft_created_at)
}

impl Db {
    /// Creates an annotation on a task of the caller's organization (read by the caller
    /// through [`Db::task`], which checks the organization; if it was deleted since, the
    /// row lock finds no task: `NotFound`), and returns it as stored.
    pub async fn create_annotation(&self, task: &Task, user_id: i64, a: &NewAnnotation) -> DbResult<Annotation> {
        let mut tx = self.project_write_tx().await?;
        let locked = lock_task(&mut tx, task.id).await?;
        let created = insert_annotation(&mut tx, task.project_id, task.id, user_id, a, now_micros()).await?;
        let delta = refresh_task_counters(&mut tx, &locked, Some(user_id)).await?;
        record_change(self.backend, &mut tx, task.project_id, task.id, created.id, ChangeOp::Upsert, delta).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// An annotation of the organization.
    pub async fn annotation(&self, organization_id: i64, id: i64) -> DbResult<Annotation> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS} FROM annotations a JOIN projects p ON p.id = a.project_id \
             WHERE a.id = $1 AND p.organization_id = $2"
        );
        self.read_one(sql, vec![Arg::Int(id), Arg::Int(organization_id)]).await
    }

    /// Whether the annotation `id` exists in the project (for `parent_annotation`).
    pub async fn annotation_in_project(&self, id: i64, project_id: i64) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annotations WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Whether the prediction `id` exists in the project (for `parent_prediction`).
    pub async fn prediction_in_project(&self, id: i64, project_id: i64) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Annotations of the given tasks, by task then id; cancelled ones only if asked.
    pub async fn annotations_for_tasks<J: JsonColumn>(
        &self,
        task_ids: &[i64],
        include_cancelled: bool,
    ) -> DbResult<Vec<Annotation<J>>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        // The ids as one parameter: one statement text, prepared once per connection
        // (a literal list was parsed and planned anew for every task page).
        let cancelled = if include_cancelled { "" } else { " AND a.was_cancelled = 0" };
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS} FROM annotations a WHERE a.task_id IN ({}){cancelled} ORDER BY a.task_id, a.id",
            self.id_list_param(1)
        );
        let ids = serde_json::to_string(task_ids).map_err(|e| DbError::Other(e.into()))?;
        self.read(sql, vec![Arg::Text(ids)]).await
    }

    /// Replaces the writable fields of an annotation.
    pub async fn update_annotation(
        &self,
        organization_id: i64,
        id: i64,
        user_id: i64,
        a: &NewAnnotation,
    ) -> DbResult<Annotation> {
        let current = self.annotation(organization_id, id).await?;
        let mut tx = self.project_write_tx().await?;
        let locked = lock_task(&mut tx, current.task_id).await?;
        let query = sqlx::query(
            "UPDATE annotations SET result = $1, was_cancelled = $2, ground_truth = $3, lead_time = $4, \
             completed_by = $5, updated_by = $6, import_id = $7, last_action = $8, bulk_created = $9, \
             parent_prediction = $10, parent_annotation = $11, draft_created_at = $12, updated_at = $13 WHERE id = $14",
        );
        let done = bind_fields(query, a, a.completed_by, user_id).bind(now_micros()).bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        let delta = refresh_task_counters(&mut tx, &locked, Some(user_id)).await?;
        let op = ChangeOp::Upsert;
        record_change(self.backend, &mut tx, current.project_id, current.task_id, id, op, delta).await?;
        tx.commit().await?;
        self.annotation(organization_id, id).await
    }

    /// Deletes an annotation.
    pub async fn delete_annotation(&self, organization_id: i64, id: i64) -> DbResult<()> {
        let current = self.annotation(organization_id, id).await?;
        let mut tx = self.project_write_tx().await?;
        let locked = lock_task(&mut tx, current.task_id).await?;
        let done = sqlx::query("DELETE FROM annotations WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        let delta = refresh_task_counters(&mut tx, &locked, None).await?;
        let op = ChangeOp::Delete;
        record_change(self.backend, &mut tx, current.project_id, current.task_id, id, op, delta).await?;
        tx.commit().await?;
        Ok(())
    }
}
