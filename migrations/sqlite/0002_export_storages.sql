-- Export storages, their sync jobs and what each storage has written.
-- Keep in step with the PostgreSQL migration of the same number.

CREATE TABLE export_storages (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    type               TEXT NOT NULL,
    project_id         BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title              TEXT,
    description        TEXT,
    synchronizable     BIGINT NOT NULL DEFAULT 1,
    path               TEXT,
    regex_filter       TEXT,
    use_blob_urls      BIGINT NOT NULL DEFAULT 0,
    can_delete_objects BIGINT,
    -- type-specific settings of the cloud targets (JSON object)
    config             TEXT NOT NULL DEFAULT '{}',
    -- 'annotation' (one file per annotation) or 'task' (one file per task)
    export_mode        TEXT NOT NULL DEFAULT 'annotation',
    status             TEXT NOT NULL DEFAULT 'initialized',
    last_sync          BIGINT,
    last_sync_count    BIGINT,
    last_sync_job      TEXT,
    traceback          TEXT,
    meta               TEXT NOT NULL DEFAULT '{}',
    created_at         BIGINT NOT NULL,
    -- change-feed position up to which this storage is up to date
    cursor_seq         BIGINT NOT NULL DEFAULT 0,
    -- a full export into the current location has completed
    baseline_done      BIGINT NOT NULL DEFAULT 0,
    -- the target's change token after our last write (see StorageTarget::change_token)
    target_token       TEXT,
    -- the worker that may currently write to this storage, and until when
    lease_owner        TEXT,
    lease_expires_at   BIGINT
);
CREATE INDEX export_storages_project ON export_storages(project_id, id);

CREATE TABLE sync_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id    BIGINT NOT NULL REFERENCES export_storages(id) ON DELETE CASCADE,
    job_key       TEXT NOT NULL,
    -- 'full' (walk every annotation) or 'incremental' (apply the change feed)
    mode          TEXT NOT NULL,
    -- 'queued', 'running', 'completed', 'failed'
    state         TEXT NOT NULL,
    -- change-feed position when the job started
    start_seq     BIGINT NOT NULL DEFAULT 0,
    -- full mode: the last annotation id whose export is finished
    checkpoint_id BIGINT NOT NULL DEFAULT 0,
    total         BIGINT NOT NULL DEFAULT 0,
    processed     BIGINT NOT NULL DEFAULT 0,
    written       BIGINT NOT NULL DEFAULT 0,
    deleted       BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    errors        TEXT,
    worker        TEXT,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT
);
CREATE INDEX sync_jobs_storage ON sync_jobs(storage_id, state);
-- At most one queued or running job per storage, whatever the races between requests.
CREATE UNIQUE INDEX sync_jobs_one_active ON sync_jobs(storage_id) WHERE state IN ('queued', 'running');

-- One row per (storage, annotation) that the storage holds a file for.
CREATE TABLE export_links (
    storage_id    BIGINT NOT NULL REFERENCES export_storages(id) ON DELETE CASCADE,
    annotation_id BIGINT NOT NULL,
    object_key    TEXT NOT NULL,
    -- fingerprint of what was written: annotation and task update times
    version       TEXT NOT NULL,
    -- bytes written, to notice files changed behind our back
    size          BIGINT NOT NULL DEFAULT 0,
    written_at    BIGINT NOT NULL,
    PRIMARY KEY (storage_id, annotation_id)
);
