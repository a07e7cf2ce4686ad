//! API tests: the real server over HTTP, on SQLite and on PostgreSQL.

mod emulators;
mod helpers;

mod admin;
mod annotations;
mod auth;
mod azure_storage;
mod bad_input;
mod core;
mod crash;
mod engine;
mod gcs_storage;
mod import;
mod limits;
mod openapi;
mod projects;
mod redis_storage;
mod s3_storage;
mod secrets;
mod storages;
mod storages_sync;
mod tasks;
mod tenancy;
