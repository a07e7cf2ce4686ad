-- Core data model. Timestamps are integer microseconds since the Unix epoch (UTC);
-- JSON documents are stored as text. The PostgreSQL migration of the same number
-- defines the same tables and columns: keep them in step.

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE organizations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    title      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id BIGINT NOT NULL REFERENCES organizations(id),
    email           TEXT NOT NULL UNIQUE,
    username        TEXT NOT NULL DEFAULT '',
    first_name      TEXT NOT NULL DEFAULT '',
    last_name       TEXT NOT NULL DEFAULT '',
    password_hash   TEXT,
    legacy_token    TEXT NOT NULL UNIQUE,
    date_joined     BIGINT NOT NULL,
    last_activity   BIGINT NOT NULL
);

-- Personal access tokens: long-lived JWT refresh tokens, identified by their jti.
CREATE TABLE personal_access_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens(user_id);

CREATE TABLE projects (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id         BIGINT NOT NULL REFERENCES organizations(id),
    title                   TEXT NOT NULL DEFAULT '',
    description             TEXT NOT NULL DEFAULT '',
    label_config            TEXT NOT NULL DEFAULT '<View></View>',
    expert_instruction      TEXT NOT NULL DEFAULT '',
    show_instruction        BIGINT NOT NULL DEFAULT 0,
    show_skip_button        BIGINT NOT NULL DEFAULT 1,
    enable_empty_annotation BIGINT NOT NULL DEFAULT 1,
    maximum_annotations     BIGINT NOT NULL DEFAULT 1,
    color                   TEXT NOT NULL DEFAULT '#FFFFFF',
    is_published            BIGINT NOT NULL DEFAULT 0,
    model_version           TEXT NOT NULL DEFAULT '',
    sampling                TEXT NOT NULL DEFAULT 'Sequential sampling',
    created_by              BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    next_inner_id           BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX projects_org ON projects(organization_id, created_at);

CREATE TABLE tasks (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id            BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    data                  TEXT NOT NULL,
    meta                  TEXT NOT NULL DEFAULT '{}',
    inner_id              BIGINT NOT NULL,
    overlap               BIGINT NOT NULL DEFAULT 1,
    is_labeled            BIGINT NOT NULL DEFAULT 0,
    total_annotations     BIGINT NOT NULL DEFAULT 0,
    cancelled_annotations BIGINT NOT NULL DEFAULT 0,
    total_predictions     BIGINT NOT NULL DEFAULT 0,
    updated_by            BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX tasks_project ON tasks(project_id, id);

CREATE TABLE predictions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    project_id    BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    result        TEXT NOT NULL,
    score         DOUBLE PRECISION,
    model_version TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX predictions_task ON predictions(task_id);

CREATE TABLE annotations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id           BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    project_id        BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    result            TEXT NOT NULL,
    was_cancelled     BIGINT NOT NULL DEFAULT 0,
    ground_truth      BIGINT NOT NULL DEFAULT 0,
    lead_time         DOUBLE PRECISION,
    completed_by      BIGINT REFERENCES users(id) ON DELETE SET NULL,
    updated_by        BIGINT REFERENCES users(id) ON DELETE SET NULL,
    import_id         BIGINT,
    last_action       TEXT,
    bulk_created      BIGINT NOT NULL DEFAULT 0,
    parent_prediction BIGINT,
    parent_annotation BIGINT,
    last_created_by   BIGINT,
    draft_created_at  BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX annotations_task ON annotations(task_id, id);
CREATE INDEX annotations_project ON annotations(project_id, id);

-- The change feed: one row per annotation create/update/delete, written in the
-- same transaction as the change. `seq` is monotonic per database and, because
-- writers serialise on it, commit order equals seq order, so a consumer that
-- remembers the last seq it processed never skips an entry.
CREATE TABLE annotation_changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    BIGINT NOT NULL,
    task_id       BIGINT NOT NULL,
    annotation_id BIGINT NOT NULL,
    op            TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX annotation_changes_project ON annotation_changes(project_id, seq);
