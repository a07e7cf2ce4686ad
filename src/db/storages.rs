//! Export storages, their sync jobs, leases and the links to what they wrote.
//!
//! What a worker writes about a storage while it syncs (job progress and state,
//! cursor, change token, links) is fenced by its [`Lease`] (see [`super::leases`]):
//! a worker that lost the lease has these writes refused.

use super::leases::{bind_held, fence, HELD};
use super::rows::{insert_rows, placeholders_after, PARAMETERS_PER_STATEMENT};
use super::{
    flag, json_col, Annotation, Arg, Db, DbError, DbResult, DbRow, FromDbRow, JsonColumn, JsonText, Lease, PathClaim,
    Task, ANNOTATION_COLUMNS,
};
use crate::time::{now_micros, Micros};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::LazyLock;

/// An export storage row.
#[derive(Debug, Clone)]
pub struct ExportStorage {
    /// Storage id.
    pub id: i64,
    /// `localfiles`, `s3`, `gcs`, `azure` or `redis`.
    pub storage_type: String,
    /// Project it exports.
    pub project_id: i64,
    /// The writable fields.
    pub fields: StorageFields,
    /// Sync status (`initialized`, `queued`, …).
    pub status: String,
    /// Finish time of the last successful sync.
    pub last_sync: Option<Micros>,
    /// Annotations processed by the last sync.
    pub last_sync_count: Option<i64>,
    /// Key of the last sync job.
    pub last_sync_job: Option<String>,
    /// Last failure text.
    pub traceback: Option<String>,
    /// Sync bookkeeping (`attempts`, `time_queued`, …).
    pub meta: Value,
    /// Creation time.
    pub created_at: Micros,
    /// Change-feed position this storage is up to date with.
    pub cursor_seq: i64,
    /// Whether a full export into the current location has completed.
    pub baseline_done: bool,
    /// The target's change token after our last write.
    pub target_token: Option<String>,
    /// The generation of its location, which its links belong to: see [`LinkSet`].
    pub links_epoch: i64,
}

impl ExportStorage {
    /// Where its links are.
    pub fn link_set(&self) -> LinkSet {
        LinkSet { storage_id: self.id, epoch: self.links_epoch }
    }
}

/// Where a storage's links are: its id and the generation of its location. Changing
/// the location starts a new generation: the links of older ones are ignored (and
/// deleted in the background by [`Db::prune_stale_links`]). A worker works with the
/// generation of the storage row it built its target from, so links of documents it
/// writes to a location that was changed meanwhile are never taken for the new one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSet {
    /// The storage.
    pub storage_id: i64,
    /// The generation of its location.
    pub epoch: i64,
}

/// The fields clients set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageFields {
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Whether the sync endpoint may run.
    pub synchronizable: bool,
    /// Local path (normalised), or the Redis path.
    pub path: Option<String>,
    /// Stored, echoed, ignored on export.
    pub regex_filter: Option<String>,
    /// Stored, echoed, ignored on export.
    pub use_blob_urls: bool,
    /// Delete exported files when annotations are deleted (`None` = no).
    pub can_delete_objects: Option<bool>,
    /// `annotation` or `task`.
    pub export_mode: String,
    /// Type-specific settings (not secret).
    pub config: Value,
    /// The write-only fields, sealed (see [`crate::secrets`]); never plain text.
    pub secrets: Option<String>,
}

/// A sync job row.
#[derive(Debug, Clone)]
pub struct SyncJob {
    /// Job id.
    pub id: i64,
    /// Storage it syncs.
    pub storage_id: i64,
    /// Public job key (`last_sync_job`).
    pub job_key: String,
    /// `full` or `incremental`.
    pub mode: String,
    /// `queued`, `running`, `completed`, `failed`.
    pub state: String,
    /// Change-feed position at start.
    pub start_seq: i64,
    /// Full mode: last finished annotation id.
    pub checkpoint_id: i64,
    /// Annotations in the project at start.
    pub total: i64,
    /// Annotations processed so far.
    pub processed: i64,
    /// Documents written so far.
    pub written: i64,
    /// Documents deleted so far.
    pub deleted: i64,
    /// Failed writes so far.
    pub failed: i64,
    /// Failure descriptions (newline separated, bounded).
    pub errors: Option<String>,
}

/// Progress of a job, saved at each checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobProgress {
    /// Full mode: last finished annotation id.
    pub checkpoint_id: i64,
    /// Annotations processed.
    pub processed: i64,
    /// Documents written.
    pub written: i64,
    /// Documents deleted.
    pub deleted: i64,
    /// Failed writes.
    pub failed: i64,
    /// Failure descriptions.
    pub errors: Option<String>,
}

impl JobProgress {
    /// The progress a job saved at its last checkpoint.
    pub fn of(job: &SyncJob) -> JobProgress {
        JobProgress {
            checkpoint_id: job.checkpoint_id,
            processed: job.processed,
            written: job.written,
            deleted: job.deleted,
            failed: job.failed,
            errors: job.errors.clone(),
        }
    }
}

/// The public sync state of a storage, as the status machine computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncState {
    /// Status.
    pub status: String,
    /// Meta object.
    pub meta: Value,
    /// Last successful sync.
    pub last_sync: Option<Micros>,
    /// Processed count.
    pub last_sync_count: Option<i64>,
    /// Failure text.
    pub traceback: Option<String>,
}

/// What was written for an annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The annotation.
    pub annotation_id: i64,
    /// Key of the document holding it.
    pub key: String,
    /// Fingerprint of the written state.
    pub version: String,
    /// Bytes written.
    pub size: i64,
}

/// Links deleted per transaction when many go (a few ms of SQLite's write lock).
pub const LINKS_DELETED_PER_TRANSACTION: i64 = 5000;

const STORAGE_COLUMNS: &str = "s.id, s.type, s.project_id, s.title, s.description, s.synchronizable, s.path, \
     s.regex_filter, s.use_blob_urls, s.can_delete_objects, s.config, s.secrets, s.export_mode, s.status, s.last_sync, \
     s.last_sync_count, s.last_sync_job, s.traceback, s.meta, s.created_at, s.cursor_seq, s.baseline_done, s.target_token, \
     s.links_epoch";

/// The task columns of an export row, prefixed `t_` (read by [`task_from_prefixed`]);
/// they follow [`ANNOTATION_COLUMNS`] in `SELECT … FROM annotations a JOIN tasks t`.
const EXPORT_TASK_COLUMNS: &str = "t.data AS t_data, t.meta AS t_meta, t.inner_id AS t_inner_id, \
     t.overlap AS t_overlap, t.is_labeled AS t_is_labeled, t.total_annotations AS t_total_annotations, \
     t.cancelled_annotations AS t_cancelled_annotations, t.total_predictions AS t_total_predictions, \
     t.updated_by AS t_updated_by, t.created_at AS t_created_at, t.updated_at AS t_updated_at";

/// The `FROM` of an export page on PostgreSQL: the page's annotations first (the
/// `(project_id, id)` index read in order, stopping at the limit), then each one's
/// task by its key. A plain join leaves the planner free to hash it, and it does
/// where its statistics think few annotations lie past `after` (the newest tenth
/// of a table, which autovacuum and imports have not analysed yet, or a project's
/// last pages): it then reads every later annotation and every task of the table
/// to keep 1,000 rows (140–310 ms per page at 55k of 100k under load, against a
/// few ms). `OFFSET 0` keeps the task lookup a subquery the planner cannot turn
/// back into a join.
const EXPORT_PAGE_POSTGRES: &str =
    "(SELECT * FROM annotations WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3) a \
     CROSS JOIN LATERAL (SELECT * FROM tasks WHERE id = a.task_id OFFSET 0) t";

/// An annotation with its task as exports read them: JSON kept as stored text,
/// since documents only write it out again.
pub type ExportRow = (Annotation<JsonText>, Task<JsonText>);

const JOB_COLUMNS: &str = "id, storage_id, job_key, mode, state, start_seq, checkpoint_id, total, processed, \
     written, deleted, failed, errors";

impl FromDbRow for ExportStorage {
    fn from_row(row: &impl DbRow) -> ExportStorage {
        ExportStorage {
            id: row.int("id"),
            storage_type: row.text("type"),
            project_id: row.int("project_id"),
            fields: StorageFields {
                title: row.opt_text("title"),
                description: row.opt_text("description"),
                synchronizable: flag(row, "synchronizable"),
                path: row.opt_text("path"),
                regex_filter: row.opt_text("regex_filter"),
                use_blob_urls: flag(row, "use_blob_urls"),
                can_delete_objects: row.opt_int("can_delete_objects").map(|v| v != 0),
                export_mode: row.text("export_mode"),
                config: json_col(row, "config"),
                secrets: row.opt_text("secrets"),
            },
            status: row.text("status"),
            last_sync: row.opt_int("last_sync"),
            last_sync_count: row.opt_int("last_sync_count"),
            last_sync_job: row.opt_text("last_sync_job"),
            traceback: row.opt_text("traceback"),
            meta: json_col(row, "meta"),
            created_at: row.int("created_at"),
            cursor_seq: row.int("cursor_seq"),
            baseline_done: flag(row, "baseline_done"),
            target_token: row.opt_text("target_token"),
            links_epoch: row.int("links_epoch"),
        }
    }
}

impl SyncJob {
    fn from_row(row: &AnyRow) -> SyncJob {
        SyncJob {
            id: row.get("id"),
            storage_id: row.get("storage_id"),
            job_key: row.get("job_key"),
            mode: row.get("mode"),
            state: row.get("state"),
            start_seq: row.get("start_seq"),
            checkpoint_id: row.get("checkpoint_id"),
            total: row.get("total"),
            processed: row.get("processed"),
            written: row.get("written"),
            deleted: row.get("deleted"),
            failed: row.get("failed"),
            errors: row.get("errors"),
        }
    }
}

impl Db {
    /// Creates a storage; it starts at the current end of the change feed. With a
    /// local-path claim, fails with [`DbError::Conflict`] if another organization
    /// uses the directory (checked in the same transaction).
    pub async fn create_storage(
        &self,
        storage_type: &str,
        project_id: i64,
        f: &StorageFields,
        claim: Option<&PathClaim<'_>>,
    ) -> DbResult<ExportStorage> {
        let mut tx = self.write_tx().await?;
        if let Some(claim) = claim {
            self.claim_local_path(&mut tx, claim).await?;
        }
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM annotation_changes").fetch_one(&mut *tx).await?;
        let id: i64 = bind_fields(
            sqlx::query(
                "INSERT INTO export_storages (title, description, synchronizable, path, regex_filter, use_blob_urls, \
                 can_delete_objects, config, export_mode, secrets, type, project_id, created_at, cursor_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            ),
            f,
        )
        .bind(storage_type)
        .bind(project_id)
        .bind(now_micros())
        .bind(cursor.unwrap_or(0))
        .fetch_one(&mut *tx)
        .await?
        .get("id");
        tx.commit().await?;
        self.storage_by_id(id).await
    }

    /// A storage by id alone (for the worker).
    pub async fn storage_by_id(&self, id: i64) -> DbResult<ExportStorage> {
        self.read_one(format!("SELECT {STORAGE_COLUMNS} FROM export_storages s WHERE s.id = $1"), vec![Arg::Int(id)])
            .await
    }

    /// A storage of the given type visible to the organization.
    pub async fn storage(&self, organization_id: i64, storage_type: &str, id: i64) -> DbResult<ExportStorage> {
        let sql = format!(
            "SELECT {STORAGE_COLUMNS} FROM export_storages s JOIN projects p ON p.id = s.project_id \
             WHERE s.id = $1 AND s.type = $2 AND p.organization_id = $3"
        );
        self.read_one(sql, vec![Arg::Int(id), Arg::Text(storage_type.to_owned()), Arg::Int(organization_id)]).await
    }

    /// A project's storages of one type (or all types), by id; `None` if the project is
    /// not the organization's. One statement when it has some (a status poll's case),
    /// a second one to tell an empty list from an unknown project.
    pub async fn list_storages(
        &self,
        organization_id: i64,
        project_id: i64,
        storage_type: Option<&str>,
    ) -> DbResult<Option<Vec<ExportStorage>>> {
        let sql = format!(
            "SELECT {STORAGE_COLUMNS} FROM export_storages s JOIN projects p ON p.id = s.project_id \
             WHERE s.project_id = $1 AND p.organization_id = $2 AND ($3 IS NULL OR s.type = $3) ORDER BY s.id"
        );
        let args = vec![Arg::Int(project_id), Arg::Int(organization_id), Arg::OptText(storage_type.map(str::to_owned))];
        let storages: Vec<ExportStorage> = self.read(sql, args).await?;
        if storages.is_empty() && !self.project_exists(organization_id, project_id).await? {
            return Ok(None);
        }
        Ok(Some(storages))
    }

    /// Replaces the writable fields. A new location (path or type config) needs a
    /// new full export, so the baseline is reset then, and its links start a new
    /// generation ([`LinkSet`]): the old ones are left to [`Db::prune_stale_links`], not
    /// deleted in this transaction. A local-path claim is checked as in
    /// [`Db::create_storage`].
    pub async fn update_storage(
        &self,
        id: i64,
        f: &StorageFields,
        location_changed: bool,
        claim: Option<&PathClaim<'_>>,
    ) -> DbResult<ExportStorage> {
        let mut tx = self.write_tx().await?;
        if let Some(claim) = claim {
            self.claim_local_path(&mut tx, claim).await?;
        }
        let done = bind_fields(
            sqlx::query(
                "UPDATE export_storages SET title = $1, description = $2, synchronizable = $3, path = $4, \
                 regex_filter = $5, use_blob_urls = $6, can_delete_objects = $7, config = $8, export_mode = $9, \
                 secrets = $10, baseline_done = CASE WHEN $11 = 1 THEN 0 ELSE baseline_done END, \
                 links_epoch = CASE WHEN $11 = 1 THEN links_epoch + 1 ELSE links_epoch END WHERE id = $12",
            ),
            f,
        )
        .bind(location_changed as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        tx.commit().await?;
        self.storage_by_id(id).await
    }

    /// Re-seals every storage's secrets, the JWT secret, every user's sealed legacy
    /// token and the key check value in one transaction (`labelport secrets rotate`); returns how many
    /// storages had secrets.
    pub async fn reseal_secrets(
        &self,
        reseal: impl Fn(&str) -> anyhow::Result<String>,
        check_name: &str,
        check_value: &str,
    ) -> DbResult<usize> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<(i64, String)> =
            sqlx::query("SELECT id, secrets FROM export_storages WHERE secrets IS NOT NULL ORDER BY id")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (r.get("id"), r.get("secrets")))
                .collect();
        for (id, sealed) in &rows {
            let resealed = reseal(sealed).map_err(|e| DbError::Other(e.context(format!("storage {id}"))))?;
            sqlx::query("UPDATE export_storages SET secrets = $1 WHERE id = $2")
                .bind(resealed)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        // The JWT signing secret (see `startup::jwt_secret`), once sealed.
        let jwt: Option<String> =
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'jwt_secret' AND value LIKE 'v1:%'")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(sealed) = jwt {
            let resealed = reseal(&sealed).map_err(|e| DbError::Other(e.context("the JWT secret")))?;
            sqlx::query("UPDATE server_secrets SET value = $1 WHERE name = 'jwt_secret'")
                .bind(resealed)
                .execute(&mut *tx)
                .await?;
        }
        // The users' sealed legacy tokens (see `db::users`).
        let users: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, legacy_token_sealed FROM users WHERE legacy_token_sealed IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        for (id, sealed) in &users {
            let resealed = reseal(sealed).map_err(|e| DbError::Other(e.context(format!("user {id}"))))?;
            sqlx::query("UPDATE users SET legacy_token_sealed = $1 WHERE id = $2")
                .bind(resealed)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
        )
        .bind(check_name)
        .bind(check_value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Deletes a storage with its jobs and links (files stay, as in Label Studio). The
    /// links go first, a batch per transaction: in the storage's own transaction, a
    /// million of them held SQLite's write lock for most of a second.
    pub async fn delete_storage(&self, id: i64) -> DbResult<()> {
        self.delete_links_in_batches(id, i64::MAX, LINKS_DELETED_PER_TRANSACTION).await?;
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM export_storages WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queues a sync job unless one is queued or running. `state` is what the
    /// storage shows once queued. Returns the new job, or `None` when coalesced.
    pub async fn queue_sync(
        &self,
        storage_id: i64,
        mode: &str,
        job_key: &str,
        state: &SyncState,
    ) -> DbResult<Option<SyncJob>> {
        let mut tx = self.write_tx().await?;
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sync_jobs WHERE storage_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(storage_id)
        .fetch_one(&mut *tx)
        .await?;
        if active > 0 {
            return Ok(None);
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO sync_jobs (storage_id, job_key, mode, state, created_at) VALUES ($1, $2, $3, 'queued', $4) \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(storage_id)
        .bind(job_key)
        .bind(mode)
        .bind(now_micros())
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted.map_err(DbError::from) {
            Ok(row) => row,
            // A concurrent request queued one first (unique index on active jobs).
            Err(DbError::Conflict) => return Ok(None),
            Err(e) => return Err(e),
        };
        set_state(&mut tx, storage_id, state, Some(job_key)).await?;
        self.notify_work(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(SyncJob::from_row(&row)))
    }

    /// The storage's queued or running job.
    pub async fn active_job(&self, storage_id: i64) -> DbResult<Option<SyncJob>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM sync_jobs WHERE storage_id = $1 AND state IN ('queued', 'running') ORDER BY id LIMIT 1"
        ))
        .bind(storage_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(SyncJob::from_row))
    }

    /// A job by id.
    pub async fn job(&self, id: i64) -> DbResult<SyncJob> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM sync_jobs WHERE id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(SyncJob::from_row(&row))
    }

    /// Marks a job running (recording where it starts) and sets the storage's state.
    /// Only under the storage's current lease; `false` otherwise.
    pub async fn start_job(
        &self,
        job: &SyncJob,
        lease: &Lease,
        mode: &str,
        start_seq: i64,
        total: i64,
        state: &SyncState,
    ) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        if !fence(&mut tx, lease, None).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE sync_jobs SET state = 'running', mode = $6, start_seq = $1, total = $2, worker = $3, started_at = $4 \
             WHERE id = $5",
        )
        .bind(start_seq)
        .bind(total)
        .bind(&lease.owner)
        .bind(now_micros())
        .bind(job.id)
        .bind(mode)
        .execute(&mut *tx)
        .await?;
        set_state(&mut tx, job.storage_id, state, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records the target's change token after our writes, under the current lease
    /// only; `false` if the lease was lost.
    pub async fn set_target_token(&self, lease: &Lease, token: Option<&str>) -> DbResult<bool> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("UPDATE export_storages SET target_token = $4 WHERE {HELD}"));
        let done = self.write_one_bookkeeping(bind_held(sqlx::query(&SQL), lease).bind(token)).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Saves a job's progress and the storage's progress state, renewing the lease.
    /// `false` if the lease was lost or the storage deleted: the caller must stop.
    pub async fn checkpoint_job(
        &self,
        job: &SyncJob,
        lease: &Lease,
        renew: std::time::Duration,
        progress: &JobProgress,
        state: &SyncState,
    ) -> DbResult<bool> {
        let mut tx = self.bookkeeping_tx().await?;
        if !fence(&mut tx, lease, Some(renew)).await? {
            return Ok(false);
        }
        save_progress(&mut tx, job.id, progress, None).await?;
        set_state(&mut tx, job.storage_id, state, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a job: final progress, job state, storage state, and (on success) the
    /// storage's new cursor and baseline. `baseline_of`: the generation of the location
    /// ([`LinkSet`]) a full export just completed into; it counts only if the storage
    /// is still there (a location changed meanwhile needs its own full export).
    #[allow(clippy::too_many_arguments)]
    /// Only under the storage's current lease; `false` otherwise.
    pub async fn finish_job(
        &self,
        job: &SyncJob,
        lease: &Lease,
        progress: &JobProgress,
        job_state: &str,
        state: &SyncState,
        cursor_seq: Option<i64>,
        baseline_of: Option<i64>,
    ) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        if !fence(&mut tx, lease, None).await? {
            return Ok(false);
        }
        save_progress(&mut tx, job.id, progress, Some(job_state)).await?;
        set_state(&mut tx, job.storage_id, state, None).await?;
        if let Some(seq) = cursor_seq {
            sqlx::query(
                "UPDATE export_storages SET cursor_seq = CASE WHEN cursor_seq > $1 THEN cursor_seq ELSE $1 END, \
                 baseline_done = CASE WHEN links_epoch = $2 THEN 1 ELSE baseline_done END WHERE id = $3",
            )
            .bind(seq)
            // No generation is negative: `None` matches none.
            .bind(baseline_of.unwrap_or(-1))
            .bind(job.storage_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Advances a storage's cursor, only under its current lease; with `token`, also
    /// records the target's change token after these writes (one statement).
    pub async fn advance_cursor(&self, lease: &Lease, seq: i64, token: Option<&str>) -> DbResult<bool> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE export_storages SET cursor_seq = $4, target_token = COALESCE($5, target_token) \
                 WHERE {HELD} AND cursor_seq < $4"
            )
        });
        let query = bind_held(sqlx::query(&SQL), lease).bind(seq).bind(token);
        Ok(self.write_one_bookkeeping(query).await?.rows_affected() == 1)
    }

    /// Forgets that the storage's location holds a full export (it was changed by someone else).
    pub async fn reset_baseline(&self, storage_id: i64) -> DbResult<()> {
        self.write_one(sqlx::query("UPDATE export_storages SET baseline_done = 0 WHERE id = $1").bind(storage_id))
            .await?;
        Ok(())
    }

    /// Sets the public sync state unless a sync job is queued or running (whose own
    /// state must win); returns whether it was set. Used for automatic export's
    /// failures and recoveries and for the stale-job rule of storage lists.
    pub async fn set_sync_state_if_idle(&self, storage_id: i64, s: &SyncState) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        if self.backend == super::Backend::Postgres {
            // Lock the row first, so that the check below runs on a snapshot taken after
            // a concurrent `queue_sync` (which updates this row) has committed. In one
            // statement, the check would use the snapshot from before the wait for the
            // row and miss that job: its `queued` would then be overwritten.
            sqlx::query("SELECT 1 FROM export_storages WHERE id = $1 FOR UPDATE")
                .bind(storage_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "UPDATE export_storages SET status = $1, meta = $2, last_sync = $3, last_sync_count = $4, traceback = $5 \
             WHERE id = $6 AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.storage_id = $6 \
             AND j.state IN ('queued', 'running'))",
        )
        .bind(&s.status)
        .bind(s.meta.to_string())
        .bind(s.last_sync)
        .bind(s.last_sync_count)
        .bind(s.traceback.as_deref())
        .bind(storage_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Number of annotations in a project: one row read, whatever the project's size.
    pub async fn count_annotations(&self, project_id: i64) -> DbResult<i64> {
        Ok(sqlx::query_scalar("SELECT annotation_count FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Up to `limit` annotations of a project with id > `after`, each with its task.
    pub async fn export_page(&self, project_id: i64, after: i64, limit: i64) -> DbResult<Vec<ExportRow>> {
        // rusqlite steps the plain join; through the pool, the form PostgreSQL plans
        // well ([`EXPORT_PAGE_POSTGRES`]).
        let sql = if self.lite_reads.is_some() {
            format!(
                "SELECT {ANNOTATION_COLUMNS}, {EXPORT_TASK_COLUMNS} FROM annotations a JOIN tasks t ON t.id = a.task_id \
                 WHERE a.project_id = $1 AND a.id > $2 ORDER BY a.id LIMIT $3"
            )
        } else {
            format!("SELECT {ANNOTATION_COLUMNS}, {EXPORT_TASK_COLUMNS} FROM {EXPORT_PAGE_POSTGRES} ORDER BY a.id")
        };
        self.read(sql, vec![Arg::Int(project_id), Arg::Int(after), Arg::Int(limit)]).await
    }

    /// The given annotations (those that still exist) with their tasks.
    pub async fn export_rows(&self, annotation_ids: &[i64]) -> DbResult<Vec<ExportRow>> {
        if annotation_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {ANNOTATION_COLUMNS}, {EXPORT_TASK_COLUMNS} FROM annotations a JOIN tasks t ON t.id = a.task_id \
             WHERE a.id IN ({}) ORDER BY a.id",
            self.id_list_param(1)
        ))
        .bind(serde_json::to_string(annotation_ids).map_err(|e| DbError::Other(e.into()))?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(ExportRow::from_row).collect())
    }

    /// A task (any organization) if it still exists.
    pub async fn task_by_id(&self, id: i64) -> DbResult<Option<Task>> {
        let row = sqlx::query(&format!("SELECT {} FROM tasks t WHERE t.id = $1", super::tasks::TASK_COLUMNS))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Task::from_row))
    }

    /// The links a storage has for the given annotations.
    pub async fn links(&self, set: LinkSet, annotation_ids: &[i64]) -> DbResult<Vec<Link>> {
        if annotation_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT annotation_id, object_key, version, size FROM export_links \
             WHERE storage_id = $1 AND epoch = $2 AND annotation_id IN ({})",
            self.id_list_param(3)
        ))
        .bind(set.storage_id)
        .bind(set.epoch)
        .bind(serde_json::to_string(annotation_ids).map_err(|e| DbError::Other(e.into()))?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Link::from_row).collect())
    }

    /// Whether the storage has recorded any written document.
    pub async fn has_links(&self, set: LinkSet) -> DbResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM export_links WHERE storage_id = $1 AND epoch = $2 LIMIT 1")
                .bind(set.storage_id)
                .bind(set.epoch)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// The links a storage has for annotation ids in `first..=last`: a page of the
    /// full pass is such a range, so this is one index range scan, with no id list.
    pub async fn links_between(&self, set: LinkSet, first: i64, last: i64) -> DbResult<Vec<Link>> {
        let sql = "SELECT annotation_id, object_key, version, size FROM export_links \
                   WHERE storage_id = $1 AND annotation_id BETWEEN $2 AND $3 AND epoch = $4";
        let args = vec![Arg::Int(set.storage_id), Arg::Int(first), Arg::Int(last), Arg::Int(set.epoch)];
        self.read(sql.to_owned(), args).await
    }

    /// Records what was written (insert or replace) to the location of generation
    /// `epoch` ([`LinkSet`]), under the storage's current lease only; `false` (nothing
    /// recorded) if the lease was lost.
    pub async fn upsert_links(&self, lease: &Lease, epoch: i64, links: &[Link]) -> DbResult<bool> {
        if links.is_empty() {
            return Ok(true);
        }
        if self.backend == super::Backend::Postgres && links.len() * 4 <= PARAMETERS_PER_STATEMENT - 5 {
            return self.upsert_few_links(lease, epoch, links).await;
        }
        let mut tx = self.bookkeeping_tx().await?;
        if !fence(&mut tx, lease, None).await? {
            return Ok(false);
        }
        let (storage_id, now) = (lease.storage_id, now_micros());
        insert_rows(
            self.backend,
            &mut tx,
            "export_links (storage_id, annotation_id, object_key, version, size, written_at, epoch)",
            "ON CONFLICT (storage_id, annotation_id) DO UPDATE SET object_key = excluded.object_key, \
             version = excluded.version, size = excluded.size, written_at = excluded.written_at, \
             epoch = excluded.epoch",
            7,
            links,
            |q, l| {
                q.bind(storage_id)
                    .bind(l.annotation_id)
                    .bind(l.key.as_str())
                    .bind(l.version.as_str())
                    .bind(l.size)
                    .bind(now)
                    .bind(epoch)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// [`upsert_links`](Self::upsert_links) for as many links as one statement binds, on
    /// PostgreSQL: the lease check and the insert in one statement (its own bookkeeping
    /// transaction), where a transaction took four round trips (an auto-export round
    /// records a few links). The check is the same `UPDATE` of the storage row as
    /// [`fence`]'s, whose lock holds claims off until the commit; the rows are inserted
    /// only from its result, so a lost lease inserts nothing.
    async fn upsert_few_links(&self, lease: &Lease, epoch: i64, links: &[Link]) -> DbResult<bool> {
        let sql = format!(
            "WITH held AS (UPDATE export_storages SET lease_expires_at = lease_expires_at \
               WHERE {HELD} RETURNING id) \
             INSERT INTO export_links (storage_id, annotation_id, object_key, version, size, written_at, epoch) \
             SELECT held.id, v.annotation_id, v.object_key, v.version, v.size, $4, $5 FROM held, \
               (VALUES {}) AS v (annotation_id, object_key, version, size) \
             ON CONFLICT (storage_id, annotation_id) DO UPDATE SET object_key = excluded.object_key, \
               version = excluded.version, size = excluded.size, written_at = excluded.written_at, \
               epoch = excluded.epoch",
            placeholders_after(self.backend, links.len(), 4, 5)
        );
        // One prepared statement per number of rows: kept for the few that recur.
        let mut query = bind_held(sqlx::query(&sql).persistent(links.len() <= 4), lease).bind(now_micros()).bind(epoch);
        for l in links {
            query = query.bind(l.annotation_id).bind(l.key.as_str()).bind(l.version.as_str()).bind(l.size);
        }
        // Every link is a row inserted or updated once the lease held, none otherwise.
        Ok(self.write_one_bookkeeping(query).await?.rows_affected() > 0)
    }

    /// Forgets links of generation `epoch` (after their files were deleted), under the
    /// storage's current lease only; `false` (nothing forgotten) if the lease was lost.
    pub async fn delete_links(&self, lease: &Lease, epoch: i64, annotation_ids: &[i64]) -> DbResult<bool> {
        if annotation_ids.is_empty() {
            return Ok(true);
        }
        let storage_id = lease.storage_id;
        let list: Vec<String> = annotation_ids.iter().map(i64::to_string).collect();
        let mut tx = self.bookkeeping_tx().await?;
        if !fence(&mut tx, lease, None).await? {
            return Ok(false);
        }
        sqlx::query(&format!(
            "DELETE FROM export_links WHERE storage_id = $1 AND epoch = $2 AND annotation_id IN ({})",
            list.join(",")
        ))
        .persistent(false)
        .bind(storage_id)
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many links of a storage point at `key` (task mode: annotations in one file).
    pub async fn count_links_with_key(&self, set: LinkSet, key: &str) -> DbResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM export_links WHERE storage_id = $1 AND epoch = $2 AND object_key = $3",
        )
        .bind(set.storage_id)
        .bind(set.epoch)
        .bind(key)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Links whose annotation no longer exists (files left by deletions), by id.
    pub async fn orphan_links(&self, set: LinkSet, after: i64, limit: i64) -> DbResult<Vec<Link>> {
        let rows = sqlx::query(
            "SELECT l.annotation_id, l.object_key, l.version, l.size FROM export_links l \
             WHERE l.storage_id = $1 AND l.annotation_id > $2 AND l.epoch = $4 \
             AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.id = l.annotation_id) \
             ORDER BY l.annotation_id LIMIT $3",
        )
        .bind(set.storage_id)
        .bind(after)
        .bind(limit)
        .bind(set.epoch)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Link::from_row).collect())
    }

    /// Annotations of a task (all, including cancelled), for task-mode documents.
    pub async fn task_annotations(&self, task_id: i64) -> DbResult<Vec<Annotation>> {
        self.annotations_for_tasks(&[task_id], true).await
    }

    /// Deletes change-feed entries every storage of their project has passed; a
    /// project without storages needs none of its entries. Returns how many.
    pub async fn prune_change_feed(&self) -> DbResult<u64> {
        // Per project, up to the slowest storage's cursor; in bounded batches, so no
        // transaction holds the writer (SQLite) or many row locks for long.
        const BATCH: i64 = 5000;
        let horizons: Vec<(i64, i64)> = sqlx::query(
            "SELECT c.project_id, COALESCE((SELECT MIN(s.cursor_seq) FROM export_storages s \
               WHERE s.project_id = c.project_id), (SELECT MAX(m.seq) FROM annotation_changes m)) AS horizon \
             FROM (SELECT DISTINCT project_id FROM annotation_changes) c",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get("project_id"), r.get("horizon")))
        .collect();
        let mut deleted = 0;
        for (project_id, horizon) in horizons {
            loop {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "DELETE FROM annotation_changes WHERE seq IN (SELECT seq FROM annotation_changes \
                     WHERE project_id = $1 AND seq <= $2 ORDER BY seq LIMIT $3)",
                )
                .bind(project_id)
                .bind(horizon)
                .bind(BATCH)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                deleted += done.rows_affected();
                if done.rows_affected() < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the links of earlier generations of each storage's location ([`LinkSet`],
    /// left by location changes), at most `batch` rows per transaction, so no
    /// transaction holds the writer (SQLite) or many row locks for long. Returns how
    /// many. The sync engine's pruner calls it with [`LINKS_DELETED_PER_TRANSACTION`].
    pub async fn prune_stale_links(&self, batch: i64) -> DbResult<u64> {
        let storages: Vec<(i64, i64)> =
            sqlx::query("SELECT id, links_epoch FROM export_storages WHERE links_pruned_epoch < links_epoch")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get("id"), r.get("links_epoch")))
                .collect();
        let mut deleted = 0;
        for (storage_id, epoch) in storages {
            deleted += self.delete_links_in_batches(storage_id, epoch, batch).await?;
            self.write_one(
                sqlx::query(
                    "UPDATE export_storages SET links_pruned_epoch = $1 WHERE id = $2 AND links_pruned_epoch < $1",
                )
                .bind(epoch)
                .bind(storage_id),
            )
            .await?;
        }
        Ok(deleted)
    }

    /// Deletes a storage's links of generations below `epoch`, in ranges of `batch`
    /// links by annotation id, one transaction each. Returns how many.
    async fn delete_links_in_batches(&self, storage_id: i64, epoch: i64, batch: i64) -> DbResult<u64> {
        let mut deleted = 0;
        let mut after = i64::MIN;
        loop {
            // The range's end, whatever the generations in it (links rewritten since a
            // location change are of the current one and stay).
            let until: Option<i64> = sqlx::query_scalar(
                "SELECT annotation_id FROM export_links WHERE storage_id = $1 AND annotation_id > $2 \
                 ORDER BY annotation_id LIMIT 1 OFFSET $3",
            )
            .bind(storage_id)
            .bind(after)
            .bind(batch - 1)
            .fetch_optional(&self.pool)
            .await?;
            let done = self
                .write_one(
                    sqlx::query(
                        "DELETE FROM export_links WHERE storage_id = $1 AND annotation_id > $2 \
                         AND annotation_id <= $3 AND epoch < $4",
                    )
                    .bind(storage_id)
                    .bind(after)
                    .bind(until.unwrap_or(i64::MAX))
                    .bind(epoch),
                )
                .await?;
            deleted += done.rows_affected();
            match until {
                Some(until) => after = until,
                None => return Ok(deleted),
            }
        }
    }

    /// How far behind the change feed each storage of a project is: (storage id,
    /// pending entries, creation time of the oldest pending entry).
    pub async fn export_lag(&self, project_id: i64) -> DbResult<Vec<(i64, i64, Option<Micros>)>> {
        let rows = sqlx::query(
            "SELECT s.id, \
               (SELECT COUNT(*) FROM annotation_changes c WHERE c.project_id = s.project_id AND c.seq > s.cursor_seq) AS pending, \
               (SELECT MIN(c.created_at) FROM annotation_changes c WHERE c.project_id = s.project_id AND c.seq > s.cursor_seq) AS oldest \
             FROM export_storages s WHERE s.project_id = $1 ORDER BY s.id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("pending"), r.get("oldest"))).collect())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the writable fields as `$1`…`$10`, in the order both the INSERT and the
/// UPDATE of a storage list them.
fn bind_fields<'q>(q: AnyQuery<'q>, f: &'q StorageFields) -> AnyQuery<'q> {
    q.bind(f.title.as_deref())
        .bind(f.description.as_deref())
        .bind(f.synchronizable as i64)
        .bind(f.path.as_deref())
        .bind(f.regex_filter.as_deref())
        .bind(f.use_blob_urls as i64)
        .bind(f.can_delete_objects.map(i64::from))
        .bind(f.config.to_string())
        .bind(f.export_mode.as_str())
        .bind(f.secrets.as_deref())
}

impl FromDbRow for Link {
    fn from_row(r: &impl DbRow) -> Link {
        Link {
            annotation_id: r.int("annotation_id"),
            key: r.text("object_key"),
            version: r.text("version"),
            size: r.int("size"),
        }
    }
}

fn task_from_prefixed<J: JsonColumn>(row: &impl DbRow) -> Task<J> {
    Task {
        id: row.int("task_id"),
        project_id: row.int("project_id"),
        data: J::read(row, "t_data"),
        meta: J::read(row, "t_meta"),
        inner_id: row.int("t_inner_id"),
        overlap: row.int("t_overlap"),
        is_labeled: flag(row, "t_is_labeled"),
        total_annotations: row.int("t_total_annotations"),
        cancelled_annotations: row.int("t_cancelled_annotations"),
        total_predictions: row.int("t_total_predictions"),
        updated_by: row.opt_int("t_updated_by"),
        created_at: row.int("t_created_at"),
        updated_at: row.int("t_updated_at"),
    }
}

/// An export row (annotation and task columns of the export join) from either driver.
impl FromDbRow for ExportRow {
    fn from_row(row: &impl DbRow) -> ExportRow {
        (Annotation::from_row(row), task_from_prefixed(row))
    }
}

async fn save_progress(tx: &mut super::WriteTx, job_id: i64, p: &JobProgress, state: Option<&str>) -> DbResult<()> {
    sqlx::query(
        "UPDATE sync_jobs SET checkpoint_id = $1, processed = $2, written = $3, deleted = $4, failed = $5, errors = $6, \
         state = COALESCE($7, state), finished_at = CASE WHEN $7 IS NULL THEN finished_at ELSE $8 END WHERE id = $9",
    )
    .bind(p.checkpoint_id)
    .bind(p.processed)
    .bind(p.written)
    .bind(p.deleted)
    .bind(p.failed)
    .bind(p.errors.as_deref())
    .bind(state)
    .bind(now_micros())
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_state(tx: &mut super::WriteTx, storage_id: i64, s: &SyncState, job_key: Option<&str>) -> DbResult<()> {
    sqlx::query(
        "UPDATE export_storages SET status = $1, meta = $2, last_sync = $3, last_sync_count = $4, traceback = $5, \
         last_sync_job = COALESCE($6, last_sync_job) WHERE id = $7",
    )
    .bind(&s.status)
    .bind(s.meta.to_string())
    .bind(s.last_sync)
    .bind(s.last_sync_count)
    .bind(s.traceback.as_deref())
    .bind(job_key)
    .bind(storage_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
