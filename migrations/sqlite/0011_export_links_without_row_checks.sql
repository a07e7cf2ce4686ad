-- On PostgreSQL, 0011 replaces the export links' foreign key to their storage (checked
-- by one query per inserted row) with a delete trigger on storages. SQLite keeps the
-- key: its checks run in-process and cost little. Nothing to change here; this file
-- keeps the two backends' migration numbers in step.
SELECT 1;
