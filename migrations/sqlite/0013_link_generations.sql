-- A storage's links belong to one generation of its location. Changing the location
-- (path, bucket, prefix, endpoint, export mode) starts a new generation instead of
-- deleting every link in the request's transaction, which held SQLite's one write
-- lock for about half a second per million links and stalled every save meanwhile.
-- Links of an older generation are ignored at once and deleted in small batches in
-- the background (`links_pruned_epoch`: the generation up to which that is done).
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE export_storages ADD COLUMN links_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_storages ADD COLUMN links_pruned_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_links ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
