-- The number of annotations of each project (cancelled ones included), kept in the
-- transactions that create and delete annotations (issue #11): a sync's progress total is
-- then one row read, not a count over the project, so a re-sync with nothing changed
-- costs the same at a thousand annotations as at a million.
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE projects ADD COLUMN annotation_count BIGINT NOT NULL DEFAULT 0;
UPDATE projects SET annotation_count = (SELECT COUNT(*) FROM annotations a WHERE a.project_id = projects.id);
