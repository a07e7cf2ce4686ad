//! labelport: a Label Studio-compatible server for export storages.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod api;
pub mod background;
pub mod cli;
pub mod config;
pub mod db;
pub mod restyle;
pub mod secrets;
pub mod serve;
pub mod startup;
pub mod storage;
pub mod sync;
pub mod telemetry;
pub mod time;
