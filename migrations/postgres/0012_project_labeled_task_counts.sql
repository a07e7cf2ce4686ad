-- The number of tasks with at least one non-cancelled annotation and of labeled tasks
-- of each project, kept (like the totals of migration 0009) in the transactions that
-- change a task's counters: the project's `num_tasks_with_annotations` and
-- `finished_task_number` were two counts over the project's tasks at every read of a
-- project (tens of ms at 100k tasks, more with every task). They are the sums over
-- the project's tasks of (total_annotations > 0) and of is_labeled.
-- Ground-truth annotations are few: their count reads a partial index of them only.
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE projects ADD COLUMN annotated_task_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN labeled_task_count BIGINT NOT NULL DEFAULT 0;
UPDATE projects SET
    annotated_task_count =
        (SELECT COUNT(*) FROM tasks t WHERE t.project_id = projects.id AND t.total_annotations > 0),
    labeled_task_count = (SELECT COUNT(*) FROM tasks t WHERE t.project_id = projects.id AND t.is_labeled = 1);
CREATE INDEX annotations_ground_truth ON annotations(project_id) WHERE ground_truth = 1;
