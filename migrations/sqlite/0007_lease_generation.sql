-- Lease fencing (issue #9): a number incremented at every claim of a storage's lease.
-- Every write a worker makes under a lease names the generation it claimed, in the
-- same statement, so a worker that lost its lease (paused, then woken after another
-- took over) cannot overwrite newer work.
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE export_storages ADD COLUMN lease_generation BIGINT NOT NULL DEFAULT 0;
