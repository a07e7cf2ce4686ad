-- Whether a project's tasks, in id order, have increasing inner ids (issue #11). While
-- they do and none was deleted (task_count = next_inner_id - 1, so the inner ids are
-- 1..task_count), page k of GET /api/tasks/ (by id) is the inner-id range
-- ((k-1)*size, k*size], found in the (project_id, inner_id) index without walking the
-- earlier pages as LIMIT ... OFFSET does: on PostgreSQL that walk visited up to 100k
-- heap rows per page. Inserts clear the flag if they break the order (see
-- src/db/tasks.rs, keep_page_order); deletes cannot break it.
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE projects ADD COLUMN tasks_in_inner_id_order BIGINT NOT NULL DEFAULT 1;
UPDATE projects SET tasks_in_inner_id_order = 0 WHERE EXISTS (
    SELECT 1 FROM (
        SELECT t.inner_id, LAG(t.inner_id) OVER (ORDER BY t.id) AS previous
        FROM tasks t WHERE t.project_id = projects.id
    ) x WHERE x.previous >= x.inner_id
);
