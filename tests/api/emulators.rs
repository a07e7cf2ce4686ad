//! The storage emulators of a test run, started once per run by `scripts/emulators
//! start` (which `./scripts/test` calls) and found through environment variables.
//! Each test makes its own bucket / container / database, so runs never collide.
#![allow(dead_code)] // each function serves one storage type's tests

/// The environment variable naming one emulator, or a clear panic telling how to
/// start them: these tests are never skipped silently.
fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run ./scripts/test, or `eval \"$(scripts/emulators start)\"` before cargo nextest")
    })
}

/// moto's base URL (`http://127.0.0.1:PORT`).
pub fn s3_endpoint() -> String {
    required("LABELPORT_TEST_S3")
}

/// fake-gcs-server's base URL (`http://127.0.0.1:PORT`).
pub fn gcs_endpoint() -> String {
    required("LABELPORT_TEST_GCS")
}

/// Azurite's blob endpoint (`http://127.0.0.1:PORT/devstoreaccount1`).
pub fn azure_endpoint() -> String {
    required("LABELPORT_TEST_AZURE")
}

/// `host:port` of a redis-server that tests may write to (never the machine's 6379).
pub fn redis_address() -> String {
    required("LABELPORT_TEST_REDIS")
}

/// A fresh, unique name for a bucket, container or key namespace.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}
