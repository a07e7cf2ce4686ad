-- Write-only fields of export storages (cloud keys, passwords), sealed with the
-- server's secret key (see src/secrets.rs): never stored in plain text.
-- Keep in step with the other backend's migration of the same number.
ALTER TABLE export_storages ADD COLUMN secrets TEXT;
