-- Indexes that keep one page of GET /api/tasks/ and the publish step of a bulk
-- import cheap (issue #12): a task by its project and inner id, and index-only
-- counts of a project's annotations (non-cancelled) and predictions.
-- Keep in step with the other backend's migration of the same number.
CREATE INDEX tasks_project_inner ON tasks(project_id, inner_id);
CREATE INDEX annotations_project_cancelled ON annotations(project_id, was_cancelled);
CREATE INDEX predictions_project ON predictions(project_id);
