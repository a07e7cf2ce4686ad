-- Export links no longer carry a foreign key to their storage (issue #11). PostgreSQL
-- checks a foreign key with one query per inserted row: for a full sync's links that
-- was 65 % of the time of their INSERTs (20k rows: 280 ms with the key, 100 ms without).
-- What the key guaranteed still holds:
-- * No link outlives its storage: deleting a storage (directly, or through its
--   project's cascade) deletes its links in the same transaction, by the trigger below.
-- * No link is written for a storage that is gone: links are only written under the
--   storage's lease (src/db/storages.rs, upsert_links), and the lease check is an
--   UPDATE of the storage's row in the same transaction. That row lock makes a
--   concurrent delete wait for the links' commit; the trigger's DELETE then sees and
--   removes them (each statement of a PL/pgSQL function takes a new snapshot). A
--   delete that commits first leaves no row for the lease check, so nothing is written.
-- SQLite keeps the key (0011 there is empty): its checks run in-process and are cheap.
ALTER TABLE export_links DROP CONSTRAINT export_links_storage_id_fkey;

CREATE FUNCTION export_links_of_deleted_storage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM export_links WHERE storage_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER export_storages_delete_links AFTER DELETE ON export_storages
    FOR EACH ROW EXECUTE FUNCTION export_links_of_deleted_storage();
