//! API tests: the real server over HTTP, on SQLite and on PostgreSQL.

mod emulators;
mod fault_proxy;
mod helpers;

mod admin;
mod annotations;
mod auth;
mod auth_order;
mod azure_storage;
mod bad_input;
mod cli;
mod core;
mod crash;
mod engine;
mod gcs_storage;
mod import;
mod import_files;
mod limits;
mod listen;
mod multiproc;
mod observability;
mod openapi;
mod projects;
mod pyjson;
mod redis_storage;
mod s3_storage;
mod secrets;
mod storages;
mod storages_sync;
mod tasks;
mod tenancy;
mod throttle;
