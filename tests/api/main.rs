//! API tests: the real server over HTTP, on SQLite and on PostgreSQL.

mod helpers;

mod core;
