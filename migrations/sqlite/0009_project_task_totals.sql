-- The number of tasks, of cancelled annotations and of predictions of each project, kept
-- (like annotation_count, migration 0008) in the transactions that change them (issue #11):
-- the task list's totals and the project's counters are then one row read, not three
-- counts over the project. A project's counters are the sums of its tasks' counters
-- (tasks.total_annotations + cancelled_annotations = annotation_count).
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE projects ADD COLUMN task_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN cancelled_annotation_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN prediction_count BIGINT NOT NULL DEFAULT 0;
UPDATE projects SET
    task_count = (SELECT COUNT(*) FROM tasks t WHERE t.project_id = projects.id),
    cancelled_annotation_count =
        (SELECT COUNT(*) FROM annotations a WHERE a.project_id = projects.id AND a.was_cancelled = 1),
    prediction_count = (SELECT COUNT(*) FROM predictions r WHERE r.project_id = projects.id);
