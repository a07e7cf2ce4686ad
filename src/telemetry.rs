//! Logging through `tracing` and the Prometheus metrics ([`metrics`]).
//!
//! `RUST_LOG` selects what is logged (default `info`); `LABELPORT_LOG_FORMAT=json`
//! writes one JSON object per line instead of text (for log collectors).

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// The variable choosing the log format: `json`, or anything else for text.
pub const LOG_FORMAT_ENV: &str = "LABELPORT_LOG_FORMAT";

/// Installs the global subscriber (stderr). Safe to call more than once.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.trim().eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        // Span fields flattened into each line keep queries like `.storage` simple.
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}
