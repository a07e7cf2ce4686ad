//! Logging through `tracing`; `RUST_LOG` selects what is shown (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (stderr). Safe to call more than once.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
