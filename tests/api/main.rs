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
mod broken_target;
mod cli;
mod core;
mod crash;
mod db_outage;
mod engine;
mod faults;
mod gcs_storage;
mod import;
mod import_files;
mod limits;
mod load;
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
