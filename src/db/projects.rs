//! Projects, always scoped to an organization.

use super::{flag, Arg, Db, DbResult, DbRow, FromDbRow};
use crate::time::{now_micros, Micros};
use sqlx::AnyConnection;
use std::sync::LazyLock;

/// A project row plus its counters.
#[derive(Debug, Clone)]
pub struct Project {
    /// Project id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Writable settings.
    pub settings: ProjectSettings,
    /// Creator.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: Micros,
    /// Counters computed from tasks and annotations.
    pub stats: ProjectStats,
}

/// The writable fields of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSettings {
    /// Title (3..50 characters, or empty).
    pub title: String,
    /// Description.
    pub description: String,
    /// Labeling config XML.
    pub label_config: String,
    /// Instructions shown to annotators.
    pub expert_instruction: String,
    /// Show the instructions before labeling.
    pub show_instruction: bool,
    /// Allow skipping tasks.
    pub show_skip_button: bool,
    /// Allow empty annotations.
    pub enable_empty_annotation: bool,
    /// Annotations per task needed for a task to count as labeled.
    pub maximum_annotations: i64,
    /// UI colour.
    pub color: String,
    /// Published to annotators.
    pub is_published: bool,
    /// Model version of predictions to show.
    pub model_version: String,
    /// Task sampling mode.
    pub sampling: String,
}

impl Default for ProjectSettings {
    fn default() -> Self {
        ProjectSettings {
            title: String::new(),
            description: String::new(),
            label_config: "<View></View>".into(),
            expert_instruction: String::new(),
            show_instruction: false,
            show_skip_button: true,
            enable_empty_annotation: true,
            maximum_annotations: 1,
            color: "#FFFFFF".into(),
            is_published: false,
            model_version: String::new(),
            sampling: "Sequential sampling".into(),
        }
    }
}

/// Counters shown on a project.
#[derive(Debug, Clone, Default)]
pub struct ProjectStats {
    /// Number of tasks.
    pub task_number: i64,
    /// Tasks with at least one non-cancelled annotation.
    pub num_tasks_with_annotations: i64,
    /// Tasks counted as labeled.
    pub finished_task_number: i64,
    /// Non-cancelled annotations.
    pub total_annotations_number: i64,
    /// Cancelled (skipped) annotations.
    pub skipped_annotations_number: i64,
    /// Ground-truth annotations.
    pub ground_truth_number: i64,
    /// Predictions.
    pub total_predictions_number: i64,
}

/// Filters and paging for the project list.
#[derive(Debug, Default)]
pub struct ProjectFilter {
    /// Only these ids.
    pub ids: Option<Vec<i64>>,
    /// Case-insensitive substring of the title.
    pub title: Option<String>,
}

const PROJECT_COLUMNS: &str = "p.id, p.organization_id, p.title, p.description, p.label_config, \
     p.expert_instruction, p.show_instruction, p.show_skip_button, p.enable_empty_annotation, \
     p.maximum_annotations, p.color, p.is_published, p.model_version, p.sampling, p.created_by, p.created_at, \
     p.task_count AS task_number, \
     p.annotated_task_count AS with_annotations, p.labeled_task_count AS finished, \
     p.annotation_count - p.cancelled_annotation_count AS total_annotations, \
     p.cancelled_annotation_count AS skipped, \
     (SELECT COUNT(*) FROM annotations a WHERE a.project_id = p.id AND a.ground_truth = 1) AS ground_truth, \
     p.prediction_count AS predictions";

/// A project's kept totals (migrations 0008, 0009 and 0012), or a change to them. They
/// are the sums of its tasks' counters, kept in the transactions that change those, so
/// that the task list's totals, a sync's total and a project's counters are one row
/// read, not counts over the project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Tasks.
    pub tasks: i64,
    /// Annotations, cancelled ones included.
    pub annotations: i64,
    /// Cancelled annotations.
    pub cancelled: i64,
    /// Predictions.
    pub predictions: i64,
    /// Tasks with at least one non-cancelled annotation.
    pub annotated_tasks: i64,
    /// Labeled tasks (`is_labeled`).
    pub labeled_tasks: i64,
}

impl std::ops::Sub for Totals {
    type Output = Totals;

    fn sub(self, other: Totals) -> Totals {
        Totals {
            tasks: self.tasks - other.tasks,
            annotations: self.annotations - other.annotations,
            cancelled: self.cancelled - other.cancelled,
            predictions: self.predictions - other.predictions,
            annotated_tasks: self.annotated_tasks - other.annotated_tasks,
            labeled_tasks: self.labeled_tasks - other.labeled_tasks,
        }
    }
}

/// The `SET` list adding a [`Totals`] bound as `$first` and the five parameters after it.
pub(crate) fn totals_set(first: usize) -> String {
    let columns = [
        "task_count",
        "annotation_count",
        "cancelled_annotation_count",
        "prediction_count",
        "annotated_task_count",
        "labeled_task_count",
    ];
    let sets: Vec<String> = (first..).zip(columns).map(|(n, c)| format!("{c} = {c} + ${n}")).collect();
    sets.join(", ")
}

/// Binds a [`Totals`] as the six parameters of [`totals_set`], in its order.
pub(crate) fn bind_totals<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    t: Totals,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(t.tasks)
        .bind(t.annotations)
        .bind(t.cancelled)
        .bind(t.predictions)
        .bind(t.annotated_tasks)
        .bind(t.labeled_tasks)
}

/// Adds `delta` to a project's totals, in the transaction that makes the change. Comes
/// after every task and annotation row lock of that transaction: on PostgreSQL, rows are
/// locked in the order task, annotations, project (then the change feed), so that two
/// writers never wait for each other. The project's row is where every writer of the
/// project queues until the holder commits, so take it as late as possible; a change
/// that is also recorded in the change feed adds its delta in
/// [`record_change`](super::changes::record_change) instead, in the same round trip.
pub(crate) async fn add_to_totals(conn: &mut AnyConnection, project_id: i64, delta: Totals) -> DbResult<()> {
    if delta != Totals::default() {
        static SQL: LazyLock<String> = LazyLock::new(|| format!("UPDATE projects SET {} WHERE id = $1", totals_set(2)));
        bind_totals(sqlx::query(SQL.as_str()).bind(project_id), delta).execute(conn).await?;
    }
    Ok(())
}

impl FromDbRow for Project {
    fn from_row(row: &impl DbRow) -> Project {
        Project {
            id: row.int("id"),
            organization_id: row.int("organization_id"),
            settings: ProjectSettings {
                title: row.text("title"),
                description: row.text("description"),
                label_config: row.text("label_config"),
                expert_instruction: row.text("expert_instruction"),
                show_instruction: flag(row, "show_instruction"),
                show_skip_button: flag(row, "show_skip_button"),
                enable_empty_annotation: flag(row, "enable_empty_annotation"),
                maximum_annotations: row.int("maximum_annotations"),
                color: row.text("color"),
                is_published: flag(row, "is_published"),
                model_version: row.text("model_version"),
                sampling: row.text("sampling"),
            },
            created_by: row.opt_int("created_by"),
            created_at: row.int("created_at"),
            stats: ProjectStats {
                task_number: row.int("task_number"),
                num_tasks_with_annotations: row.int("with_annotations"),
                finished_task_number: row.int("finished"),
                total_annotations_number: row.int("total_annotations"),
                skipped_annotations_number: row.int("skipped"),
                ground_truth_number: row.int("ground_truth"),
                total_predictions_number: row.int("predictions"),
            },
        }
    }
}

fn filter_sql(filter: &ProjectFilter, first_param: usize) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    if let Some(ids) = &filter.ids {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        sql.push_str(&format!(" AND p.id IN ({})", if list.is_empty() { "NULL".into() } else { list.join(",") }));
    }
    if let Some(title) = &filter.title {
        if title.contains('\0') {
            // No title holds NUL (refused on write), and PostgreSQL rejects it in a parameter.
            sql.push_str(" AND 1 = 0");
        } else {
            // A literal substring match: `%`, `_` and `\` in the filter match themselves.
            sql.push_str(&format!(" AND LOWER(p.title) LIKE ${first_param} ESCAPE '\\'"));
            let escaped = title.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            params.push(format!("%{escaped}%"));
        }
    }
    (sql, params)
}

impl Db {
    /// Creates a project in `organization_id`.
    pub async fn create_project(
        &self,
        organization_id: i64,
        created_by: i64,
        s: &ProjectSettings,
    ) -> DbResult<Project> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (organization_id, title, description, label_config, expert_instruction, \
             show_instruction, show_skip_button, enable_empty_annotation, maximum_annotations, color, is_published, \
             model_version, sampling, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING id",
        )
        .bind(organization_id)
        .bind(&s.title)
        .bind(&s.description)
        .bind(&s.label_config)
        .bind(&s.expert_instruction)
        .bind(s.show_instruction as i64)
        .bind(s.show_skip_button as i64)
        .bind(s.enable_empty_annotation as i64)
        .bind(s.maximum_annotations)
        .bind(&s.color)
        .bind(s.is_published as i64)
        .bind(&s.model_version)
        .bind(&s.sampling)
        .bind(created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.project(organization_id, id).await
    }

    /// A project of `organization_id`; [`super::DbError::NotFound`] for other organizations' projects.
    pub async fn project(&self, organization_id: i64, id: i64) -> DbResult<Project> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = $1 AND p.organization_id = $2");
        self.read_one(sql, vec![Arg::Int(id), Arg::Int(organization_id)]).await
    }

    /// Whether the project exists in the organization (cheap; no counters).
    pub async fn project_exists(&self, organization_id: i64, id: i64) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Counts the organization's projects matching `filter`.
    pub async fn count_projects(&self, organization_id: i64, filter: &ProjectFilter) -> DbResult<i64> {
        let (extra, params) = filter_sql(filter, 2);
        let sql = format!("SELECT COUNT(*) FROM projects p WHERE p.organization_id = $1{extra}");
        let mut q = sqlx::query_scalar(&sql).persistent(false).bind(organization_id);
        for p in params {
            q = q.bind(p);
        }
        Ok(q.fetch_one(&self.pool).await?)
    }

    /// One page of the organization's projects, newest first.
    pub async fn list_projects(
        &self,
        organization_id: i64,
        filter: &ProjectFilter,
        offset: i64,
        limit: i64,
    ) -> DbResult<Vec<Project>> {
        let (extra, params) = filter_sql(filter, 4);
        let sql = format!(
            "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.organization_id = $1{extra} \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $2 OFFSET $3"
        );
        let mut q = sqlx::query(&sql).persistent(false).bind(organization_id).bind(limit).bind(offset);
        for p in params {
            q = q.bind(p);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(Project::from_row).collect())
    }

    /// Replaces the writable settings of a project.
    pub async fn update_project(&self, organization_id: i64, id: i64, s: &ProjectSettings) -> DbResult<Project> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE projects SET title = $1, description = $2, label_config = $3, expert_instruction = $4, \
             show_instruction = $5, show_skip_button = $6, enable_empty_annotation = $7, maximum_annotations = $8, \
             color = $9, is_published = $10, model_version = $11, sampling = $12, updated_at = $13 \
             WHERE id = $14 AND organization_id = $15",
        )
        .bind(&s.title)
        .bind(&s.description)
        .bind(&s.label_config)
        .bind(&s.expert_instruction)
        .bind(s.show_instruction as i64)
        .bind(s.show_skip_button as i64)
        .bind(s.enable_empty_annotation as i64)
        .bind(s.maximum_annotations)
        .bind(&s.color)
        .bind(s.is_published as i64)
        .bind(&s.model_version)
        .bind(&s.sampling)
        .bind(now_micros())
        .bind(id)
        .bind(organization_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(super::DbError::NotFound);
        }
        tx.commit().await?;
        self.project(organization_id, id).await
    }

    /// Deletes a project with its tasks, annotations and predictions (by cascade).
    /// Exported files are left alone, as in Label Studio, so no change entries are written.
    pub async fn delete_project(&self, organization_id: i64, id: i64) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(super::DbError::NotFound);
        }
        sqlx::query("DELETE FROM annotation_changes WHERE project_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
